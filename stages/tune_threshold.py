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
    )
    with Outputs() as out:
        out.json(DECISION, decision)
        out.csv(VAL_CURVE, curve)
        out.csv(CHOSEN, chosen_point(decision))
    print(f"decision: {decision['strategy']}; val {decision['metric']} {decision['val_score']:.4f} (argmax {decision['val_score_argmax']:.4f})")


if __name__ == "__main__":
    run_stage("tune_threshold", main)
