"""Class-imbalance losses for the Trainer's `compute_loss_func`, plus the class-weight schemes they use.

Every loss returned by `build_loss` is called as `loss(logits, labels, num_items_in_batch)` and returns
the SUM of the per-row losses divided by `num_items_in_batch` (by the number of counted rows when it is
None). transformers' Trainer counts the labelled rows of all micro-batches of one optimiser step, passes
that count to every micro-batch, and does not divide by the accumulation steps itself when a
`compute_loss_func` is set; so summing the micro-batch gradients gives exactly the gradient of one large
batch. Rows labelled -100 (the transformers convention) are ignored and not counted.

All four losses share one form (p = softmax of the, possibly shifted, logits; q = the target
distribution, one-hot or label-smoothed as torch does it: (1 - s) * one_hot + s / C):

    loss_i = w[y_i] * (1 - p_iy) ** gamma * sum_k q_ik * (-log p_ik)

- ce:             w = 1, gamma = 0
- weighted_ce:    w = class weight of the true class, gamma = 0
- focal:          w = alpha (or 1), gamma = gamma (Lin et al. 2017); without smoothing this is the published
                  -alpha_t (1 - p_t) ** gamma log p_t, with gamma = 0 and no alpha it is ce. With smoothing the
                  focal factor of the true class scales the whole smoothed cross-entropy (the common form,
                  e.g. FocalLabelSmoothCE implementations): a per-class factor inside the sum would instead weigh each
                  smoothing term by its own (1 - p_k) ** gamma, which pulls the optimal p_t down to ~0.80 at
                  gamma = 2, s = 0.05 on two classes, far more smoothing than asked for.
                  A single number alpha (Lin et al.'s convention, binary only) is the weight of the positive
                  class, the second in labels.json order (1 of 0/1, spam of ham/spam), and 1 - alpha the other's.
- logit_adjusted: ce on logits + tau * log(prior) (Menon et al. 2021), prior = class_counts / sum
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skewtune.config.schema import WEIGHT_SCHEMES, LossParams
from skewtune.core.errors import SkewtuneError
from skewtune.models.text import classifier_head

IGNORE_INDEX = -100


def _order(labels: Sequence[str] | None) -> str:
    return f" (labels.json order: {', '.join(map(str, labels))})" if labels is not None else ""


def _counts(class_counts: Sequence[int], labels: Sequence[str] | None) -> np.ndarray:
    """The per-class training row counts as an int array, checked (zeros allowed here)."""
    try:
        counts = np.asarray(class_counts, dtype=np.float64)
    except (TypeError, ValueError):
        raise SkewtuneError(
            f"class_counts must be non-negative whole numbers, one per class; got {class_counts!r}"
        ) from None
    if (
        counts.ndim != 1
        or counts.size < 2
        or not np.all(np.isfinite(counts))
        or np.any(counts < 0)
        or np.any(counts % 1)
    ):
        raise SkewtuneError(
            f"class_counts must be non-negative whole numbers, one per class (at least 2 classes); got {list(class_counts)!r}"
        )
    if labels is not None and len(labels) != counts.size:
        raise SkewtuneError(
            f"{len(labels)} labels ({', '.join(map(str, labels))}) but {counts.size} class counts; pass one count per label"
        )
    return counts.astype(np.int64)


def _require_rows(counts: np.ndarray, labels: Sequence[str] | None, what: str) -> None:
    """Class weights and priors are undefined for a class without training rows."""
    empty = [str(labels[i]) if labels is not None else str(i) for i in np.flatnonzero(counts == 0)]
    if empty:
        raise SkewtuneError(
            f"class {', '.join(empty)} has no training rows, so {what} is undefined{_order(labels)}; every class needs "
            "at least one training row (check data.label_map and the split), or give loss.class_weights / loss.alpha as an explicit list"
        )


def _explicit(values: Sequence[float], key: str, n_classes: int, labels: Sequence[str] | None) -> np.ndarray:
    """A user-given list of per-class numbers (class weights or focal alphas): one positive number per class."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise SkewtuneError(
            f"{key} must be a list of positive numbers, one per class{_order(labels)}; got {values!r}"
        ) from None
    if array.ndim != 1:
        raise SkewtuneError(
            f"{key} must be a flat list of positive numbers, one per class{_order(labels)}; got {values!r}"
        )
    if array.size != n_classes:
        raise SkewtuneError(
            f"{key} has {array.size} values but there are {n_classes} classes{_order(labels)}; give one value per class in that order"
        )
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise SkewtuneError(f"{key} must hold positive numbers; got {list(values)!r}")
    return array


