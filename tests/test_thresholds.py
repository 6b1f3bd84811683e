"""Decision-rule tuning: exactness against brute force and sklearn's TunedThresholdClassifierCV, coordinate
ascent against a grid, DecisionRule, and the checks of the input files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score, matthews_corrcoef, precision_recall_curve, recall_score
from sklearn.model_selection import TunedThresholdClassifierCV, train_test_split

from skewtune.artifacts import read_decision, read_labels, read_predictions
from skewtune.core.errors import SkewtuneError
from skewtune.decision.rule import DecisionRule
from skewtune.decision.scores import Score, _batched_counts, score_from_counts, share_text, win_rate
from skewtune.decision.tuning import guard_refusals, tune_blended_decision, tune_decision

BINARY = ["neg", "pos"]


@pytest.fixture(scope="module")
def binary_lr():
    """A LogisticRegression fitted on imbalanced synthetic data (10% positives), and its val set."""
    X, y = make_classification(
        n_samples=3000, n_features=10, n_informative=4, weights=[0.9], flip_y=0.05, class_sep=0.7, random_state=0
    )
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.4, stratify=y, random_state=0)
    model = LogisticRegression().fit(X_train, y_train)
    return model, X_val, y_val, model.predict_proba(X_val)


def _brute_force_binary(y: np.ndarray, p: np.ndarray, metric: str, min_precision: float = 0.0) -> float:
    """The best score over a fine sweep plus every distinct probability (and just above each),
    with textbook binary formulas (positive class = 1)."""
    t = np.unique(np.concatenate([np.linspace(0, 1, 10_001), p, np.nextafter(p, 2)]))
    hit = p[None, :] >= t[:, None]
    pos = y == 1
    tp, fp = (hit & pos).sum(1).astype(float), (hit & ~pos).sum(1).astype(float)
    fn, tn = pos.sum() - tp, (~pos).sum() - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_pos = np.nan_to_num(2 * tp / (2 * tp + fp + fn))
        f1_neg = np.nan_to_num(2 * tn / (2 * tn + fn + fp))
        mcc = np.nan_to_num((tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
        precision = tp / (tp + fp)
    scores = {
        "f1_macro": (f1_pos + f1_neg) / 2,
        "f1:pos": f1_pos,
        "f1:neg": f1_neg,
        "balanced_accuracy": (tp / (tp + fn) + tn / (tn + fp)) / 2,
        "mcc": mcc,
        "recall_at_precision": np.where(precision >= min_precision, tp / (tp + fn), 0.0),
    }[metric]
    return float(scores.max())


def _sklearn_score(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    if metric.startswith("f1:"):
        return f1_score(y, pred, labels=[BINARY.index(metric[3:])], average="macro")
    return {
        "f1_macro": lambda: f1_score(y, pred, average="macro"),
        "balanced_accuracy": lambda: balanced_accuracy_score(y, pred),
        "mcc": lambda: matthews_corrcoef(y, pred),
    }[metric]()


@pytest.mark.parametrize("metric", ["f1_macro", "f1:pos", "f1:neg", "balanced_accuracy", "mcc"])
def test_binary_threshold_is_the_exact_optimum(binary_lr, metric):
    _, _, y, probs = binary_lr
    decision, curve = tune_decision(
        y, probs, BINARY, strategy="tune", metric=metric, min_precision=0.9, positive_label="pos", min_confidence=0.0
    )
    pred = DecisionRule.from_dict(decision).predict(probs)
    assert decision["strategy"] == "threshold" and decision["positive_label"] == "pos"
    assert decision["val_score"] == pytest.approx(_sklearn_score(metric, y, pred), abs=1e-12)
    assert decision["val_score"] == pytest.approx(_brute_force_binary(y, probs[:, 1], metric), abs=1e-12)
    assert (
        decision["val_score"]
        >= decision["val_score_argmax"]
        == pytest.approx(_sklearn_score(metric, y, probs.argmax(1)))
    )
    assert len(curve) <= 501 and decision["threshold"] in curve["threshold"].to_numpy()
    assert curve["threshold"].is_monotonic_increasing


@pytest.mark.parametrize("metric", ["f1_macro", "f1:pos", "balanced_accuracy", "mcc"])
def test_binary_threshold_never_loses_to_sklearn_tuned_threshold(binary_lr, metric):
    model, X_val, y_val, probs = binary_lr
    scoring = {
        "f1_macro": "f1_macro",
        "f1:pos": "f1",
        "balanced_accuracy": "balanced_accuracy",
        "mcc": "matthews_corrcoef",
    }[metric]
    tuned = TunedThresholdClassifierCV(model, scoring=scoring, cv="prefit", refit=False, thresholds=100).fit(
        X_val, y_val
    )
    decision, _ = tune_decision(
        y_val,
        probs,
        BINARY,
        strategy="tune",
        metric=metric,
        min_precision=0.9,
        positive_label="pos",
        min_confidence=0.0,
    )
    assert decision["val_score"] >= _sklearn_score(metric, y_val, tuned.predict(X_val)) - 1e-12
    assert decision["val_score"] >= tuned.best_score_ - 1e-12


@pytest.mark.parametrize("floor", [0.5, 0.7, 0.8])
def test_recall_at_precision_is_the_best_recall_over_sklearns_pr_curve(binary_lr, floor):
    _, _, y, probs = binary_lr
    decision, curve = tune_decision(
        y,
        probs,
        BINARY,
        strategy="tune",
        metric="recall_at_precision",
        min_precision=floor,
        positive_label=None,
        min_confidence=0.0,
    )
    assert decision["positive_label"] == "pos"  # the rarer class in val
    precision, recall, _ = precision_recall_curve(y, probs[:, 1])
    assert decision["val_score"] == pytest.approx(recall[precision >= floor].max(), abs=1e-12)
    assert decision["val_score"] == pytest.approx(
        _brute_force_binary(y, probs[:, 1], "recall_at_precision", floor), abs=1e-12
    )
    pred = DecisionRule.from_dict(decision).predict(probs)
    assert recall_score(y, pred) == pytest.approx(decision["val_score"])
    assert (
        f1_score(y, pred, average=None)[1] > 0
        and (pred[y == 0] == 1).sum() <= (1 - floor) / floor * (pred[y == 1] == 1).sum() + 1e-9
    )


def test_unreachable_precision_floor_names_the_best_reachable():
    y = np.array([0, 1, 0, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])  # precision over the top rows: 0, 1/2, 1/3, 1/2, ...
    with pytest.raises(
        SkewtuneError,
        match=r"threshold.min_precision: no threshold reaches a precision of 0.9 for 'pos'.*best reachable is 0.5000",
    ):
        tune_decision(
            y,
            np.c_[1 - p, p],
            BINARY,
            strategy="tune",
            metric="recall_at_precision",
            min_precision=0.9,
            positive_label="pos",
            min_confidence=0.0,
        )


def test_ties_go_to_the_threshold_nearest_one_half():
    y = np.array([0, 1, 0, 1])
    for p, expected in (([0.2, 0.44, 0.6, 0.9], 0.32), ([0.2, 0.4, 0.56, 0.8], 0.68)):
        # "positive when p >= t" at t between 0.2/0.44 and between 0.6/0.9 give mirrored, equal macro-F1
        decision, curve = tune_decision(
            y,
            np.c_[1 - np.array(p), p],
            BINARY,
            strategy="tune",
            metric="f1_macro",
            min_precision=0.9,
            positive_label="pos",
            min_confidence=0.0,
        )
        assert decision["threshold"] == pytest.approx(expected)
        assert curve["threshold"].tolist() == pytest.approx(
            [0.0] + [(a + b) / 2 for a, b in zip(p, p[1:])] + [(p[-1] + 1) / 2]
        )


def test_threshold_rule_is_p_at_least_t_and_handles_ties_and_extremes():
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([1.0, 0.7, 0.7, 0.0, 0.0, 0.3])  # tied values and both extremes
    decision, curve = tune_decision(
        y,
        np.c_[1 - p, p],
        BINARY,
        strategy="tune",
        metric="f1:pos",
        min_precision=0.9,
        positive_label="pos",
        min_confidence=0.0,
    )
    assert decision["val_score"] == pytest.approx(_brute_force_binary(y, p, "f1:pos"))
    assert curve["threshold"].iloc[-1] > 1.0 and (curve["threshold"].iloc[0], curve["score"].iloc[-1]) == (0.0, 0.0)
    rule = dict(decision, threshold=0.7)
    assert DecisionRule.from_dict(rule).predict(np.c_[1 - p, p]).tolist() == [1, 1, 1, 0, 0, 0]
    assert DecisionRule.from_dict(dict(rule, positive_label="neg")).predict(np.c_[p, 1 - p]).tolist() == [
        0,
        0,
        0,
        1,
        1,
        1,
    ]


def test_argmax_strategy_keeps_argmax(binary_lr):
    _, _, y, probs = binary_lr
    decision, curve = tune_decision(
        y, probs, BINARY, strategy="argmax", metric="mcc", min_precision=0.9, positive_label=None, min_confidence=0.0
    )
    assert (decision["strategy"], decision["threshold"], decision["offsets"]) == ("argmax", None, None)
    assert decision["val_score"] == decision["val_score_argmax"] == pytest.approx(matthews_corrcoef(y, probs.argmax(1)))
    assert (DecisionRule.from_dict(decision).predict(probs) == probs.argmax(1)).all() and len(curve) > 1


@pytest.fixture(scope="module")
def three_class_lr():
    X, y = make_classification(
        n_samples=900,
        n_features=8,
        n_informative=4,
        n_classes=3,
        weights=[0.7, 0.2, 0.1],
        flip_y=0.05,
        class_sep=0.6,
        random_state=1,
    )
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=1 / 3, stratify=y, random_state=1)
    return y_val, LogisticRegression().fit(X_train, y_train).predict_proba(X_val)


def _grid_best(y: np.ndarray, probs: np.ndarray, score: Score) -> float:
    """Best score over a 121 x 121 grid of offsets of classes 1 and 2 (class 0's is 0: only differences matter)."""
    grid = np.linspace(-4, 4, 121)
    b1, b2 = np.meshgrid(grid, grid)
    offsets = np.stack([np.zeros(b1.size), b1.ravel(), b2.ravel()], axis=1)
    pred = np.argmax(np.log(probs)[None] + offsets[:, None, :], axis=2)
    return float(score_from_counts(*_batched_counts(np.broadcast_to(y, pred.shape), pred, 3), score).max())


@pytest.mark.parametrize("metric", ["f1_macro", "f1:c", "balanced_accuracy", "mcc"])
def test_offsets_coordinate_ascent_is_not_beaten_by_a_grid(three_class_lr, metric):
    y, probs = three_class_lr
    labels = ["a", "b", "c"]
    decision, steps = tune_decision(
        y, probs, labels, strategy="tune", metric=metric, min_precision=0.9, positive_label=None, min_confidence=0.0
    )
    assert decision["strategy"] == "offsets" and len(decision["offsets"]) == 3
    pred = DecisionRule.from_dict(decision).predict(probs)
    expected = {
        "f1_macro": f1_score(y, pred, average="macro"),
        "f1:c": f1_score(y, pred, average=None)[2],
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "mcc": matthews_corrcoef(y, pred),
    }[metric]
    assert decision["val_score"] == pytest.approx(expected, abs=1e-12)
    assert decision["val_score"] > decision["val_score_argmax"]
    score = Score("f1", 2) if metric == "f1:c" else Score(metric)
    assert decision["val_score"] >= _grid_best(y, probs, score) - 0.002
    assert steps["score"].is_monotonic_increasing and steps["score"].iloc[-1] == pytest.approx(decision["val_score"])
    again, _ = tune_decision(
        y, probs, labels, strategy="tune", metric=metric, min_precision=0.9, positive_label=None, min_confidence=0.0
    )
    assert again == decision  # deterministic


def test_offsets_start_at_argmax_and_stop_when_nothing_improves():
    probs = np.eye(3) * 0.8 + 0.1
    decision, steps = tune_decision(
        np.arange(3),
        probs,
        ["a", "b", "c"],
        strategy="tune",
        metric="f1_macro",
        min_precision=0.9,
        positive_label=None,
        min_confidence=0.0,
    )
    assert decision["offsets"] == [0.0, 0.0, 0.0] and decision["val_score"] == 1.0
    assert steps["sweep"].max() == 1  # one sweep without a change ends the search


def _guarded(y, probs, min_confidence):
    return tune_decision(
        y,
        probs,
        BINARY,
        strategy="tune",
        metric="f1_macro",
        min_precision=0.9,
        positive_label="pos",
        min_confidence=min_confidence,
    )[0]


def test_a_tuned_threshold_that_wins_by_a_few_rows_is_not_kept():
    # 40 positives around 0.7, 360 negatives around 0.2, and two positives at 0.4 that only a threshold below
    # 0.4 catches: tuning gains exactly those two rows in sample; tuned without their fold, the threshold does not
    # catch them (nothing on the other folds says it should), so out of sample it gains nothing.
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0.55, 0.95, 40), [0.4, 0.4], rng.uniform(0.0, 0.38, 358), [0.45, 0.45]])
    y = np.r_[np.ones(42, int), np.zeros(360, int)]
    probs = np.c_[1 - p, p]
    kept = _guarded(y, probs, 0.0)
    assert kept["strategy"] == "threshold" and kept["threshold"] < 0.4 and kept["val_score"] > kept["val_score_argmax"]
    guarded = _guarded(y, probs, 0.95)
    assert (
        guarded["strategy"] == "argmax"
        and guarded["threshold"] is None
        and guarded["val_score"] == guarded["val_score_argmax"]
    )
    assert guarded["tuned_threshold"] == kept["threshold"] and guarded["tuned_val_score"] == kept["val_score"]
    assert guarded["win_rate"] < 0.95 and guarded["win_rate"] == kept["win_rate"]
    assert guarded["tuned_out_of_sample_score"] <= guarded["val_score_argmax"] < guarded["tuned_val_score"]
    np.testing.assert_array_equal(DecisionRule.from_dict(guarded).predict(probs), probs.argmax(1))


