"""The ingest stage, run for real in a scratch project: cleaning, de-duplication, labels, test file, errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import yaml

from skewtune import artifacts
from skewtune.errors import SkewtuneError
from stages import ingest

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = (ingest.DATASET, ingest.LABELS, artifacts.INGEST_REPORT)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch project dir (cwd) with data/raw/; call it with the `data:` params to write params.yaml."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw").mkdir(parents=True)

    def configure(**data) -> Path:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": data}), encoding="utf-8")
        return tmp_path

    return configure


def _csv(name: str, rows: list[tuple], header=("text", "label")) -> str:
    path = Path("data/raw") / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return str(path)


def _metrics() -> dict:
    return json.loads(Path(artifacts.INGEST_REPORT).read_text())


def _clear_outputs() -> None:
    for path in OUTPUTS:
        Path(path).unlink()


def _no_outputs() -> bool:
    leftovers = [path for path in OUTPUTS if Path(path).exists()]
    temporaries = [str(p) for p in Path(".").rglob(".*.tmp")]
    return not leftovers and not temporaries


def test_embedded_sms_table(project):
    project(source="embedded")
    ingest.main()
    report = _metrics()
    assert report["rows_in"] == 4862
    assert report["dropped"] == {"missing_text": 0, "missing_label": 0, "conflicting_label": 0, "duplicate": 328}
    assert report["rows_kept"] == 4534
    assert report["class_counts"] == {"ham": 3973, "spam": 561}
    assert report["imbalance_ratio"] == pytest.approx(3973 / 561, rel=1e-6)  # reports hold 6 significant digits
    assert report["minority_share"] == pytest.approx(561 / 4534, abs=1e-6)
    assert json.loads(Path(ingest.LABELS).read_text()) == {"labels": ["ham", "spam"]}
    dataset = pd.read_parquet(ingest.DATASET)
    assert list(dataset.columns) == ["id", "text", "label", "subset"]
    assert all(dtype == "str" for dtype in dataset.dtypes)
    assert dataset["id"].is_unique and dataset["id"].iloc[0] == "r1"
    assert not dataset["text"].duplicated().any() and set(dataset["subset"]) == {"pool"}


def test_full_sms_file(project, sms_path):
    os.symlink(sms_path, "data/raw/sms.tsv")  # read in place, never copied
    project(source="data/raw/sms.tsv", text_column="SMS", label_column="Label")
    ingest.main()
    report = _metrics()
    raw = pd.read_csv(sms_path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
    assert report["rows_in"] == len(raw) == 5574
    assert raw["SMS"].duplicated().sum() == 403
    # 403 byte-identical repeats, plus 11 that differ from an earlier text only in whitespace.
    normalised = raw["SMS"].map(lambda text: " ".join(text.split()))
    assert report["dropped"]["duplicate"] == normalised.duplicated().sum() == 414
    assert report["dropped"]["conflicting_label"] == 0
    assert report["rows_kept"] == 5574 - 414 == normalised.nunique()
    assert report["class_counts"] == {"ham": 4518, "spam": 642}


def test_cleaning_counts_every_reason(project):
    source = _csv("mixed.csv", [
        ("Free  prize\u00a0now ", "spam"),  # r1 kept, whitespace normalised
        ("   ", "ham"),                        # r2 empty text
        ("", "ham"),                           # r3 empty text
        ("no label here", ""),                 # r4 missing label
        ("see you\tat 5", "ham"),             # r5 kept
        ("free prize now", "spam"),            # r6 kept: case differs
        ("see you at 5", "ham"),              # r7 duplicate of r5 after normalisation
        ("maybe spam", "spam"),                # r8 conflicting ...
        ("maybe spam", "ham"),                 # r9 ... all rows dropped
        ("maybe  spam", "spam"),               # r10 ... same text after normalisation
        ("call me", "ham"),                    # r11 kept
    ])
    project(source=source, max_dropped_share=0.3)  # 3 of 11 rows lack a text or label: allowed knowingly
    ingest.main()
    report = _metrics()
    assert report["rows_in"] == 11 and report["rows_kept"] == 4
    assert report["dropped"] == {"missing_text": 2, "missing_label": 1, "conflicting_label": 3, "duplicate": 1}
    assert report["conflicting_texts"] == 1
    assert report["conflict_examples"] == [{"file": "pool", "text": "maybe spam", "labels": ["ham", "spam"], "ids": ["r8", "r9", "r10"]}]
    dataset = pd.read_parquet(ingest.DATASET)
    assert dataset["id"].tolist() == ["r1", "r5", "r6", "r11"]
    assert dataset["text"].tolist() == ["Free prize now", "see you at 5", "free prize now", "call me"]


def test_numeric_labels_become_one_spelling(project):
    lines = [{"text": f"t{i}", "label": value} for i, value in enumerate([1, "1", 1.0, " 1 ", 0, "0.0", 0.0])]
    Path("data/raw/nums.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    project(source="data/raw/nums.jsonl")
    ingest.main()
    assert json.loads(Path(ingest.LABELS).read_text())["labels"] == ["0", "1"]
    report = _metrics()
    assert report["class_counts"] == {"0": 3, "1": 4}
    assert report["labels_merged"] == {"0": ["0", "0.0"], "1": ["1", "1.0"]}
    # label_map keys written as YAML numbers (0, 1.0) reach the same spelling.
    (Path("params.yaml")).write_text("data:\n  source: data/raw/nums.jsonl\n  label_map: {0: negative, 1.0: positive}\n")
    ingest.main()
    assert json.loads(Path(ingest.LABELS).read_text())["labels"] == ["negative", "positive"]


def test_label_map_merges_and_catches_typos(project):
    source = _csv("three.csv", [("a", "spam"), ("b", "ham"), ("c", "promo"), ("d", "ham")])
    project(source=source, label_map={"promo": "spam"})
    ingest.main()
    assert _metrics()["class_counts"] == {"ham": 2, "spam": 2}
    Path(artifacts.INGEST_REPORT).unlink()
    project(source=source, label_map={"promos": "spam"})
    with pytest.raises(SkewtuneError, match=r"data\.label_map: 'promos' match no label in data/raw/three\.csv; the labels found are: 'ham', 'promo', 'spam'"):
        ingest.main()


def test_fixed_test_file(project):
    source = _csv("train.csv", [("alpha", "a"), ("beta", "b"), ("gamma", "a"), ("shared", "b"), ("delta", "b")])
    test = _csv("test.csv", [("shared", "b"), ("omega", "a"), ("omega", "a"), ("", "b")])
    project(source=source, test_path=test, max_dropped_share=0.25)
    ingest.main()
    dataset = pd.read_parquet(ingest.DATASET)
    assert dataset["id"].tolist() == ["r1", "r2", "r3", "r5", "t1", "t2"]
    assert dataset["subset"].tolist() == ["pool"] * 4 + ["test"] * 2
    report = _metrics()
    assert report["dropped"]["also_in_test_file"] == 1
    assert report["test"]["rows_in"] == 4 and report["test"]["rows_kept"] == 2
    assert report["test"]["dropped"] == {"missing_text": 1, "missing_label": 0, "conflicting_label": 0, "duplicate": 1}


def test_test_file_label_typos_are_listed(project):
    source = _csv("train.csv", [("alpha", "ham"), ("beta", "spam")])
    test = _csv("test.csv", [("x", "hamm"), ("y", "spam"), ("z", "Spam")])
    project(source=source, test_path=test)
    with pytest.raises(SkewtuneError, match=r"data/raw/test\.csv: label\(s\) 'Spam', 'hamm' of the test file do not occur in "
                                            r"data/raw/train\.csv \(its labels: 'ham', 'spam'\)"):
        ingest.main()
    assert _no_outputs()


def test_test_file_without_usable_rows_is_refused(project):
    # Silently ignoring it would make split cut its own test set from the pool.
    source = _csv("train.csv", [("alpha", "ham"), ("beta", "spam")])
    test = _csv("test.csv", [("", "ham"), ("y", "")])
    project(source=source, test_path=test)
    with pytest.raises(SkewtuneError, match=r"data/raw/test\.csv: 2 of 2 rows \(100\.0%\) lack a text or a label"):
        ingest.main()
    assert _no_outputs()


def test_sentence_pairs(project):
    rows = [("how old are you", "what is your age", "same"), ("how old are you", "where do you live", "diff"),
            ("how old are you", "what is your age", "same"), ("hi", "", "diff"), ("a", "b", "diff")]
    source = _csv("pairs.csv", rows, header=("q1", "q2", "label"))
    project(source=source, text_column="q1", text_pair_column="q2", max_dropped_share=0.2)
    ingest.main()
    dataset = pd.read_parquet(ingest.DATASET)
    assert list(dataset.columns) == ["id", "text", "text_pair", "label", "subset"]
    assert dataset["id"].tolist() == ["r1", "r2", "r5"]
    assert _metrics()["dropped"] == {"missing_text": 0, "missing_text_pair": 1, "missing_label": 0,
                                     "conflicting_label": 0, "duplicate": 1}


def test_xlsx_source_with_typed_cells(project):
    book = openpyxl.Workbook()
    sheet = book.create_sheet("rows")
    for row in [("label", "text"), ("ok", "fine"), ("spam", "win"), (1, "one"), (1.0, "uno"), ("ok", None)]:
        sheet.append(list(row))
    book.save("data/raw/book.xlsx")
    project(source="data/raw/book.xlsx", sheet="rows", max_dropped_share=0.2)
    ingest.main()
    dataset = pd.read_parquet(ingest.DATASET)
    assert dataset["label"].tolist() == ["ok", "spam", "1", "1"]
    assert _metrics()["dropped"]["missing_text"] == 1


def test_one_megabyte_text_is_kept(project):
    # Not an error: the text is stored whole; the tokenizer truncates it to model.max_length later.
    big = "lorem  ipsum " * 80_000
    Path("data/raw/big.jsonl").write_text(json.dumps({"text": big, "label": "long"}) + "\n"
                                          + json.dumps({"text": "short", "label": "short"}) + "\n")
    project(source="data/raw/big.jsonl")
    ingest.main()
    text = pd.read_parquet(ingest.DATASET)["text"].iloc[0]
    assert len(text) > 900_000 and text == " ".join(big.split())


def _workbook(name: str, rows: list[tuple], *, merge: str | None = None, first_sheet: str | None = None) -> None:
    """data/raw/<name>: `rows` on the sheet 'Data'; `merge` merges a range of it; `first_sheet` adds a sheet before it."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Data"
    for row in rows:
        sheet.append(list(row))
    if merge:
        sheet.merge_cells(merge)
    if first_sheet:
        book.create_sheet(first_sheet, 0).append(["Exported from the CRM; the table is on the next sheet"])
    book.save(Path("data/raw") / name)