def class_weights(
    class_counts: Sequence[int], scheme: str | Sequence[float], beta: float = 0.999, labels: Sequence[str] | None = None
) -> np.ndarray:
    """One float64 weight per class from the training row counts n_c (n rows, C classes).

    - "balanced": n / (C * n_c), as sklearn's compute_class_weight("balanced").
    - "inverse_sqrt": proportional to 1 / sqrt(n_c), scaled so that the count-weighted mean
      sum_c n_c * w_c / n is 1 (as it is for "balanced"): the average row keeps weight 1, so the
      loss scale, and with it the learning rate, stays comparable to plain ce.
    - "effective_number" (Cui et al. 2019): (1 - beta) / (1 - beta ** n_c), scaled to sum to C as in the paper.
    - a list: used as given (one positive number per class, labels.json order).
    `labels` (class names in labels.json order) only make error messages clearer.
    """
    counts = _counts(class_counts, labels)
    if not isinstance(scheme, str):
        return _explicit(scheme, "loss.class_weights", counts.size, labels)
    if scheme not in WEIGHT_SCHEMES:
        raise SkewtuneError(
            f"loss.class_weights is {scheme!r}; use balanced, inverse_sqrt, effective_number, or a list of one positive number per class"
        )
    _require_rows(counts, labels, f"the {scheme!r} class weight")
    n, n_classes = counts.sum(), counts.size
    if scheme == "balanced":
        return n / (n_classes * counts.astype(np.float64))
    if scheme == "inverse_sqrt":
        root = np.sqrt(counts.astype(np.float64))
        return n / (root.sum() * root)
    if not 0 <= beta < 1:
        raise SkewtuneError(f"loss.beta is {beta!r}; effective_number needs 0 <= beta < 1 (typically 0.9 to 0.9999)")
    # 1 - beta**n_c as -expm1(n_c * log beta): exact even for beta very close to 1. beta = 0 weighs all classes 1.
    effective = -np.expm1(counts * np.log(beta)) if beta > 0 else np.ones(n_classes)
    weights = (1.0 - beta) / effective
    return weights * n_classes / weights.sum()


def _focal_alpha(
    alpha: str | float | Sequence[float] | None, counts: np.ndarray, beta: float, labels: Sequence[str] | None
) -> np.ndarray | None:
    """The per-class focal alpha of loss.alpha (see the module doc), or None."""
    if alpha is None:
        return None
    if alpha == "balanced":
        return class_weights(counts, "balanced", beta, labels)
    if isinstance(alpha, float):
        if counts.size != 2:
            raise SkewtuneError(
                f"loss.alpha is {alpha}, a single number, which weighs the positive class of a binary task; "
                f"there are {counts.size} classes{_order(labels)}: give a list of one alpha per class or balanced"
            )
        return np.array([1.0 - alpha, alpha])
    return _explicit(alpha, "loss.alpha", counts.size, labels)


def build_loss(settings: LossParams, *, class_counts: Sequence[int], labels: Sequence[str] | None = None) -> LossFn:
    """The loss of the validated `loss` params as `loss(logits [N, C], labels [N], num_items_in_batch) -> scalar`
    (see the module doc). class_counts: training rows per class in labels.json order (the prior and the weight
    schemes use it); settings that the chosen loss does not read are not used."""
    name, gamma, tau, smoothing = settings.name, settings.gamma, settings.tau, settings.label_smoothing
    counts = _counts(class_counts, labels)
    n_classes = counts.size

    label_names = labels  # the returned function's own `labels` argument is the batch's class ids
    row_weight = shift = None  # float32 tensors of length C, or None when not used
    focus = gamma if name == "focal" else 0.0
    weights = None
    if name == "weighted_ce":
        weights = class_weights(counts, settings.class_weights, settings.beta, labels)
    elif name == "focal":
        weights = _focal_alpha(settings.alpha, counts, settings.beta, labels)
    if weights is not None:
        row_weight = torch.tensor(weights, dtype=torch.float32)
    if name == "logit_adjusted" and tau > 0:
        _require_rows(counts, labels, "the class prior's logarithm (logit_adjusted)")
        shift = torch.tensor(tau * np.log(counts / counts.sum()), dtype=torch.float32)

    def loss(
        logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None
    ) -> torch.Tensor:
        if logits.ndim != 2 or logits.shape[1] != n_classes or labels.shape != logits.shape[:1]:
            raise SkewtuneError(
                f"the loss needs logits of shape [rows, {n_classes}] and labels of shape [rows]{_order(label_names)}; "
                f"got logits {tuple(logits.shape)} and labels {tuple(labels.shape)}: does the model's num_labels match labels.json?"
            )
        # float32 at least: half-precision log-probabilities lose the small differences the loss is made of.
        z = logits.to(torch.promote_types(logits.dtype, torch.float32))
        counted = labels != IGNORE_INDEX
        # A bad class id would otherwise surface as an index error (a device-side assert on CUDA). Checked on the
        # host where the labels are already there; on a GPU reading them would make the host wait for the GPU at
        # every step, so the check stays on the device there (the labels were checked against labels.json when read).
        invalid = ((labels < 0) & counted) | (labels >= n_classes)
        if labels.device.type != "cpu":
            torch._assert_async(
                ~invalid.any(), f"labels must be class ids 0..{n_classes - 1} or {IGNORE_INDEX} (ignored)"
            )
        elif bool(invalid.any()):
            raise SkewtuneError(
                f"labels must be class ids 0..{n_classes - 1} or {IGNORE_INDEX} (ignored); got {labels.unique().tolist()}"
            )
        target = torch.where(counted, labels, 0).long()
        if shift is not None:
            z = z + shift.to(z)
        log_p = F.log_softmax(z, dim=-1)
        log_p_true = log_p.gather(1, target[:, None]).squeeze(1)
        per_row = -log_p_true
        if smoothing > 0:
            # torch's label smoothing: target distribution (1 - s) * one_hot + s / C.
            per_row = (1.0 - smoothing) * per_row - smoothing * log_p.mean(dim=1)
        if focus > 0:
            # 1 - p as -expm1(log p) keeps its precision when p is near 1; the clamp keeps the gradient of
            # (1 - p) ** gamma finite (gamma < 1) where p rounds to exactly 1.
            per_row = per_row * (-torch.expm1(log_p_true)).clamp_min(torch.finfo(z.dtype).tiny).pow(focus)
        if row_weight is not None:
            # Class weights or focal alphas. Deliberately not torch's weighted mean (which divides by the batch's
            # summed weights): dividing by the row count keeps gradient accumulation exact, because the Trainer's
            # num_items_in_batch counts rows (with balanced / inverse_sqrt weights the expected scale still matches ce).
            per_row = per_row * row_weight.to(z)[target]
        total = torch.where(counted, per_row, 0.0).sum()
        if num_items_in_batch is None:
            return total / counted.sum().clamp_min(1)
        if torch.is_tensor(num_items_in_batch):
            return total / num_items_in_batch.to(device=z.device, dtype=z.dtype)
        return total / num_items_in_batch

    loss.__name__ = f"{name}_loss"
    return loss


