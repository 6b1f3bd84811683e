"""Stage tune_threshold: choose the decision rule on the decision rows, in this order: a calibrator for the model's
probabilities and one for the baseline's (calibration.method), then the blend of the two (decision.blend), then a
threshold or per-class offsets, each tuned on the calibrated probabilities. The decision rows are val, or under
train.cv the out-of-fold rows of train + val (the fold models' probabilities, the cross-fitted baseline's beside them);
the guard judges each candidate out of sample, on folds of those rows (skewtune.decision.guard)."""

import sys

from skewtune.artifacts import (
    BASELINE_OOF,
    aligned,
    read_baseline_predictions,
    read_fold_predictions,
    read_labels,
    read_predictions,
)
from skewtune.config.effective import collapse_remedies
from skewtune.config.load import load_params
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import Outputs
from skewtune.core.paths import (
    DECISION,
    FOLD_PREDICTIONS_DIR,
    OFFSET_SEARCH,
    THRESHOLD_MARKERS,
    VAL_CURVE,
    predictions_path,
)
from skewtune.core.stage import run_stage
from skewtune.decision.calibration import calibration_warnings, choose_calibration
from skewtune.decision.plots import plot_tables
from skewtune.decision.scores import collapse_message, share_text
from skewtune.decision.tuning import TUNED_VALUES, guard_refusals, tune_blended_decision


def main() -> None:
    params = load_params()
    p, blend = params.threshold, params.decision.blend
    labels = read_labels()
    out_of_fold = read_fold_predictions(labels)
    if out_of_fold is None:
        rows, folds, split, source = read_predictions(predictions_path("val"), labels), None, "val", None
        name, where = "val", f"val ({len(rows.y):,} rows)"
    else:
        (rows, folds), split, source = out_of_fold, BASELINE_OOF, f"{FOLD_PREDICTIONS_DIR}/<fold>.parquet"
        name = "out-of-fold train+val"
        where = f"{name} ({int(folds.max()) + 1} folds, {len(rows.y):,} rows)"
    baseline = read_baseline_predictions(split, labels)
    if baseline is None and isinstance(blend, float) and blend > 0:
        raise SkewtuneError(
            f"decision.blend is {blend:g}, but the baseline has no {split} probabilities (see reports/baseline.json); "
            "set decision.blend: auto or off"
        )
    method, guard = params.calibration.method, p.min_confidence
    calibration, chosen = choose_calibration(method, rows.probs, rows.y, min_confidence=guard)
    record = {
        "order": "each source calibrated first; the blend weight, then the threshold or offsets, tuned on the calibrated "
        "probabilities of the decision rows",
        "model": chosen,
        "baseline": None,
    }
    baseline_probs = None
    if baseline is not None and blend != "off":  # decision.blend: off never reads the baseline's probabilities
        baseline_probs = aligned(rows, baseline, split, source).probs
        baseline_calibration, record["baseline"] = choose_calibration(
            method, baseline_probs, rows.y, min_confidence=guard, source="the baseline"
        )
        baseline_probs = baseline_calibration.apply(baseline_probs)
    decision, curve = tune_blended_decision(
        rows.y,
        calibration.apply(rows.probs),
        baseline_probs,
        labels,
        blend=blend,
        folds=folds,
        strategy=p.strategy,
        metric=p.metric,
        min_precision=p.min_precision,
        positive_label=p.positive_label,
        min_confidence=p.min_confidence,
    )
    message = collapse_message(rows.y, rows.probs.argmax(axis=1), labels, collapse_remedies(params), rows=name)
    decision.update(decision_rows=where, calibration=record, collapsed=message is not None, collapse_message=message)
    with Outputs() as out:
        out.json(DECISION, decision, exact=TUNED_VALUES)
        for path, table in zip((VAL_CURVE, OFFSET_SEARCH, THRESHOLD_MARKERS), plot_tables(decision, curve)):
            out.csv(path, table)
    print(
        f"decision: on {where}: {decision['strategy']}; {decision['metric']} {decision['val_score']:.4f} (argmax "
        f"{decision['val_score_argmax']:.4f})"
    )
    if decision["blend_weight_tried"] is not None:
        kept = f"blended in at weight {decision['blend']:g}" if decision["blend"] else "not blended in"
        print(
            f"decision: baseline {kept}: weight {decision['blend_weight_tried']:g} scored "
            f"{decision['blend_val_score']:.4f} against the model alone's {decision['val_score_model']:.4f} and, out of "
            f"sample, won {share_text(decision['blend_win_rate'])} of bootstrap resamples"
        )
    for source_name in ("model", "baseline"):
        if record[source_name] is not None:
            print(f"decision: {source_name} calibration: {record[source_name]['why']}")
    for line in guard_refusals(decision) + calibration_warnings(record):
        print(f"decision: WARNING: {line}", file=sys.stderr)
    if message:
        print(f"decision: WARNING: {message}", file=sys.stderr)


if __name__ == "__main__":
    run_stage("tune_threshold", main)
