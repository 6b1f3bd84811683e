"""Tuning the decision rule (`skewtune.decision.rule.DecisionRule`: argmax, a binary threshold or
multiclass offsets) on validation probabilities.

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

import numpy as np
import pandas as pd

from skewtune.core.errors import SkewtuneError
from skewtune.decision.folds import decision_folds
from skewtune.decision.guard import out_of_sample
from skewtune.decision.rule import DecisionRule, log_probs
from skewtune.decision.scores import (
    GUARD_RESAMPLES,
    GUARD_SEED,
    Score,
    downsample,
    parse_score,
    score_from_counts,
    score_labels,
    share_text,
    win_rate,
)

_TIE = 1e-12
MAX_SWEEPS = 50

# Significant digits of a tuned threshold or offset where the rows of val allow it (see _readable).
READABLE_DIGITS = 6

# The keys of a decision that hold tuned values: written as they are (already short, see _readable), since
# rounding them further could move a threshold past a val probability.
TUNED_VALUES = ("threshold", "offsets", "tuned_threshold", "tuned_offsets")


def _between(u: np.ndarray) -> np.ndarray:
    """Midpoints of consecutive sorted distinct values, each strictly above the lower one."""
    mid = u[:-1] + (u[1:] - u[:-1]) / 2
    return np.where(mid > u[:-1], mid, u[1:])


def _intervals(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate j of the m + 1 (see the module doc) makes the same predictions anywhere in (low_j, high_j] =
    (u[j-1], u[j]], with u[-1] = -inf and u[m] = +inf."""
    return np.concatenate([[-np.inf], u]), np.concatenate([u, [np.inf]])


def _readable(values: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """Each value replaced by the nearest value of its interval (low, high] with READABLE_DIGITS significant
    digits, or with more where the interval is narrower: the same predictions on val, and a chosen threshold
    that reads well and does not change in its 7th digit when another CPU computes the same model."""
    out = np.asarray(values, dtype=np.float64).copy()
    todo = np.arange(len(out))
    for digits in range(READABLE_DIGITS, 18):
        rounded = np.array([float(f"{v:.{digits}g}") for v in out[todo]])
        fits = (rounded > lows[todo]) & (rounded <= highs[todo])
        out[todo[fits]] = rounded[fits]
        todo = todo[~fits]
        if not len(todo):
            break
    return out


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
    thresholds = _readable(np.concatenate([[0.0], _between(u), [upper]]), *_intervals(u))
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
    logp = log_probs(probs)
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
                base_tp + np.cumsum(delta_tp, axis=0)[moved],
                base_pred + np.cumsum(delta_pred, axis=0)[moved],
                true,
                score,
            )
            best = _pick(scores, candidates, 0.0)
            if scores[best] > current + _TIE:
                lows, highs = _intervals(u)
                offsets[k] = _readable(candidates[best : best + 1], lows[best : best + 1], highs[best : best + 1])[0]
                current, changed = float(scores[best]), True
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
            raise SkewtuneError(
                f"threshold.positive_label: applies to binary problems only, and there are {len(labels)} labels {labels}; set it to null"
            )
        return None
    if positive_label is not None:
        return labels.index(positive_label)
    return int(np.argmin(np.bincount(y, minlength=2)))


