"""Stage evaluate: test metrics of the chosen rule, of argmax and of the model alone (no blend), the baseline's and the
chosen rule's difference to it, the ranking curves, the calibration of the probabilities the rule decides on (val and
test, with and without its calibrators; a reliability diagram), and the review metrics (metrics/test.json: the few numbers
`dvc exp show` and `dvc metrics diff` compare, the decision and val macro-F1 among them). When the decision scores
below the baseline, it warns, naming the guard that refused a blend or rule that scored higher on val."""

import sys

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from skewtune.artifacts import (
    aligned,
    read_baseline_predictions,
    read_decision,
    read_json,
    read_labels,
    read_predictions,
    read_rule_inputs,
    read_texts,
)
from skewtune.config.load import load_params
from skewtune.core.outputs import Outputs
from skewtune.core.paths import (
    DECISION,
    PR_CURVE,
    RELIABILITY,
    ROC_CURVE,
    TEST_METRICS,
    TEST_PREDICTIONS_CSV,
    TEST_REPORT,
    predictions_path,
    split_path,
)
from skewtune.core.stage import run_stage
from skewtune.decision.calibration import reliability_table
from skewtune.decision.scores import ranking_curves
from skewtune.decision.tuning import guard_refusals
from skewtune.evaluation.report import (
    BASELINE_KEYS,
    baseline_comparison,
    calibration_report,
    evaluation_report,
    review_metrics,
    vs_baseline_text,
)


def main() -> None:
    p = load_params().evaluate
    labels = read_labels()
    rule = read_decision(DECISION, labels)
    decision = read_json(DECISION, "tune_threshold")
    model_test, model_val = (read_predictions(predictions_path(split), labels) for split in ("test", "val"))
    # what the rule decides on: the model's probabilities, blended with the baseline's when the rule says so
    test = read_rule_inputs("test", labels, rule, model_test)
    read_texts(split_path("test"), test.ids)  # refuses predictions made on another test split
    val = read_rule_inputs("val", labels, rule, model_val)
    # the same rule without its calibrators: what calibration is measured against
    raw_test, raw_val = (
        read_rule_inputs(split, labels, rule.uncalibrated(), model)
        for split, model in (("test", model_test), ("val", model_val))
    )
    chosen, alone = rule.predict(test.probs), model_test.probs.argmax(axis=1)
    positive = rule.positive

    report = evaluation_report(
        test.y,
        test.probs,
        chosen,
        labels,
        rule=rule.strategy,
        blend=rule.blend,
        y_model=alone,
        positive=positive,
        resamples=p.bootstrap_resamples,
        confidence=p.confidence,
        seed=p.seed,
    )
    report["calibration"] = calibration_report(
        rule, {"test": (test.y, test.probs, raw_test.probs), "val": (val.y, val.probs, raw_val.probs)}
    )
    every_class = list(range(len(labels)))

    def val_f1(predicted):
        return float(f1_score(val.y, predicted, labels=every_class, average="macro", zero_division=0))

    review = review_metrics(
        report, val_f1_macro=val_f1(rule.predict(val.probs)), val_f1_macro_model=val_f1(model_val.probs.argmax(axis=1))
    )
    baseline = read_baseline_predictions("test", labels)
    review.update(
        baseline_comparison(
            test.y,
            chosen,
            None if baseline is None else aligned(test, baseline, "test").probs.argmax(axis=1),
            len(labels),
            resamples=p.bootstrap_resamples,
            confidence=p.confidence,
            seed=p.seed,
        )
    )
    collapsed = decision.get("collapse_message")
    review["collapsed"] = collapsed is not None
    # the full report holds the review numbers too (the model card reads it)
    report.update(
        {key: review[key] for key in BASELINE_KEYS}, collapsed=collapsed is not None, collapse_message=collapsed
    )
    pr_curve, roc_curve = ranking_curves(test.y, test.probs, labels, positive)
    reliability = reliability_table(
        test.y, {"uncalibrated": raw_test.probs, f"calibrated ({rule.calibration.method})": test.probs}, labels
    )
    names = np.asarray(labels, dtype=object)
    predictions = pd.DataFrame(
        {
            "id": test.ids,
            "actual": names[test.y],
            "predicted": names[chosen],
            "predicted_argmax": names[test.probs.argmax(axis=1)],
            "predicted_model": names[alone],
            "rule": rule.strategy,
        }
    )
    with Outputs() as out:
        out.json(TEST_METRICS, review)
        out.json(TEST_REPORT, report)
        out.csv(TEST_PREDICTIONS_CSV, predictions)
        out.csv(PR_CURVE, pr_curve)
        out.csv(ROC_CURVE, roc_curve)
        out.csv(RELIABILITY, reliability)
    blended = f", baseline blended in at {rule.blend:g}" if rule.blend else ", no blend"
    print(
        f"test macro-F1 {review['f1_macro']:.4f} [{review['f1_macro_ci_low']:.4f}, {review['f1_macro_ci_high']:.4f}] "
        f"(decision: {rule.strategy}{blended}); the model alone (argmax, no blend) {review['f1_macro_model']:.4f}; "
        f"{review['rarest_class']} (rarest) F1 {review['f1_rarest_class']:.4f}; val macro-F1 "
        f"{review['val_f1_macro']:.4f}; n_test {review['n_test']}"
    )
    calibrated = report["calibration"]["test"]
    print(
        f"calibration ({rule.calibration.describe()}): test top-label ECE {calibrated['uncalibrated']['ece']:.4f} "
        f"uncalibrated, {calibrated['calibrated']['ece']:.4f} as applied; log loss "
        f"{calibrated['uncalibrated']['log_loss']:.4f} -> {calibrated['calibrated']['log_loss']:.4f}"
    )
    if review["baseline_f1_macro"] is not None:
        compared = vs_baseline_text(review, p.confidence)
        print(
            f"baseline (TF-IDF + logistic regression) test macro-F1 {review['baseline_f1_macro']:.4f} "
            f"[{review['baseline_f1_macro_ci_low']:.4f}, {review['baseline_f1_macro_ci_high']:.4f}]; {compared}"
        )
        if review["vs_baseline"] < 0:
            refused = guard_refusals(decision)
            print(
                f"evaluate: WARNING: the fine-tuned model's decision scores below the baseline on test ({compared})"
                + "".join(f"; {line}" for line in refused)
                + ("" if refused else "; no guard refused a blend or rule that scored higher on val"),
                file=sys.stderr,
            )
    if collapsed:
        print(f"evaluate: WARNING: collapsed: {collapsed}", file=sys.stderr)


if __name__ == "__main__":
    run_stage("evaluate", main)