def test_a_refused_rule_or_blend_that_scored_higher_on_val_is_named_with_its_guard_and_win_rate():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0.55, 0.95, 40), [0.4, 0.4], rng.uniform(0.0, 0.38, 358), [0.45, 0.45]])
    y = np.r_[np.ones(42, int), np.zeros(360, int)]
    probs = np.c_[1 - p, p]
    guarded, kept = _guarded(y, probs, 0.95), _guarded(y, probs, 0.0)
    assert guard_refusals(guarded) == [
        f"the tuned threshold {guarded['tuned_threshold']:.4g} (val f1_macro {guarded['tuned_val_score']:.4f} against argmax's "
        f"{guarded['val_score_argmax']:.4f}) was refused by threshold.min_confidence 0.95: out of sample it beat argmax "
        f"in only {share_text(guarded['win_rate'])} of bootstrap resamples"
    ]
    assert guard_refusals(kept) == []
    # a baseline right on the two positives that argmax misses: any blend from weight 0.2 gains those two rows in
    # sample; out of sample (the weight chosen without their fold) it does not, and the guard refuses it
    baseline = probs.copy()
    baseline[40:42] = [0.1, 0.9]
    tuning = {"strategy": "argmax", "metric": "f1_macro", "min_precision": 0.9, "positive_label": "pos"}
    refused, _ = tune_blended_decision(y, probs, baseline, BINARY, blend="auto", min_confidence=0.95, **tuning)
    assert (
        refused["blend"] == 0.0
        and refused["blend_val_score"] > refused["val_score_model"]
        and refused["min_confidence"] == 0.95
    )
    assert refused["blend_win_rate"] < 0.95
    assert guard_refusals(refused) == [
        f"the baseline blend at weight {refused['blend_weight_tried']:g} (val f1_macro "
        f"{refused['blend_val_score']:.4f} against the model alone's "
        f"{refused['val_score_model']:.4f}) was refused by threshold.min_confidence 0.95: out of sample it beat the model "
        f"alone in only {share_text(refused['blend_win_rate'])} of bootstrap resamples"
    ]
    blended, _ = tune_blended_decision(y, probs, baseline, BINARY, blend="auto", min_confidence=0.0, **tuning)
    assert blended["blend"] > 0 and guard_refusals(blended) == []
    # a decision written before the guard was recorded: the key without its value
    old = {key: value for key, value in refused.items() if key != "min_confidence"}
    assert guard_refusals(old)[0].count("refused by threshold.min_confidence: out of sample it beat") == 1


