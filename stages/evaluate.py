"""Stage evaluate: test metrics of the chosen rule and of argmax, the ranking curves, and the review metrics
(metrics/test.json: the few numbers `dvc exp show` and `dvc metrics diff` compare, val macro-F1 among them)."""

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from skewtune.artifacts import (
    DECISION,
    PR_CURVE,
    ROC_CURVE,
    TEST_METRICS,
    TEST_PREDICTIONS_CSV,
    TEST_REPORT,
    predictions_path,
    read_decision,
    read_labels,
    read_predictions,
    read_texts,
    split_path,
)
from skewtune.cli import run_stage
from skewtune.io import Outputs
from skewtune.metrics import evaluation_report, ranking_curves, review_metrics
from skewtune.params import load_params


def main() -> None:
    p = load_params().evaluate
    labels = read_labels()
    rule = read_decision(DECISION, labels)
    test = read_predictions(predictions_path("test"), labels)
    read_texts(split_path("test"), test.ids)  # refuses predictions made on another test split
    val = read_predictions(predictions_path("val"), labels)
    chosen = rule.predict(test.probs)
    positive = rule.positive

    report = evaluation_report(
        test.y, test.probs, chosen, labels, rule=rule.strategy, positive=positive,
        resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.seed,
    )
    every_class = list(range(len(labels)))
    review = review_metrics(
        report,
        val_f1_macro=float(f1_score(val.y, rule.predict(val.probs), labels=every_class, average="macro", zero_division=0)),
        val_f1_macro_argmax=float(f1_score(val.y, val.probs.argmax(axis=1), labels=every_class, average="macro", zero_division=0)),
    )
    pr_curve, roc_curve = ranking_curves(test.y, test.probs, labels, positive)
    names = np.asarray(labels, dtype=object)
    predictions = pd.DataFrame(
        {"id": test.ids, "actual": names[test.y], "predicted": names[chosen], "predicted_argmax": names[test.probs.argmax(axis=1)], "rule": rule.strategy}
    )
    with Outputs() as out:
        out.json(TEST_METRICS, review)
        out.json(TEST_REPORT, report)
        out.csv(TEST_PREDICTIONS_CSV, predictions)
        out.csv(PR_CURVE, pr_curve)
        out.csv(ROC_CURVE, roc_curve)
    print(
        f"test macro-F1 {review['f1_macro']:.4f} [{review['f1_macro_ci_low']:.4f}, {review['f1_macro_ci_high']:.4f}] "
        f"({rule.strategy}); argmax {review['f1_macro_argmax']:.4f}; {review['rarest_class']} (rarest) F1 "
        f"{review['f1_rarest_class']:.4f}; val macro-F1 {review['val_f1_macro']:.4f}; n_test {review['n_test']}"
    )


if __name__ == "__main__":
    run_stage("evaluate", main)
