"""Stage evaluate: test metrics of the chosen rule and of argmax, the baseline's and the chosen rule's difference
to it, the ranking curves, and the review metrics (metrics/test.json: the few numbers `dvc exp show` and
`dvc metrics diff` compare, val macro-F1 among them)."""

import sys

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
    aligned,
    read_baseline_predictions,
    read_decision,
    read_json,
    read_labels,
    read_rule_inputs,
    read_texts,
    split_path,
)
from skewtune.cli import run_stage
from skewtune.io import Outputs
from skewtune.metrics import BASELINE_KEYS, baseline_comparison, evaluation_report, ranking_curves, review_metrics
from skewtune.params import load_params


def main() -> None:
    p = load_params().evaluate
    labels = read_labels()
    rule = read_decision(DECISION, labels)
    # the model's probabilities, blended with the baseline's when the rule says so
    test = read_rule_inputs("test", labels, rule)
    read_texts(split_path("test"), test.ids)  # refuses predictions made on another test split
    val = read_rule_inputs("val", labels, rule)
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
    baseline = read_baseline_predictions("test", labels)
    review.update(baseline_comparison(
        test.y, chosen, None if baseline is None else aligned(test, baseline, "test").probs.argmax(axis=1), len(labels),
        resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.seed,
    ))
    collapsed = read_json(DECISION, "tune_threshold").get("collapse_message")
    review["collapsed"] = collapsed is not None
    # the full report holds the review numbers too (the model card reads it)
    report.update({key: review[key] for key in BASELINE_KEYS}, blend=rule.blend, collapsed=collapsed is not None, collapse_message=collapsed)
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
    blended = f", baseline blended in at {rule.blend:g}" if rule.blend else ""
    print(
        f"test macro-F1 {review['f1_macro']:.4f} [{review['f1_macro_ci_low']:.4f}, {review['f1_macro_ci_high']:.4f}] "
        f"({rule.strategy}{blended}); argmax {review['f1_macro_argmax']:.4f}; {review['rarest_class']} (rarest) F1 "
        f"{review['f1_rarest_class']:.4f}; val macro-F1 {review['val_f1_macro']:.4f}; n_test {review['n_test']}"
    )
    if review["baseline_f1_macro"] is not None:
        print(f"baseline (TF-IDF + logistic regression) test macro-F1 {review['baseline_f1_macro']:.4f} "
              f"[{review['baseline_f1_macro_ci_low']:.4f}, {review['baseline_f1_macro_ci_high']:.4f}]; chosen rule − baseline "
              f"{review['vs_baseline']:+.4f} [{review['vs_baseline_ci_low']:+.4f}, {review['vs_baseline_ci_high']:+.4f}]")
    if collapsed:
        print(f"evaluate: WARNING: collapsed: {collapsed}", file=sys.stderr)


if __name__ == "__main__":
    run_stage("evaluate", main)
