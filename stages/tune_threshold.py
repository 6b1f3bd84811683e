"""Stage tune_threshold: choose the decision rule on val probabilities: a threshold or per-class offsets,
on the model's probabilities or on a blend with the baseline's (decision.blend)."""

import sys

from skewtune.artifacts import aligned, read_baseline_predictions, read_labels, read_predictions
from skewtune.config.effective import collapse_remedies
from skewtune.config.load import load_params
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import Outputs
from skewtune.core.paths import DECISION, OFFSET_SEARCH, THRESHOLD_MARKERS, VAL_CURVE, predictions_path
from skewtune.core.stage import run_stage
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
    decision, curve = tune_blended_decision(
        val.y,
        val.probs,
        None if baseline is None else aligned(val, baseline, "val").probs,
        labels,
        blend=blend,
        strategy=p.strategy,
        metric=p.metric,
        min_precision=p.min_precision,
        positive_label=p.positive_label,
        min_confidence=p.min_confidence,
    )
    message = collapse_message(val.y, val.probs.argmax(axis=1), labels, collapse_remedies(params))
    decision.update(collapsed=message is not None, collapse_message=message)
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
    for line in guard_refusals(decision):
        print(f"decision: WARNING: {line}", file=sys.stderr)
    if message:
        print(f"decision: WARNING: {message}", file=sys.stderr)


if __name__ == "__main__":
    run_stage("tune_threshold", main)
