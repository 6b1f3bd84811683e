"""Stage tune_threshold: choose the decision rule (threshold or per-class offsets) on val probabilities."""

from skewtune.artifacts import DECISION, OFFSET_SEARCH, THRESHOLD_MARKERS, VAL_CURVE, predictions_path, read_labels, read_predictions
from skewtune.cli import run_stage
from skewtune.io import Outputs
from skewtune.params import load_params
from skewtune.thresholds import TUNED_VALUES, plot_tables, tune_decision


def main() -> None:
    p = load_params().threshold
    labels = read_labels()
    val = read_predictions(predictions_path("val"), labels)
    decision, curve = tune_decision(
        val.y,
        val.probs,
        labels,
        strategy=p.strategy,
        metric=p.metric,
        min_precision=p.min_precision,
        positive_label=p.positive_label,
        min_confidence=p.min_confidence,
    )
    with Outputs() as out:
        out.json(DECISION, decision, exact=TUNED_VALUES)
        for path, table in zip((VAL_CURVE, OFFSET_SEARCH, THRESHOLD_MARKERS), plot_tables(decision, curve)):
            out.csv(path, table)
    print(f"decision: {decision['strategy']}; val {decision['metric']} {decision['val_score']:.4f} (argmax {decision['val_score_argmax']:.4f})")
    if decision["win_rate"] is not None and decision["strategy"] == "argmax":
        tuned = f"threshold {decision['tuned_threshold']:.4g}" if decision["tuned_threshold"] is not None else "offsets"
        print(f"decision: kept argmax: the tuned {tuned} (val {decision['tuned_val_score']:.4f}) beat it in only "
              f"{decision['win_rate']:.0%} of val bootstrap resamples, below threshold.min_confidence {p.min_confidence}")


if __name__ == "__main__":
    run_stage("tune_threshold", main)
