"""Calibration of class probabilities (`Calibration`): whether a 0.9 means 90%.

The pipeline's files hold probabilities, not logits, so a calibrator works on z = log p (`log_probs`):

- ``temperature``: softmax(z / T). Softmax is shift-invariant and log p is the logits less their log-sum-exp, a
  per-row constant, so this is exactly temperature scaling of the logits (Guo et al. 2017);
- ``vector``: softmax(scale * z + bias), a scale and a bias per class: vector scaling on log p, which is the
  diagonal form of Dirichlet calibration (Kull et al. 2019, "Beyond temperature scaling");
- ``none``: the probabilities as they are.

`fit_calibration` minimises the mean log loss on labelled rows (scipy's L-BFGS-B with the analytic gradient).
`choose_calibration` decides on val whether a calibrator is worth keeping: every candidate is judged out of fold
(stratified K-fold over the val rows, fitted on K - 1 folds, applied to the held-out one), its per-row log loss
paired with the uncalibrated one's in a bootstrap (`skewtune.decision.scores.loss_win_rate`), under the same guard
as the decision rule (threshold.min_confidence). `calibration_metrics` and `reliability_table` measure the result.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import brier_score_loss, log_loss

from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import significant
from skewtune.decision.folds import decision_folds
from skewtune.decision.scores import GUARD_RESAMPLES, GUARD_SEED, loss_win_rate, share_text

METHODS = ("none", "temperature", "vector")  # calibration.method also takes auto (skewtune.config.schema)
AUTO_CANDIDATES = ("temperature", "vector")

# Bounds of the fitted parameters: log(1/T) in [-10, 10] as scikit-learn's temperature scaling; a vector scale
# stays positive (it must not reverse a class's order) and finite where a class is separable on val.
_LOG_BETA_BOUND = 10.0
_SCALE_BOUNDS = (1e-3, 1e3)
_BIAS_BOUND = 1e3

ECE_BINS = 15

# log(0) would make the calibrators and offsets meaningless; the smallest normal double keeps the order of all others.
_TINY = np.finfo(np.float64).tiny


def log_probs(probs: np.ndarray) -> np.ndarray:
    """log p with 0 mapped to a finite floor, as the offsets rule and the calibrators read probabilities."""
    return np.log(np.maximum(probs, _TINY))


def finite_number(value: Any) -> bool:
    """A JSON number that is neither NaN nor infinite (Python's json reads NaN and Infinity); not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(values: Any, n: int, low: float = -math.inf) -> bool:
    return isinstance(values, list) and len(values) == n and all(finite_number(v) and v > low for v in values)


@dataclass(frozen=True)
class Calibration:
    """A fitted calibrator (see the module doc): `temperature` for method temperature, `scale` and `bias` (one
    per class, in label order) for vector."""

    method: str = "none"
    temperature: float | None = None
    scale: tuple[float, ...] | None = None
    bias: tuple[float, ...] | None = None

    @classmethod
    def from_dict(cls, raw: Any, n_classes: int, where: str) -> "Calibration":
        """The calibrator of a JSON object (other keys, such as how it was chosen, are ignored), checked; None: none."""
        if raw is None:
            return IDENTITY
        method = raw.get("method") if isinstance(raw, dict) else None
        ok = method in METHODS
        if method == "temperature":
            ok = finite_number(raw.get("temperature")) and raw["temperature"] > 0
        elif method == "vector":
            ok = _numbers(raw.get("scale"), n_classes, 0.0) and _numbers(raw.get("bias"), n_classes)
        if not ok:
            raise SkewtuneError(
                f"{where}: not a valid calibration ({_shown(raw)}: method none, temperature with a finite temperature "
                f"above 0, or vector with {n_classes} finite scales above 0 and {n_classes} finite biases); "
                "re-run tune_threshold"
            )
        if method == "temperature":
            return cls(method, temperature=float(raw["temperature"]))
        if method == "vector":
            return cls(method, scale=tuple(map(float, raw["scale"])), bias=tuple(map(float, raw["bias"])))
        return IDENTITY

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "temperature": self.temperature,
            "scale": None if self.scale is None else list(self.scale),
            "bias": None if self.bias is None else list(self.bias),
        }

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """The calibrated probabilities of rows [n, classes]; method none returns `probs` itself."""
        if self.method == "none":
            return probs
        z = log_probs(np.asarray(probs, dtype=np.float64))
        if self.method == "temperature":
            return softmax(z / self.temperature, axis=1)
        return softmax(z * np.asarray(self.scale) + np.asarray(self.bias), axis=1)

    def describe(self) -> str:
        if self.method == "temperature":
            return f"temperature scaling (T = {self.temperature:.4g})"
        if self.method == "vector":
            return "vector scaling (a scale and a bias per class on log p)"
        return "none"


IDENTITY = Calibration()


def _shown(raw: Any) -> str:
    return f"{raw!r:.120}"