def test_a_clearly_better_threshold_is_kept():
    # Calibration shifted as after oversampling the other class: every positive sits below 0.5, so argmax never
    # predicts it, and a threshold at ~0.3 separates the classes.
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.uniform(0.32, 0.48, 60), rng.uniform(0.0, 0.28, 340)])
    y = np.r_[np.ones(60, int), np.zeros(340, int)]
    decision = _guarded(y, np.c_[1 - p, p], 0.95)
    assert decision["strategy"] == "threshold" and 0.28 < decision["threshold"] < 0.32
    assert decision["win_rate"] == 1.0 and decision["val_score"] == 1.0 > decision["val_score_argmax"]


def test_argmax_strategy_records_no_tuned_rule():
    y = np.arange(12) % 2
    decision, _ = tune_decision(
        y,
        np.full((12, 2), 0.5),
        BINARY,
        strategy="argmax",
        metric="f1_macro",
        min_precision=0.9,
        positive_label=None,
        min_confidence=0.95,
    )
    assert decision["strategy"] == "argmax" and decision["win_rate"] is None and decision["tuned_threshold"] is None


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        (
            BINARY,
            {"metric": "f1:spam"},
            r"threshold.metric: 'f1:spam' names class 'spam', which is not a label; the labels are \['neg', 'pos'\]",
        ),
        (
            BINARY,
            {"positive_label": "spam"},
            r"threshold.positive_label: 'spam' is not a label; the labels are \['neg', 'pos'\]",
        ),
        (BINARY, {"metric": "top5"}, "threshold.metric: unknown metric 'top5'"),
        (["a", "b", "c"], {"positive_label": "a"}, "threshold.positive_label: applies to binary problems only"),
        (["a", "b", "c"], {"metric": "recall_at_precision"}, "binary problems only"),
        (BINARY, {"strategy": "grid"}, "threshold.strategy: unknown strategy 'grid'"),
        (BINARY, {"y": np.zeros(12, dtype=int)}, "no row of class 'pos', so no threshold can be tuned"),
        (BINARY, {"min_confidence": 1.0}, r"threshold.min_confidence is 1.0; use a share in \[0, 1\)"),
    ],
)
def test_bad_settings_name_the_key(labels, kwargs, message):
    settings = {
        "y": np.arange(12) % len(labels),
        "strategy": "tune",
        "metric": "f1_macro",
        "min_precision": 0.9,
        "positive_label": None,
        "min_confidence": 0.0,
    } | kwargs
    probs = np.full((12, len(labels)), 1 / len(labels))
    with pytest.raises(SkewtuneError, match=message):
        tune_decision(probs=probs, labels=labels, **settings)


