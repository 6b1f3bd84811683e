"""Classification scores: vectorised scores from counts (threshold search, bootstrap), the test report
(sklearn), ranking curves, and the paired comparison of two runs.

Every score used for tuning and bootstrapping depends on the predictions only through three count
vectors per class: true positives `tp`, predicted counts `pred` and true counts `true`. Computing
them with `np.bincount`/`np.cumsum` lets one call score thousands of candidate rules or resamples.
The formulas follow sklearn with `zero_division=0` (tests check the equality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from skewtune.errors import SkewtuneError

SCORE_NAMES = ("f1_macro", "balanced_accuracy", "mcc", "recall_at_precision")
# A share of val predictions in one class at or above this (and above that class's true share) is a collapse.
COLLAPSE_SHARE = 0.95
CURVE_POINTS = 500
# Resamples are drawn in chunks so that memory stays near this many row indices at once.
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Score:
    """A parsed threshold.metric: `name` is f1_macro, f1, balanced_accuracy, mcc or recall_at_precision;
    `cls` the class index of f1:<label> and recall_at_precision; `min_precision` the latter's floor."""

    name: str
    cls: int | None = None
    min_precision: float | None = None


def parse_score(metric: str, labels: list[str], *, positive: int | None = None, min_precision: float | None = None, key: str = "threshold.metric") -> Score:
    """Turn a metric name into a Score; `f1:<label>` must name a label, recall_at_precision needs `positive`."""
    if metric.startswith("f1:"):
        label = metric[3:]
        if label not in labels:
            raise SkewtuneError(f"{key}: {metric!r} names class {label!r}, which is not a label; the labels are {labels}")
        return Score("f1", labels.index(label))
    if metric not in SCORE_NAMES:
        raise SkewtuneError(f"{key}: unknown metric {metric!r}; use f1_macro, f1:<label>, balanced_accuracy, mcc or recall_at_precision")
    if metric == "recall_at_precision":
        if positive is None or min_precision is None:
            raise SkewtuneError(
                f"{key}: recall_at_precision is defined for binary problems only (the recall of the positive class); "
                f"with {len(labels)} classes use f1_macro, f1:<label>, balanced_accuracy or mcc"
            )
        return Score(metric, positive, float(min_precision))
    return Score(metric)


def score_from_counts(tp: np.ndarray, pred: np.ndarray, true: np.ndarray, score: Score) -> np.ndarray:
    """Score every row of count arrays shaped (..., n_classes); returns shape (...).

    F1 of a class with no true and no predicted rows is 0 (sklearn's zero_division=0); balanced
    accuracy averages the recall of the classes present in y_true (as sklearn does); MCC is sklearn's
    multiclass formula. recall_at_precision is the positive class's recall where its precision reaches
    the floor, and 0 where it does not (every rule that reaches it has at least one true positive,
    so 0 ranks all infeasible rules below all feasible ones).
    """
    tp, pred, true = (np.asarray(a, dtype=np.float64) for a in (tp, pred, true))
    with np.errstate(divide="ignore", invalid="ignore"):
        if score.name in ("f1_macro", "f1"):
            denom = true + pred
            f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
            return f1.mean(axis=-1) if score.name == "f1_macro" else f1[..., score.cls]
        if score.name == "balanced_accuracy":
            present = true > 0
            recall = np.where(present, tp / np.where(present, true, 1), 0.0)
            return recall.sum(axis=-1) / present.sum(axis=-1)
        if score.name == "mcc":
            n = true.sum(axis=-1)
            cov_tp = tp.sum(axis=-1) * n - (true * pred).sum(axis=-1)
            cov_pp = n**2 - (pred * pred).sum(axis=-1)
            cov_tt = n**2 - (true * true).sum(axis=-1)
            denom = cov_tt * cov_pp
            return np.where(denom > 0, cov_tp / np.sqrt(np.where(denom > 0, denom, 1)), 0.0)
        # recall_at_precision
        tp_k, pred_k, true_k = tp[..., score.cls], pred[..., score.cls], true[..., score.cls]
        feasible = (pred_k > 0) & (tp_k >= score.min_precision * pred_k)
        return np.where(feasible & (true_k > 0), tp_k / np.where(true_k > 0, true_k, 1), 0.0)


def counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp, pred, true) count vectors of one labelling."""
    correct = y_true == y_pred
    return (
        np.bincount(y_true[correct], minlength=n_classes),
        np.bincount(y_pred, minlength=n_classes),
        np.bincount(y_true, minlength=n_classes),
    )


def score_labels(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, score: Score) -> float:
    return float(score_from_counts(*counts(y_true, y_pred, n_classes), score))


def _batched_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of many labellings at once: y arrays shaped (batch, n) -> count arrays (batch, n_classes)."""
    batch = y_true.shape[0]
    offset = (np.arange(batch) * n_classes)[:, None]

    def count(values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        flat = np.bincount((values + offset).ravel(), weights=None if weights is None else weights.ravel(), minlength=batch * n_classes)
        return flat.reshape(batch, n_classes)

    return count(y_true, y_true == y_pred), count(y_pred), count(y_true)


def _resampled_scores(y_true: np.ndarray, preds: list[np.ndarray], n_classes: int, score: Score, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap scores, shape (resamples, len(preds)): rows are resampled jointly for all labellings."""
    n = len(y_true)
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    out = np.empty((resamples, len(preds)))
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        for j, pred in enumerate(preds):
            out[start : start + len(idx), j] = score_from_counts(*_batched_counts(y_true[idx], pred[idx], n_classes), score)
    return out


def bootstrap_ci(y_true: np.ndarray, preds: list[np.ndarray], n_classes: int, *, resamples: int, confidence: float, seed: int, score: Score = Score("f1_macro")) -> list[tuple[float, float]]:
    """Percentile bootstrap CI of the score of each labelling in `preds` (same resampled rows for all)."""
    scores = _resampled_scores(y_true, preds, n_classes, score, resamples, np.random.default_rng(seed))
    alpha = 1 - confidence
    low, high = np.quantile(scores, [alpha / 2, 1 - alpha / 2], axis=0)
    return [(float(lo), float(hi)) for lo, hi in zip(low, high)]


def share_text(rate: float) -> str:
    """A share (a win rate) as a percentage floored to 0.1%, so that 0.995 reads 99.5% and 0.9996 reads 99.9%: never a
    100% rounded up from a rate below 1."""
    tenths = math.floor(round(rate * 1000, 6))  # round first: 0.995 * 1000 is 994.999... in floating point
    return f"{tenths // 10}%" if tenths % 10 == 0 else f"{tenths / 10:.1f}%"


def win_rate(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int, score: Score, *, resamples: int, seed: int) -> float:
    """Share of paired bootstrap resamples (rows drawn jointly for A and B) in which B scores strictly above A."""
    boot = _resampled_scores(y_true, [pred_a, pred_b], n_classes, score, resamples, np.random.default_rng(seed))
    return float(np.mean(boot[:, 1] > boot[:, 0]))


def collapse_message(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], remedies: str) -> str | None:
    """Why the model's val predictions count as collapsed onto one class, or None: a class predicted for at least
    COLLAPSE_SHARE of the rows, and more often than it is true (a 97% majority predicted 97% of the time is no collapse).
    `remedies`: skewtune.params.collapse_remedies of the run's params."""
    n = max(len(y_pred), 1)
    predicted = np.bincount(y_pred, minlength=len(labels)) / n
    true = np.bincount(y_true, minlength=len(labels)) / n
    top = int(np.argmax(predicted))
    if predicted[top] < COLLAPSE_SHARE or predicted[top] <= true[top]:
        return None
    return (
        f"the trained model predicts {labels[top]!r} for {predicted[top]:.0%} of the val rows ({true[top]:.0%} are {labels[top]!r}): "
        f"it collapsed onto one class and its scores are not a result. Remedies: {remedies}; see reports/train"
    )


# ---------------------------------------------------------------------------------------- test report


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


def evaluation_report(y_true: np.ndarray, probs: np.ndarray, y_chosen: np.ndarray, labels: list[str], *, rule: str, blend: float,
                      y_model: np.ndarray, positive: int | None, resamples: int, confidence: float, seed: int) -> dict:
    """reports/eval/test.json: the chosen rule (the one the classifier applies, on `probs`: the model's, blended with
    the baseline's at weight `blend`), argmax of the same `probs`, and the model alone (`y_model`: argmax of the
    fine-tuned model's own probabilities, no blend) side by side, per class, with confusion matrices;
    `review_metrics` picks the few numbers a reviewer compares."""
    n_classes = len(labels)
    y_argmax = probs.argmax(axis=1)
    ci_chosen, ci_argmax, ci_model = bootstrap_ci(y_true, [y_chosen, y_argmax, y_model], n_classes, resamples=resamples, confidence=confidence, seed=seed)
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
            label: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]), "f1_argmax": float(f1_a[k]), "support": int(support[k])}
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