def calibrations_from_dict(raw: Any, n_classes: int, where: str) -> tuple[Calibration, Calibration]:
    """(the model's, the baseline's) calibrators of a decision's `calibration` object; absent (a decision written
    before calibration) or null: none for both."""
    if raw is None:
        return IDENTITY, IDENTITY
    if not isinstance(raw, dict):
        raise SkewtuneError(
            f"{where}: calibration must be an object with the model's and the baseline's calibrator, got {_shown(raw)}; "
            "re-run tune_threshold"
        )
    return tuple(
        Calibration.from_dict(raw.get(source), n_classes, f"{where}: calibration.{source}")
        for source in ("model", "baseline")
    )


# ------------------------------------------------------------------------------------------ fitting


def _unpack(method: str, theta: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale per class, bias per class) of the parameter vector: temperature has one, log(1/T)."""
    if method == "temperature":
        return np.full(k, math.exp(theta[0])), np.zeros(k)
    return theta[:k], theta[k:]


def _loss_and_grad(theta: np.ndarray, method: str, z: np.ndarray, onehot: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean log loss of softmax(scale * z + bias) and its gradient in `theta`."""
    n, k = z.shape
    scale, bias = _unpack(method, theta, k)
    logq = log_softmax(z * scale + bias, axis=1)
    loss = -float(np.sum(logq * onehot)) / n
    residual = (np.exp(logq) - onehot) / n  # d loss / d logits
    d_scale = np.sum(residual * z, axis=0)
    if method == "temperature":
        return loss, np.array([float(np.sum(d_scale * scale))])  # chain rule through scale = exp(theta)
    return loss, np.concatenate([d_scale, residual.sum(axis=0)])


def fit_calibration(method: str, probs: np.ndarray, y: np.ndarray) -> Calibration:
    """The calibrator of `method` that minimises the mean log loss of the rows (`probs` [n, classes], true class
    indices `y`)."""
    if method == "none":
        return IDENTITY
    z = log_probs(np.asarray(probs, dtype=np.float64))
    k = z.shape[1]
    onehot = np.eye(k)[y]
    if method == "temperature":
        start, bounds = np.zeros(1), [(-_LOG_BETA_BOUND, _LOG_BETA_BOUND)]
    else:
        start = np.concatenate([np.ones(k), np.zeros(k)])
        bounds = [_SCALE_BOUNDS] * k + [(-_BIAS_BOUND, _BIAS_BOUND)] * k
    result = minimize(_loss_and_grad, start, args=(method, z, onehot), jac=True, method="L-BFGS-B", bounds=bounds)
    # Rounded as decision.json writes them (skewtune.core.outputs.significant), so that the blend and the rule are
    # tuned on exactly the probabilities that every later stage computes from the file.
    if method == "temperature":
        return Calibration(method, temperature=significant(math.exp(-result.x[0])))
    bias = result.x[k:] - result.x[k:].mean()  # softmax ignores a common shift: the centred biases read best
    return Calibration(method, scale=tuple(significant(result.x[:k].tolist())), bias=tuple(significant(bias.tolist())))


