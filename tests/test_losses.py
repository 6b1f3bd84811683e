"""skewtune.train.losses against sklearn, torch's own losses, NumPy versions of the published formulas and hand sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from skewtune.config.load import validate_params
from skewtune.config.schema import LOSS_NAMES, LossParams
from skewtune.core.errors import SkewtuneError
from skewtune.train.losses import build_loss, class_weights, optimal_constant_logits

COUNTS = [50, 7, 13]  # three imbalanced classes


def make_loss(name: str, class_counts, labels=None, **settings):
    return build_loss(LossParams(name=name, **settings), class_counts=class_counts, labels=labels)


def _batch(n: int = 32, n_classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_classes, generator=g) * 3, torch.randint(0, n_classes, (n,), generator=g)


def _np_log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# ---------------------------------------------------------------- class_weights


@pytest.mark.parametrize("counts", [[50, 7, 13], [900, 100], [1, 1, 1, 5]])
def test_balanced_matches_sklearn(counts):
    y = np.repeat(np.arange(len(counts)), counts)
    expected = compute_class_weight("balanced", classes=np.arange(len(counts)), y=y)
    weights = class_weights(counts, "balanced")
    assert weights.dtype == np.float64
    np.testing.assert_allclose(weights, expected, rtol=1e-12)


def test_inverse_sqrt_by_hand():
    # n = 20; sqrt(16) + sqrt(4) = 6; w_c = 20 / (6 * sqrt(n_c)) -> 5/6, 5/3
    weights = class_weights([16, 4], "inverse_sqrt")
    np.testing.assert_allclose(weights, [5 / 6, 5 / 3], rtol=1e-12)
    assert np.dot(weights, [16, 4]) / 20 == pytest.approx(1.0)  # count-weighted mean 1, like "balanced"


def test_effective_number_by_hand():
    # beta = 0.5: (1 - 0.5) / (1 - 0.5 ** n) -> n=1: 1, n=2: 2/3, n=3: 4/7; then scaled to sum to C = 3
    raw = np.array([1.0, 2 / 3, 4 / 7])
    np.testing.assert_allclose(class_weights([1, 2, 3], "effective_number", beta=0.5), raw * 3 / raw.sum(), rtol=1e-12)
    # beta -> 0 weighs every class equally; beta close to 1 approaches "balanced" up to scale
    np.testing.assert_allclose(class_weights([5, 50], "effective_number", beta=0.0), [1.0, 1.0])
    near_one = class_weights([5, 50], "effective_number", beta=1 - 1e-9)
    assert near_one[0] / near_one[1] == pytest.approx(10.0, rel=1e-6)


def test_explicit_weights_used_as_given():
    np.testing.assert_array_equal(class_weights([3, 4], [0.25, 4]), [0.25, 4.0])


def test_class_weight_errors():
    with pytest.raises(
        SkewtuneError, match=r"loss.class_weights has 3 values but there are 2 classes \(labels.json order: ham, spam\)"
    ):
        class_weights([10, 2], [1, 2, 3], labels=["ham", "spam"])
    with pytest.raises(SkewtuneError, match=r"class spam has no training rows"):
        class_weights([10, 0], "balanced", labels=["ham", "spam"])
    with pytest.raises(SkewtuneError, match=r"loss.class_weights must hold positive numbers"):
        class_weights([10, 2], [1, 0])
    with pytest.raises(SkewtuneError, match=r"loss.class_weights is 'inverse'"):
        class_weights([10, 2], "inverse")
    with pytest.raises(SkewtuneError, match=r"loss.beta is 1.0"):
        class_weights([10, 2], "effective_number", beta=1.0)
    with pytest.raises(SkewtuneError, match=r"non-negative whole numbers"):
        class_weights([10, -2], "balanced")
    with pytest.raises(SkewtuneError, match=r"3 labels .* but 2 class counts"):
        class_weights([10, 2], "balanced", labels=["a", "b", "c"])


# ---------------------------------------------------------------- losses against references


def test_ce_matches_torch():
    logits, y = _batch()
    loss = make_loss("ce", class_counts=COUNTS)
    torch.testing.assert_close(loss(logits, y, None), F.cross_entropy(logits, y), rtol=0, atol=1e-6)


def test_weighted_ce_by_hand():
    logits, y = _batch()
    w = class_weights(COUNTS, "balanced")
    log_p = _np_log_softmax(logits.double().numpy())
    rows = np.arange(len(y))
    expected = np.mean(-w[y.numpy()] * log_p[rows, y.numpy()])  # divided by the row count, not by sum(w[y])
    result = make_loss("weighted_ce", class_counts=COUNTS)(logits, y, None)
    assert result.item() == pytest.approx(expected, rel=1e-5)
    # the same sum as torch's weighted cross-entropy; only the divisor differs
    torch_sum = F.cross_entropy(logits, y, weight=torch.tensor(w, dtype=torch.float32), reduction="sum")
    torch.testing.assert_close(result * len(y), torch_sum, rtol=1e-5, atol=0)


@pytest.mark.parametrize("alpha", [None, [0.25, 2.0, 1.5], "balanced"])
@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
def test_focal_matches_numpy_formula(alpha, gamma):
    logits, y = _batch(64, seed=1)
    log_p = _np_log_softmax(logits.double().numpy())
    rows, t = np.arange(len(y)), y.numpy()
    log_pt = log_p[rows, t]
    alpha_t = (
        1.0 if alpha is None else (class_weights(COUNTS, "balanced") if alpha == "balanced" else np.array(alpha))[t]
    )
    expected = np.mean(-alpha_t * (1 - np.exp(log_pt)) ** gamma * log_pt)  # Lin et al. 2017, eq. 5
    result = make_loss("focal", class_counts=COUNTS, alpha=alpha, gamma=gamma)(logits, y, None)
    assert result.item() == pytest.approx(expected, rel=1e-5)


def test_focal_with_smoothing_is_the_true_class_focal_factor_times_torch_smoothed_ce():
    """The common form, against torch's own label-smoothed cross-entropy: alpha_t (1 - p_t) ** gamma * CE_s."""
    logits, y = _batch(64, seed=2)
    alpha, gamma, s = torch.tensor([0.25, 2.0, 1.5]), 2.0, 0.2
    p_t = torch.softmax(logits.double(), -1)[torch.arange(len(y)), y]
    reference = (
        alpha.double()[y]
        * (1 - p_t) ** gamma
        * F.cross_entropy(logits.double(), y, label_smoothing=s, reduction="none")
    )
    result = make_loss("focal", class_counts=COUNTS, alpha=alpha.tolist(), gamma=gamma, label_smoothing=s)(
        logits, y, None
    )
    assert result.item() == pytest.approx(reference.mean().item(), rel=1e-5)