# ------------------------------------------------------------------------------------- input files


def _write_predictions(path, labels, probs, y, **columns):
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(len(y))], "label": [labels[k] for k in y]})
    for k, label in enumerate(labels):
        frame[f"prob:{label}"] = probs[:, k]
    frame = frame.assign(**columns)
    frame.to_parquet(path, index=False)
    return frame


def test_read_predictions_round_trip(tmp_path):
    probs = np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32)  # float32 softmax output is fine
    _write_predictions(tmp_path / "val.parquet", BINARY, probs, [1, 0])
    pred = read_predictions(tmp_path / "val.parquet", BINARY)
    assert pred.ids.tolist() == ["r0", "r1"] and pred.y.tolist() == [1, 0] and pred.probs.dtype == np.float64


def test_read_predictions_reorders_prob_columns_to_label_order(tmp_path):
    frame = _write_predictions(tmp_path / "val.parquet", BINARY, np.array([[0.2, 0.8]]), [1])
    frame[["id", "label", "prob:pos", "prob:neg"]].to_parquet(tmp_path / "val.parquet", index=False)
    assert read_predictions(tmp_path / "val.parquet", BINARY).probs.tolist() == [[0.2, 0.8]]


@pytest.mark.parametrize(
    ("probs", "labels_in_file", "extra", "message"),
    [
        (
            [[0.2, 0.8], [0.5, 0.5]],
            ["ham", "spam"],
            {},
            r"probability columns \['prob:ham', 'prob:spam'\] do not match the labels of labels.json \['neg', 'pos'\]",
        ),
        ([[0.2, 0.8], [np.nan, 0.5]], BINARY, {}, r"data row 2 \(id 'r1'\) has nan in column 'prob:neg'"),
        ([[0.2, 0.8], [0.3, 0.5]], BINARY, {}, r"probabilities of data row 2 \(id 'r1'\) sum to 0.8, not 1"),
        (
            [[-0.2, 1.2], [0.5, 0.5]],
            BINARY,
            {},
            r"data row 1 \(id 'r0'\) has probability -0.2 in column 'prob:neg', outside \[0, 1\]",
        ),
        ([[0.2, 0.8], [0.5, 0.5]], BINARY, {"id": ["a", "a"]}, "id 'a' occurs more than once"),
        (
            [[0.2, 0.8], [0.5, 0.5]],
            BINARY,
            {"label": ["pos", "maybe"]},
            r"data row 2 \(id 'r1'\) has label 'maybe', which is not in labels.json",
        ),
    ],
)
def test_bad_prediction_files_are_refused(tmp_path, probs, labels_in_file, extra, message):
    _write_predictions(tmp_path / "val.parquet", labels_in_file, np.array(probs), [1, 0], **extra)
    with pytest.raises(SkewtuneError, match=message):
        read_predictions(tmp_path / "val.parquet", BINARY)


