"""Out-of-fold probabilities of the TF-IDF baseline (skewtune.models.baseline): each row is predicted by a baseline
fitted on the other folds, never on itself, which is what confident learning (skewtune.evaluation.label_issues) needs to
tell a wrong label from a row the model merely memorised.

Stratified folds (scikit-learn's StratifiedKFold, shuffled with a fixed seed, so a re-run gives the same suspects):
`folds` of them, fewer when the rarest class has too few rows for every fold's training part to keep the 2 rows of
it that fit_baseline needs.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from skewtune.models.baseline import BaselineNotFitted, baseline_proba, fit_baseline

FOLD_SEED = 0


def fold_count(class_counts: np.ndarray, folds: int) -> int:
    """The most folds, at most `folds`, that leave every class at least 2 rows in every fold's training part
    (a class of c rows puts at most ceil(c / k) in one of k stratified folds); 0 when not even 2 folds do."""
    rarest = int(class_counts.min())
    for k in range(min(folds, rarest), 1, -1):
        if rarest - math.ceil(rarest / k) >= 2:
            return k
    return 0


def out_of_fold_proba(
    rows: pd.DataFrame, labels: list[str], *, folds: int, min_df: int, max_features: int, max_rows: int
) -> tuple[np.ndarray, int]:
    """(probabilities (n, n_classes) in labels.json order, each row's from the baseline fitted without its fold;
    the number of folds used). `rows` holds text[, text_pair] and label_id. BaselineNotFitted when the rows cannot
    be cross-fitted (a class with fewer than 3 rows, a fold without a frequent n-gram)."""
    from sklearn.model_selection import StratifiedKFold

    y = rows["label_id"].to_numpy()
    counts = np.bincount(y, minlength=len(labels))
    k = fold_count(counts, folds)
    if not k:
        thin = [f"{label!r} ({n})" for label, n in zip(labels, counts) if n < 3]
        raise BaselineNotFitted(
            f"class(es) {', '.join(thin)} of train + val have fewer than 3 rows: too few to cross-fit the baseline "
            "(each fold's training part needs 2 rows of every class)"
        )
    probs = np.zeros((len(rows), len(labels)))
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=FOLD_SEED)
    for fit_rows, held_out in splitter.split(np.zeros(len(y)), y):
        model, _ = fit_baseline(
            rows.iloc[fit_rows], labels, min_df=min_df, max_features=max_features, max_rows=max_rows
        )
        probs[held_out] = baseline_proba(model, rows.iloc[held_out], len(labels))
    return probs, k
