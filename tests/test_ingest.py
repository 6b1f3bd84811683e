"""The ingest stage, run for real in a scratch project: cleaning, de-duplication, labels, test file, errors."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import yaml

from skewtune.core import paths
from skewtune.core.errors import SkewtuneError
from stages import ingest

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = (ingest.DATASET, ingest.LABELS, paths.INGEST_REPORT)


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
    return json.loads(Path(paths.INGEST_REPORT).read_text())


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
    assert report["dropped"] == {
        "missing_text": 0,
        "missing_label": 0,
        "conflicting_label": 0,
        "outvoted_label": 0,
        "duplicate": 328,
    }
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
    shutil.copyfile(sms_path, "data/raw/sms.tsv")  # a copy: a symbolic link out of data/raw/ is refused
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
    source = _csv(
        "mixed.csv",
        [
            ("Free  prize\u00a0now ", "spam"),  # r1 kept, whitespace normalised
            ("   ", "ham"),  # r2 empty text
            ("", "ham"),  # r3 empty text
            ("no label here", ""),  # r4 missing label
            ("see you\tat 5", "ham"),  # r5 kept
            ("free prize now", "spam"),  # r6 kept: case differs
            ("see you at 5", "ham"),  # r7 duplicate of r5 after normalisation
            ("maybe spam", "ham"),  # r8 conflicting: outvoted ...
            ("maybe spam", "spam"),  # r9 ... kept: the first copy of the most frequent label
            ("maybe  spam", "spam"),  # r10 ... same text after normalisation: a duplicate of r9
            ("call me", "ham"),  # r11 kept
        ],
    )
    # 3 of 11 rows lack a text or label, 1 is outvoted: allowed knowingly
    project(source=source, max_dropped_share=0.3, max_conflict_share=0.1)
    ingest.main()
    report = _metrics()
    assert report["rows_in"] == 11 and report["rows_kept"] == 5
    assert report["dropped"] == {
        "missing_text": 2,
        "missing_label": 1,
        "conflicting_label": 0,
        "outvoted_label": 1,
        "duplicate": 2,
    }
    assert report["conflicts"]["conflicting"] == 1 and report["duplicates"] == {"rows": 2, "share": round(2 / 11, 6)}
    assert report["conflict_examples"] == [
        {
            "file": "pool",
            "text": "maybe spam",
            "labels": {"spam": 2, "ham": 1},
            "kept_label": "spam",
            "ids": ["r8", "r9", "r10"],
        }
    ]
    dataset = pd.read_parquet(ingest.DATASET)
    assert dataset["id"].tolist() == ["r1", "r5", "r6", "r9", "r11"]
    assert dataset["text"].tolist() == ["Free prize now", "see you at 5", "free prize now", "maybe spam", "call me"]


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
    (Path("params.yaml")).write_text(
        "data:\n  source: data/raw/nums.jsonl\n  label_map: {0: negative, 1.0: positive}\n"
    )
    ingest.main()
    assert json.loads(Path(ingest.LABELS).read_text())["labels"] == ["negative", "positive"]


def test_label_map_merges_and_catches_typos(project):
    source = _csv("three.csv", [("a", "spam"), ("b", "ham"), ("c", "promo"), ("d", "ham")])
    project(source=source, label_map={"promo": "spam"})
    ingest.main()
    assert _metrics()["class_counts"] == {"ham": 2, "spam": 2}
    Path(paths.INGEST_REPORT).unlink()
    project(source=source, label_map={"promos": "spam"})
    with pytest.raises(
        SkewtuneError,
        match=r"data\.label_map: 'promos' match no label in data/raw/three\.csv; the labels found are: 'ham', 'promo', 'spam'",
    ):
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
    assert report["test"]["dropped"] == {
        "missing_text": 1,
        "missing_label": 0,
        "conflicting_label": 0,
        "outvoted_label": 0,
        "duplicate": 1,
    }


def test_test_file_label_typos_are_listed(project):
    source = _csv("train.csv", [("alpha", "ham"), ("beta", "spam")])
    test = _csv("test.csv", [("x", "hamm"), ("y", "spam"), ("z", "Spam")])
    project(source=source, test_path=test)
    with pytest.raises(
        SkewtuneError,
        match=r"data/raw/test\.csv: label\(s\) 'Spam', 'hamm' of the test file do not occur in "
        r"data/raw/train\.csv \(its labels: 'ham', 'spam'\)",
    ):
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
    rows = [
        ("how old are you", "what is your age", "same"),
        ("how old are you", "where do you live", "diff"),
        ("how old are you", "what is your age", "same"),
        ("hi", "", "diff"),
        ("a", "b", "diff"),
    ]
    source = _csv("pairs.csv", rows, header=("q1", "q2", "label"))
    project(source=source, text_column="q1", text_pair_column="q2", max_dropped_share=0.2)
    ingest.main()
    dataset = pd.read_parquet(ingest.DATASET)
    assert list(dataset.columns) == ["id", "text", "text_pair", "label", "subset"]
    assert dataset["id"].tolist() == ["r1", "r2", "r5"]
    assert _metrics()["dropped"] == {
        "missing_text": 0,
        "missing_text_pair": 1,
        "missing_label": 0,
        "conflicting_label": 0,
        "outvoted_label": 0,
        "duplicate": 1,
    }


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
    Path("data/raw/big.jsonl").write_text(
        json.dumps({"text": big, "label": "long"}) + "\n" + json.dumps({"text": "short", "label": "short"}) + "\n"
    )
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
        (
            lambda: Path("data/raw/h.csv").write_text("text,label\n"),
            {"source": "data/raw/h.csv"},
            r"header row but no data rows",
        ),
        (
            lambda: Path("data/raw/q.csv").write_text('text,label\na,1\n"b,2\nc,3\n'),
            {"source": "data/raw/q.csv", "quoting": "standard"},
            r"data/raw/q\.csv: the quoted field in the record starting at line 3 is broken \(unexpected end of "
            r"data\) \(read with data\.quoting: standard\)",
        ),
        (
            lambda: Path("data/raw/j.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b" "label": 2}\n'),
            {"source": "data/raw/j.jsonl"},
            r"data/raw/j\.jsonl: line 2, column \d+ is not valid JSON",
        ),
        (
            lambda: _csv("c.csv", [("a", "b")], header=("sms", "label")),
            {"source": "data/raw/c.csv"},
            r"data/raw/c\.csv: no column 'text'; the CSV columns are: 'sms', 'label'",
        ),
        (
            lambda: _csv("one.csv", [("a", "ham"), ("b", "ham")]),
            {"source": "data/raw/one.csv"},
            r"data/raw/one\.csv: only one class \('ham', 2 usable rows\) in column 'label'; a classifier needs at least 2",
        ),
        (
            lambda: Path("data/raw/l.csv").write_bytes("text,label\nna\xefve,1\n".encode("latin-1")),
            {"source": "data/raw/l.csv"},
            r"data/raw/l\.csv: byte offset 13 \(line 2\) is not valid utf-8.*set data\.encoding",
        ),
        (
            _title_sheet,
            {"source": "data/raw/titled.xlsx"},
            r"row 2 looks like the header: delete the 1 row\(s\) above it",
        ),
        (lambda: None, {"source": "embedded", "text_pair_column": "q2"}, r"holds single texts, not pairs"),
        (
            lambda: None,
            {"source": "data/raw"},
            r"data\.source: data/raw is a directory, not a file; point data\.source at one file in it",
        ),
        (
            lambda: Path("data/raw/d.csv").write_text("label,text,label\nham,a,x\n"),
            {"source": "data/raw/d.csv"},
            r"data/raw/d\.csv: the header names the column 'label' 2 times; rename the copies",
        ),
        (
            lambda: pd.DataFrame({"text": [["0", "mike"], ["1"]], "label": ["a", "b"]}).to_parquet(
                "data/raw/n.parquet"
            ),
            {"source": "data/raw/n.parquet"},
            r"^data/raw/n\.parquet: column 'text' holds a list<element: string> per row, not one value; "
            r"join each list into one string \(df\['text'\]\.str\.join\(' '\)\) or explode it into rows, and save the file again$",
        ),
        (
            lambda: pd.DataFrame(
                {"text": ["a", "b"], "label": [{"name": "x", "id": 1}, {"name": "y", "id": 2}]}
            ).to_parquet("data/raw/s.parquet"),
            {"source": "data/raw/s.parquet"},
            r"^data/raw/s\.parquet: column 'label' holds a struct<.*> per row, not one value; "
            r"write the field that holds the text or label as a column of its own",
        ),
        # openpyxl, like other writers, stores a formula without its result: only a spreadsheet program computes it
        (
            lambda: _workbook(
                "f.xlsx",
                [("text", "label"), ("a", "ham"), ("b", '=IF(LEN(A3)>0,"spam","ham")'), ("c", '=UPPER("ham")')],
            ),
            {"source": "data/raw/f.xlsx"},
            r"^data/raw/f\.xlsx: sheet 'Data': 2 cell\(s\) of column 'label' hold a formula without a stored "
            r"result \(first: B3\); skewtune reads the results a spreadsheet program saved and computes none: open the workbook",
        ),
        (
            lambda: _workbook(
                "m.xlsx", [("text", "label"), ("a", "spam"), ("b", None), ("c", None), ("d", "ham")], merge="B2:B4"
            ),
            {"source": "data/raw/m.xlsx"},
            r"^data/raw/m\.xlsx: sheet 'Data': the cells B2:B4 of column 'label' are merged, so only B2 holds "
            r"the value; unmerge them and fill the value into every row",
        ),
        (
            lambda: _workbook("n.xlsx", [("text", "label"), ("a", "spam")], first_sheet="Notes"),
            {"source": "data/raw/n.xlsx"},
            r"^data/raw/n\.xlsx: sheet 'Notes' has no column 'text', 'label' in row 1 \(found: 'Exported from the CRM; .*'\); the header "
            r"must be row 1 of the sheet; or is the table on another sheet\? The workbook's sheets are 'Notes', 'Data': set data\.sheet "
            r"to the one that holds it, or fix data\.text_column",
        ),
    ],
)
def test_bad_input_fails_cleanly_without_outputs(project, prepare, params, pattern):
    prepare()
    project(**params)
    with pytest.raises(SkewtuneError, match=pattern):
        ingest.main()
    assert _no_outputs()


@pytest.mark.slow
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
    _edit_sheet_xml(
        Path("data/raw/wide.xlsx"),
        lambda xml: re.sub(rb'<dimension ref="A1:B8001" ?/>', b'<dimension ref="A1:XFD8001"/>', xml),
    )
    assert b"XFD8001" in zipfile.ZipFile("data/raw/wide.xlsx").read("xl/worksheets/sheet1.xml")
    root = project(source="data/raw/wide.xlsx")
    limit = 1500 * 2**20
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "stages.ingest"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    )
    assert result.returncode == 0, result.stderr
    assert _metrics()["rows_kept"] == 8000 and pd.read_parquet(ingest.DATASET)["text"].iloc[-1] == "message 7999"


def test_cli_prints_one_line_and_exits_2(project):
    root = project(source="data/raw/absent.csv")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "stages.ingest"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "skewtune ingest: error: data.source: data/raw/absent.csv: not found; put the file in data/raw/ or fix data.source"
    )
    assert _no_outputs()


@pytest.mark.parametrize("absolute", [False, True])
def test_a_symbolic_link_out_of_data_raw_is_refused_unread(project, tmp_path, absolute):
    """Git stores symbolic links, so a pull request can carry data/raw/link.csv -> ../outside.csv (or /etc/passwd):
    ingest resolves links and refuses one leading out of data/raw/ before reading it."""
    outside = tmp_path / "outside.csv"
    outside.write_text("text,label\nSECRET first line,ham\nanother secret,spam\n", encoding="utf-8")
    Path("data/raw/link.csv").symlink_to(outside if absolute else Path("../../outside.csv"))
    root = project(source="data/raw/link.csv")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "stages.ingest"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"skewtune ingest: error: data.source: 'data/raw/link.csv' is outside data/raw/ (a symbolic link to {outside}); "
        "DVC tracks data/raw/ as the pipeline's input, so copy the file there (e.g. data/raw/link.csv) and point data.source at it\n"
    )
    assert "SECRET" not in result.stdout + result.stderr and _no_outputs()
    assert outside.read_text(encoding="utf-8").startswith("text,label\nSECRET")  # the user's file untouched


def test_links_inside_data_raw_and_into_the_dvc_cache_are_read(project):
    """A link that stays in data/raw/, or leads into DVC's cache (what `cache.type: symlink` makes of data/raw/), is data."""
    cached = Path(".dvc/cache/files/md5/ab/cdef")
    cached.parent.mkdir(parents=True)
    cached.write_text(
        _csv("a.csv", [("free prize", "spam"), ("see you", "ham"), ("win cash", "spam"), ("ok", "ham")])
        and Path("data/raw/a.csv").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    Path("data/raw/cached.csv").symlink_to(Path("../..") / cached)
    Path("data/raw/sub").mkdir()
    Path("data/raw/sub/same.csv").symlink_to(Path("../a.csv"))
    for source in ("data/raw/cached.csv", "data/raw/sub/same.csv"):
        project(source=source)
        ingest.main()
        assert _metrics()["rows_kept"] == 4


def run_on_full_disk(command: list[str], small: Path, cwd: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`command` (with this checkout first on PYTHONPATH) with a 16 KiB filesystem mounted on `small` (a private tmpfs
    in a user namespace), and what is left in `small` after it; skipped where the system allows no such mount."""
    script = (
        'mount -t tmpfs -o size=16k tmpfs "$0" || exit 99; "$@"; status=$?; echo "left: $(ls -A "$0")"; exit $status'
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, str(small), *map(str, command)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode == 99 or "unshare:" in result.stderr:
        pytest.skip(f"no private tmpfs mount here: {result.stderr.strip()}")
    left = result.stdout.rsplit("left: ", 1)[-1].split()
    return result, left


def test_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(project):
    root = project(source="embedded")
    Path("data/interim").mkdir(parents=True)
    result, left = run_on_full_disk([sys.executable, "-m", "stages.ingest"], root / "data/interim", root)
    assert result.returncode == 1, result.stderr
    assert re.fullmatch(
        r"skewtune ingest: error: data/interim/dataset\.parquet: no space left on device while writing it \(\d+\.\d KiB free "
        r"there(; the outputs had taken \d+\.\d KiB when it ran out, they need more)?\); nothing was written: free space and re-run\n",
        result.stderr,
    ), result.stderr
    assert left == [] and not Path(paths.INGEST_REPORT).exists()  # no temporary, no report of a dataset not written


def test_ingest_is_deterministic(project):
    source = _csv("d.csv", [(f"text {i % 37} {i}", "ab"[i % 3 == 0]) for i in range(300)] + [("text 1 1", "b")])
    project(source=source)
    ingest.main()
    first = {path: Path(path).read_bytes() for path in OUTPUTS}
    ingest.main()
    assert {path: Path(path).read_bytes() for path in OUTPUTS} == first


def _reviews(n: int, seed: int) -> pd.DataFrame:
    """Reviews as exported from a review site: multi-line, quoted, with tabs and HTML references."""
    return pd.DataFrame(
        {
            "review": [
                f'Review {seed}-{i}: "great"\nsecond line,\twith a tab &amp; it&#039;s {"good" if i % 3 else "bad"}'
                for i in range(n)
            ],
            "label": ["pos" if i % 3 else "neg" for i in range(n)],
        }
    )


def test_pandas_written_tsv_comes_in_whole(project, capsys):
    # The case: 600 train and 379 test rows written by DataFrame.to_csv(sep="\t") (index included).
    train, test = _reviews(600, 0), _reviews(379, 1)
    train.to_csv("data/raw/train.tsv", sep="\t")
    test.to_csv("data/raw/test.tsv", sep="\t")
    project(source="data/raw/train.tsv", test_path="data/raw/test.tsv", text_column="review")
    ingest.main()
    report = _metrics()
    assert (report["rows_in"], report["rows_kept"], report["test"]["rows_in"], report["test"]["rows_kept"]) == (
        600,
        600,
        379,
        379,
    )
    assert report["reading"]["quoting"] == report["test"]["reading"]["quoting"] == "standard"
    assert report["cleaning"]["rows_with_html_references"] == 600 and not report["cleaning"]["html_references_decoded"]
    printed = capsys.readouterr().out
    assert (
        "data/raw/train.tsv: read as TSV with standard quoting" in printed
        and "kept 600 of 600 rows; dropped: none" in printed
    )
    assert (
        "600 rows with HTML character references (&amp;, &#039;, ...): kept as written; set data.unescape_html: true"
        in printed
    )
    dataset = pd.read_parquet(ingest.DATASET)
    expected = [" ".join(text.split()) for text in [*train["review"], *test["review"]]]
    assert dataset["text"].tolist() == expected
    # Read as before (no quote processing), the same file stops ingest, saying where and why.
    project(source="data/raw/train.tsv", test_path="data/raw/test.tsv", text_column="review", quoting="none")
    _clear_outputs()
    with pytest.raises(
        SkewtuneError,
        match=r"data/raw/train\.tsv: 600 of 1200 rows \(50\.0%\) lack a text or a label \(600 missing_label\).*"
        r"first: line 2: review='\"Review 0-0: \"\"great\"\"', label=None; line 4: .*Likely cause: quoting: "
        r"the file was read without quote processing .* set data\.quoting: standard",
    ):
        ingest.main()
    assert _no_outputs()


def test_a_pandas_csv_with_quotes_in_multiline_texts_is_read_with_standard_quoting(project, capsys):
    texts = [
        f'Review {i}: "great" stuff,\nsecond line\twith tab' if i % 3 == 0 else f"Review {i}: fine" for i in range(300)
    ]
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
    source = _csv(
        "ctl.csv", [("nul\x00byte", "a"), ("end of file\x1a", "b"), ("bell\x07 and\x00 nul", "a"), ("clean", "b")]
    )
    project(source=source)
    ingest.main()
    assert _metrics()["cleaning"] == {
        "control_characters_removed": 4,
        "rows_with_control_characters": 3,
        "rows_with_html_references": 0,
        "html_references_decoded": False,
        "texts_spelled_missing": 0,
    }
    assert pd.read_parquet(ingest.DATASET)["text"].tolist() == ["nulbyte", "end of file", "bell and nul", "clean"]


def test_dropped_row_guard_trips_above_the_share_and_says_where(project):
    rows = [(f"text {i}", "ab"[i % 2]) for i in range(200)]
    rows[9] = ("text 9", "")  # line 11 (the header is line 1)
    rows[49] = ("", "a")  # line 51
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
    with pytest.raises(
        SkewtuneError,
        match=r"7 of 10 rows \(70\.0%\).*Likely cause: the wrong column: 'label' is empty in 70% "
        r"of the rows \(check data\.label_column\)",
    ):
        ingest.main()


def _conflicting_table() -> str:
    """80 rows: 'no damage' once as other (r1), then 7 times as none; 'bird hit' once each as none and other (a tie);
    'atis warning' 4 times as none (repeats, same label); 66 distinct texts. 10 rows carry a conflict."""
    rows = (
        [("no damage", "other")]
        + [("no damage", "none")] * 7
        + [("bird hit", "none"), ("bird hit", "other")]
        + [("atis warning", "none")] * 4
        + [(f"remark {i}", ["none", "other"][i % 2]) for i in range(66)]
    )
    return _csv("strikes.csv", rows, header=("remarks", "effect"))


STRIKES = {"text_column": "remarks", "label_column": "effect"}


def test_conflicts_default_keeps_the_majority_and_bounds_only_conflicts(project, capsys):
    # The defaults: majority_vote under a 5% bound; repeats with the same label are collapsed and counted, not bounded.
    project(source=_conflicting_table(), **STRIKES)
    ingest.main()
    report = _metrics()
    assert report["dropped"] == {
        "missing_text": 0,
        "missing_label": 0,
        "conflicting_label": 2,
        "outvoted_label": 1,
        "duplicate": 9,
    }
    assert report["conflicts"] == {
        "policy": "majority_vote",
        "conflicting": 2,
        "kept_by_vote": 1,
        "tied": 1,
        "rows_dropped": 3,
        "share": 0.0375,
        "max_share": 0.05,
    }
    assert report["duplicates"] == {"rows": 9, "share": 0.1125}  # more than the conflict bound: repeats lose no label
    dataset = pd.read_parquet(ingest.DATASET)
    assert len(dataset) == report["rows_kept"] == 68
    assert dataset.loc[dataset["text"] == "no damage", ["id", "label"]].values.tolist() == [["r2", "none"]]
    assert "bird hit" not in set(dataset["text"]) and (dataset["text"] == "atis warning").sum() == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[1:3] == [
        "ingest: data/raw/strikes.csv: WARNING: 3 rows (3.8%) dropped for conflicting labels: 2 texts with more than one label "
        "(data.conflicts: majority_vote): 1 kept once with their most frequent label (1 outvoted row dropped), 1 tied (2 rows "
        "dropped); bound: data.max_conflict_share 0.05",
        "ingest: data/raw/strikes.csv: WARNING: collapsed 9 repeated rows (11.2%) into the first copy of their text and label: the "
        "dataset holds each text once, so val and test weigh a frequent one once, not by how often it occurs",
    ]


def test_majority_vote_in_the_data_and_the_test_file(project):
    test = _csv(
        "strikes_test.csv",
        [
            ("no damage", "none"),
            ("no damage", "none"),
            ("no damage", "other"),
            ("engine fire", "other"),
            ("engine fire", "none"),
            ("bird hit", "none"),
        ],
        header=("remarks", "effect"),
    )
    project(source=_conflicting_table(), test_path=test, conflicts="majority_vote", max_conflict_share=0.5, **STRIKES)
    ingest.main()
    report = _metrics()
    # The pool's kept 'no damage' (r2) is also in the test file; 'bird hit' tied in the pool, so only the test file keeps it.
    assert report["dropped"] == {
        "missing_text": 0,
        "missing_label": 0,
        "conflicting_label": 2,
        "outvoted_label": 1,
        "duplicate": 9,
        "also_in_test_file": 1,
    }
    assert report["test"]["dropped"] == {
        "missing_text": 0,
        "missing_label": 0,
        "conflicting_label": 2,
        "outvoted_label": 1,
        "duplicate": 1,
    }
    assert report["test"]["conflicts"] == {
        "policy": "majority_vote",
        "conflicting": 2,
        "kept_by_vote": 1,
        "tied": 1,
        "rows_dropped": 3,
        "share": 0.5,
        "max_share": 0.5,
    }
    assert report["conflict_examples"][:2] == [
        {
            "file": "pool",
            "text": "no damage",
            "labels": {"none": 7, "other": 1},
            "kept_label": "none",
            "ids": ["r1", "r2", "r3", "r4", "r5"],
        },
        {
            "file": "test",
            "text": "no damage",
            "labels": {"none": 2, "other": 1},
            "kept_label": "none",
            "ids": ["t1", "t2", "t3"],
        },
    ]
    dataset = pd.read_parquet(ingest.DATASET).set_index("id")
    assert (
        dataset.loc[["t1", "t6"], "label"].tolist() == ["none", "none"]
        and dataset["subset"].value_counts()["test"] == 2
    )
    assert not dataset.index.isin(["r1", "r2", "r9", "r10", "t3", "t4", "t5"]).any()


def test_conflict_bound_stops_with_one_line_and_writes_nothing(project):
    root = project(source=_conflicting_table(), conflicts="drop", **STRIKES)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "stages.ingest"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "skewtune ingest: error: data/raw/strikes.csv: 10 of 80 rows (12.5%) are dropped for conflicting labels (10 conflicting_label; "
        "2 texts carry more than one label, data.conflicts: drop), more than data.max_conflict_share (0.05) allows; most rows: "
        "'no damage' (none 7, other 1); 'bird hit' (none 1, other 1). Fix the labels, set data.conflicts: majority_vote to keep each "
        "such text once with its most frequent label (that drops 3 rows here, 3.8%), or raise data.max_conflict_share to drop these "
        "rows knowingly"
    )
    assert _no_outputs()
    project(source="data/raw/strikes.csv", conflicts="majority_vote", max_conflict_share=0.03, **STRIKES)
    with pytest.raises(
        SkewtuneError,
        match=r"^data/raw/strikes\.csv: 3 of 80 rows \(3\.8%\) are dropped for conflicting labels \(2 "
        r"conflicting_label, 1 outvoted_label; 2 texts .*check data\.label_column .*data\.conflicts: "
        r"drop would drop 10 rows\), or raise data\.max_conflict_share",
    ):
        ingest.main()
    assert _no_outputs()
    project(
        source="data/raw/strikes.csv", conflicts="drop", max_conflict_share=0.125, **STRIKES
    )  # 12.5%: allowed knowingly
    ingest.main()
    assert _metrics()["dropped"]["conflicting_label"] == 10 and _metrics()["conflicts"]["kept_by_vote"] == 0


def _run_stage(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "stages.ingest"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def _spelled_missing_rows() -> list[tuple]:
    """The issue's file: 100 labelled rows, then labels written as missing values (NA 25, NaN 5, #N/A 5, null 2, None 1)
    and texts that say NA, null or None with real labels."""
    return (
        [(f"message {i}", "ab"[i % 2]) for i in range(100)]
        + [(f"na {i}", "NA") for i in range(25)]
        + [(f"nan {i}", "NaN") for i in range(5)]
        + [(f"hash {i}", "#N/A") for i in range(5)]
        + [("null 1", "null"), ("null 2", "null"), ("none 1", "None"), ("NA", "a"), ("null", "b"), ("None", "a")]
    )


def test_missing_value_spellings_are_missing_labels_but_stay_texts(project, capsys):
    source = _csv("gaps.csv", _spelled_missing_rows())
    root = project(source=source)
    result = _run_stage(root)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        "skewtune ingest: error: data/raw/gaps.csv: 38 of 141 rows (27.0%) lack a text or a label "
        "(38 missing_label), more than data.max_dropped_share (0.01) allows; first: line 102: text='na 0', label='NA'"
    )
    assert (
        "Likely cause: labels written as a missing value (NA 25, #N/A 5, NaN 5, null 2, None 1): if one is a real class, name it "
        "in data.label_map; or the wrong separator or quoting"
    ) in result.stderr
    assert _no_outputs()
    project(source=source, max_dropped_share=0.3)
    ingest.main()
    report = _metrics()
    assert report["dropped"]["missing_label"] == 38 and report["dropped"]["missing_text"] == 0
    assert report["labels_spelled_missing"] == {"NA": 25, "#N/A": 5, "NaN": 5, "null": 2, "None": 1}
    assert report["class_counts"] == {"a": 52, "b": 51}  # the texts NA, null and None are kept, with their labels
    assert report["cleaning"]["texts_spelled_missing"] == 3
    printed = capsys.readouterr().out
    assert (
        "ingest: labels: 38 labels written as a missing value (NA 25, #N/A 5, NaN 5, null 2, None 1), counted as "
        'missing_label; if one is a real class, name it in data.label_map (e.g. {"NA": "NA"})'
    ) in printed
    assert (
        "ingest: data/raw/gaps.csv: 3 rows with a text that reads like a missing value (NA, null, None, ...): kept as text"
    ) in printed
    # Named in data.label_map, a spelling is a label again.
    project(source=source, max_dropped_share=0.3, label_map={"None": "none"})
    ingest.main()
    assert _metrics()["dropped"]["missing_label"] == 37 and _metrics()["class_counts"]["none"] == 1


def test_real_nulls_are_missing_whatever_the_format(project):
    # JSONL null and a Parquet None: never the label 'None' or 'nan', never the text 'None' (pandas < 3 printed them so).
    lines = [
        {"text": "one", "label": "a"},
        {"text": None, "label": "a"},
        {"text": "three", "label": None},
        {"text": "four", "label": float("nan")},
        {"text": "five", "label": "b"},
    ]
    Path("data/raw/n.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines).replace("NaN", "null"))
    project(source="data/raw/n.jsonl", max_dropped_share=0.6)
    ingest.main()
    assert _metrics()["dropped"] == {
        "missing_text": 1,
        "missing_label": 2,
        "conflicting_label": 0,
        "outvoted_label": 0,
        "duplicate": 0,
    }
    pd.DataFrame({"text": ["one", None, "three", "four"], "label": ["a", "b", None, "b"]}).to_parquet(
        "data/raw/n.parquet"
    )
    project(source="data/raw/n.parquet", max_dropped_share=0.6)
    ingest.main()
    assert _metrics()["dropped"]["missing_text"] == _metrics()["dropped"]["missing_label"] == 1
    assert pd.read_parquet(ingest.DATASET)["text"].tolist() == ["one", "four"]


@pytest.mark.parametrize(
    "values", [["x", None, float("nan"), pd.NA, " "], [1.0, float("nan"), None, pd.NA, 3.0]], ids=["object", "numbers"]
)
def test_normalise_text_keeps_nulls_missing(values):
    from skewtune.data.cleaning import normalise_text

    result = normalise_text(pd.Series(values, dtype=object))
    assert result.isna().tolist() == [False, True, True, True, values[4] == " "]
    assert not result.isin(["None", "nan", "<NA>"]).any() and result[0] in ("x", "1.0")


INVISIBLE = ["\u200b", "\ufeff", "\u202e\u2066", "\u200b \u200c\u2060", "\u200e\u200f\u2069"]


def test_texts_of_only_invisible_characters_are_missing(project):
    rows = (
        [(f"text {i}", "ab"[i % 2]) for i in range(10)] + [(text, "a") for text in INVISIBLE] + [("\u200dx\u200b", "b")]
    )
    project(source=_csv("zw.csv", rows), max_dropped_share=0.5)
    ingest.main()
    report = _metrics()
    assert report["dropped"]["missing_text"] == len(INVISIBLE) and report["rows_kept"] == 11
    assert [example["text"] for example in report["drop_examples"]["missing_text"]] == INVISIBLE[:3]
    assert pd.read_parquet(ingest.DATASET)["text"].iloc[-1] == "\u200dx\u200b"  # with visible text, kept as written


def test_labels_differing_only_in_case_warn_with_the_merging_map(project, capsys):
    rows = (
        [(f"t{i}", "spam") for i in range(6)]
        + [(f"u{i}", "ham") for i in range(6)]
        + [("v1", "Spam"), ("v2", "Spam"), ("v3", "SPAM "), ("v4", "promo"), ("v5", "HAM"), ("v6", "spam\u200b")]
    )
    source = _csv("case.csv", rows)
    project(source=source, label_map={"promo": "spam"})
    ingest.main()
    report = _metrics()
    assert report["class_counts"] == {
        "HAM": 1,
        "SPAM": 1,
        "Spam": 2,
        "ham": 6,
        "spam": 7,
        "spam\u200b": 1,
    }  # not merged silently
    assert report["label_case_variants"] == {
        "ham": {"ham": 6, "HAM": 1},
        "spam": {"spam": 7, "Spam": 2, "SPAM": 1, "spam\u200b": 1},
    }
    merge = {"promo": "spam", "HAM": "ham", "Spam": "spam", "SPAM": "spam", "spam\u200b": "spam"}
    assert report["label_map_to_merge"] == merge
    assert report["label_map_kept_as_written"] == [
        "HAM",
        "SPAM",
        "Spam",
        "ham",
        "spam\u200b",
    ]  # 'spam' is a name the map gives
    printed = capsys.readouterr().out.splitlines()
    assert printed[-3:-1] == [
        "ingest: labels: WARNING: data.label_map does not rename 'HAM', 'SPAM', 'Spam', 'ham', 'spam\\u200b': classes under the names "
        "the files give them; add them to the map if they need a new name",
        "ingest: labels: WARNING: labels that differ only in case or invisible characters are separate classes: 'ham' 6, 'HAM' 1 rows; "
        "'spam' 7, 'Spam' 2, 'SPAM' 1, 'spam\\u200b' 1 rows; if they are one class, set data.label_map: "
        + json.dumps(merge),
    ]
    # The printed map, as YAML reads it, merges them.
    Path("params.yaml").write_text(f"data:\n  source: {source}\n  label_map: {json.dumps(merge)}\n")
    ingest.main()
    assert _metrics()["class_counts"] == {"ham": 7, "spam": 11}
    assert "WARNING" not in capsys.readouterr().out and "label_case_variants" not in _metrics()


def test_partial_label_map_names_the_labels_left_as_written(project, capsys):
    source = _csv("nums.csv", [("a", "0"), ("b", "1"), ("c", "2"), ("d", "1")])
    project(source=source, label_map={0: "negative", 1: "positive"})
    ingest.main()
    assert _metrics()["class_counts"] == {"2": 1, "negative": 1, "positive": 2} and _metrics()[
        "label_map_kept_as_written"
    ] == ["2"]
    assert (
        "ingest: labels: WARNING: data.label_map does not rename '2': classes under the names the files give them; add them to "
        "the map if they need a new name"
    ) in capsys.readouterr().out
    project(source=source, label_map={0: "negative", 1: "positive", 2: "neutral"})
    ingest.main()
    assert "label_map_kept_as_written" not in _metrics() and "WARNING" not in capsys.readouterr().out


def _mixed_encodings() -> str:
    """20 UTF-8 lines with accents, then 2 lines written in cp1252 (lines 22 and 23)."""
    utf8 = ["text,label"] + [f"caf\u00e9 {i},{'ab'[i % 2]}" for i in range(20)]
    Path("data/raw/mixed.csv").write_bytes(
        "".join(line + "\n" for line in utf8).encode("utf-8") + "na\u00efve,a\nr\u00e9sum\u00e9,b\n".encode("cp1252")
    )
    return "data/raw/mixed.csv"


def test_mixed_encodings_are_named_not_garbled(project, capsys):
    root = project(source=_mixed_encodings())
    result = _run_stage(root)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "skewtune ingest: error: data/raw/mixed.csv: byte offset 223 (line 22) is not valid utf-8: b'\\xefve,' (invalid continuation "
        "byte); the file mixes encodings: 2 lines are not UTF-8 (lines 22, 23; as cp1252, line 22 reads 'na\u00efve,a') but 20 lines "
        "are UTF-8 with non-ASCII characters, which data.encoding: cp1252 would garble (line 2: 'caf\u00c3\u00a9 0,a' for "
        "'caf\u00e9 0,a'). Convert those 2 lines to UTF-8 and keep data.encoding: utf-8"
    )
    # Told to read it as cp1252 anyway, ingest does, and warns with the counts.
    project(source="data/raw/mixed.csv", encoding="cp1252")
    ingest.main()
    reading = _metrics()["reading"]
    assert (reading["utf8_lines"], reading["other_non_ascii_lines"], reading["other_lines"]) == (20, 2, "22, 23")
    assert (
        "ingest: data/raw/mixed.csv: WARNING: read as cp1252 (data.encoding), 20 lines that are UTF-8 with non-ASCII characters "
        "come out garbled (line 2: 'caf\u00c3\u00a9 0,a' for 'caf\u00e9 0,a'); the file mixes encodings: 2 other non-ASCII lines "
        "are not UTF-8 (lines 22, 23): convert those to UTF-8 and set data.encoding: utf-8"
    ) in capsys.readouterr().out
    # A file really written in cp1252 reads without a warning.
    Path("data/raw/legacy.csv").write_bytes("text,label\ncaf\u00e9,a\nna\u00efve,b\n".encode("cp1252"))
    project(source="data/raw/legacy.csv", encoding="cp1252")
    ingest.main()
    assert "utf8_lines" not in _metrics()["reading"] and "WARNING" not in capsys.readouterr().out
