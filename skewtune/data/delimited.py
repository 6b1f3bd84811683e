"""Reading CSV and TSV files with Python's csv module, and choosing their quoting: 'standard' (RFC 4180),
'none' (quotes are ordinary characters) or, under 'auto', whichever the file parses into records of the header's
width, with the reason recorded; a file both read consistently but differently stops with the two row counts."""

from __future__ import annotations

import csv
import io
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import counted
from skewtune.data.settings import Settings

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


def read_delimited(
    path: Path, text: str, fmt: str, quoting: str, names: list[str] | None, settings: Settings
) -> tuple[pd.DataFrame, list[int], dict]:
    """The frame of the decoded CSV/TSV `text` (`names`: the columns of a file without a header row), the line where
    each row starts, and the quoting it was read with and why (see _choose_quoting)."""
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
