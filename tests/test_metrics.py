"""Scores from counts, the bootstrap, the test report, curves, the error table and the paired comparison,
checked against sklearn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)

from skewtune.core.errors import SkewtuneError
from skewtune.decision.scores import (
    Score,
    _resampled_scores,
    bootstrap_ci,
    counts,
    downsample,
    parse_score,
    ranking_curves,
    score_labels,
    share_text,
    win_rate,
)
from skewtune.evaluation.compare import comparison_markdown, paired_comparison
from skewtune.evaluation.report import evaluation_report, vs_baseline_text


def _labellings(seed: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(k, size=n, p=np.linspace(1, 0.2, k) / np.linspace(1, 0.2, k).sum())
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    return y, pred


def _probs(seed: int, y: np.ndarray, k: int, signal: float = 1.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += signal
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_from_counts_equal_sklearn(k, seed):
    y, pred = _labellings(seed, 80, k)
    if seed == 2:  # a class with no true rows and never predicted, and one only predicted
        y, pred = np.where(y == k - 1, 0, y), np.where(pred == k - 1, 0, pred)
        pred[:3] = k - 1
    labels = list(range(k))
    assert score_labels(y, pred, k, Score("f1_macro")) == pytest.approx(
        f1_score(y, pred, labels=labels, average="macro", zero_division=0), abs=1e-12
    )
    assert score_labels(y, pred, k, Score("balanced_accuracy")) == pytest.approx(
        balanced_accuracy_score(y, pred), abs=1e-12
    )
    assert score_labels(y, pred, k, Score("mcc")) == pytest.approx(matthews_corrcoef(y, pred), abs=1e-12)
    per_class = f1_score(y, pred, labels=labels, average=None, zero_division=0)
    for c in labels:
        assert score_labels(y, pred, k, Score("f1", c)) == pytest.approx(per_class[c], abs=1e-12)


def test_recall_at_precision_is_recall_when_the_floor_is_met_else_zero():
    y, pred = _labellings(3, 200, 2)
    precision = precision_score(y, pred, pos_label=1)
    recall = recall_score(y, pred, pos_label=1)
    assert score_labels(y, pred, 2, Score("recall_at_precision", 1, precision)) == pytest.approx(recall)
    assert score_labels(y, pred, 2, Score("recall_at_precision", 1, min(1.0, precision + 0.01))) == 0.0
    assert (
        score_labels(y, np.zeros_like(y), 2, Score("recall_at_precision", 1, 0.1)) == 0.0
    )  # nothing predicted positive


def test_parse_score_names_the_key_and_lists_labels():
    with pytest.raises(SkewtuneError, match=r"threshold.metric.*'ham', 'spam'"):
        parse_score("f1:sapm", ["ham", "spam"])
    with pytest.raises(SkewtuneError, match="unknown metric 'f2'"):
        parse_score("f2", ["ham", "spam"])
    with pytest.raises(SkewtuneError, match="binary problems only"):
        parse_score("recall_at_precision", ["a", "b", "c"], positive=None, min_precision=0.9)
    assert parse_score("f1:spam", ["ham", "spam"]) == Score("f1", 1)


def test_bootstrap_scores_equal_sklearn_on_the_same_resamples():
    y, pred = _labellings(4, 150, 3)
    scores = _resampled_scores(y, [pred], 3, Score("f1_macro"), 1000, np.random.default_rng(7))
    idx = np.random.default_rng(7).integers(0, len(y), size=(1000, len(y)))  # one chunk: the same draws
    for r in range(0, 1000, 97):
        assert scores[r, 0] == pytest.approx(
            f1_score(y[idx[r]], pred[idx[r]], labels=[0, 1, 2], average="macro", zero_division=0), abs=1e-12
        )
    ((low, high),) = bootstrap_ci(y, [pred], 3, resamples=1000, confidence=0.9, seed=7)
    assert (low, high) == pytest.approx(tuple(np.quantile(scores[:, 0], [0.05, 0.95])))
    assert low < f1_score(y, pred, average="macro") < high


def test_bootstrap_chunks_give_independent_resamples(monkeypatch):
    import skewtune.decision.scores as metrics

    y, pred = _labellings(5, 100, 2)
    monkeypatch.setattr(metrics, "_CHUNK_CELLS", 1000)  # 10 resamples per chunk
    scores = _resampled_scores(y, [pred], 2, Score("f1_macro"), 1000, np.random.default_rng(0))[:, 0]
    assert len(np.unique(scores)) > 100 and np.isfinite(scores).all()


def test_evaluation_report_matches_sklearn_and_keeps_lists_out_of_the_columns():
    y, _ = _labellings(6, 300, 3)
    probs = _probs(6, y, 3)
    tuned = np.argmax(np.log(probs) + [0.0, 0.3, 0.6], axis=1)
    labels = ["a", "b", "c"]
    alone = np.roll(probs, 1, axis=0).argmax(
        1
    )  # another model's predictions: the model alone, apart from the blend decided on
    report = evaluation_report(
        y,
        probs,
        tuned,
        labels,
        rule="offsets",
        blend=0.3,
        y_model=alone,
        positive=None,
        resamples=1000,
        confidence=0.95,
        seed=0,
    )
    t, a, m = report["chosen"], report["argmax"], report["model"]
    assert (
        m["f1_macro"] == pytest.approx(f1_score(y, alone, average="macro"))
        and m["f1_macro_ci_low"] < m["f1_macro"] < m["f1_macro_ci_high"]
    )
    assert report["blend"] == 0.3
    assert t["f1_macro"] == pytest.approx(f1_score(y, tuned, average="macro"))
    assert a["f1_macro"] == pytest.approx(f1_score(y, probs.argmax(1), average="macro"))
    assert t["f1_macro_ci_low"] < t["f1_macro"] < t["f1_macro_ci_high"]
    assert t["mcc"] == pytest.approx(matthews_corrcoef(y, tuned))
    assert report["roc_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert report["pr_auc"] == pytest.approx(np.mean([average_precision_score(y == k, probs[:, k]) for k in range(3)]))
    assert report["per_class"]["c"]["recall"] == pytest.approx(recall_score(y, tuned, average=None)[2])
    assert report["per_class"]["c"]["support"] == int(np.sum(y == 2))
    assert np.array(report["details"]["chosen"]["confusion_matrix"]).sum() == 300
    assert report["details"]["chosen"]["predicted"] == np.bincount(tuned, minlength=3).tolist()
    # dvc exp show makes a column of every number outside lists: only these
    top_level = {k for k, v in report.items() if not isinstance(v, dict)}
    assert top_level == {"n_test", "rule", "blend", "roc_auc", "pr_auc"}


def test_binary_ranking_uses_the_positive_class_and_curves_are_small():
    rng = np.random.default_rng(8)
    y = (rng.random(3000) < 0.15).astype(int)
    probs = _probs(8, y, 2, signal=1.0)
    report = evaluation_report(
        y,
        probs,
        probs.argmax(1),
        ["ham", "spam"],
        rule="argmax",
        blend=0.0,
        y_model=probs.argmax(1),
        positive=1,
        resamples=1000,
        confidence=0.95,
        seed=0,
    )
    assert report["roc_auc"] == pytest.approx(roc_auc_score(y, probs[:, 1]))
    assert report["pr_auc"] == pytest.approx(average_precision_score(y, probs[:, 1]))
    pr, roc = ranking_curves(y, probs, ["ham", "spam"], 1)
    assert list(pr.columns) == ["threshold", "precision", "recall", "series"] and list(roc.columns) == [
        "threshold",
        "fpr",
        "tpr",
        "series",
    ]
    assert set(pr["series"]) == set(roc["series"]) == {"spam"}
    assert 100 < len(pr) <= 501 and len(roc) <= 501
    assert roc[["fpr", "tpr"]].iloc[[0, -1]].to_numpy().tolist() == [[0, 0], [1, 1]]
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(report["roc_auc"], abs=0.01)


def test_multiclass_curves_have_one_curve_per_class_present():
    y, _ = _labellings(9, 400, 4)
    y[y == 3] = 0  # class d has no test row: no curve
    pr, roc = ranking_curves(y, _probs(9, y, 4), list("abcd"), None)
    assert set(pr["series"]) == set(roc["series"]) == {"a", "b", "c"}


def test_downsample_keeps_the_ends_and_the_chosen_row():
    frame = pd.DataFrame({"x": np.arange(10_000)})
    small = downsample(frame, 500, keep=1234)
    assert len(small) <= 501 and {0, 1234, 9999} <= set(small["x"])


def test_win_rate_is_the_share_of_paired_resamples_where_b_scores_higher():
    y, pred_a = _labellings(12, 80, 2)
    pred_b = np.where(np.random.default_rng(2).random(80) < 0.2, y, pred_a)
    rate = win_rate(y, pred_a, pred_b, 2, Score("mcc"), resamples=100, seed=5)
    boot = np.random.default_rng(5).integers(0, 80, size=(100, 80))  # the same draws, scored by sklearn
    wins = [matthews_corrcoef(y[i], pred_b[i]) > matthews_corrcoef(y[i], pred_a[i]) + 1e-12 for i in boot]
    assert rate == pytest.approx(np.mean(wins)) and 0.5 < rate < 1
    assert win_rate(y, pred_a, pred_a.copy(), 2, Score("mcc"), resamples=100, seed=5) == 0.0  # a tie is no win


def test_a_win_rate_is_floored_to_a_tenth_of_a_percent_never_rounded_up_to_100():
    assert [share_text(r) for r in (0.995, 0.9999, 1.0, 0.94, 0.637, 0.0, 0.0004)] == [
        "99.5%",
        "99.9%",
        "100%",
        "94%",
        "63.7%",
        "0%",
        "0%",
    ]
    assert (
        share_text(995 / 1000) == "99.5%" and share_text(0.835) == "83.5%"
    )  # 0.995 * 1000 is 994.99... in floating point


def test_the_baseline_comparison_says_which_way_its_interval_points():
    review = {"vs_baseline": -0.0347, "vs_baseline_ci_low": -0.0977, "vs_baseline_ci_high": 0.0251}
    assert (
        vs_baseline_text(review, 0.95)
        == "chosen rule − baseline -0.0347 [-0.0977, +0.0251]: not distinguishable from the baseline at 95%"
    )
    assert vs_baseline_text({**review, "vs_baseline_ci_high": -0.001}, 0.9).endswith(": worse than the baseline at 90%")
    assert vs_baseline_text(
        {"vs_baseline": 0.02, "vs_baseline_ci_low": 0.01, "vs_baseline_ci_high": 0.03}, 0.95
    ).endswith(": better than the baseline at 95%")


def test_paired_comparison_of_identical_predictions_is_no_difference():
    y, pred = _labellings(10, 200, 3)
    c = paired_comparison(y, pred, pred.copy(), 3, resamples=500, seed=0)
    assert (c.diff, c.ci_low, c.ci_high, c.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_comparison_is_a_paired_bootstrap():
    y, pred_a = _labellings(11, 60, 2)
    pred_b = np.where(np.random.default_rng(1).random(60) < 0.3, y, pred_a)  # B fixes some of A's mistakes
    c = paired_comparison(y, pred_a, pred_b, 2, resamples=100, seed=3)
    assert c.diff == pytest.approx(f1_score(y, pred_b, average="macro") - f1_score(y, pred_a, average="macro"))
    # the same resampled rows, scored one at a time by sklearn
    boot = np.random.default_rng(3).integers(0, 60, size=(100, 60))
    diffs = np.array(
        [
            f1_score(y[i], pred_b[i], average="macro", zero_division=0)
            - f1_score(y[i], pred_a[i], average="macro", zero_division=0)
            for i in boot
        ]
    )
    assert (c.ci_low, c.ci_high) == pytest.approx(tuple(np.quantile(diffs, [0.025, 0.975])))
    assert c.p_value == pytest.approx(2 * min(np.mean(diffs <= 1e-12), np.mean(diffs >= -1e-12)))
    assert c.p_value < 0.05 and c.ci_low > 0
    worse = paired_comparison(y, pred_b, pred_a, 2, resamples=100, seed=3)
    assert (
        worse.diff == -c.diff
        and worse.ci_high < 0
        and "B is worse than A at 95%" in comparison_markdown(worse, "a", "b", "tuned")
    )
    noise = paired_comparison(
        y, pred_a, np.where(np.arange(60) == np.flatnonzero(pred_a != y)[0], y, pred_a), 2, resamples=100, seed=3
    )
    assert noise.p_value > 0.05 and "Not distinguishable from noise at 95%" in comparison_markdown(
        noise, "a", "b", "tuned"
    )


def test_counts_are_per_class_hits_predictions_and_truths():
    tp, pred, true = counts(np.array([0, 1, 1, 2]), np.array([0, 1, 0, 0]), 3)
    assert (tp.tolist(), pred.tolist(), true.tolist()) == ([1, 1, 0], [3, 1, 0], [1, 2, 1])
