"""The evaluation report and the review metrics of a run, beside the baseline's."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_fscore_support,
    roc_auc_score,
)

from skewtune.decision.calibration import ECE_BINS, calibration_metrics
from skewtune.decision.rule import DecisionRule
from skewtune.decision.scores import bootstrap_ci
from skewtune.evaluation.compare import paired_comparison


def _rule_summary(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, ci: tuple[float, float]) -> dict:
    labels = list(range(n_classes))
    return {
        "f1_macro": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "f1_macro_ci_low": ci[0],
        "f1_macro_ci_high": ci[1],
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "f1_weighted": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
    }


def _ranking_scores(y_true: np.ndarray, probs: np.ndarray, positive: int | None) -> tuple[float | None, float | None]:
    """ROC-AUC and PR-AUC (average precision): of the positive class when binary, else the one-vs-rest
    macro average over the classes present in y_true (a class without test rows has no curve)."""
    classes = [positive] if positive is not None else range(probs.shape[1])
    classes = [k for k in classes if 0 < np.sum(y_true == k) < len(y_true)]
    if not classes:
        return None, None
    roc = [roc_auc_score(y_true == k, probs[:, k]) for k in classes]
    pr = [average_precision_score(y_true == k, probs[:, k]) for k in classes]
    return float(np.mean(roc)), float(np.mean(pr))


def evaluation_report(
    y_true: np.ndarray,
    probs: np.ndarray,
    y_chosen: np.ndarray,
    labels: list[str],
    *,
    rule: str,
    blend: float,
    y_model: np.ndarray,
    positive: int | None,
    resamples: int,
    confidence: float,
    seed: int,
) -> dict:
    """reports/eval/test.json: the chosen rule (the one the classifier applies, on `probs`: the model's, blended with
    the baseline's at weight `blend`), argmax of the same `probs`, and the model alone (`y_model`: argmax of the
    fine-tuned model's own probabilities, no blend) side by side, per class, with confusion matrices;
    `review_metrics` picks the few numbers a reviewer compares."""
    n_classes = len(labels)
    y_argmax = probs.argmax(axis=1)
    ci_chosen, ci_argmax, ci_model = bootstrap_ci(
        y_true, [y_chosen, y_argmax, y_model], n_classes, resamples=resamples, confidence=confidence, seed=seed
    )
    roc_auc, pr_auc = _ranking_scores(y_true, probs, positive)
    ids = list(range(n_classes))

    def per_class(y_pred: np.ndarray) -> tuple[np.ndarray, ...]:
        return precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)

    prec, rec, f1, support = per_class(y_chosen)
    prec_a, rec_a, f1_a, _ = per_class(y_argmax)
    return {
        "n_test": int(len(y_true)),
        "rule": rule,
        "blend": blend,
        "chosen": _rule_summary(y_true, y_chosen, n_classes, ci_chosen),
        "argmax": _rule_summary(y_true, y_argmax, n_classes, ci_argmax),
        "model": _rule_summary(y_true, y_model, n_classes, ci_model),
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        "per_class": {
            label: {
                "precision": float(prec[k]),
                "recall": float(rec[k]),
                "f1": float(f1[k]),
                "f1_argmax": float(f1_a[k]),
                "support": int(support[k]),
            }
            for k, label in enumerate(labels)
        },
        "details": {
            "labels": list(labels),
            "confidence": confidence,
            "bootstrap_resamples": resamples,
            "support": [int(s) for s in support],
            "chosen": {
                "predicted": np.bincount(y_chosen, minlength=n_classes).tolist(),
                "confusion_matrix": confusion_matrix(y_true, y_chosen, labels=ids).tolist(),
            },
            "argmax": {
                "precision": prec_a.tolist(),
                "recall": rec_a.tolist(),
                "predicted": np.bincount(y_argmax, minlength=n_classes).tolist(),
                "confusion_matrix": confusion_matrix(y_true, y_argmax, labels=ids).tolist(),
            },
        },
    }


BASELINE_KEYS = (
    "baseline_f1_macro",
    "baseline_f1_macro_ci_low",
    "baseline_f1_macro_ci_high",
    "vs_baseline",
    "vs_baseline_ci_low",
    "vs_baseline_ci_high",
)


def baseline_comparison(
    y_true: np.ndarray,
    y_chosen: np.ndarray,
    y_baseline: np.ndarray | None,
    n_classes: int,
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> dict:
    """The baseline's macro-F1 with its bootstrap CI, and the paired bootstrap difference chosen rule − baseline
    with its CI (rows resampled jointly); every value None without baseline predictions."""
    if y_baseline is None:
        return dict.fromkeys(BASELINE_KEYS)
    ((low, high),) = bootstrap_ci(
        y_true, [y_baseline], n_classes, resamples=resamples, confidence=confidence, seed=seed
    )
    diff = paired_comparison(
        y_true, y_baseline, y_chosen, n_classes, resamples=resamples, seed=seed, confidence=confidence
    )
    return dict(zip(BASELINE_KEYS, (diff.score_a, low, high, diff.diff, diff.ci_low, diff.ci_high)))


def vs_baseline_text(review: dict, confidence: float) -> str:
    """The chosen rule against the baseline in words, from review metrics with a baseline comparison: the paired
    difference, its CI and what the CI says."""
    low, high = review["vs_baseline_ci_low"], review["vs_baseline_ci_high"]
    verdict = "better than" if low > 0 else "worse than" if high < 0 else "not distinguishable from"
    return f"chosen rule − baseline {review['vs_baseline']:+.4f} [{low:+.4f}, {high:+.4f}]: {verdict} the baseline at {confidence:.0%}"


def review_metrics(report: dict, *, val_f1_macro: float, val_f1_macro_model: float) -> dict:
    """metrics/test.json, the one metrics file (`dvc exp show`, `dvc metrics diff`): the numbers a reviewer
    compares, headline first (`ece`: the test top-label calibration error of the probabilities the rule decides on, as
    `skewtune predict` writes them). The decision (`rule`, `blend`) stands beside the score it produced and the model
    alone's (`f1_macro_model`: argmax of the fine-tuned model's own probabilities, no blend), so that a change of
    the model and a change of the decision are told apart. The rarest class is the one with the fewest test rows
    (ties: label order)."""
    chosen = report["chosen"]
    rarest = min(report["per_class"], key=lambda label: report["per_class"][label]["support"])
    return {
        "f1_macro": chosen["f1_macro"],
        "f1_macro_ci_low": chosen["f1_macro_ci_low"],
        "f1_macro_ci_high": chosen["f1_macro_ci_high"],
        "rule": report["rule"],
        "blend": report["blend"],
        "f1_macro_model": report["model"]["f1_macro"],
        "rarest_class": rarest,
        "f1_rarest_class": report["per_class"][rarest]["f1"],
        "val_f1_macro": val_f1_macro,
        "val_f1_macro_model": val_f1_macro_model,
        "balanced_accuracy": chosen["balanced_accuracy"],
        "pr_auc": report["pr_auc"],
        "ece": report["calibration"]["test"]["calibrated"]["ece"],
        "n_test": report["n_test"],
    }


def calibration_report(rule: DecisionRule, splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """reports/eval/test.json's `calibration`: the calibrators the rule applies and, per split (name -> (true class
    indices, the probabilities the rule decides on, the same without calibration)), calibration_metrics of both."""
    return {
        "model": rule.calibration.to_dict(),
        "baseline": rule.baseline_calibration.to_dict() if rule.blend else None,
        "bins": ECE_BINS,
        **{
            name: {
                "rows": int(len(y)),
                "uncalibrated": calibration_metrics(y, raw),
                "calibrated": calibration_metrics(y, calibrated),
            }
            for name, (y, calibrated, raw) in splits.items()
        },
    }
