"""The decision rule (`DecisionRule`) turns class probabilities into one class:

- ``argmax``: the most probable class (ties: the lowest index, as np.argmax);
- ``threshold`` (binary): the positive class when ``p(positive) >= threshold``, else the other class;
- ``offsets`` (multiclass): ``argmax(log p + offsets)``, one additive offset per class.

Under a threshold or offsets the predicted class need not be the most probable one: that is what they are for
(a rare class predicted at p = 0.3). `DecisionRule.margin`, a row's distance to the boundary, is a probability gap
under every rule.

The rule decides on calibrated probabilities (`DecisionRule.combine`): the model's, through its calibrator
(`skewtune.decision.calibration.Calibration`; none in a decision written before calibration). With a ``blend``
weight w above 0, p is ``(1 - w) * p(model) + w * p(baseline)``, each source calibrated by its own calibrator first:
the transformer's probabilities averaged with the linear baseline's, and the rule applies to that.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from skewtune.core.errors import SkewtuneError
from skewtune.decision.calibration import IDENTITY, Calibration, calibrations_from_dict, finite_number, log_probs

# Probabilities written as float32 may sum to 1 only within this.
ROW_SUM_TOLERANCE = 1e-3


def valid_labels(labels: Any) -> bool:
    return (
        isinstance(labels, list)
        and len(labels) >= 2
        and all(isinstance(v, str) for v in labels)
        and len(set(labels)) == len(labels)
    )


# The highest threshold a rule may have: the float just above 1, which tune_threshold chooses to predict no row positive
# when some probability is exactly 1 (skewtune.decision.tuning.threshold_curve).
_ABOVE_ONE = float(np.nextafter(1.0, 2.0))


@dataclass(frozen=True)
class DecisionRule:
    """How rows of class probabilities (in `labels` order) become class indices (see the module doc).

    `positive_label` is the thresholded class of a binary problem; an argmax rule keeps it too, since
    evaluation ranks rows by its probability.
    """

    strategy: str
    labels: tuple[str, ...]
    positive_label: str | None = None
    threshold: float | None = None
    offsets: tuple[float, ...] | None = None
    blend: float = 0.0
    calibration: Calibration = IDENTITY
    baseline_calibration: Calibration = IDENTITY

    @classmethod
    def from_dict(cls, raw: Any, where: str = "decision") -> "DecisionRule":
        """The rule of a decision mapping (other keys, such as how it was tuned, are ignored), checked."""
        labels = raw.get("labels") if isinstance(raw, dict) else None
        strategy = raw.get("strategy") if isinstance(raw, dict) else None
        ok = valid_labels(labels)
        if ok and strategy == "threshold":
            ok = (
                len(labels) == 2
                and raw.get("positive_label") in labels
                and finite_number(raw.get("threshold"))
                and 0 <= raw["threshold"] <= _ABOVE_ONE
            )
        elif ok and strategy == "offsets":
            offsets = raw.get("offsets")
            ok = isinstance(offsets, list) and len(offsets) == len(labels) and all(map(finite_number, offsets))
        elif ok:
            ok = strategy == "argmax" and raw.get("positive_label") in (None, *labels)
        blend = raw.get("blend", 0.0) if isinstance(raw, dict) else None  # absent in rules written before blending
        ok = ok and finite_number(blend) and 0 <= blend <= 1
        if not ok:
            raise SkewtuneError(
                f"{where}: not a valid decision rule (strategy {strategy!r}: 'threshold' needs 2 labels, positive_label "
                "and a threshold in [0, 1]; 'offsets' one finite number per label; or 'argmax'; blend a weight in [0, 1]); "
                "re-run the tune_threshold stage"
            )
        calibration, baseline_calibration = calibrations_from_dict(raw.get("calibration"), len(labels), where)
        return cls(
            strategy=strategy,
            labels=tuple(labels),
            positive_label=raw.get("positive_label"),
            threshold=float(raw["threshold"]) if strategy == "threshold" else None,
            offsets=tuple(float(v) for v in raw["offsets"]) if strategy == "offsets" else None,
            blend=float(blend),
            calibration=calibration,
            baseline_calibration=baseline_calibration,
        )

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "labels": list(self.labels),
            "positive_label": self.positive_label,
            "threshold": self.threshold,
            "offsets": None if self.offsets is None else list(self.offsets),
            "blend": self.blend,
            "calibration": {"model": self.calibration.to_dict(), "baseline": self.baseline_calibration.to_dict()},
        }

    def combine(self, probs: np.ndarray, baseline_probs: np.ndarray | None) -> np.ndarray:
        """The probabilities the rule decides on: the model's calibrated, averaged with the baseline's calibrated at
        weight `blend`."""
        calibrated = self.calibration.apply(self._checked(probs))
        if not self.blend:
            return calibrated
        if baseline_probs is None:
            raise SkewtuneError(
                f"decision: the rule blends in the baseline (weight {self.blend:g}), but no baseline probabilities were given"
            )
        return (1 - self.blend) * calibrated + self.blend * self.baseline_calibration.apply(
            self._checked(baseline_probs)
        )

    def uncalibrated(self) -> "DecisionRule":
        """The same rule without calibration: what it would decide on had no calibrator been fitted."""
        return replace(self, calibration=IDENTITY, baseline_calibration=IDENTITY)

    @property
    def positive(self) -> int | None:
        """The class index of positive_label (None without one)."""
        return None if self.positive_label is None else self.labels.index(self.positive_label)

    def _checked(self, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != len(self.labels):
            raise SkewtuneError(
                f"decision: made for {len(self.labels)} classes {list(self.labels)}, but the probabilities have shape {probs.shape}"
            )
        return probs

    def _scores(self, probs: np.ndarray) -> np.ndarray:
        """What argmax is taken of: probabilities, or log p + offsets."""
        return probs if self.offsets is None else log_probs(probs) + np.asarray(self.offsets, dtype=np.float64)

    def predict(self, probs: np.ndarray) -> np.ndarray:
        """Class indices for rows of probabilities [n, classes] in label order."""
        probs = self._checked(probs)
        if self.strategy == "threshold":
            pos = self.positive
            return np.where(probs[:, pos] >= self.threshold, pos, 1 - pos)
        return np.argmax(self._scores(probs), axis=1)

    def _adjusted(self, probs: np.ndarray) -> np.ndarray:
        """The probabilities an argmax or offsets rule takes the argmax of: p itself, or with the offsets applied
        (p x e^offset per class, renormalised: softmax(log p + offsets)), whose argmax is the predicted class."""
        scores = self._scores(self._checked(probs))
        if self.offsets is None:
            return scores
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def margin(self, probs: np.ndarray) -> np.ndarray:
        """Each row's distance to the rule's decision boundary, a probability gap in [0, 1] (0: on it; small:
        uncertain): |p(positive) - threshold| for a threshold rule, else the gap between the two highest
        probabilities, with the offsets applied for an offsets rule (`_adjusted`)."""
        probs = self._checked(probs)
        if self.strategy == "threshold":
            return np.abs(probs[:, self.positive] - self.threshold)
        top_two = np.sort(self._adjusted(probs), axis=1)[:, -2:]
        return top_two[:, 1] - top_two[:, 0]

    def describe(self) -> str:
        """One line for people: the rule in words."""
        if self.strategy == "threshold":
            text = f"{self.positive_label!r} when p({self.positive_label}) >= {self.threshold:.6g}, else {self.labels[1 - self.positive]!r}"
        elif self.strategy == "offsets":
            shifted = ", ".join(f"{label} {offset:+.4g}" for label, offset in zip(self.labels, self.offsets))
            text = f"argmax of log p + per-class offsets ({shifted})"
        else:
            text = "argmax: the most probable class"
        if self.blend:
            text += f"; p = {1 - self.blend:.2g} x the model's + {self.blend:.2g} x the TF-IDF baseline's probabilities"
        sources = [(self.calibration, "the model's")] + (
            [(self.baseline_calibration, "the baseline's")] if self.blend else []
        )
        calibrated = [f"{who} by {c.describe()}" for c, who in sources if c.method != "none"]
        if calibrated:
            text += "; calibrated: " + ", ".join(calibrated)
        return text