def test_scalar_focal_alpha_weighs_the_second_class_by_alpha():
    logits, y = _batch(32, n_classes=2, seed=3)
    scalar = make_loss("focal", class_counts=[30, 10], alpha=0.25)(logits, y, None)
    torch.testing.assert_close(
        scalar, make_loss("focal", class_counts=[30, 10], alpha=[0.75, 0.25])(logits, y, None), rtol=0, atol=0
    )
    with pytest.raises(
        SkewtuneError, match=r"loss.alpha is 0.25, a single number, .* there are 3 classes.*: give a list"
    ):
        make_loss("focal", class_counts=COUNTS, alpha=0.25)
    with pytest.raises(SkewtuneError, match=r"loss.alpha: .*must be in \(0, 1\)"):
        validate_params({"loss": {"alpha": 1.5}})


@pytest.mark.parametrize(
    "name, options",
    [
        ("ce", {}),
        ("ce", {"label_smoothing": 0.1}),
        ("weighted_ce", {}),
        ("weighted_ce", {"class_weights": "effective_number", "beta": 0.9, "label_smoothing": 0.05}),
        ("focal", {"gamma": 2.0}),
        ("focal", {"alpha": "balanced", "gamma": 2.0, "label_smoothing": 0.05}),
        ("focal", {"alpha": [0.5, 2.0, 1.0], "gamma": 0.5}),
        ("logit_adjusted", {"tau": 1.0}),
        ("logit_adjusted", {"tau": 2.0, "label_smoothing": 0.1}),
    ],
)
def test_optimal_constant_logits_zero_the_gradient(name, options):
    """The start bias of model.init_bias: prior minimises the loss of constant logits on the training counts."""
    loss = make_loss(name, class_counts=COUNTS, **options)
    b = torch.tensor(optimal_constant_logits(loss, COUNTS), requires_grad=True)
    rows = torch.repeat_interleave(torch.arange(3), torch.tensor(COUNTS))
    value = loss(b.expand(len(rows), 3), rows, None)
    value.backward()
    assert b.grad.norm() < 1e-7, b.grad
    # and it is a minimum: every nearby constant start is worse
    for direction in torch.eye(3):
        assert loss((b + 0.05 * direction).expand(len(rows), 3), rows, None) > value