BASELINE_KEYS = ("baseline_f1_macro", "baseline_f1_macro_ci_low", "baseline_f1_macro_ci_high", "vs_baseline", "vs_baseline_ci_low", "vs_baseline_ci_high")


def baseline_comparison(y_true: np.ndarray, y_chosen: np.ndarray, y_baseline: np.ndarray | None, n_classes: int, *, resamples: int, confidence: float, seed: int) -> dict:
    """The baseline's macro-F1 with its bootstrap CI, and the paired bootstrap difference chosen rule − baseline
    with its CI (rows resampled jointly); every value None without baseline predictions."""
    if y_baseline is None:
        return dict.fromkeys(BASELINE_KEYS)
    (low, high), = bootstrap_ci(y_true, [y_baseline], n_classes, resamples=resamples, confidence=confidence, seed=seed)
    diff = paired_comparison(y_true, y_baseline, y_chosen, n_classes, resamples=resamples, seed=seed, confidence=confidence)
    return dict(zip(BASELINE_KEYS, (diff.score_a, low, high, diff.diff, diff.ci_low, diff.ci_high)))


def vs_baseline_text(review: dict, confidence: float) -> str:
    """The chosen rule against the baseline in words, from review metrics with a baseline comparison: the paired
    difference, its CI and what the CI says."""
    low, high = review["vs_baseline_ci_low"], review["vs_baseline_ci_high"]
    verdict = "better than" if low > 0 else "worse than" if high < 0 else "not distinguishable from"
    return f"chosen rule − baseline {review['vs_baseline']:+.4f} [{low:+.4f}, {high:+.4f}]: {verdict} the baseline at {confidence:.0%}"