def _title_sheet() -> None:
    book = openpyxl.Workbook()
    for row in [("Export 2024",), ("text", "label"), ("a", "x"), ("b", "y")]:
        book.active.append(list(row))
    book.save("data/raw/titled.xlsx")


@pytest.mark.parametrize(
    ("prepare", "params", "pattern"),
    [
        (lambda: None, {"source": "data/raw/missing.csv"}, r"data\.source: data/raw/missing\.csv: not found"),
        (lambda: Path("outside.csv").write_text("text,label\na,b\n"), {"source": "outside.csv"}, r"outside data/raw/"),
        (lambda: Path("data/raw/e.csv").write_text(""), {"source": "data/raw/e.csv"}, r"the file is empty"),
        (lambda: Path("data/raw/h.csv").write_text("text,label\n"), {"source": "data/raw/h.csv"}, r"header row but no data rows"),
        (lambda: Path("data/raw/q.csv").write_text('text,label\na,1\n"b,2\nc,3\n'), {"source": "data/raw/q.csv", "quoting": "standard"},
         r"data/raw/q\.csv: the quoted field in the record starting at line 3 is broken \(unexpected end of data\) \(read with data\.quoting: standard\)"),
        (lambda: Path("data/raw/j.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b" "label": 2}\n'),
         {"source": "data/raw/j.jsonl"}, r"data/raw/j\.jsonl: line 2, column \d+ is not valid JSON"),
        (lambda: _csv("c.csv", [("a", "b")], header=("sms", "label")), {"source": "data/raw/c.csv"},
         r"data/raw/c\.csv: no column 'text'; the CSV columns are: 'sms', 'label'"),
        (lambda: _csv("one.csv", [("a", "ham"), ("b", "ham")]), {"source": "data/raw/one.csv"},
         r"data/raw/one\.csv: only one class \('ham', 2 usable rows\) in column 'label'; a classifier needs at least 2"),
        (lambda: Path("data/raw/l.csv").write_bytes("text,label\nna\xefve,1\n".encode("latin-1")), {"source": "data/raw/l.csv"},
         r"data/raw/l\.csv: byte offset 13 \(line 2\) is not valid utf-8.*set data\.encoding"),
        (_title_sheet, {"source": "data/raw/titled.xlsx"}, r"row 2 looks like the header: delete the 1 row\(s\) above it"),
        (lambda: None, {"source": "embedded", "text_pair_column": "q2"}, r"holds single texts, not pairs"),
        (lambda: None, {"source": "data/raw"}, r"data\.source: data/raw is a directory, not a file; point data\.source at one file in it"),
        (lambda: Path("data/raw/d.csv").write_text("label,text,label\nham,a,x\n"), {"source": "data/raw/d.csv"},
         r"data/raw/d\.csv: the header names the column 'label' 2 times; rename the copies"),
        (lambda: pd.DataFrame({"text": [["0", "mike"], ["1"]], "label": ["a", "b"]}).to_parquet("data/raw/n.parquet"),
         {"source": "data/raw/n.parquet"}, r"^data/raw/n\.parquet: column 'text' holds a list<element: string> per row, not one value; "
         r"join each list into one string \(df\['text'\]\.str\.join\(' '\)\) or explode it into rows, and save the file again$"),
        (lambda: pd.DataFrame({"text": ["a", "b"], "label": [{"name": "x", "id": 1}, {"name": "y", "id": 2}]}).to_parquet("data/raw/s.parquet"),
         {"source": "data/raw/s.parquet"}, r"^data/raw/s\.parquet: column 'label' holds a struct<.*> per row, not one value; "
         r"write the field that holds the text or label as a column of its own"),
        # openpyxl, like other writers, stores a formula without its result: only a spreadsheet program computes it
        (lambda: _workbook("f.xlsx", [("text", "label"), ("a", "ham"), ("b", '=IF(LEN(A3)>0,"spam","ham")'), ("c", '=UPPER("ham")')]),
         {"source": "data/raw/f.xlsx"}, r"^data/raw/f\.xlsx: sheet 'Data': 2 cell\(s\) of column 'label' hold a formula without a stored "
         r"result \(first: B3\); skewtune reads the results a spreadsheet program saved and computes none: open the workbook"),
        (lambda: _workbook("m.xlsx", [("text", "label"), ("a", "spam"), ("b", None), ("c", None), ("d", "ham")], merge="B2:B4"),
         {"source": "data/raw/m.xlsx"}, r"^data/raw/m\.xlsx: sheet 'Data': the cells B2:B4 of column 'label' are merged, so only B2 holds "
         r"the value; unmerge them and fill the value into every row"),
        (lambda: _workbook("n.xlsx", [("text", "label"), ("a", "spam")], first_sheet="Notes"), {"source": "data/raw/n.xlsx"},
         r"^data/raw/n\.xlsx: sheet 'Notes' has no column 'text', 'label' in row 1 \(found: 'Exported from the CRM; .*'\); the header "
         r"must be row 1 of the sheet; or is the table on another sheet\? The workbook's sheets are 'Notes', 'Data': set data\.sheet "
         r"to the one that holds it, or fix data\.text_column"),
    ],
)
def test_bad_input_fails_cleanly_without_outputs(project, prepare, params, pattern):
    prepare()
    project(**params)
    with pytest.raises(SkewtuneError, match=pattern):
        ingest.main()
    assert _no_outputs()