def test_optimal_constant_logits_known_values():
    share = np.array(COUNTS) / sum(COUNTS)
    softmax = lambda b: np.exp(b - b.max()) / np.exp(b - b.max()).sum()  # noqa: E731
    assert optimal_constant_logits(make_loss("ce", class_counts=COUNTS), COUNTS).tolist() == np.log(share).tolist()
    assert softmax(optimal_constant_logits(make_loss("weighted_ce", class_counts=COUNTS), COUNTS)) == pytest.approx(
        [1 / 3] * 3, abs=1e-6
    )
    assert softmax(optimal_constant_logits(make_loss("logit_adjusted", class_counts=COUNTS), COUNTS)) == pytest.approx(
        [1 / 3] * 3, abs=1e-6
    )
    # (the class weights are float32, hence 1e-6) focal, gamma 2, on a 77/23 split: the best constant predicts ~0.61
    # for the majority, not its prior 0.77
    p = softmax(optimal_constant_logits(make_loss("focal", class_counts=[77, 23], gamma=2.0), [77, 23]))
    assert 0.60 < p[0] < 0.62


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_without_focus_or_alpha_is_ce(smoothing):
    logits, y = _batch()
    focal = make_loss("focal", class_counts=COUNTS, gamma=0.0, alpha=None, label_smoothing=smoothing)(logits, y, None)
    ce = make_loss("ce", class_counts=COUNTS, label_smoothing=smoothing)(logits, y, None)
    assert torch.equal(focal, ce)
    torch.testing.assert_close(focal, F.cross_entropy(logits, y, label_smoothing=smoothing), rtol=0, atol=1e-6)


@pytest.mark.parametrize("tau", [0.0, 1.0, 2.5])
def test_logit_adjusted_matches_shifted_ce(tau):
    logits, y = _batch()
    prior = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    expected = F.cross_entropy(logits + tau * prior.log(), y)
    result = make_loss("logit_adjusted", class_counts=COUNTS, tau=tau)(logits, y, None)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["ce", "logit_adjusted", "weighted_ce"])
