"""Out-of-fold probabilities of the TF-IDF baseline (skewtune.models.baseline): each row is predicted by a baseline
fitted on the other folds, never on itself. Confident learning (skewtune.evaluation.label_issues) needs them to tell a
wrong label from a row the model merely memorised, and the decision of a cross-fitted run (train.cv) blends them with
the fold models' out-of-fold probabilities.

The folds are skewtune.decision.folds': label_issues' `folds` of them (fewer when the rarest class has too few rows
for every fold's training part to keep the 2 rows of it that fit_baseline needs), seeded with its FOLD_SEED so that a
re-run gives the same suspects; or the fold assignment of train.cv, given.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from skewtune.decision.folds import FOLD_SEED, assign_folds, fold_count
from skewtune.models.baseline import BaselineNotFitted, baseline_proba, fit_baseline


def label_issue_folds(y: np.ndarray, labels: list[str], folds: int) -> np.ndarray:
    """The fold of each row for label_issues' cross-fitting (up to `folds`, see the module doc); BaselineNotFitted when a
    class has fewer than 3 rows."""
    counts = np.bincount(y, minlength=len(labels))
    k = fold_count(counts, folds)
    if not k:
        thin = [f"{label!r} ({n})" for label, n in zip(labels, counts) if n < 3]
        raise BaselineNotFitted(
            f"class(es) {', '.join(thin)} of train + val have fewer than 3 rows: too few to cross-fit the baseline "
            "(each fold's training part needs 2 rows of every class)"
        )
    return assign_folds(y, k, FOLD_SEED)


def out_of_fold_proba(
    rows: pd.DataFrame,
    labels: list[str],
    folds: np.ndarray,
    *,
    min_df: int,
    max_features: int,
    max_rows: int,
    resample: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> np.ndarray:
    """Probabilities (n, n_classes) in labels.json order, each row's from the baseline fitted on the rows of the other
    folds (`folds`: each row's fold), after `resample` when given (the resample stage's rule, as the baseline stage's
    training rows have had it). `rows` holds text[, text_pair] and label_id. BaselineNotFitted when a fold's training
    part cannot be fitted (no frequent n-gram)."""
    probs = np.zeros((len(rows), len(labels)))
    for fold in np.unique(folds):
        held_out = folds == fold
        fit_rows = rows[~held_out]
        model, _ = fit_baseline(
            fit_rows if resample is None else resample(fit_rows),
            labels,
            min_df=min_df,
            max_features=max_features,
            max_rows=max_rows,
        )
        probs[held_out] = baseline_proba(model, rows[held_out], len(labels))
    return probs
