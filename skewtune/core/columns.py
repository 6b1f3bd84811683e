"""The row schema of the tables between stages: which columns hold a row's input, its identity and its probabilities.

A table tells its modality by its columns: image rows have `image` and `image_bytes`, text rows `text` (and
`text_pair` for sentence pairs).
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

IMAGE_COLUMN = "image"  # the path of the image, relative to data/raw/ (the pipeline) or the input's folder (predict)
HASH_COLUMN = "hash"  # sha256 of the converted pixels and the size: the de-duplication and leakage key
BYTES_COLUMN = "image_bytes"  # the file's bytes
TEXT_COLUMNS = ("text", "text_pair")
PROB_PREFIX = "prob:"


def prob_columns(labels: Sequence[str]) -> list[str]:
    return [f"{PROB_PREFIX}{label}" for label in labels]


def holds_images(frame: pd.DataFrame) -> bool:
    """Whether a table between stages holds image rows (else text rows)."""
    return IMAGE_COLUMN in frame.columns and BYTES_COLUMN in frame.columns


def input_columns(frame: pd.DataFrame) -> list[str]:
    """The columns that hold a row's input, as people read it (the error table)."""
    if holds_images(frame):
        return [IMAGE_COLUMN]
    return list(TEXT_COLUMNS) if "text_pair" in frame.columns else ["text"]


def key_columns(frame: pd.DataFrame) -> list[str]:
    """The columns that identify a row, by which the split keeps repeats on one side: a text (pair) is its own
    identity; the same pixels under two names are one image."""
    return [HASH_COLUMN] if holds_images(frame) else input_columns(frame)


def string_columns(frame: pd.DataFrame) -> list[str]:
    """The input columns whose every value must be a string."""
    return [IMAGE_COLUMN, HASH_COLUMN] if holds_images(frame) else input_columns(frame)