def tune_decision(
    y: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    *,
    strategy: str,
    metric: str,
    min_precision: float,
    positive_label: str | None,
    min_confidence: float,
    folds: np.ndarray | None = None,
    guard: bool = True,
) -> tuple[dict, pd.DataFrame]:
    """Choose the decision rule on the decision rows (val, or the out-of-fold rows of train.cv); returns
    (reports/threshold/decision.json, val curve frame).

    strategy "argmax" keeps argmax (the binary curve is still reported); "tune" thresholds the
    positive class (binary) or tunes per-class offsets (multiclass) to maximise `metric`, and keeps
    the tuned rule only if its out-of-sample decisions (skewtune.decision.guard: tuned on the other `folds`, each
    row's fold; None: decision_folds of the rows) score above argmax in at least `min_confidence` of paired bootstrap
    resamples (0: always). On few rows of a class the best threshold is often a fluke of a handful of rows, and does
    worse than argmax on new data; `win_rate` and `tuned_*` record the tuned rule either way. `guard` False: the
    tuned rule is kept unjudged (what the guard itself tunes on each fold's complement).
    """
    if not 0 <= min_confidence < 1:
        raise SkewtuneError(
            f"threshold.min_confidence is {min_confidence!r}; use a share in [0, 1), e.g. 0.95 (0 keeps every tuned rule)"
        )
    if strategy not in ("tune", "argmax"):
        raise SkewtuneError(f"threshold.strategy: unknown strategy {strategy!r}; use tune or argmax")
    k_classes = len(labels)
    pos = resolve_positive(labels, y, positive_label)
    score = parse_score(metric, labels, positive=pos, min_precision=min_precision)
    val_counts = np.bincount(y, minlength=k_classes)
    decision = {
        "strategy": "argmax",
        "labels": list(labels),
        "metric": metric,
        "positive_label": None if pos is None else labels[pos],
        "threshold": None,
        "offsets": None,
        "min_confidence": min_confidence,
    }
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
                    f"the best reachable is {np.nanmax(curve['precision'].to_numpy()):.4f}: lower "
                    "threshold.min_precision or choose another threshold.metric"
                )
            decision.update(strategy="threshold", threshold=float(curve["threshold"].iloc[best]))
        curve = downsample(curve, 500, keep=best)
    elif strategy == "tune":
        offsets, curve = tune_offsets(y, probs, score, labels)
        decision.update(strategy="offsets", offsets=[float(v) for v in offsets])
    else:
        curve = pd.DataFrame([{"sweep": 0, "class": None, "offset": 0.0, "score": argmax_score}])

    decision.update(
        tuned_threshold=decision["threshold"],
        tuned_offsets=decision["offsets"],
        win_rate=None,
        guard_folds=None,
        tuned_out_of_sample_score=None,
    )
    if decision["strategy"] != "argmax":
        tuned = DecisionRule.from_dict(decision).predict(probs)
        decision["tuned_val_score"] = score_labels(y, tuned, k_classes, score)
    if decision["strategy"] != "argmax" and guard:
        folds = decision_folds(y) if folds is None else folds
        settings = dict(strategy=strategy, metric=metric, min_precision=min_precision, positive_label=positive_label)

        def decide(tuning: np.ndarray, held_out: np.ndarray) -> np.ndarray:
            rule, _ = tune_decision(y[tuning], probs[tuning], labels, **settings, min_confidence=0, guard=False)
            return DecisionRule.from_dict(rule).predict(probs[held_out])

        argmax = np.argmax(probs, axis=1)
        outside = out_of_sample(folds, argmax, decide)
        decision["guard_folds"] = int(folds.max()) + 1
        decision["tuned_out_of_sample_score"] = score_labels(y, outside, k_classes, score)
        decision["win_rate"] = win_rate(
            y, argmax, outside, k_classes, score, resamples=GUARD_RESAMPLES, seed=GUARD_SEED
        )
        if decision["win_rate"] < min_confidence:
            decision.update(strategy="argmax", threshold=None, offsets=None)
    decision["val_score"] = score_labels(y, DecisionRule.from_dict(decision).predict(probs), k_classes, score)
    decision["val_score_argmax"] = argmax_score
    return decision, curve


# The baseline weights that decision.blend: auto tries: 0.1, 0.2, ..., 1.0 (1: the baseline alone).
BLEND_WEIGHTS = tuple(k / 10 for k in range(1, 11))


def _best_blend(
    y: np.ndarray, probs: np.ndarray, baseline_probs: np.ndarray, labels: list[str], weights, tuning: dict
) -> tuple[float, dict, pd.DataFrame]:
    """(weight, its decision, its curve) of the weight whose own tuned rule scores best (ties: the smaller weight)."""
    best = None
    for weight in weights:
        blended, blended_curve = tune_decision(y, (1 - weight) * probs + weight * baseline_probs, labels, **tuning)
        if best is None or blended["val_score"] > best[1]["val_score"] + _TIE:
            best = weight, blended, blended_curve
    return best


