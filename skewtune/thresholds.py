"""Decision rules tuned on validation probabilities, and the readers of the files they are made from.

A decision rule turns a row of class probabilities into a class index:

- ``argmax``: the most probable class (ties: the lowest index, as np.argmax);
- ``threshold`` (binary): the positive class when ``p(positive) >= threshold``, else the other class;
- ``offsets`` (multiclass): ``argmax(log p + offsets)``, one additive offset per class.

Binary tuning is an exact search. Sorting the distinct positive-class probabilities u_0 < ... < u_{m-1}
once, every rule "positive when p >= t" predicts the same rows as one of m + 1 candidates:
t = 0 (everything positive), the midpoints between consecutive distinct probabilities, and a value
above the largest probability (nothing positive): midway between it and 1, or just above 1.
Cumulative counts score all candidates in one vectorised pass; among equal best scores the
threshold closest to 0.5 wins.

Multiclass tuning is coordinate ascent over the offsets, starting at 0 (= argmax). With the other
offsets fixed, row i moves to class k exactly when offset_k > c_i = max_{j != k}(log p_ij + offset_j)
- log p_ik, so one coordinate is searched exactly over the midpoints between the sorted c_i (plus one
value below and one above all of them), again with cumulative counts. A coordinate changes only on
a strict improvement (ties: the smallest |offset|); sweeps over all classes repeat until one
changes nothing. Each change raises the score, so it stops, deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from skewtune.errors import SkewtuneError
from skewtune.io import read_json, read_table
from skewtune.metrics import Score, downsample, parse_score, score_from_counts, score_labels, win_rate

# log(0) would make offsets meaningless; the smallest normal double keeps the order of all others.
_TINY = np.finfo(np.float64).tiny
_TIE = 1e-12
MAX_SWEEPS = 50
# The paired bootstrap that decides whether a tuned rule is kept (fixed, so that a decision is reproducible).
GUARD_RESAMPLES = 1000
GUARD_SEED = 0
ROW_SUM_TOLERANCE = 1e-3

# ------------------------------------------------------------------------------------------ inputs


def _row(frame: pd.DataFrame, i: int) -> str:
    return f"data row {i + 1} (id {frame['id'].iloc[i]!r})"


@dataclass(frozen=True)
class Predictions:
    """A prediction file: ids (str), true class indices and probabilities (n, n_classes) in label order."""

    ids: np.ndarray
    y: np.ndarray
    probs: np.ndarray


def read_predictions(path: str | Path, labels: list[str]) -> Predictions:
    """Read and check data/predictions/<split>.parquet: id, label, one prob:<label> column per label."""
    path = Path(path)
    frame = read_table(path, "predict")
    missing = [c for c in ("id", "label") if c not in frame.columns]
    if missing:
        raise SkewtuneError(f"{path}: missing column(s) {missing}; the predict stage writes id, label and prob:<label> columns")
    expected = [f"prob:{label}" for label in labels]
    found = [c for c in frame.columns if str(c).startswith("prob:")]
    if set(found) != set(expected):
        raise SkewtuneError(
            f"{path}: its probability columns {found} do not match the labels of labels.json {labels} "
            f"(missing {sorted(set(expected) - set(found))}, unexpected {sorted(set(found) - set(expected))}); "
            "re-run the predict stage with the current model and labels"
        )
    if frame.empty:
        raise SkewtuneError(f"{path}: has no rows; re-run the split and predict stages")
    if frame["id"].isna().any():
        raise SkewtuneError(f"{path}: data row {int(np.flatnonzero(frame['id'].isna())[0]) + 1} has no id")
    duplicated = frame["id"].duplicated()
    if duplicated.any():
        raise SkewtuneError(f"{path}: id {frame['id'][duplicated].iloc[0]!r} occurs more than once; ids must be unique")
    unknown = ~frame["label"].isin(labels)
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise SkewtuneError(f"{path}: {_row(frame, i)} has label {frame['label'].iloc[i]!r}, which is not in labels.json {labels}")
    try:
        probs = frame[expected].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SkewtuneError(f"{path}: prob: columns must be numbers ({exc})") from None
    bad = ~np.isfinite(probs)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise SkewtuneError(f"{path}: {_row(frame, i)} has {probs[i, j]} in column {expected[j]!r}; probabilities must be finite numbers")
    bad = (probs < 0) | (probs > 1 + ROW_SUM_TOLERANCE)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise SkewtuneError(f"{path}: {_row(frame, i)} has probability {probs[i, j]} in column {expected[j]!r}, outside [0, 1]")
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1) > ROW_SUM_TOLERANCE
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise SkewtuneError(
            f"{path}: the probabilities of {_row(frame, i)} sum to {sums[i]:.6g}, not 1 "
            f"({int(off.sum())} such rows); the predict stage must write softmax probabilities"
        )
    return Predictions(frame["id"].astype(str).to_numpy(dtype=object), frame["label"].map({l: k for k, l in enumerate(labels)}).to_numpy(dtype=np.int64), probs)


def read_texts(path: str | Path, ids: np.ndarray) -> pd.DataFrame:
    """id, text[, text_pair] of the split file at `path`, in the order of `ids` (every id must be there)."""
    path = Path(path)
    frame = read_table(path, "split")
    missing = [c for c in ("id", "text") if c not in frame.columns]
    if missing:
        raise SkewtuneError(f"{path}: missing column(s) {missing}; re-run the split stage")
    columns = ["id", "text"] + (["text_pair"] if "text_pair" in frame.columns else [])
    table = frame[columns].assign(id=frame["id"].astype(str)).drop_duplicates("id").set_index("id")
    absent = pd.Index(ids).difference(table.index)
    if len(absent):
        raise SkewtuneError(
            f"{path}: {len(absent)} prediction id(s) are not in it (e.g. {absent[0]!r}): the predictions were made "
            "on another split; re-run the predict stage"
        )
    return table.loc[list(ids)].reset_index()


def read_decision(path: str | Path, labels: list[str]) -> dict:
    """metrics/decision.json, checked against the labels it is applied with."""
    decision = read_json(path, "tune_threshold")
    if not isinstance(decision, dict) or decision.get("labels") != labels:
        got = decision.get("labels") if isinstance(decision, dict) else decision
        raise SkewtuneError(f"{path}: made for labels {got!r}, but labels.json has {labels}; re-run the tune_threshold stage")
    _check_decision(decision, str(path))
    return decision


def _check_decision(decision: dict, where: str) -> None:
    strategy = decision.get("strategy")
    labels = decision["labels"]
    if strategy == "threshold":
        ok = len(labels) == 2 and decision.get("positive_label") in labels and isinstance(decision.get("threshold"), (int, float))
    elif strategy == "offsets":
        offsets = decision.get("offsets")
        ok = isinstance(offsets, list) and len(offsets) == len(labels) and all(isinstance(v, (int, float)) for v in offsets)
    else:
        ok = strategy == "argmax"
    if not ok:
        raise SkewtuneError(
            f"{where}: not a valid decision rule (strategy {strategy!r}: 'threshold' needs 2 labels, positive_label "
            "and a numeric threshold; 'offsets' one number per label; or 'argmax'); re-run the tune_threshold stage"
        )


# ------------------------------------------------------------------------------------------- rules


def apply_decision(probs: np.ndarray, decision: dict) -> np.ndarray:
    """Class indices that the decision rule of metrics/decision.json predicts for rows of probabilities."""
    _check_decision(decision, "decision")
    probs = np.asarray(probs, dtype=np.float64)
    labels = decision["labels"]
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise SkewtuneError(f"decision: made for {len(labels)} classes {labels}, but the probabilities have shape {probs.shape}")
    if decision["strategy"] == "threshold":
        pos = labels.index(decision["positive_label"])
        return np.where(probs[:, pos] >= decision["threshold"], pos, 1 - pos)
    if decision["strategy"] == "offsets":
        return np.argmax(np.log(np.maximum(probs, _TINY)) + np.asarray(decision["offsets"], dtype=np.float64), axis=1)
    return np.argmax(probs, axis=1)


def _between(u: np.ndarray) -> np.ndarray:
    """Midpoints of consecutive sorted distinct values, each strictly above the lower one."""
    mid = u[:-1] + (u[1:] - u[:-1]) / 2
    return np.where(mid > u[:-1], mid, u[1:])


def _pick(scores: np.ndarray, candidates: np.ndarray, target: float) -> int:
    """Index of the best score; among (float-)equal best ones, the candidate closest to `target`."""
    tied = np.flatnonzero(scores >= scores.max() - _TIE)
    return int(tied[np.argmin(np.abs(candidates[tied] - target))])


def threshold_curve(y: np.ndarray, p_pos: np.ndarray, pos: int, score: Score) -> pd.DataFrame:
    """Every distinct binary rule "positive when p >= threshold" (see the module doc), scored:
    threshold, score, precision and recall of the positive class, in rising threshold order."""
    u, inverse = np.unique(p_pos, return_inverse=True)
    is_pos = y == pos
    # candidate j < m predicts positive the rows with p >= u[j]; candidate m predicts none
    tp = np.append(np.cumsum(np.bincount(inverse, weights=is_pos, minlength=len(u))[::-1])[::-1], 0)
    pp = np.append(np.cumsum(np.bincount(inverse, minlength=len(u))[::-1])[::-1], 0)
    upper = u[-1] + (1 - u[-1]) / 2
    upper = upper if upper > u[-1] else np.nextafter(u[-1], np.inf)
    thresholds = np.concatenate([[0.0], _between(u), [upper]])
    n, n_pos = len(y), int(is_pos.sum())
    true = np.zeros(2)
    true[pos], true[1 - pos] = n_pos, n - n_pos
    tp_counts = np.empty((len(tp), 2))
    pred = np.empty((len(tp), 2))
    tp_counts[:, pos], tp_counts[:, 1 - pos] = tp, (n - n_pos) - (pp - tp)
    pred[:, pos], pred[:, 1 - pos] = pp, n - pp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pp > 0, tp / np.where(pp > 0, pp, 1), np.nan)
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "score": score_from_counts(tp_counts, pred, true, score),
            "precision": precision,
            "recall": tp / max(n_pos, 1),
        }
    )


def tune_offsets(y: np.ndarray, probs: np.ndarray, score: Score, labels: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Per-class log-probability offsets by exact coordinate ascent (see the module doc).

    Returns the offsets and one row per coordinate step: sweep, class, offset, score.
    """
    n, k_classes = probs.shape
    logp = np.log(np.maximum(probs, _TINY))
    true = np.bincount(y, minlength=k_classes)
    offsets = np.zeros(k_classes)
    current = score_labels(y, np.argmax(logp, axis=1), k_classes, score)
    steps = [{"sweep": 0, "class": None, "offset": 0.0, "score": current}]
    rows = np.arange(n)
    for sweep in range(1, MAX_SWEEPS + 1):
        changed = False
        for k in range(k_classes):
            others = logp + offsets
            others[:, k] = -np.inf
            runner = np.argmax(others, axis=1)
            cut = others[rows, runner] - logp[:, k]
            order = np.argsort(cut, kind="stable")
            u, first = np.unique(cut[order], return_index=True)
            candidates = np.concatenate([[u[0] - 1], _between(u), [u[-1] + 1]])
            moved = np.append(first, n)  # rows sent to k by each candidate: those with cut below it
            r_sorted, y_sorted = runner[order], y[order]
            # counts when no row goes to k, then the change as sorted rows move one by one to k
            delta_tp = np.zeros((n + 1, k_classes))
            delta_pred = np.zeros((n + 1, k_classes))
            delta_tp[rows + 1, r_sorted] -= y_sorted == r_sorted
            delta_tp[rows + 1, k] += y_sorted == k
            delta_pred[rows + 1, r_sorted] -= 1
            delta_pred[rows + 1, k] += 1
            base_tp = np.bincount(runner[runner == y], minlength=k_classes)
            base_pred = np.bincount(runner, minlength=k_classes)
            scores = score_from_counts(
                base_tp + np.cumsum(delta_tp, axis=0)[moved], base_pred + np.cumsum(delta_pred, axis=0)[moved], true, score
            )
            best = _pick(scores, candidates, 0.0)
            if scores[best] > current + _TIE:
                offsets[k], current, changed = candidates[best], float(scores[best]), True
            steps.append({"sweep": sweep, "class": labels[k], "offset": float(offsets[k]), "score": current})
        if not changed:
            break
    return offsets, pd.DataFrame(steps)