def test_xlsx_with_a_tampered_dimension_is_read_within_a_memory_limit(project):
    """A sheet that declares 16,384 columns (`<dimension ref="A1:XFD8001"/>`) but holds two: memory follows the cells
    present. Read at the declared width, the 8,000 rows took 2 GB; here the stage runs under a 1.5 GB address space."""
    import re
    import resource
    import zipfile

    from test_tables import _edit_sheet_xml

    book = openpyxl.Workbook()
    book.active.append(["text", "label"])
    for i in range(8000):
        book.active.append([f"message {i}", "spam" if i % 7 == 0 else "ham"])
    book.save("data/raw/wide.xlsx")
    _edit_sheet_xml(Path("data/raw/wide.xlsx"), lambda xml: re.sub(rb'<dimension ref="A1:B8001" ?/>', b'<dimension ref="A1:XFD8001"/>', xml))
    assert b"XFD8001" in zipfile.ZipFile("data/raw/wide.xlsx").read("xl/worksheets/sheet1.xml")
    root = project(source="data/raw/wide.xlsx")
    limit = 1500 * 2**20
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=root, env=env, capture_output=True, text=True, timeout=300,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert result.returncode == 0, result.stderr
    assert _metrics()["rows_kept"] == 8000 and pd.read_parquet(ingest.DATASET)["text"].iloc[-1] == "message 7999"