def unweighted(settings: LossParams) -> LossParams:
    """The loss of `settings` without its class weights (weighted_ce becomes ce, focal loses its alpha): the first
    phase of deferred re-weighting."""
    return settings.model_copy(
        update={"name": "ce" if settings.name == "weighted_ce" else settings.name, "alpha": None}
    )


LossFn = Callable[[torch.Tensor, torch.Tensor, "int | torch.Tensor | None"], torch.Tensor]

# Newton's method on the constant logits: the stopping gradient norm and an iteration cap it never nears in practice.
_NEWTON_TOLERANCE = 1e-10
_NEWTON_STEPS = 50


def optimal_constant_logits(
    loss: LossFn, class_counts: Sequence[int], labels: Sequence[str] | None = None
) -> np.ndarray:
    """The constant logits b that minimise the mean of `loss` over the training rows (n_c rows of class c): the
    best a model can do before it reads the text, so training starts from it instead of from a random skew.

    Newton's method from the log class priors, which are the exact optimum of plain ce (returned unchanged, as
    the gradient there is already ~0). For weighted_ce, logit_adjusted and label smoothing the optimum is
    another softmax of the counts (balanced weights: uniform), for focal it has no closed form; the loss is
    smooth and, near the optimum, convex in b, so a few damped Newton steps reach it. The softmax ignores a
    common shift of all logits, so the Hessian is singular along that direction: its pseudo-inverse steps
    orthogonally to it.
    """
    counts = _counts(class_counts, labels)
    _require_rows(
        counts, labels, "the loss-optimal starting bias of model.init_bias: prior (model.init_bias: zero needs none)"
    )
    share = counts / counts.sum()
    classes = torch.arange(counts.size)

    def mean_loss(b: torch.Tensor) -> torch.Tensor:
        return sum(share[c] * loss(b[None], classes[c : c + 1], None) for c in range(counts.size))

    b = torch.from_numpy(np.log(share))
    for _ in range(_NEWTON_STEPS):
        gradient = torch.autograd.functional.jacobian(mean_loss, b)
        if gradient.norm() < _NEWTON_TOLERANCE:
            break
        step = -torch.linalg.pinv(torch.autograd.functional.hessian(mean_loss, b)) @ gradient
        if step @ gradient >= 0:  # not a descent direction (the loss is not convex there): a gradient step
            step = -gradient
        rate, current = 1.0, mean_loss(b)
        while mean_loss(b + rate * step) > current and rate > 1e-8:
            rate /= 2
        b = b + rate * step
    return b.numpy()


def init_head_bias(model: nn.Module, counts: Sequence[int], mode: str, labels: Sequence[str], loss: LossFn) -> None:
    """`prior`: set the head's bias to the constant logits that minimise `loss` on the training class counts
    (for plain ce the log class priors; see losses.optimal_constant_logits), so the untrained model starts at the
    loss's best text-blind prediction instead of a random skew and the first steps are not spent learning the
    imbalance. `zero`: set it to 0."""
    name, layer = classifier_head(model, len(counts))
    if layer.bias is None:
        if mode == "prior":
            raise SkewtuneError(
                f"model.init_bias is prior, but the head {name!r} of {type(model).__name__} has no bias to "
                "initialise; set model.init_bias: zero"
            )
        return
    if mode == "zero":
        with torch.no_grad():
            layer.bias.zero_()
        return
    if mode != "prior":
        raise SkewtuneError(f"model.init_bias is {mode!r}; use prior or zero")
    with torch.no_grad():
        layer.bias.copy_(torch.from_numpy(optimal_constant_logits(loss, counts, labels)).to(layer.bias.dtype))
