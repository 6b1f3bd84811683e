"""Stage tune_threshold: choose the decision rule (threshold or per-class offsets) on val probabilities."""

from skewtune.cli import run_stage
from skewtune.io import Outputs, read_labels
from skewtune.params import load_params
from skewtune.thresholds import chosen_point, read_predictions, tune_decision

LABELS = "data/interim/labels.json"
VAL_PREDICTIONS = "data/predictions/val.parquet"
DECISION = "metrics/decision.json"
VAL_CURVE = "reports/threshold/val_curve.csv"
CHOSEN = "reports/threshold/chosen.csv"


def main() -> None:
    p = load_params().threshold
    labels = read_labels(LABELS)
    val = read_predictions(VAL_PREDICTIONS, labels)
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
        out.json(DECISION, decision)
        out.csv(VAL_CURVE, curve)
        out.csv(CHOSEN, chosen_point(decision))
    print(f"decision: {decision['strategy']}; val {decision['metric']} {decision['val_score']:.4f} (argmax {decision['val_score_argmax']:.4f})")
    if decision["win_rate"] is not None and decision["strategy"] == "argmax":
        tuned = f"threshold {decision['tuned_threshold']:.4g}" if decision["tuned_threshold"] is not None else "offsets"
        print(f"decision: kept argmax: the tuned {tuned} (val {decision['tuned_val_score']:.4f}) beat it in only "
              f"{decision['win_rate']:.0%} of val bootstrap resamples, below threshold.min_confidence {p.min_confidence}")


if __name__ == "__main__":
    run_stage("tune_threshold", main)
