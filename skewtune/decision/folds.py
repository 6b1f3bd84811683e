"""Fold assignment, defined once: which fold of K each labelled row belongs to, and how many folds the rows allow.

Every cross-fitting of the project goes through here: the fold models of train.cv (stages.train_fold) and the
cross-fitted baseline beside them, the baseline of label_issues, the out-of-fold judgement of a calibrator and the
out-of-sample guard of the decision rule (skewtune.decision.tuning).

Folds are stratified (scikit-learn's StratifiedKFold, shuffled with a seed), so every fold holds each class in
about its share. They need no grouping: the split keeps repeats of a row's identity (skewtune.core.columns.key_columns,
the text or text pair; an image's pixels) on one side, and ingest has already merged repeats into one row (its
data.conflicts policy), so after ingest every row is its own group and StratifiedGroupKFold would make the same folds.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from skewtune.core.errors import SkewtuneError
from skewtune.core.paths import MAX_FOLDS

# The seed of the folds that the decision takes on its rows (a calibrator's, the guard's): fixed, so that a decision
# is reproducible. The fold models of train.cv are seeded from split.seed instead (they move with the split).
FOLD_SEED = 0

# train.cv: auto cross-fits at most this many folds, and only when train + val hold at most CV_AUTO_MAX_ROWS rows:
# each fold is one more training run (K = 5: 5 more), which pays where val is a few dozen rows and nothing chosen on
# it can be trusted, and costs more than it gives where val already holds hundreds (the embedded data's 4,862 rows
# keep the 5-minute pipeline; a 600-row set trains 5 folds of ~430 rows in a few minutes on 2 cores).
CV_MAX_FOLDS = MAX_FOLDS
CV_AUTO_MAX_ROWS = 2000


def fold_count(class_counts: np.ndarray, max_folds: int, *, min_train_rows: int = 2) -> int:
    """The most folds, at most `max_folds`, that leave every class present at least `min_train_rows` rows in every
    fold's training part (a class of c rows puts at most ceil(c / k) in one of k stratified folds); 0 when not even
    2 folds do. With min_train_rows 1 this is min(max_folds, the rarest class's rows) for a class of 2 rows or more."""
    counts = np.asarray(class_counts)
    present = counts[counts > 0]
    rarest = int(present.min()) if len(present) else 0
    for k in range(min(max_folds, rarest), 1, -1):
        if rarest - math.ceil(rarest / k) >= min_train_rows:
            return k
    return 0


def assign_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Each row's fold, 0 to k - 1: stratified by the class `y`, shuffled with `seed` (the partition of
    StratifiedKFold(k, shuffle=True, random_state=seed))."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    folds = np.empty(len(y), dtype=np.int64)
    with warnings.catch_warnings():  # a class with fewer rows than folds: some folds lack it, which callers allow
        warnings.simplefilter("ignore", UserWarning)
        for fold, (_, held_out) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(folds, y)):
            folds[held_out] = fold
    return folds


def decision_folds(y: np.ndarray) -> np.ndarray:
    """The folds of a decision's own out-of-fold judgements on rows `y` (a calibrator, the guard): up to CV_MAX_FOLDS,
    fewer when the rarest class present has fewer rows, at least 2; seeded with FOLD_SEED. Rows too few to stratify
    (no class with 2 rows) are dealt into 2 folds in a seeded random order."""
    counts = np.bincount(y)
    k = max(2, fold_count(counts, CV_MAX_FOLDS, min_train_rows=1))
    if counts.max() < k:
        return np.random.default_rng(FOLD_SEED).permutation(len(y)) % k
    return assign_folds(y, k, FOLD_SEED)


def resolve_cv(setting: str | int, class_counts: np.ndarray, labels: list[str]) -> tuple[int, str]:
    """(K, why) of train.cv `setting` for train + val rows with these class counts: K = 0 when there is no
    cross-fitting. A number of folds is reduced when the rarest class is too thin for every fold's training part to
    keep 2 of its rows (a SkewtuneError when not even 2 folds do); auto cross-fits CV_MAX_FOLDS folds (fewer on a thin
    class) on at most CV_AUTO_MAX_ROWS rows, and none on more or where the rarest class is too thin."""
    counts = np.asarray(class_counts)
    rows = int(counts.sum())
    if setting == "off":
        return 0, "train.cv: off"
    if setting == "auto" and rows > CV_AUTO_MAX_ROWS:
        return 0, f"train.cv: auto, off above {CV_AUTO_MAX_ROWS:,} train + val rows ({rows:,})"
    wanted = CV_MAX_FOLDS if setting == "auto" else int(setting)
    k = fold_count(counts, wanted)
    rarest = int(np.argmin(counts))
    thin = f"the rarest class {labels[rarest]!r} has {int(counts[rarest])} train + val rows"
    if not k:
        if setting == "auto":
            return 0, f"train.cv: auto, off: {thin}, too few to keep 2 in every fold's training part"
        raise SkewtuneError(
            f"train.cv: {setting} folds, but {thin}: too few to keep 2 of them in every fold's training part; "
            "set train.cv: off or auto"
        )
    fewer = f" (fewer than {wanted}: {thin})" if k < wanted else ""
    return k, f"train.cv: {setting}, {k} folds of {rows:,} train + val rows{fewer}"