def row_log_loss(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """-log p(true class) of each row."""
    return -log_probs(probs[np.arange(len(y)), y])


def out_of_fold(method: str, probs: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Every row's probabilities calibrated by `method` fitted on the rows of the other folds (`folds`: each row's)."""
    out = np.empty_like(probs, dtype=np.float64)
    for fold in np.unique(folds):
        held_out = folds == fold
        out[held_out] = fit_calibration(method, probs[~held_out], y[~held_out]).apply(probs[held_out])
    return out


def choose_calibration(
    setting: str, probs: np.ndarray, y: np.ndarray, *, min_confidence: float, source: str = "the model"
) -> tuple[Calibration, dict]:
    """The calibrator of calibration.method `setting` for val probabilities `probs` of `source`, and the record
    decision.json keeps of the choice (see the module doc). auto tries AUTO_CANDIDATES and keeps the one with the
    lower out-of-fold log loss only if it beats the uncalibrated probabilities in at least `min_confidence` of
    paired bootstrap resamples; a method set by hand is always used (`worse` says when it did not help out of fold).
    The calibrator kept is refitted on all rows."""
    if setting not in (*METHODS, "auto"):
        raise SkewtuneError(f"calibration.method: unknown method {setting!r}; use auto, none, temperature or vector")
    probs = np.asarray(probs, dtype=np.float64)
    before = row_log_loss(probs, y)
    record = {"setting": setting, "folds": None, "oof_log_loss_before": float(before.mean())}
    if setting == "none":
        return IDENTITY, {
            **record,
            **IDENTITY.to_dict(),
            "candidate": None,
            "kept": False,
            "why": "calibration.method: none",
        }
    assignment = decision_folds(y)
    folds = int(assignment.max()) + 1
    tried = {
        m: row_log_loss(out_of_fold(m, probs, y, assignment), y)
        for m in (AUTO_CANDIDATES if setting == "auto" else (setting,))
    }
    candidate = min(tried, key=lambda m: tried[m].mean())  # ties: the simpler, temperature
    after = tried[candidate]
    wins = loss_win_rate(before, after, resamples=GUARD_RESAMPLES, seed=GUARD_SEED)
    record.update(
        folds=folds,
        oof_log_loss_tried={m: float(losses.mean()) for m, losses in tried.items()},
        candidate=candidate,
        oof_log_loss_after=float(after.mean()),
        win_rate=wins,
    )
    figures = (
        f"out-of-fold log loss of {source} on the decision rows {record['oof_log_loss_before']:.4f} uncalibrated, "
        f"{record['oof_log_loss_after']:.4f} with {candidate} ({folds} folds); lower in {share_text(wins)} of paired "
        "bootstrap resamples"
    )
    kept = bool(setting != "auto" or (after.mean() < before.mean() and wins >= min_confidence))
    if setting != "auto":
        why = f"calibration.method: {setting}, used as set; {figures}"
    elif kept:
        why = f"auto: {candidate} kept: {figures}, at least threshold.min_confidence {min_confidence:g}"
    else:
        why = f"auto: {candidate} not kept: {figures}, below threshold.min_confidence {min_confidence:g}"
    calibration = fit_calibration(candidate, probs, y) if kept else IDENTITY
    record.update(calibration.to_dict(), kept=kept, worse=bool(after.mean() > before.mean()), why=why)
    return calibration, record


def calibration_warnings(calibration: dict | None) -> list[str]:
    """One line per calibrator set by hand (calibration.method temperature or vector) of decision.json's `calibration`
    that made out-of-fold log loss worse: something to change. A calibrator that auto did not keep is no warning (the
    probabilities were calibrated enough; tune_threshold prints auto's `why` as information)."""
    lines = []
    for source in ("model", "baseline"):
        record = (calibration or {}).get(source)
        if not record or record.get("candidate") is None:
            continue
        if record["setting"] != "auto" and record["worse"]:
            lines.append(f"{source} calibration made out-of-fold log loss worse: {record['why']}")
    return lines


# ----------------------------------------------------------------------------------------- measuring


def _bins(confidence: np.ndarray) -> np.ndarray:
    """The bin of each confidence among ECE_BINS equal-width bins (lo, hi] of [0, 1] (0 in the first)."""
    return np.clip(np.ceil(confidence * ECE_BINS).astype(int) - 1, 0, ECE_BINS - 1)


def _binned(confidence: np.ndarray, hit: np.ndarray) -> pd.DataFrame:
    """Per non-empty bin: mean confidence, observed frequency of `hit`, rows."""
    frame = pd.DataFrame({"bin": _bins(confidence), "confidence": confidence, "frequency": hit.astype(np.float64)})
    grouped = frame.groupby("bin").agg(
        confidence=("confidence", "mean"), frequency=("frequency", "mean"), rows=("bin", "size")
    )
    return grouped.reset_index()


def _ece(confidence: np.ndarray, hit: np.ndarray) -> float:
    table = _binned(confidence, hit)
    return float(np.sum(table["rows"] * np.abs(table["confidence"] - table["frequency"])) / len(confidence))


def _normalised(probs: np.ndarray) -> np.ndarray:
    """Rows summing to 1 exactly (written as float32, they do so only within skewtune.decision.rule.ROW_SUM_TOLERANCE)."""
    probs = np.asarray(probs, dtype=np.float64)
    return probs / probs.sum(axis=1, keepdims=True)


def calibration_metrics(y: np.ndarray, probs: np.ndarray) -> dict:
    """Top-label ECE (the most probable class's probability against how often it is right, ECE_BINS equal-width
    bins), classwise ECE (the mean over classes of each class's ECE; Kull et al. 2019), the Brier score (mean over
    rows of the summed squared differences to the one-hot truth) and the log loss, of rows `probs` with true `y`."""
    probs = _normalised(probs)
    k = probs.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        brier = brier_score_loss(y, probs, labels=list(range(k)), scale_by_half=False)
    return {
        "ece": _ece(probs.max(axis=1), probs.argmax(axis=1) == y),
        "ece_classwise": float(np.mean([_ece(probs[:, c], y == c) for c in range(k)])),
        "brier": float(brier),
        "log_loss": float(log_loss(y, probs, labels=list(range(k)))),
    }


RELIABILITY_COLUMNS = ["curve", "series", "confidence", "frequency", "rows"]
TOP_LABEL = "top label"


def reliability_table(y: np.ndarray, curves: dict[str, np.ndarray], labels: list[str]) -> pd.DataFrame:
    """The reliability diagram's points: per curve (e.g. uncalibrated, calibrated: a panel each in the plot) and
    series (the top label, and each class when multiclass: its probability against how often it is the true class),
    per non-empty bin the mean confidence, the observed frequency and the rows (.dvc/plots/reliability.json draws
    the diagonal of perfect calibration)."""
    parts = []
    for name, probs in curves.items():
        probs = _normalised(probs)
        parts.append(_binned(probs.max(axis=1), probs.argmax(axis=1) == y).assign(curve=name, series=TOP_LABEL))
        if len(labels) > 2:
            parts += [_binned(probs[:, c], y == c).assign(curve=name, series=label) for c, label in enumerate(labels)]
    return pd.concat(parts, ignore_index=True)[RELIABILITY_COLUMNS]