def resolve_positive(labels: list[str], y: np.ndarray, positive_label: str | None) -> int | None:
    """Binary: the index of threshold.positive_label, or of the rarest class in `y` (ties: the first
    label). Multiclass: None (positive_label must then be null)."""
    if positive_label is not None and positive_label not in labels:
        raise SkewtuneError(f"threshold.positive_label: {positive_label!r} is not a label; the labels are {labels}")
    if len(labels) != 2:
        if positive_label is not None:
            raise SkewtuneError(f"threshold.positive_label: applies to binary problems only, and there are {len(labels)} labels {labels}; set it to null")
        return None
    if positive_label is not None:
        return labels.index(positive_label)
    return int(np.argmin(np.bincount(y, minlength=2)))


def tune_decision(
    y: np.ndarray, probs: np.ndarray, labels: list[str], *, strategy: str, metric: str, min_precision: float,
    positive_label: str | None, min_confidence: float,
) -> tuple[dict, pd.DataFrame]:
    """Choose the decision rule on validation rows; returns (metrics/decision.json, val curve frame).

    strategy "argmax" keeps argmax (the binary curve is still reported); "tune" thresholds the
    positive class (binary) or tunes per-class offsets (multiclass) to maximise `metric`, and keeps
    the tuned rule only if it scores above argmax in at least `min_confidence` of paired bootstrap
    resamples of val (0: always). On few val rows of a class the best threshold is often a fluke of
    a handful of rows, and does worse than argmax on new data; `win_rate` and `tuned_*` record the
    tuned rule either way.
    """
    if not 0 <= min_confidence < 1:
        raise SkewtuneError(f"threshold.min_confidence is {min_confidence!r}; use a share in [0, 1), e.g. 0.95 (0 keeps every tuned rule)")
    if strategy not in ("tune", "argmax"):
        raise SkewtuneError(f"threshold.strategy: unknown strategy {strategy!r}; use tune or argmax")
    k_classes = len(labels)
    pos = resolve_positive(labels, y, positive_label)
    score = parse_score(metric, labels, positive=pos, min_precision=min_precision)
    val_counts = np.bincount(y, minlength=k_classes)
    decision = {"strategy": "argmax", "labels": list(labels), "metric": metric, "positive_label": None if pos is None else labels[pos], "threshold": None, "offsets": None}
    argmax_score = score_labels(y, np.argmax(probs, axis=1), k_classes, score)

    if pos is not None:
        if val_counts.min() == 0:
            raise SkewtuneError(
                f"the validation predictions have no row of class {labels[int(np.argmin(val_counts))]!r}, so no threshold "
                "can be tuned; enlarge split.val_size or set threshold.strategy: argmax"
            )
        curve = threshold_curve(y, probs[:, pos], pos, score)
        best = _pick(curve["score"].to_numpy(), curve["threshold"].to_numpy(), 0.5)
        if strategy == "tune":
            if score.name == "recall_at_precision" and curve["score"].iloc[best] <= 0:
                raise SkewtuneError(
                    f"threshold.min_precision: no threshold reaches a precision of {min_precision} for {labels[pos]!r} on val; "
                    f"the best reachable is {np.nanmax(curve['precision'].to_numpy()):.4f}: lower threshold.min_precision or choose another threshold.metric"
                )
            decision.update(strategy="threshold", threshold=float(curve["threshold"].iloc[best]))
        curve = downsample(curve, 500, keep=best)
    elif strategy == "tune":
        offsets, curve = tune_offsets(y, probs, score, labels)
        decision.update(strategy="offsets", offsets=[float(v) for v in offsets])
    else:
        curve = pd.DataFrame([{"sweep": 0, "class": None, "offset": 0.0, "score": argmax_score}])

    decision.update(tuned_threshold=decision["threshold"], tuned_offsets=decision["offsets"], win_rate=None)
    if decision["strategy"] != "argmax":
        tuned = apply_decision(probs, decision)
        decision["tuned_val_score"] = score_labels(y, tuned, k_classes, score)
        decision["win_rate"] = win_rate(y, np.argmax(probs, axis=1), tuned, k_classes, score, resamples=GUARD_RESAMPLES, seed=GUARD_SEED)
        if decision["win_rate"] < min_confidence:
            decision.update(strategy="argmax", threshold=None, offsets=None)
    decision["val_score"] = score_labels(y, apply_decision(probs, decision), k_classes, score)
    decision["val_score_argmax"] = argmax_score
    return decision, curve


def chosen_point(decision: dict) -> pd.DataFrame:
    """The chosen rule as one (threshold, score) row, to mark it on the val curve plot. Binary argmax
    is the threshold 0.5; multiclass offsets have no single threshold (NaN)."""
    threshold = decision["threshold"]
    if threshold is None:
        threshold = 0.5 if len(decision["labels"]) == 2 else float("nan")
    return pd.DataFrame({"threshold": [threshold], "score": [decision["val_score"]]})
