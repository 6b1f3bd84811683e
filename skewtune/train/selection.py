"""The checkpoint selection metric: which val score picks the best epoch, and the Trainer's compute_metrics for it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import f1_score

from skewtune.config.schema import parse_metric_expression
from skewtune.core.errors import SkewtuneError


@dataclass(frozen=True)
class Selection:
    """The parsed train.select_metric: weighted per-class or macro F1 terms, or the val loss."""

    expression: str
    terms: tuple[tuple[float, int | None], ...]  # (weight, class index); None is macro-F1
    is_loss: bool

    @property
    def metric_for_best_model(self) -> str:
        return "loss" if self.is_loss else "selection"


def parse_selection(expression: str, labels: Sequence[str]) -> Selection:
    try:
        terms = parse_metric_expression(expression)
    except ValueError as exc:
        raise SkewtuneError(f"train.select_metric: {exc}") from None
    if terms == [(1.0, "loss")]:
        return Selection(expression, (), True)
    parsed = []
    for weight, name in terms:
        if name.startswith("f1:"):
            label = name[3:]
            if label not in labels:
                raise SkewtuneError(
                    f"train.select_metric: {name!r} names the class {label!r}, which is not a label; the labels are {', '.join(labels)}"
                )
            parsed.append((weight, list(labels).index(label)))
        elif name == "f1_macro":
            parsed.append((weight, None))
        else:
            raise SkewtuneError(
                f"train.select_metric: {name!r} cannot be used in a weighted sum; use f1_macro and f1:<label> terms"
            )
    return Selection(expression, tuple(parsed), False)


def metric_key(label: str) -> str:
    """A label as part of a metric name (a dvclive file name): path separators and blanks replaced."""
    return re.sub(r'[\\/:*?"<>|\s]', "_", label)


def per_class_scores(y_true, y_pred, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(F1 per class, the share of the rows predicted as each class) of predicted class ids: what every train.method
    reports on val (the curves of reports/train/plots/custom)."""
    y_pred = np.asarray(y_pred)
    per_class = f1_score(y_true, y_pred, labels=list(range(n_classes)), average=None, zero_division=0)
    return per_class, np.bincount(y_pred, minlength=n_classes) / max(len(y_pred), 1)


def make_compute_metrics(labels: Sequence[str], selection: Selection) -> Callable:
    """Validation metrics: macro-F1, F1 per class, the share of predictions per class and the selection score."""

    def compute_metrics(prediction) -> dict[str, float]:
        y_pred = np.asarray(prediction.predictions).argmax(axis=-1)
        per_class, share = per_class_scores(np.asarray(prediction.label_ids), y_pred, len(labels))
        metrics = {"f1_macro": float(per_class.mean())}
        metrics.update({f"f1:{metric_key(label)}": float(per_class[i]) for i, label in enumerate(labels)})
        metrics.update({f"share:{metric_key(label)}": float(share[i]) for i, label in enumerate(labels)})
        if not selection.is_loss:
            metrics["selection"] = float(
                sum(w * (metrics["f1_macro"] if c is None else per_class[c]) for w, c in selection.terms)
            )
        return metrics

    return compute_metrics
