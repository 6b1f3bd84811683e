"""Stage evaluate: test metrics at the tuned rule and at argmax, and the ranking curves."""

import numpy as np
import pandas as pd

from skewtune.artifacts import (
    DECISION,
    PR_CURVE,
    ROC_CURVE,
    TEST_METRICS,
    TEST_PREDICTIONS_CSV,
    predictions_path,
    read_decision,
    read_labels,
    read_predictions,
    read_texts,
    split_path,
)
from skewtune.cli import run_stage
from skewtune.io import Outputs
from skewtune.metrics import evaluation_report, ranking_curves
from skewtune.params import load_params


def main() -> None:
    p = load_params().evaluate
    labels = read_labels()
    rule = read_decision(DECISION, labels)
    test = read_predictions(predictions_path("test"), labels)
    read_texts(split_path("test"), test.ids)  # refuses predictions made on another test split
    tuned = rule.predict(test.probs)
    positive = rule.positive

    report = evaluation_report(
        test.y, test.probs, tuned, labels, rule=rule.strategy, positive=positive,
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
    t, a = report["tuned"], report["argmax"]
    print(
        f"test macro-F1 {t['f1_macro']:.4f} [{t['f1_macro_ci_low']:.4f}, {t['f1_macro_ci_high']:.4f}] "
        f"({rule.strategy}); argmax {a['f1_macro']:.4f}; n_test {report['n_test']}"
    )


if __name__ == "__main__":
    run_stage("evaluate", main)
