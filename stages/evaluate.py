"""Stage evaluate: test metrics at the tuned rule and at argmax, curves, and the error-analysis table."""

import numpy as np
import pandas as pd

from skewtune.cli import run_stage
from skewtune.io import Outputs, read_labels
from skewtune.metrics import error_table, evaluation_report, ranking_curves
from skewtune.params import load_params
from skewtune.thresholds import apply_decision, read_decision, read_predictions, read_texts

LABELS = "data/interim/labels.json"
TEST_SPLIT = "data/split/test.parquet"
TEST_PREDICTIONS = "data/predictions/test.parquet"
DECISION = "metrics/decision.json"
TEST_METRICS = "metrics/test.json"
TEST_PREDICTIONS_CSV = "metrics/test_predictions.csv"
PR_CURVE = "reports/eval/pr_curve.csv"
ROC_CURVE = "reports/eval/roc_curve.csv"
ERRORS = "reports/errors.csv"


def main() -> None:
    p = load_params().evaluate
    labels = read_labels(LABELS)
    decision = read_decision(DECISION, labels)
    test = read_predictions(TEST_PREDICTIONS, labels)
    texts = read_texts(TEST_SPLIT, test.ids)
    tuned = apply_decision(test.probs, decision)
    positive = labels.index(decision["positive_label"]) if decision["positive_label"] is not None else None

    report = evaluation_report(
        test.y, test.probs, tuned, labels, rule=decision["strategy"], positive=positive,
        resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.seed,
    )
    pr_curve, roc_curve = ranking_curves(test.y, test.probs, labels, positive)
    names = np.asarray(labels, dtype=object)
    predictions = pd.DataFrame(
        {"id": test.ids, "actual": names[test.y], "predicted": names[tuned], "predicted_argmax": names[test.probs.argmax(axis=1)]}
    )
    with Outputs() as out:
        out.json(TEST_METRICS, report)
        out.csv(TEST_PREDICTIONS_CSV, predictions)
        out.csv(PR_CURVE, pr_curve)
        out.csv(ROC_CURVE, roc_curve)
        out.csv(ERRORS, error_table(texts, test.y, tuned, test.probs, labels, p.error_rows))
    t, a = report["tuned"], report["argmax"]
    print(
        f"test macro-F1 {t['f1_macro']:.4f} [{t['f1_macro_ci_low']:.4f}, {t['f1_macro_ci_high']:.4f}] "
        f"({decision['strategy']}); argmax {a['f1_macro']:.4f}; n_test {report['n_test']}"
    )


if __name__ == "__main__":
    run_stage("evaluate", main)
