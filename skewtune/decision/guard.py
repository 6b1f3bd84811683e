"""The out-of-sample guard of the decision (threshold.min_confidence): a tuned rule, or a blend with the baseline, is
judged on rows it was not tuned on.

A rule tuned on some rows always scores at least as well as argmax on those same rows: resampling them (the guard as
it was) measures how stable that in-sample gain is, not whether it holds on new rows. Here the rows are cut into folds
(the out-of-fold rows of train.cv carry the fold models' folds; val alone gets skewtune.decision.folds.decision_folds);
for each fold the candidate is tuned on the other folds and applied to the held-out one, and the paired bootstrap
win rate (skewtune.decision.scores.win_rate) compares these out-of-sample decisions with the alternative's (argmax,
or the model alone's own rule), made the same way.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from skewtune.core.errors import SkewtuneError


def out_of_sample(
    folds: np.ndarray, fallback: np.ndarray, decide: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """Each row's decision by `decide(tuning rows, held-out rows)` (boolean masks; it returns the held-out rows'
    labels, or several labellings stacked, shaped as `fallback`), tuned without the row's own fold. A fold where no
    rule can be tuned on the others (a class absent there, no threshold reaching threshold.min_precision) keeps
    `fallback`'s labels (argmax): no gain claimed for it."""
    decided = np.asarray(fallback).copy()
    for fold in np.unique(folds):
        held_out = folds == fold
        if held_out.all():  # a single fold (one row): nothing to tune on
            continue
        try:
            decided[..., held_out] = decide(~held_out, held_out)
        except SkewtuneError:
            continue
    return decided
