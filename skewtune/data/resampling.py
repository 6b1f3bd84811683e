"""Over-/under-sampling of the training split with imbalanced-learn.

The random samplers run on row indices, never on the texts: they only decide which rows to repeat or
drop, so any text, pair or id column comes along unchanged. Raw text has no feature vectors to
interpolate, so the resample stage passes the rows through under smote / adasyn (EMBEDDING_SAMPLERS);
`oversample_embeddings` then synthesises minority rows between the train rows' sentence embeddings
inside training (train.method embedding or setfit), never touching val or test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler

from skewtune.config.schema import EMBEDDING_SAMPLERS
from skewtune.core.errors import SkewtuneError

# Strategy -> the sampling steps it runs, in order, as (kind, params key of its sampling_strategy).
STEPS = {
    "none": (),
    "random_over": (("over", "over_ratio"),),
    "random_under": (("under", "under_ratio"),),
    "over_under": (("over", "over_ratio"), ("under", "under_ratio")),
    **{name: () for name in EMBEDDING_SAMPLERS},  # on the embeddings, in the train stage
}
# Neighbours SMOTE and ADASYN interpolate between (imbalanced-learn's default), fewer when a class has fewer rows.
NEIGHBOURS = 5


def _interpolating(kind: str):
    def build(sampling_strategy, random_state, smallest: int):
        neighbours = max(1, min(NEIGHBOURS, smallest - 1))
        if kind == "smote":
            return SMOTE(sampling_strategy=sampling_strategy, random_state=random_state, k_neighbors=neighbours)
        return ADASYN(sampling_strategy=sampling_strategy, random_state=random_state, n_neighbors=neighbours)

    return build


def _random(cls):
    return lambda sampling_strategy, random_state, smallest: cls(
        sampling_strategy=sampling_strategy, random_state=random_state
    )


_SAMPLERS = {
    "over": _random(RandomOverSampler),
    "under": _random(RandomUnderSampler),
    **{name: _interpolating(name) for name in EMBEDDING_SAMPLERS},
}
_NAMED = {
    "over": ("auto", "minority", "not minority", "not majority", "all"),
    "under": ("auto", "majority", "not minority", "not majority", "all"),
}


def _allowed(kind: str, strategy, counts: pd.Series) -> str:
    kind = "under" if kind == "under" else "over"
    verb = "add rows to" if kind == "over" else "remove rows from"
    if isinstance(strategy, float):
        ratio = counts.min() / counts.max()
        return (
            f"a float ratio from {ratio:.4f} (the minority/majority ratio of the rows it gets) up to 1: "
            f"{kind}sampling can only {verb} a class"
        )
    if isinstance(strategy, dict):
        bound = "at least" if kind == "over" else "at most"
        return f"a mapping {{label: count}} with each count {bound} the class's current count: {kind}sampling can only {verb} a class"
    return f"one of {', '.join(map(repr, _NAMED[kind]))}, a float ratio (2 classes) or a mapping {{label: count}}"


def _sample(
    kind: str, key: str, strategy, features: np.ndarray, y: np.ndarray, names: list[str], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One sampling step on `features` (row indices, or embeddings for smote / adasyn); `y` holds class codes
    (positions in `names`), which imbalanced-learn sorts and counts much faster than strings."""
    counts = pd.Series(y).value_counts()
    counts.index = [names[code] for code in counts.index]
    current = ", ".join(f"{label}: {n}" for label, n in counts.items())
    if isinstance(strategy, float) and len(counts) > 2:
        raise SkewtuneError(
            f"resample.{key}: a float ratio only works with 2 classes; the train split has {len(counts)} ({current}); "
            "use a mapping {label: target count} instead, e.g. {" + f"{counts.index[-1]}: {counts.iloc[0]}" + "}"
        )
    if isinstance(strategy, dict):
        unknown = sorted(set(strategy) - set(counts.index))
        if unknown:
            raise SkewtuneError(
                f"resample.{key}: label(s) {', '.join(map(repr, unknown))} are not in the train split "
                f"(its labels: {', '.join(map(repr, counts.index))})"
            )
        target = {names.index(label): count for label, count in strategy.items()}
    else:
        target = strategy
    sampler = _SAMPLERS[kind](sampling_strategy=target, random_state=seed, smallest=int(counts.min()))
    try:
        return sampler.fit_resample(features, y)
    except ValueError as exc:
        raise SkewtuneError(
            f"resample.{key}: {strategy!r} cannot be met from the class counts it gets ({current}); allowed: "
            f"{_allowed(kind, strategy, counts)} (imbalanced-learn: {exc})"
        ) from None


def resample_rows(train: pd.DataFrame, *, strategy: str, over_ratio, under_ratio, seed: int) -> pd.DataFrame:
    """Repeat and/or drop rows of `train` (imbalanced-learn's sampling_strategy semantics, seeded).

    `over_ratio` / `under_ratio` are the sampling_strategy of RandomOverSampler / RandomUnderSampler:
    a float (2 classes: minority/majority after the step), a {label: count} mapping, or a named
    strategy. over_under oversamples first, then undersamples the result. Rows keep the train
    split's order, repeats next to their original.
    """
    if strategy not in STEPS:
        raise SkewtuneError(f"resample.strategy: unknown {strategy!r}; use one of {', '.join(STEPS)}")
    ratios = {"over_ratio": over_ratio, "under_ratio": under_ratio}
    index = np.arange(len(train)).reshape(-1, 1)
    y, names = pd.factorize(train["label"], sort=True)
    for kind, key in STEPS[strategy]:
        index, y = _sample(kind, key, ratios[key], index, y, list(names), seed)
    return train.iloc[np.sort(index[:, 0], kind="stable")].reset_index(drop=True)


def oversample_embeddings(
    embeddings: np.ndarray, label_ids: np.ndarray, labels: list[str], *, strategy: str, over_ratio, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The train rows' embeddings and label ids followed by the synthetic rows of `strategy` (smote | adasyn, with
    `over_ratio` as its sampling_strategy, as resample.over_ratio is for random_over)."""
    label_ids = np.asarray(label_ids)
    present = sorted(set(label_ids.tolist()))
    codes = np.searchsorted(present, label_ids)  # imbalanced-learn sees only the classes present
    features, y = _sample(strategy, "over_ratio", over_ratio, embeddings, codes, [labels[i] for i in present], seed)
    return features, np.asarray(present)[y]


def resample_by(train: pd.DataFrame, params) -> pd.DataFrame:
    """resample_rows with the resample.* settings `params` (skewtune.config.schema's resample section): the resample
    stage's rule, which the cross-fitted folds (train.cv) apply to each fold's training part as well."""
    return resample_rows(
        train, strategy=params.strategy, over_ratio=params.over_ratio, under_ratio=params.under_ratio, seed=params.seed
    )


def resample_report(before: pd.DataFrame, after: pd.DataFrame, labels: list[str], strategy: str) -> dict:
    """Rows and count per class before and after resampling (under smote / adasyn the rows pass through, and
    `synthetic` says where they are made)."""

    def counts(frame: pd.DataFrame) -> dict[str, int]:
        return {label: int(n) for label, n in frame["label"].value_counts().reindex(labels, fill_value=0).items()}

    return {
        "strategy": strategy,
        "rows_before": len(before),
        "rows_after": len(after),
        "before": counts(before),
        "after": counts(after),
        **(
            {
                "synthetic": f"{strategy} makes its rows from the train rows' sentence embeddings inside the train "
                "stage (counted in reports/train/metrics.json); the rows here pass through unchanged"
            }
            if strategy in EMBEDDING_SAMPLERS
            else {}
        ),
    }
