"""The table formats skewtune reads and writes, and the CSV quoting modes: one vocabulary for params, readers and writers."""

from __future__ import annotations

import os
from pathlib import Path

from skewtune.core.errors import SkewtuneError

FORMATS = ("csv", "tsv", "jsonl", "json", "xlsx", "parquet")
TABLE_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".xlsx": "xlsx",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def delimited_format(source: str, fmt: str = "auto") -> bool:
    """Whether data.source (or data.test_path) `source` is read as CSV or TSV, which data.quoting concerns."""
    return source == "embedded" or (fmt if fmt != "auto" else TABLE_EXTENSIONS.get(Path(source).suffix.lower())) in (
        "csv",
        "tsv",
    )


# How CSV/TSV files treat double quotes: decided per file, RFC 4180 quoting, or none (quotes are text).
QUOTINGS = ("auto", "standard", "none")
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}


def output_format(path: str | os.PathLike) -> str:
    """csv, jsonl or parquet from the extension of an output path."""
    found = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if found is None:
        raise SkewtuneError(
            f"{path}: unknown output extension {Path(path).suffix!r}; use one of {', '.join(OUTPUT_FORMATS)}"
        )
    return found
