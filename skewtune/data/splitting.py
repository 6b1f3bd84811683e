"""Stratified train/val/test split of the ingested dataset (scikit-learn's train_test_split)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from skewtune.core.columns import key_columns
from skewtune.core.errors import SkewtuneError

SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("id", "label", "subset")


def check_dataset(dataset: pd.DataFrame, labels: list[str], source: str) -> None:
    """Validate the ingested dataset against labels.json.

    Refuses a text (pair), or an image's content hash, that occurs twice: the split could put the copies on
    both sides, and a model scored on inputs it trained on looks better than it is.
    """
    keys = key_columns(dataset)
    missing = [name for name in (*REQUIRED_COLUMNS, *keys) if name not in dataset.columns]
    if missing:
        raise SkewtuneError(
            f"{source}: column(s) {', '.join(missing)} missing (found {', '.join(dataset.columns)}); "
            "re-run the ingest stage"
        )
    unknown = sorted(set(dataset["label"].unique()) - set(labels))
    if unknown:
        raise SkewtuneError(
            f"{source}: label(s) {', '.join(map(repr, unknown))} are not in labels.json; re-run the ingest stage"
        )
    repeated = dataset[dataset.duplicated(keys, keep=False)]
    if len(repeated):
        first = repeated[repeated[keys].eq(repeated[keys].iloc[0]).all(axis=1)]
        what = "image" if "text" not in keys else "text"
        raise SkewtuneError(
            f"{source}: {repeated.duplicated(keys).sum()} repeated {what}(s), e.g. rows {', '.join(first['id'])} share "
            f"{first[keys[0]].iloc[0][:80]!r}; {'an' if what == 'image' else 'a'} {what} in two splits leaks the "
            "answer, so re-run the ingest stage "
            "(it removes duplicates) instead of editing the dataset by hand"
        )


def _min_rows(shares: dict[str, float]) -> int:
    """Rows a class needs so that every split is expected to receive at least one of them."""
    return max(len(shares), math.ceil(1 / min(shares.values()) - 1e-9))


def _check_class_sizes(labels: pd.Series, shares: dict[str, float], source: str) -> None:
    needed = _min_rows(shares)
    counts = labels.value_counts()
    small = counts[counts < needed]
    if len(small):
        described = ", ".join(f"{split} {share:.0%}" for split, share in shares.items())
        raise SkewtuneError(
            f"{source}: class {small.index[0]!r} has {int(small.iloc[0])} row(s) but splitting {described} with "
            f"stratification needs at least {needed} rows per class (one per split); add rows of that class, merge "
            "it into another with data.label_map, or raise split.val_size / split.test_size"
            + (
                f" (also too small: {', '.join(f'{k!r} ({v})' for k, v in small.iloc[1:].items())})"
                if len(small) > 1
                else ""
            )
        )


def split_dataset(
    dataset: pd.DataFrame, labels: list[str], *, val_size: float, test_size: float, seed: int, source: str = "dataset"
) -> dict[str, pd.DataFrame]:
    """Stratified split into train, val and test (columns id, text, [text_pair], label; dataset order kept).

    Without test-file rows (subset "test"), val_size and test_size are shares of all rows. With
    them, those rows are the test split and the pool is split into train and val, val_size being
    a share of the pool. scikit-learn gives each class the floor or ceiling of its share of a cut,
    so val and test hold within one row per class of the exact share; train, what both cuts leave,
    within two.
    """
    check_dataset(dataset, labels, source)
    fixed_test = (dataset["subset"] == "test").to_numpy()
    pool = dataset[~fixed_test]
    y = pd.Categorical(pool["label"], categories=labels).codes  # integer classes: sklearn sorts them fast
    n = len(pool)
    position = np.arange(n)
    if fixed_test.any():
        _check_class_sizes(pool["label"], {"train": 1 - val_size, "val": val_size}, source)
        test_pos = None
        rest = position
    else:
        _check_class_sizes(
            pool["label"], {"train": 1 - val_size - test_size, "val": val_size, "test": test_size}, source
        )
        # Absolute sizes keep both cuts relative to all rows, not to what the first cut left.
        rest, test_pos = train_test_split(position, test_size=round(test_size * n), stratify=y, random_state=seed)
    train_pos, val_pos = train_test_split(rest, test_size=round(val_size * n), stratify=y[rest], random_state=seed)
    columns = [name for name in dataset.columns if name != "subset"]
    splits = {
        "train": pool.iloc[np.sort(train_pos)],
        "val": pool.iloc[np.sort(val_pos)],
        "test": dataset[fixed_test] if test_pos is None else pool.iloc[np.sort(test_pos)],
    }
    return {name: frame[columns].reset_index(drop=True) for name, frame in splits.items()}


def split_report(splits: dict[str, pd.DataFrame], labels: list[str]) -> dict:
    """Rows and count per class of each split, with each split's share of all rows and class shares."""
    total = sum(len(frame) for frame in splits.values())
    report = {}
    for name, frame in splits.items():
        counts = frame["label"].value_counts().reindex(labels, fill_value=0)
        report[name] = {
            "rows": len(frame),
            "share": round(len(frame) / total, 6),
            "class_counts": {label: int(n) for label, n in counts.items()},
            "class_shares": {label: round(int(n) / max(len(frame), 1), 6) for label, n in counts.items()},
        }
    return report
