"""Scores of predicted labels (macro-F1 and the other selection scores), their bootstrap intervals and curves."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from skewtune.core.errors import SkewtuneError

SCORE_NAMES = ("f1_macro", "balanced_accuracy", "mcc", "recall_at_precision")

# A share of val predictions in one class at or above this (and above that class's true share) is a collapse.
COLLAPSE_SHARE = 0.95
CURVE_POINTS = 500

# The paired bootstrap that decides whether a tuned rule, a blend or a calibrator is kept (fixed, so that a decision
# is reproducible).
GUARD_RESAMPLES = 1000
GUARD_SEED = 0

# Resamples are drawn in chunks so that memory stays near this many row indices at once.
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Score:
    """A parsed threshold.metric: `name` is f1_macro, f1, balanced_accuracy, mcc or recall_at_precision;
    `cls` the class index of f1:<label> and recall_at_precision; `min_precision` the latter's floor."""

    name: str
    cls: int | None = None
    min_precision: float | None = None


def parse_score(
    metric: str,
    labels: list[str],
    *,
    positive: int | None = None,
    min_precision: float | None = None,
    key: str = "threshold.metric",
) -> Score:
    """Turn a metric name into a Score; `f1:<label>` must name a label, recall_at_precision needs `positive`."""
    if metric.startswith("f1:"):
        label = metric[3:]
        if label not in labels:
            raise SkewtuneError(
                f"{key}: {metric!r} names class {label!r}, which is not a label; the labels are {labels}"
            )
        return Score("f1", labels.index(label))
    if metric not in SCORE_NAMES:
        raise SkewtuneError(
            f"{key}: unknown metric {metric!r}; use f1_macro, f1:<label>, balanced_accuracy, mcc or recall_at_precision"
        )
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


def _batched_counts(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of many labellings at once: y arrays shaped (batch, n) -> count arrays (batch, n_classes)."""
    batch = y_true.shape[0]
    offset = (np.arange(batch) * n_classes)[:, None]

    def count(values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        flat = np.bincount(
            (values + offset).ravel(), weights=None if weights is None else weights.ravel(), minlength=batch * n_classes
        )
        return flat.reshape(batch, n_classes)

    return count(y_true, y_true == y_pred), count(y_pred), count(y_true)


def _resampled_scores(
    y_true: np.ndarray, preds: list[np.ndarray], n_classes: int, score: Score, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap scores, shape (resamples, len(preds)): rows are resampled jointly for all labellings."""
    out = np.empty((resamples, len(preds)))
    for start, idx in _resampled_rows(len(y_true), resamples, rng):
        for j, pred in enumerate(preds):
            out[start : start + len(idx), j] = score_from_counts(
                *_batched_counts(y_true[idx], pred[idx], n_classes), score
            )
    return out


def _resampled_rows(n: int, resamples: int, rng: np.random.Generator):
    """(first resample, row indices [chunk, n]) of `resamples` bootstrap resamples of n rows, drawn in chunks."""
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, resamples, chunk):
        yield start, rng.integers(0, n, size=(min(chunk, resamples - start), n))


def bootstrap_ci(
    y_true: np.ndarray,
    preds: list[np.ndarray],
    n_classes: int,
    *,
    resamples: int,
    confidence: float,
    seed: int,
    score: Score = Score("f1_macro"),
) -> list[tuple[float, float]]:
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


def win_rate(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    n_classes: int,
    score: Score,
    *,
    resamples: int,
    seed: int,
) -> float:
    """Share of paired bootstrap resamples (rows drawn jointly for A and B) in which B scores strictly above A."""
    boot = _resampled_scores(y_true, [pred_a, pred_b], n_classes, score, resamples, np.random.default_rng(seed))
    return float(np.mean(boot[:, 1] > boot[:, 0]))


def loss_win_rate(loss_a: np.ndarray, loss_b: np.ndarray, *, resamples: int, seed: int) -> float:
    """Share of paired bootstrap resamples (rows drawn jointly) in which the mean per-row loss of B is strictly below
    A's: win_rate for losses (a calibrator's log loss against the uncalibrated one's)."""
    gain = np.asarray(loss_a, dtype=np.float64) - np.asarray(loss_b, dtype=np.float64)
    wins = sum(
        int(np.sum(gain[idx].mean(axis=1) > 0))
        for _, idx in _resampled_rows(len(gain), resamples, np.random.default_rng(seed))
    )
    return wins / resamples


def collapse_message(
    y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], remedies: str, rows: str = "val"
) -> str | None:
    """Why the model's predictions of the decision rows (`rows` names them: val, or the out-of-fold rows of train.cv)
    count as collapsed onto one class, or None: a class predicted for at least COLLAPSE_SHARE of the rows, and more often
    than it is true (a 97% majority predicted 97% of the time is no collapse). `remedies`:
    skewtune.config.effective.collapse_remedies of the run's params."""
    n = max(len(y_pred), 1)
    predicted = np.bincount(y_pred, minlength=len(labels)) / n
    true = np.bincount(y_true, minlength=len(labels)) / n
    top = int(np.argmax(predicted))
    if predicted[top] < COLLAPSE_SHARE or predicted[top] <= true[top]:
        return None
    return (
        f"the trained model predicts {labels[top]!r} for {predicted[top]:.0%} of the {rows} rows ({true[top]:.0%} are "
        f"{labels[top]!r}): "
        f"it collapsed onto one class and its scores are not a result. Remedies: {remedies}; see reports/train"
    )


def downsample(frame: pd.DataFrame, max_rows: int, keep: int | None = None) -> pd.DataFrame:
    """At most ~max_rows evenly spaced rows, always with the first, the last and row `keep`."""
    if len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    rows = set(np.linspace(0, len(frame) - 1, max_rows).round().astype(int).tolist())
    if keep is not None:
        rows.add(int(keep))
    return frame.iloc[sorted(rows)].reset_index(drop=True)


def ranking_curves(
    y_true: np.ndarray, probs: np.ndarray, labels: list[str], positive: int | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
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
    return (
        pd.concat(pr_parts, ignore_index=True) if pr_parts else empty,
        pd.concat(roc_parts, ignore_index=True) if roc_parts else empty,
    )
