"""Reading the columns of an XLSX sheet, streamed row by row through openpyxl's WorkSheetParser so that memory
follows the cells read, not the sheet's declared size. A damaged or hostile workbook (cells beyond Excel's limits,
rows out of order, XML entity declarations, more cells than a bound), a header below a title, formulas without a
stored result and cells merged down a needed column each stop with one line that says how to fix the workbook."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from skewtune.core.errors import SkewtuneError
from skewtune.data.settings import Settings, require_columns

# How far down an XLSX sheet to look for a header row that sits below a title.
_HEADER_SEARCH_ROWS = 50

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


def read_xlsx(
    path: Path, sheet: str | None, columns: list[str], other_columns: bool, settings: Settings
) -> pd.DataFrame:
    """The `columns` (with `other_columns`: every named column) of `sheet` (None: the first) of the workbook at `path`,
    the header in row 1 and the data rows below it."""
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
    require_columns(path, header, columns, "xlsx", settings)  # a column named twice
    _check_sheet_values(path, where, header, read, columns)
    return pd.DataFrame({header[column]: values for column, values in zip(read.keep, read.values)})