def review_metrics(report: dict, *, val_f1_macro: float, val_f1_macro_model: float) -> dict:
    """metrics/test.json, the one metrics file (`dvc exp show`, `dvc metrics diff`): the numbers a reviewer
    compares, headline first. The decision (`rule`, `blend`) stands beside the score it produced and the model
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
        "n_test": report["n_test"],
    }


def downsample(frame: pd.DataFrame, max_rows: int, keep: int | None = None) -> pd.DataFrame:
    """At most ~max_rows evenly spaced rows, always with the first, the last and row `keep`."""
    if len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    rows = set(np.linspace(0, len(frame) - 1, max_rows).round().astype(int).tolist())
    if keep is not None:
        rows.add(int(keep))
    return frame.iloc[sorted(rows)].reset_index(drop=True)


def ranking_curves(y_true: np.ndarray, probs: np.ndarray, labels: list[str], positive: int | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pr_curve, roc_curve) frames: of the positive class when binary, else one curve per class present in
    y_true; the class is the `series` column (one line each in the plot); each curve downsampled to about
    CURVE_POINTS / classes rows."""
    binary = positive is not None
    classes = [positive] if binary else range(len(labels))
    classes = [k for k in classes if 0 < np.sum(y_true == k) < len(y_true)]
    per_curve = CURVE_POINTS if binary else max(100, CURVE_POINTS // max(len(classes), 1))
    pr_parts, roc_parts = [], []
    for k in classes:
        precision, recall, pr_thr = precision_recall_curve(y_true == k, probs[:, k])
        # sklearn's last PR point (recall 0, precision 1) has no threshold
        pr = pd.DataFrame({"threshold": np.append(pr_thr, np.nan), "precision": precision, "recall": recall})
        fpr, tpr, roc_thr = roc_curve(y_true == k, probs[:, k])
        roc = pd.DataFrame({"threshold": roc_thr, "fpr": fpr, "tpr": tpr})
        for part, parts in ((pr, pr_parts), (roc, roc_parts)):
            parts.append(downsample(part, per_curve).assign(series=labels[k]))
    empty = pd.DataFrame(columns=["threshold", "series"])
    return (pd.concat(pr_parts, ignore_index=True) if pr_parts else empty, pd.concat(roc_parts, ignore_index=True) if roc_parts else empty)


# ----------------------------------------------------------------------------- comparing two runs


@dataclass(frozen=True)
class Comparison:
    score_a: float
    score_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    confidence: float
    resamples: int
    seed: int


def paired_comparison(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int, *, resamples: int, seed: int, confidence: float = 0.95) -> Comparison:
    """Macro-F1 of B minus A on the same rows, with a paired bootstrap (rows resampled jointly for A and B).

    The CI is the percentile interval of the resampled differences; the two-sided p-value is the
    same bootstrap's, 2 * min(P(diff* <= 0), P(diff* >= 0)) (capped at 1), so p < 1 - confidence
    exactly when the CI leaves out 0 and the verdict never contradicts the interval.
    """
    score = Score("f1_macro")
    a, b = score_labels(y_true, pred_a, n_classes, score), score_labels(y_true, pred_b, n_classes, score)
    boot = _resampled_scores(y_true, [pred_a, pred_b], n_classes, score, resamples, np.random.default_rng(seed))
    diffs = boot[:, 1] - boot[:, 0]
    alpha = 1 - confidence
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
    return Comparison(a, b, b - a, float(low), float(high), float(p), len(y_true), confidence, resamples, seed)


def comparison_markdown(c: Comparison, rev_a: str, rev_b: str, rule: str) -> str:
    """A pull-request comment: both scores, the difference with its CI and p-value, and a verdict."""
    pct = f"{c.confidence:.0%}"
    if c.ci_low > 0 or c.ci_high < 0:
        verdict = f"B is {'better' if c.diff > 0 else 'worse'} than A at {pct} (p = {c.p_value:.3g})."
    else:
        verdict = f"Not distinguishable from noise at {pct} (p = {c.p_value:.3g})."
    return "\n".join(
        [
            f"### skewtune: test macro-F1, `{rev_a}` vs `{rev_b}` ({rule})",
            "",
            "| | revision | macro-F1 |",
            "|---|---|---:|",
            f"| A | `{rev_a}` | {c.score_a:.4f} |",
            f"| B | `{rev_b}` | {c.score_b:.4f} |",
            f"| **B − A** | | **{c.diff:+.4f}** ({pct} CI {c.ci_low:+.4f} to {c.ci_high:+.4f}) |",
            "",
            f"n_test = {c.n}. Paired bootstrap over test rows ({c.resamples:,} resamples, seed {c.seed}): "
            f"percentile CI; two-sided p = 2·min(P(Δ* ≤ 0), P(Δ* ≥ 0)).",
            "",
            f"**Verdict:** {verdict}",
            "",
        ]
    )


def align_runs(a: pd.DataFrame, b: pd.DataFrame, name_a: str, name_b: str, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Pair two reports/eval/test_predictions.csv tables by id: (y_true, pred_a, pred_b, labels).

    Both must hold the same ids with the same true labels. Labels are those seen in either table,
    sorted (labels.json order); a label with no test row that neither run predicts is not seen, and
    would only add a 0 to every macro-F1 of reports/eval/test.json, so scores may differ there.
    """
    for name, table in ((name_a, a), (name_b, b)):
        missing = [c for c in ("id", "actual", column) if c not in table.columns]
        if missing:
            raise SkewtuneError(f"{name}: reports/eval/test_predictions.csv lacks column(s) {missing}; re-run the evaluate stage there")
        if table["id"].duplicated().any():
            raise SkewtuneError(f"{name}: reports/eval/test_predictions.csv repeats id {table['id'][table['id'].duplicated()].iloc[0]!r}")
    a, b = (t.assign(id=t["id"].astype(str)).set_index("id") for t in (a, b))
    only_a, only_b = a.index.difference(b.index), b.index.difference(a.index)
    if len(only_a) or len(only_b):
        example = only_a[0] if len(only_a) else only_b[0]
        raise SkewtuneError(
            f"{name_a} and {name_b} were evaluated on different test sets: {len(only_a)} id(s) only in {name_a}, "
            f"{len(only_b)} only in {name_b} (e.g. {example!r}); compare runs that share the test split"
        )
    b = b.loc[a.index]
    differ = a["actual"].astype(str).to_numpy() != b["actual"].astype(str).to_numpy()
    if differ.any():
        raise SkewtuneError(
            f"{name_a} and {name_b} were evaluated on different test sets: {int(differ.sum())} id(s) have different true labels "
            f"(e.g. id {a.index[differ][0]!r}: {a['actual'][differ].iloc[0]!r} vs {b['actual'][differ].iloc[0]!r})"
        )
    columns = [a["actual"], a[column], b[column]]
    labels = sorted(set().union(*(c.astype(str) for c in columns)))
    index = {label: k for k, label in enumerate(labels)}
    y, pa, pb = (c.astype(str).map(index).to_numpy(dtype=np.int64) for c in columns)
    return y, pa, pb, labels