def test_missing_or_damaged_files_name_the_file(tmp_path):
    with pytest.raises(SkewtuneError, match=r"val.parquet: not found; run the predict stage"):
        read_predictions(tmp_path / "val.parquet", BINARY)
    (tmp_path / "val.parquet").write_text("not parquet")
    with pytest.raises(SkewtuneError, match=r"val.parquet: not a readable parquet file"):
        read_predictions(tmp_path / "val.parquet", BINARY)
    with pytest.raises(SkewtuneError, match=r"labels.json: not found; run the ingest stage"):
        read_labels(tmp_path / "labels.json")
    (tmp_path / "labels.json").write_text(json.dumps({"labels": ["only"]}))
    with pytest.raises(SkewtuneError, match="two or more distinct strings"):
        read_labels(tmp_path / "labels.json")
    with pytest.raises(SkewtuneError, match=r"decision.json: not found; run the tune_threshold stage"):
        read_decision(tmp_path / "decision.json", BINARY)


def test_decision_made_for_other_labels_is_refused(tmp_path):
    decision = {
        "strategy": "threshold",
        "labels": ["ham", "spam"],
        "metric": "f1_macro",
        "positive_label": "spam",
        "threshold": 0.3,
        "offsets": None,
        "val_score": 0.9,
        "val_score_argmax": 0.8,
    }
    (tmp_path / "decision.json").write_text(json.dumps(decision))
    assert read_decision(tmp_path / "decision.json", ["ham", "spam"]) == DecisionRule.from_dict(decision)
    with pytest.raises(SkewtuneError, match=r"made for labels \['ham', 'spam'\], but labels.json has \['a', 'b'\]"):
        read_decision(tmp_path / "decision.json", ["a", "b"])
    (tmp_path / "decision.json").write_text(json.dumps(decision | {"threshold": None}))
    with pytest.raises(SkewtuneError, match="not a valid decision rule"):
        read_decision(tmp_path / "decision.json", ["ham", "spam"])