def test_label_smoothing_matches_torch(name):
    logits, y = _batch()
    s = 0.15
    loss = make_loss(name, class_counts=COUNTS, label_smoothing=s)
    shifted = (
        logits + torch.log(torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS))
        if name == "logit_adjusted"
        else logits
    )
    per_row = F.cross_entropy(shifted, y, label_smoothing=s, reduction="none")
    if name == "weighted_ce":  # the smoothed ce of a row, times its true class's weight
        per_row = per_row * torch.tensor(class_weights(COUNTS, "balanced"), dtype=torch.float32)[y]
    torch.testing.assert_close(loss(logits, y, None), per_row.mean(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_ignored_rows_neither_count_nor_get_gradient(name):
    logits, y = _batch(20)
    y[[0, 5, 6]] = -100
    keep = y != -100
    loss = make_loss(name, class_counts=COUNTS, alpha="balanced", label_smoothing=0.1)
    leaf = logits.clone().requires_grad_(True)
    value = loss(leaf, y, None)
    torch.testing.assert_close(value, loss(logits[keep], y[keep], None), rtol=1e-6, atol=0)
    value.backward()
    assert torch.all(leaf.grad[~keep] == 0) and torch.all(leaf.grad[keep].abs().sum(1) > 0)
    if name == "ce":
        torch.testing.assert_close(value, F.cross_entropy(logits, y, label_smoothing=0.1), rtol=0, atol=1e-6)


def _grads(model: torch.nn.Module, loss, batches) -> torch.Tensor:
    """Parameter gradients summed over micro-batches, as the Trainer accumulates them (one backward each)."""
    model.zero_grad()
    for x, y, num_items in batches:
        loss(model(x), y, num_items).backward()
    return torch.cat([p.grad.flatten().clone() for p in model.parameters()])


@pytest.mark.parametrize(
    "name, options",
    [
        ("ce", {}),
        ("ce", {"label_smoothing": 0.1}),
        ("weighted_ce", {"class_weights": "effective_number", "beta": 0.9}),
        ("weighted_ce", {"class_weights": [0.5, 3.0, 2.0]}),
        ("focal", {"alpha": "balanced", "gamma": 2.0}),
        ("focal", {"alpha": None, "gamma": 1.0, "label_smoothing": 0.1}),
        ("logit_adjusted", {"tau": 1.0}),
    ],
)
def test_gradient_accumulation_is_exact(name, options):
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x = torch.randn(16, 5)
    y = torch.randint(0, 3, (16,))
    y[[1, 2, 4]] = -100  # ignored rows all in the first half: the halves hold 5 and 8 counted rows
    n = int((y != -100).sum())
    loss = make_loss(name, class_counts=COUNTS, **options)

    full = _grads(model, loss, [(x, y, n)])
    # the Trainer passes the count of the whole accumulated batch to each micro-batch, as an int or a tensor
    accumulated = _grads(model, loss, [(x[:8], y[:8], torch.tensor(n)), (x[8:], y[8:], n)])
    torch.testing.assert_close(accumulated, full, rtol=1e-5, atol=1e-7)

    # each micro-batch's own mean does not give the large batch's gradient, even halved
    naive = _grads(model, loss, [(x[:8], y[:8], None), (x[8:], y[8:], None)])
    assert not torch.allclose(naive, full, rtol=1e-3, atol=1e-5)
    assert not torch.allclose(naive / 2, full, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_half_precision_logits_give_a_float32_loss(name, dtype):
    logits, y = _batch()
    half = logits.to(dtype)
    loss = make_loss(name, class_counts=COUNTS, alpha="balanced")
    value = loss(half, y, torch.tensor(len(y)))
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss(half.float(), y, None), rtol=1e-6, atol=0)


def test_focal_gradient_stays_finite_for_certain_rows():
    # p_t rounds to exactly 1: (1 - p_t) ** gamma with gamma < 1 has an infinite slope at 0
    logits = torch.tensor([[200.0, 0.0], [0.0, 1.0]], requires_grad=True)
    value = make_loss("focal", class_counts=[3, 4], gamma=0.5)(logits, torch.tensor([0, 1]), None)
    value.backward()
    assert torch.isfinite(value) and torch.all(torch.isfinite(logits.grad))


# ---------------------------------------------------------------- errors


def test_build_loss_errors():
    labels = ["ham", "spam"]
    with pytest.raises(
        SkewtuneError, match=r"loss.alpha has 3 values but there are 2 classes \(labels.json order: ham, spam\)"
    ):
        make_loss("focal", class_counts=[5, 2], labels=labels, alpha=[1, 2, 3])
    with pytest.raises(
        SkewtuneError, match=r"loss.class_weights has 1 values but there are 2 classes \(labels.json order: ham, spam\)"
    ):
        make_loss("weighted_ce", class_counts=[5, 2], labels=labels, class_weights=[1.0])
    with pytest.raises(SkewtuneError, match=r"class spam has no training rows, so the class prior's logarithm"):
        make_loss("logit_adjusted", class_counts=[5, 0], labels=labels)
    with pytest.raises(SkewtuneError, match=r"class spam has no training rows"):
        make_loss("weighted_ce", class_counts=[5, 0], labels=labels)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"name": "dice"}, r"loss.name: Input should be 'ce', 'weighted_ce', 'focal' or 'logit_adjusted'"),
        ({"alpha": [1, -2]}, r"loss.alpha: .*positive finite numbers"),
        ({"alpha": "inverse"}, r"loss.alpha: must be null, 'balanced'"),
        ({"class_weights": [1.0, 0.0]}, r"loss.class_weights: .*positive finite numbers"),
        ({"gamma": -1}, r"loss.gamma: Input should be greater than or equal to 0"),
        ({"gamma": 21}, r"loss.gamma: Input should be less than or equal to 20"),
        ({"tau": -0.5}, r"loss.tau: Input should be greater than or equal to 0"),
        ({"label_smoothing": 1.0}, r"loss.label_smoothing: Input should be less than 1"),
    ],
)
def test_loss_settings_are_checked_by_the_schema(settings, message):
    """build_loss takes validated LossParams: each bound lives in the schema only."""
    with pytest.raises(SkewtuneError, match=message):
        validate_params({"loss": settings})


def test_loss_call_errors():
    loss = make_loss("ce", class_counts=[5, 2], labels=["ham", "spam"])
    with pytest.raises(SkewtuneError, match=r"logits of shape \[rows, 2\].*got logits \(4, 3\).*num_labels"):
        loss(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), None)
    with pytest.raises(SkewtuneError, match=r"labels must be class ids 0..1 or -100"):
        loss(torch.zeros(2, 2), torch.tensor([0, 2]), None)
    with pytest.raises(SkewtuneError, match=r"labels must be class ids 0..1 or -100"):
        loss(torch.zeros(2, 2), torch.tensor([0, -1]), None)