def tune_blended_decision(
    y: np.ndarray,
    probs: np.ndarray,
    baseline_probs: np.ndarray | None,
    labels: list[str],
    *,
    blend: str | float,
    folds: np.ndarray | None = None,
    **tuning,
) -> tuple[dict, pd.DataFrame]:
    """tune_decision, with the baseline's probabilities blended in when that pays on the decision rows.

    The model alone gets its rule (tune_decision with `tuning`). Each candidate weight w (decision.blend:
    auto tries BLEND_WEIGHTS, a number tries itself) gets its own rule tuned the same way on
    p = (1 - w) * probs + w * baseline_probs, and the best on the rows is the blend. `auto` keeps it only if
    it scores above the model's own rule on the rows and passes the out-of-sample guard (skewtune.decision.guard): on
    each of the `folds` (None: decision_folds of the rows), the weight and both rules chosen on the other folds, the
    blend's decisions of the held-out rows beat the model's own rule's in at least threshold.min_confidence of paired
    bootstrap resamples. A fixed weight is kept as asked (its win rate is recorded).
    Without baseline probabilities (baseline disabled or not fitted) or with `off`, the model decides alone.
    """
    folds = decision_folds(y) if folds is None else folds
    alone, curve = tune_decision(y, probs, labels, folds=folds, **tuning)
    record = {
        "blend": 0.0,
        "blend_setting": blend,
        "blend_weight_tried": None,
        "blend_val_score": None,
        "blend_win_rate": None,
        "val_score_model": alone["val_score"],
    }
    if baseline_probs is None or blend == "off":
        return {**alone, **record}, curve
    weights = BLEND_WEIGHTS if blend == "auto" else (float(blend),)
    weight, blended, blended_curve = _best_blend(y, probs, baseline_probs, labels, weights, {**tuning, "folds": folds})
    k_classes = len(labels)
    score = parse_score(
        tuning["metric"],
        labels,
        positive=resolve_positive(labels, y, tuning["positive_label"]),
        min_precision=tuning["min_precision"],
    )
    unjudged = {**tuning, "min_confidence": 0, "guard": False}

    def decide(rows: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        own, _ = tune_decision(y[rows], probs[rows], labels, **unjudged)
        w, mixed, _ = _best_blend(y[rows], probs[rows], baseline_probs[rows], labels, weights, unjudged)
        return np.stack(
            [
                DecisionRule.from_dict(own).predict(probs[held_out]),
                DecisionRule.from_dict(mixed).predict((1 - w) * probs[held_out] + w * baseline_probs[held_out]),
            ]
        )

    argmax = np.argmax(probs, axis=1)
    own, mixed = out_of_sample(folds, np.stack([argmax, argmax]), decide)
    wins = win_rate(y, own, mixed, k_classes, score, resamples=GUARD_RESAMPLES, seed=GUARD_SEED)
    record.update(blend_weight_tried=weight, blend_val_score=blended["val_score"], blend_win_rate=wins)
    if blend == "auto" and (blended["val_score"] <= alone["val_score"] + _TIE or wins < tuning["min_confidence"]):
        return {**alone, **record}, curve
    record["blend"] = weight
    return {**blended, **record}, blended_curve


def rows_name(decision: dict) -> str:
    """What a decision's scores are of, in a word: val, or out-of-fold (train.cv's rows of train + val); a decision
    written before decision_rows was recorded: val."""
    return "out-of-fold" if decision.get("decision_rows", "val").startswith("out-of-fold") else "val"


def guard_refusals(decision: dict) -> list[str]:
    """One line per candidate that scored higher on val than what was applied, yet was refused by the guard
    (threshold.min_confidence): a tuned rule that did not beat argmax often enough, and a blend with the baseline
    (decision.blend: auto) that did not beat the model alone often enough. `decision` is decision.json; one written
    before the guard was recorded names the key without its value."""
    guard = "threshold.min_confidence" + (
        f" {decision['min_confidence']:g}" if decision.get("min_confidence") is not None else ""
    )
    metric = f"{rows_name(decision)} {decision['metric']}"
    lines = []
    if (
        decision.get("win_rate") is not None
        and decision["strategy"] == "argmax"
        and decision["tuned_val_score"] > decision["val_score_argmax"] + _TIE
    ):
        tuned = f"threshold {decision['tuned_threshold']:.4g}" if decision["tuned_threshold"] is not None else "offsets"
        lines.append(
            f"the tuned {tuned} ({metric} {decision['tuned_val_score']:.4f} against argmax's "
            f"{decision['val_score_argmax']:.4f}) was refused "
            f"by {guard}: out of sample it beat argmax in only {share_text(decision['win_rate'])} of bootstrap resamples"
        )
    if (
        decision.get("blend_setting") == "auto"
        and not decision.get("blend")
        and decision.get("blend_weight_tried") is not None
        and decision["blend_val_score"] > decision["val_score_model"] + _TIE
    ):
        lines.append(
            f"the baseline blend at weight {decision['blend_weight_tried']:g} ({metric} "
            f"{decision['blend_val_score']:.4f} against the model "
            f"alone's {decision['val_score_model']:.4f}) was refused by {guard}: out of sample it beat the model alone in "
            f"only {share_text(decision['blend_win_rate'])} of bootstrap resamples"
        )
    return lines