def test_min_confidence_guards_the_auto_blend_under_argmax_and_so_takes_effect_there():
    """threshold.min_confidence is the blend's guard too: under threshold.strategy: argmax with decision.blend: auto it
    changes the decision, so check_params must count it in tune_threshold's effective configuration."""
    from skewtune.config.effective import STAGE_KEYS, effective_config
    from skewtune.config.load import validate_params
    from skewtune.decision.tuning import tune_blended_decision

    rng = np.random.default_rng(4)  # a blend that wins out of sample in 76% of resamples: kept at 0.5, not at 0.95
    y = (rng.random(300) < 0.3).astype(int)
    p_model = np.clip(0.3 + 0.25 * (y - 0.3) + rng.normal(0, 0.25, 300), 0.01, 0.99)
    p_base = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.25, 300), 0.01, 0.99)
    tuning = {"strategy": "argmax", "metric": "f1_macro", "min_precision": None, "positive_label": None}
    kept = {
        confidence: tune_blended_decision(
            y,
            np.c_[1 - p_model, p_model],
            np.c_[1 - p_base, p_base],
            ["a", "b"],
            blend="auto",
            min_confidence=confidence,
            **tuning,
        )[0]["blend"]
        for confidence in (0.95, 0.5)
    }
    assert kept[0.95] == 0.0 and kept[0.5] > 0

    def effective(confidence, blend="auto"):
        params = validate_params(
            {"threshold": {"strategy": "argmax", "min_confidence": confidence}, "decision": {"blend": blend}}
        )
        return effective_config(params, STAGE_KEYS["tune_threshold"])

    assert effective(0.95) != effective(0.5)
    # argmax, no blend: it guards nothing, yet decision.json records it (tests/test_param_effect.py)
    assert effective(0.95, blend="off") != effective(0.5, blend="off")