def test_cli_prints_one_line_and_exits_2(project):
    root = project(source="data/raw/absent.csv")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "skewtune ingest: error: data.source: data/raw/absent.csv: not found; put the file in data/raw/ or fix data.source"
    assert _no_outputs()


def test_ingest_is_deterministic(project):
    source = _csv("d.csv", [(f"text {i % 37} {i}", "ab"[i % 3 == 0]) for i in range(300)] + [("text 1 1", "b")])
    project(source=source)
    ingest.main()
    first = {path: Path(path).read_bytes() for path in OUTPUTS}
    ingest.main()
    assert {path: Path(path).read_bytes() for path in OUTPUTS} == first


def _reviews(n: int, seed: int) -> pd.DataFrame:
    """Reviews as exported from a review site: multi-line, quoted, with tabs and HTML references."""
    return pd.DataFrame({
        "review": [f'Review {seed}-{i}: "great"\nsecond line,\twith a tab &amp; it&#039;s {"good" if i % 3 else "bad"}' for i in range(n)],
        "label": ["pos" if i % 3 else "neg" for i in range(n)],
    })


def test_pandas_written_tsv_comes_in_whole(project, capsys):
    # The case: 600 train and 379 test rows written by DataFrame.to_csv(sep="\t") (index included).
    train, test = _reviews(600, 0), _reviews(379, 1)
    train.to_csv("data/raw/train.tsv", sep="\t")
    test.to_csv("data/raw/test.tsv", sep="\t")
    project(source="data/raw/train.tsv", test_path="data/raw/test.tsv", text_column="review")
    ingest.main()
    report = _metrics()
    assert (report["rows_in"], report["rows_kept"], report["test"]["rows_in"], report["test"]["rows_kept"]) == (600, 600, 379, 379)
    assert report["reading"]["quoting"] == report["test"]["reading"]["quoting"] == "standard"
    assert report["cleaning"]["rows_with_html_references"] == 600 and not report["cleaning"]["html_references_decoded"]
    printed = capsys.readouterr().out
    assert "data/raw/train.tsv: read as TSV with standard quoting" in printed and "kept 600 of 600 rows; dropped: none" in printed
    assert "600 rows hold HTML character references (&amp;, &#039;, ...) kept as written; set data.unescape_html: true" in printed
    dataset = pd.read_parquet(ingest.DATASET)
    expected = [" ".join(text.split()) for text in [*train["review"], *test["review"]]]
    assert dataset["text"].tolist() == expected
    # Read as before (no quote processing), the same file stops ingest, saying where and why.
    project(source="data/raw/train.tsv", test_path="data/raw/test.tsv", text_column="review", quoting="none")
    _clear_outputs()
    with pytest.raises(SkewtuneError, match=r"data/raw/train\.tsv: 600 of 1200 rows \(50\.0%\) lack a text or a label \(600 missing_label\).*"
                                            r"first: line 2: review='\"Review 0-0: \"\"great\"\"', label=None; line 4: .*Likely cause: quoting: "
                                            r"the file was read without quote processing .* set data\.quoting: standard"):
        ingest.main()
    assert _no_outputs()


