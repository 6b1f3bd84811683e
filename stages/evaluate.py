"""Stage evaluate: test metrics at the tuned rule and at argmax, the baseline's and the difference to it,
and the ranking curves."""

import sys

import numpy as np
import pandas as pd

from skewtune.artifacts import (
    DECISION,
    PR_CURVE,
    ROC_CURVE,
    TEST_METRICS,
    TEST_PREDICTIONS_CSV,
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
from skewtune.metrics import baseline_comparison, evaluation_report, ranking_curves
from skewtune.params import load_params


def main() -> None:
    p = load_params().evaluate
    labels = read_labels()
    rule = read_decision(DECISION, labels)
    test = read_rule_inputs("test", labels, rule)  # the model's probabilities, blended with the baseline's when the rule says so
    read_texts(split_path("test"), test.ids)  # refuses predictions made on another test split
    tuned = rule.predict(test.probs)
    positive = rule.positive

    report = evaluation_report(
        test.y, test.probs, tuned, labels, rule=rule.strategy, positive=positive,
        resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.seed,
    )
    baseline = read_baseline_predictions("test", labels)
    report.update(baseline_comparison(
        test.y, tuned, None if baseline is None else aligned(test, baseline, "test").probs.argmax(axis=1), len(labels),
        resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.seed,
    ))
    collapsed = read_json(DECISION, "tune_threshold").get("collapse_message")
    report.update(blend=rule.blend, collapsed=collapsed is not None, collapse_message=collapsed)
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
        f"({rule.strategy}{f', baseline blended in at {rule.blend:g}' if rule.blend else ''}); argmax {a['f1_macro']:.4f}; n_test {report['n_test']}"
    )
    if report["baseline_f1_macro"] is not None:
        print(f"baseline (TF-IDF + logistic regression) test macro-F1 {report['baseline_f1_macro']:.4f} "
              f"[{report['baseline_f1_macro_ci_low']:.4f}, {report['baseline_f1_macro_ci_high']:.4f}]; chosen rule − baseline "
              f"{report['vs_baseline']:+.4f} [{report['vs_baseline_ci_low']:+.4f}, {report['vs_baseline_ci_high']:+.4f}]")
    if collapsed:
        print(f"evaluate: WARNING: collapsed: {collapsed}", file=sys.stderr)


if __name__ == "__main__":
    run_stage("evaluate", main)