def test_the_guard_judges_a_rule_out_of_sample_refusing_one_tuned_on_noise_and_keeping_a_real_signal():
    """A threshold tuned on probabilities that say nothing about the labels always gains in sample, and resampling
    those same rows (the guard as it was) calls it a win in most resamples; tuned on the other folds and applied to the
    held-out one it gains nothing on average, and the guard refuses it (at 0.95, in all but the odd seed, as a 5% test
    does). A real shift (the rare class pushed down, so argmax under-predicts it) holds out of sample and is kept."""
    tuning = {"strategy": "tune", "metric": "f1_macro", "min_precision": 0.9, "positive_label": None}
    out_of_sample, in_sample, kept_on_noise = [], [], 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        y, p = rng.integers(0, 2, 120), rng.uniform(0, 1, 120)
        probs = np.c_[1 - p, p]
        tuned, _ = tune_decision(y, probs, BINARY, min_confidence=0.95, **tuning)
        assert tuned["tuned_val_score"] >= tuned["val_score_argmax"]  # in sample it never loses
        rule = DecisionRule.from_dict({**tuned, "strategy": "threshold", "threshold": tuned["tuned_threshold"]})
        in_sample.append(
            win_rate(y, probs.argmax(1), rule.predict(probs), 2, Score("f1_macro"), resamples=1000, seed=0)
        )
        out_of_sample.append(tuned["win_rate"])
        kept_on_noise += tuned["strategy"] != "argmax"
    assert np.mean(in_sample) > 0.8 and np.mean(out_of_sample) < 0.6, (in_sample, out_of_sample)
    assert kept_on_noise <= 1

    rng = np.random.default_rng(3)
    n, labels = 600, ["a", "b", "c"]
    y = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    logits = np.eye(3)[y] * 2.0 + rng.normal(0, 1.0, (n, 3)) - np.array([0.0, 0.5, 2.5])  # c pushed down
    shifted = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    kept, _ = tune_decision(y, shifted, labels, min_confidence=0.95, **tuning)
    assert kept["strategy"] == "offsets" and kept["win_rate"] >= 0.95 and kept["guard_folds"] == 5
    assert kept["tuned_out_of_sample_score"] > kept["val_score_argmax"]
    # given folds (the out-of-fold rows of train.cv carry theirs) are the ones used
    folds = np.arange(n) % 3
    assert tune_decision(y, shifted, labels, min_confidence=0.95, folds=folds, **tuning)[0]["guard_folds"] == 3