def test_a_pandas_csv_with_quotes_in_multiline_texts_is_read_with_standard_quoting(project, capsys):
    texts = [f'Review {i}: "great" stuff,\nsecond line\twith tab' if i % 3 == 0 else f"Review {i}: fine" for i in range(300)]
    pd.DataFrame({"text": texts, "label": ["good", "bad", "good"] * 100}).to_csv("data/raw/reviews.csv", index=False)
    project(source="data/raw/reviews.csv")
    ingest.main()
    assert _metrics()["rows_kept"] == 300 and _metrics()["reading"]["quoting"] == "standard"
    assert "data/raw/reviews.csv: read as CSV with standard quoting" in capsys.readouterr().out
    assert pd.read_parquet(ingest.DATASET)["text"].iloc[0] == 'Review 0: "great" stuff, second line with tab'


def test_html_references_are_decoded_on_request(project):
    _reviews(30, 0).to_csv("data/raw/r.csv", index=False)
    project(source="data/raw/r.csv", text_column="review", unescape_html=True)
    ingest.main()
    assert _metrics()["cleaning"]["html_references_decoded"]
    assert pd.read_parquet(ingest.DATASET)["text"].iloc[0] == 'Review 0-0: "great" second line, with a tab & it\'s bad'


def test_control_characters_are_removed_and_counted(project):
    source = _csv("ctl.csv", [("nul\x00byte", "a"), ("end of file\x1a", "b"), ("bell\x07 and\x00 nul", "a"), ("clean", "b")])
    project(source=source)
    ingest.main()
    assert _metrics()["cleaning"] == {"control_characters_removed": 4, "rows_with_control_characters": 3,
                                      "rows_with_html_references": 0, "html_references_decoded": False}
    assert pd.read_parquet(ingest.DATASET)["text"].tolist() == ["nulbyte", "end of file", "bell and nul", "clean"]


