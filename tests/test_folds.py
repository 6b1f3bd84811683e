"""The one fold assignment (skewtune.decision.folds): stratified, seeded, K bounded by the rarest class, and train.cv's
rule for K."""

import numpy as np
import pytest

from skewtune.core.errors import SkewtuneError
from skewtune.decision.folds import CV_AUTO_MAX_ROWS, assign_folds, decision_folds, fold_count, resolve_cv

LABELS = ["a", "b", "c"]


def test_folds_are_stratified_seeded_and_cover_every_row_once():
    y = np.repeat([0, 1, 2], [300, 60, 15])
    folds = assign_folds(y, 5, seed=42)
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4] and len(folds) == len(y)
    per_fold = np.array([np.bincount(y[folds == f], minlength=3) for f in range(5)])
    assert (per_fold == [60, 12, 3]).all()  # each class split evenly: stratified
    assert (assign_folds(y, 5, seed=42) == folds).all()  # the same seed, the same folds
    assert not (assign_folds(y, 5, seed=7) == folds).all()  # another seed (split.seed), other folds


@pytest.mark.parametrize(
    ("counts", "max_folds", "min_train", "expected"),
    [
        ((100, 50), 5, 2, 5),
        ((100, 3), 5, 2, 3),
        ((100, 2), 5, 2, 0),
        ((100, 2), 5, 1, 2),
        ((100, 0, 7), 5, 1, 5),  # an absent class does not count
        ((100, 1), 5, 1, 0),
    ],
)
def test_fold_count_follows_the_rarest_class(counts, max_folds, min_train, expected):
    assert fold_count(np.array(counts), max_folds, min_train_rows=min_train) == expected
    if expected:
        y = np.repeat(np.arange(len(counts)), counts)
        folds = assign_folds(y, expected, seed=0)
        rarest = int(np.argmin(np.where(np.array(counts) > 0, counts, np.inf)))
        assert min((y[folds != f] == rarest).sum() for f in range(expected)) >= min_train


def test_decision_folds_keep_at_least_two_folds():
    assert decision_folds(np.array([0] * 40 + [1])).max() == 1


def test_train_cv_auto_is_on_for_small_data_only_and_reduces_k_on_a_thin_class():
    assert resolve_cv("auto", np.array([500, 80, 20]), LABELS)[0] == 5
    k, why = resolve_cv("auto", np.array([500, 80, 3]), LABELS)
    assert k == 3 and "fewer than 5: the rarest class 'c' has 3 train + val rows" in why  # each training part keeps 2
    k, why = resolve_cv("auto", np.array([CV_AUTO_MAX_ROWS, 80, 20]), LABELS)
    assert k == 0 and f"off above {CV_AUTO_MAX_ROWS:,}" in why
    assert resolve_cv("auto", np.array([500, 80, 2]), LABELS)[0] == 0  # too thin: auto falls back to val
    assert resolve_cv("off", np.array([500, 80, 20]), LABELS) == (0, "train.cv: off")
    assert resolve_cv(3, np.array([5000, 80, 20]), LABELS)[0] == 3  # a number is used whatever the size
    with pytest.raises(SkewtuneError, match="train.cv: 3 folds, but the rarest class 'c' has 2"):
        resolve_cv(3, np.array([500, 80, 2]), LABELS)


def test_train_cv_off_unquoted_is_read_as_off_and_a_bad_value_is_refused(tmp_path):
    """`cv: off` unquoted is YAML 1.1's false (what `dvc exp run -S train.cv=off` writes): it means off."""
    from skewtune.config.load import load_params

    (tmp_path / "params.yaml").write_text("train:\n  cv: off\n")
    assert load_params(tmp_path / "params.yaml").train.cv == "off"
    (tmp_path / "params.yaml").write_text("decision:\n  blend: off\n")  # the same YAML reading of decision.blend
    assert load_params(tmp_path / "params.yaml").decision.blend == "off"
    for bad in ("on", "1", "6", "'3'"):
        (tmp_path / "params.yaml").write_text(f"train:\n  cv: {bad}\n")
        with pytest.raises(SkewtuneError, match="train.cv: must be auto, off or a number of folds from 2 to 5"):
            load_params(tmp_path / "params.yaml")
