"""Calibration (skewtune.decision.calibration): fitting against scikit-learn's temperature scaling, the vector
scaling's gradient and recovery of known parameters, the metrics against scikit-learn and hand counts, the choice
(auto keeps no calibrator that would not lower val log loss), the checks of a stored calibrator, and the rule that
carries it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import check_grad
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV, calibration_curve
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import log_loss

from skewtune.core.errors import SkewtuneError
from skewtune.decision.calibration import (
    ECE_BINS,
    IDENTITY,
    Calibration,
    _binned,
    _loss_and_grad,
    calibration_metrics,
    calibration_warnings,
    choose_calibration,
    fit_calibration,
    log_probs,
    reliability_table,
)
from skewtune.decision.folds import decision_folds
from skewtune.decision.rule import DecisionRule


def _sample(n: int, k: int, seed: int, sharpen: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities softmax(sharpen * logits), labels drawn from softmax(logits)): calibrated at sharpen 1,
    over-confident above it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 2 + np.log(np.linspace(1, 0.1, k))  # imbalanced classes
    y = (rng.random(n)[:, None] > np.cumsum(softmax(logits, axis=1), axis=1)).sum(axis=1)
    return softmax(sharpen * logits, axis=1), np.minimum(y, k - 1)


class _Logits(ClassifierMixin, BaseEstimator):
    """A classifier whose decision function is its input: how scikit-learn calibrates precomputed logits."""

    def __init__(self, n_classes: int = 2):
        self.n_classes = n_classes

    def fit(self, X, y):
        self.classes_ = np.arange(self.n_classes)
        return self

    def decision_function(self, X):
        return X

    def predict(self, X):
        return np.asarray(X).argmax(axis=1) if np.ndim(X) == 2 else (np.asarray(X) > 0).astype(int)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_temperature_equals_scikit_learns_temperature_scaling(k):
    probs, y = _sample(4000, k, seed=k, sharpen=2.5)
    ours = fit_calibration("temperature", probs, y)
    z = log_probs(probs)
    # binary: scikit-learn reads a 1-D decision function d as the logits (-d, d); (log p1 - log p0) / 2 is that,
    # shifted per row, which softmax ignores
    features = (z[:, 1] - z[:, 0]) / 2 if k == 2 else z
    theirs = CalibratedClassifierCV(FrozenEstimator(_Logits(k).fit(None, None)), method="temperature").fit(features, y)
    assert ours.temperature == pytest.approx(
        1 / float(theirs.calibrated_classifiers_[0].calibrators[0].beta_), rel=1e-4
    )
    np.testing.assert_allclose(ours.apply(probs), theirs.predict_proba(features), atol=1e-5)
    assert 2 < ours.temperature < 3  # the probabilities were sharpened 2.5 times


@pytest.mark.parametrize("method", ["temperature", "vector"])
def test_the_analytic_gradient_is_the_numerical_one(method):
    probs, y = _sample(300, 4, seed=1, sharpen=1.7)
    z, onehot = log_probs(probs), np.eye(4)[y]
    theta = np.array([0.3]) if method == "temperature" else np.r_[np.linspace(0.5, 1.5, 4), np.linspace(-1, 1, 4)]
    error = check_grad(
        lambda t: _loss_and_grad(t, method, z, onehot)[0], lambda t: _loss_and_grad(t, method, z, onehot)[1], theta
    )
    assert error < 1e-5


def test_vector_scaling_recovers_known_per_class_scales_and_biases():
    rng = np.random.default_rng(3)
    n, k = 40_000, 3
    probs = softmax(rng.normal(size=(n, k)) * 2, axis=1)
    scale, bias = np.array([0.5, 1.0, 2.0]), np.array([0.4, -0.2, -0.2])
    truth = softmax(np.log(probs) * scale + bias, axis=1)
    y = (rng.random(n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    fitted = fit_calibration("vector", probs, np.minimum(y, k - 1))
    np.testing.assert_allclose(fitted.scale, scale, rtol=0.06)
    np.testing.assert_allclose(fitted.bias, bias - bias.mean(), atol=0.06)  # centred: softmax ignores a shift
    # the fit minimises val log loss: better there than the truth's parameters would be, and than temperature
    assert log_loss(y, fitted.apply(probs)) <= log_loss(y, truth) + 1e-9
    assert log_loss(y, fitted.apply(probs)) < log_loss(y, fit_calibration("temperature", probs, y).apply(probs))


def test_metrics_against_scikit_learn_and_hand_counts():
    probs, y = _sample(2000, 3, seed=4, sharpen=2.0)
    got = calibration_metrics(y, probs)
    assert got["log_loss"] == pytest.approx(log_loss(y, probs, labels=[0, 1, 2]), rel=1e-9)
    assert got["brier"] == pytest.approx(np.mean(np.sum((probs - np.eye(3)[y]) ** 2, axis=1)), rel=1e-9)
    # a bin's observed frequency and mean confidence are scikit-learn's calibration_curve (uniform bins) per class
    for c in range(3):
        table = _binned(probs[:, c], y == c)
        frequency, confidence = calibration_curve(y == c, probs[:, c], n_bins=ECE_BINS, strategy="uniform")
        np.testing.assert_allclose(table["frequency"], frequency, atol=1e-12)
        np.testing.assert_allclose(table["confidence"], confidence, atol=1e-12)
    # by hand: every row at confidence 0.8 and right half the time -> top-label ECE |0.8 - 0.5|
    hand = np.tile([0.8, 0.1, 0.1], (4, 1))
    assert calibration_metrics(np.array([0, 0, 1, 2]), hand)["ece"] == pytest.approx(0.3)
    classwise = np.mean([abs(0.8 - 0.5), abs(0.1 - 0.25), abs(0.1 - 0.25)])
    assert calibration_metrics(np.array([0, 0, 1, 2]), hand)["ece_classwise"] == pytest.approx(classwise)
    assert got["ece"] > calibration_metrics(y, fit_calibration("temperature", probs, y).apply(probs))["ece"] * 2


def test_reliability_table_has_each_curve_top_label_and_per_class():
    probs, y = _sample(500, 3, seed=5)
    table = reliability_table(y, {"uncalibrated": probs, "calibrated": probs}, ["a", "b", "c"])
    assert list(table.columns) == ["curve", "series", "confidence", "frequency", "rows"]
    assert list(dict.fromkeys(zip(table["curve"], table["series"]))) == [
        (curve, kind) for curve in ("uncalibrated", "calibrated") for kind in ("top label", "a", "b", "c")
    ]
    top = table[(table["curve"] == "calibrated") & (table["series"] == "top label")]
    assert top["rows"].sum() == 500 and top["confidence"].is_monotonic_increasing
    binary = reliability_table(y.clip(max=1), {"x": probs[:, :2] / probs[:, :2].sum(1, keepdims=True)}, ["a", "b"])
    assert set(binary["series"]) == {"top label"}  # binary: the top label says it all


def test_auto_keeps_no_calibrator_on_probabilities_that_are_already_calibrated():
    probs, y = _sample(3000, 3, seed=6)
    calibration, record = choose_calibration("auto", probs, y, min_confidence=0.95)
    assert calibration == IDENTITY and record["kept"] is False and record["method"] == "none"
    assert record["win_rate"] < 0.95 and set(record["oof_log_loss_tried"]) == {"temperature", "vector"}
    assert record["why"].startswith(f"auto: {record['candidate']} not kept: out-of-fold log loss")
    assert calibration_warnings({"model": record}) == []  # already calibrated: information (its why), no warning


def test_auto_keeps_temperature_above_1_for_over_confident_probabilities():
    probs, y = _sample(3000, 2, seed=7, sharpen=3.0)
    calibration, record = choose_calibration("auto", probs, y, min_confidence=0.95)
    assert calibration.method == record["candidate"] == "temperature" and calibration.temperature > 1
    assert (
        record["kept"] and record["win_rate"] >= 0.95 and record["oof_log_loss_after"] < record["oof_log_loss_before"]
    )
    assert record["folds"] == 5 and calibration_warnings({"model": record}) == []
    assert json.loads(json.dumps(record)) == record  # plain JSON numbers


def test_a_method_set_by_hand_is_used_and_warned_about_when_it_made_log_loss_worse():
    probs, y = _sample(150, 4, seed=8)  # calibrated already, and few rows for 8 parameters
    calibration, record = choose_calibration("vector", probs, y, min_confidence=0.95)
    assert calibration.method == "vector" and record["kept"] and record["worse"]
    assert calibration_warnings({"model": record})[0].startswith("model calibration made out-of-fold log loss worse")
    none, record = choose_calibration("none", probs, y, min_confidence=0.95)
    assert none == IDENTITY and record["folds"] is None and calibration_warnings({"model": record}) == []


def test_folds_follow_the_rarest_class():
    for y, k in (([0] * 50 + [1] * 3, 3), ([0] * 50 + [1] * 1 + [2] * 9, 2), ([0] * 50 + [1] * 40, 5)):
        assert decision_folds(np.array(y)).max() + 1 == k
    probs, y = _sample(200, 3, seed=9, sharpen=2.0)
    y[:] = 0
    y[:1] = 1  # one row of class 1, none of class 2: still judged (2 folds), its fold lacking the class
    _, record = choose_calibration("auto", probs, y, min_confidence=0.95)
    assert record["folds"] == 2 and np.isfinite(record["oof_log_loss_after"])


@pytest.mark.parametrize(
    "raw",
    [
        {"method": "platt"},
        {"method": "temperature", "temperature": 0},
        {"method": "temperature", "temperature": -1.5},
        {"method": "temperature", "temperature": float("nan")},
        {"method": "temperature"},
        {"method": "vector", "scale": [1.0, 1.0], "bias": [0.0, 0.0, 0.0]},
        {"method": "vector", "scale": [1.0, 1.0, float("inf")], "bias": [0.0, 0.0, 0.0]},
        {"method": "vector", "scale": [1.0, 0.0, 1.0], "bias": [0.0, 0.0, 0.0]},
        {"method": "vector", "scale": [1.0, 1.0, 1.0], "bias": [0.0, True, 0.0]},
        "temperature",
    ],
)
def test_a_stored_calibrator_that_is_not_valid_is_one_clear_line(raw):
    with pytest.raises(SkewtuneError) as error:
        Calibration.from_dict(raw, 3, "decision.json: calibration.model")
    message = str(error.value)
    assert "\n" not in message and message.startswith("decision.json: calibration.model: not a valid calibration")
    assert message.endswith("re-run tune_threshold")
    with pytest.raises(SkewtuneError, match="calibration must be an object"):
        DecisionRule.from_dict({"strategy": "argmax", "labels": ["a", "b", "c"], "calibration": [raw]})


def test_the_rule_carries_its_calibrators_and_applies_them_with_and_without_a_blend():
    probs, y = _sample(500, 3, seed=10, sharpen=2.0)
    baseline, _ = _sample(500, 3, seed=11)
    temperature, vector = fit_calibration("temperature", probs, y), fit_calibration("vector", baseline, y)
    rule = DecisionRule("offsets", ("a", "b", "c"), offsets=(0.0, 0.5, -0.5), calibration=temperature)
    again = DecisionRule.from_dict(json.loads(json.dumps(rule.to_dict())))
    assert again == rule and again.calibration.temperature == temperature.temperature
    np.testing.assert_allclose(rule.combine(probs, None), softmax(np.log(probs) / temperature.temperature, axis=1))
    assert rule.uncalibrated().combine(probs, None) is not None
    np.testing.assert_array_equal(rule.uncalibrated().combine(probs, None), probs)
    blended = DecisionRule("argmax", ("a", "b", "c"), blend=0.25, calibration=temperature, baseline_calibration=vector)
    np.testing.assert_allclose(
        blended.combine(probs, baseline), 0.75 * temperature.apply(probs) + 0.25 * vector.apply(baseline)
    )
    assert (
        "calibrated: the model's by temperature scaling" in blended.describe()
        and "the baseline's by vector" in blended.describe()
    )
    # a decision written before calibration: no calibrator
    old = DecisionRule.from_dict({"strategy": "argmax", "labels": ["a", "b", "c"]})
    assert old.calibration == old.baseline_calibration == IDENTITY
    np.testing.assert_array_equal(old.combine(probs, None), probs)