def test_dropped_row_guard_trips_above_the_share_and_says_where(project):
    rows = [(f"text {i}", "ab"[i % 2]) for i in range(200)]
    rows[9] = ("text 9", "")   # line 11 (the header is line 1)
    rows[49] = ("", "a")       # line 51
    source = _csv("gaps.csv", rows)
    project(source=source, max_dropped_share=0.01)  # 2 of 200 = 1%: not more than allowed
    ingest.main()
    report = _metrics()
    assert report["dropped"]["missing_label"] == report["dropped"]["missing_text"] == 1
    assert report["drop_examples"]["missing_label"] == [{"row": 10, "at": "line 11", "text": "text 9", "label": ""}]
    assert report["drop_examples"]["missing_text"] == [{"row": 50, "at": "line 51", "text": "", "label": "a"}]
    rows[99] = ("text 99", " ")  # a third gap: 1.5%
    _csv("gaps.csv", rows)
    _clear_outputs()
    with pytest.raises(SkewtuneError) as caught:
        ingest.main()
    assert str(caught.value) == (
        "data/raw/gaps.csv: 3 of 200 rows (1.5%) lack a text or a label (1 missing_text, 2 missing_label), more than "
        "data.max_dropped_share (0.01) allows; first: line 11: text='text 9', label=''; line 51: text='', label='a'; "
        "line 101: text='text 99', label=' '. Likely cause: the wrong separator or quoting (read as CSV with standard quoting; "
        "check data.format and data.quoting). Fix the file or the settings, or raise data.max_dropped_share to drop these rows knowingly"
    )
    assert _no_outputs()
    project(source=source, max_dropped_share=0.015)
    ingest.main()
    assert _metrics()["rows_kept"] == 197


def test_dropped_row_guard_names_a_mostly_empty_column(project):
    source = _csv("cols.csv", [(f"t{i}", "x" if i < 3 else "") for i in range(10)], header=("text", "label"))
    project(source=source)
    with pytest.raises(SkewtuneError, match=r"7 of 10 rows \(70\.0%\).*Likely cause: the wrong column: 'label' is empty in 70% "
                                            r"of the rows \(check data\.label_column\)"):
        ingest.main()
