"""Stage tune_threshold: choose the decision rule on val probabilities, in this order: a calibrator for the model's
probabilities and one for the baseline's (calibration.method), then the blend of the two (decision.blend), then a
threshold or per-class offsets, each tuned on the calibrated probabilities."""

import sys

from skewtune.artifacts import aligned, read_baseline_predictions, read_labels, read_predictions
from skewtune.config.effective import collapse_remedies
from skewtune.config.load import load_params
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import Outputs
from skewtune.core.paths import DECISION, OFFSET_SEARCH, THRESHOLD_MARKERS, VAL_CURVE, predictions_path
from skewtune.core.stage import run_stage
from skewtune.decision.calibration import calibration_warnings, choose_calibration
from skewtune.decision.scores import collapse_message, share_text
from skewtune.decision.tuning import TUNED_VALUES, guard_refusals, plot_tables, tune_blended_decision


def main() -> None:
    params = load_params()
    p, blend = params.threshold, params.decision.blend
    labels = read_labels()
    val = read_predictions(predictions_path("val"), labels)
    baseline = read_baseline_predictions("val", labels)
    if baseline is None and isinstance(blend, float) and blend > 0:
        raise SkewtuneError(
            f"decision.blend is {blend:g}, but the baseline was not fitted (see reports/baseline.json); set decision.blend: auto or off"
        )
    method, guard = params.calibration.method, p.min_confidence
    calibration, chosen = choose_calibration(method, val.probs, val.y, min_confidence=guard)
    record = {
        "order": "each source calibrated first; the blend weight, then the threshold or offsets, tuned on the calibrated "
        "val probabilities",
        "model": chosen,
        "baseline": None,
    }
    baseline_probs = None
    if baseline is not None and blend != "off":  # decision.blend: off never reads the baseline's probabilities
        baseline_probs = aligned(val, baseline, "val").probs
        baseline_calibration, record["baseline"] = choose_calibration(
            method, baseline_probs, val.y, min_confidence=guard, source="the baseline"
        )
        baseline_probs = baseline_calibration.apply(baseline_probs)
    decision, curve = tune_blended_decision(
        val.y,
        calibration.apply(val.probs),
        baseline_probs,
        labels,
        blend=blend,
        strategy=p.strategy,
        metric=p.metric,
        min_precision=p.min_precision,
        positive_label=p.positive_label,
        min_confidence=p.min_confidence,
    )
    message = collapse_message(val.y, val.probs.argmax(axis=1), labels, collapse_remedies(params))
    decision.update(calibration=record, collapsed=message is not None, collapse_message=message)
    with Outputs() as out:
        out.json(DECISION, decision, exact=TUNED_VALUES)
        for path, table in zip((VAL_CURVE, OFFSET_SEARCH, THRESHOLD_MARKERS), plot_tables(decision, curve)):
            out.csv(path, table)
    print(
        f"decision: {decision['strategy']}; val {decision['metric']} {decision['val_score']:.4f} (argmax "
        f"{decision['val_score_argmax']:.4f})"
    )
    if decision["blend_weight_tried"] is not None:
        kept = f"blended in at weight {decision['blend']:g}" if decision["blend"] else "not blended in"
        print(
            f"decision: baseline {kept}: weight {decision['blend_weight_tried']:g} scored val "
            f"{decision['blend_val_score']:.4f} against the model "
            f"alone's {decision['val_score_model']:.4f} and won {share_text(decision['blend_win_rate'])} of val bootstrap resamples"
        )
    for source in ("model", "baseline"):
        if record[source] is not None:
            print(f"decision: {source} calibration: {record[source]['why']}")
    for line in guard_refusals(decision) + calibration_warnings(record):
        print(f"decision: WARNING: {line}", file=sys.stderr)
    if message:
        print(f"decision: WARNING: {message}", file=sys.stderr)


if __name__ == "__main__":
    run_stage("tune_threshold", main)
