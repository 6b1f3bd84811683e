"""`skewtune predict` on a tiny classifier directory: what it writes, that it keeps the input order, that a
copied directory works, and one clear line (exit 2, no output) for each kind of bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from skewtune.artifacts import RULE_FILE, DecisionRule, read_classifier_files, spreadsheet_safe, write_model_meta
from skewtune.command import main
from skewtune.dataset import normalise_text
from skewtune.errors import SkewtuneError
from skewtune.io import json_text
from skewtune.modeling import load_classifier, load_tokenizer, load_trained, predict_proba, save_classifier

LABELS = ["ham", "spam"]
WORDS = "free prize call now win cash meet me at home later tonight ok thanks".split()
PROBS = ["prob:ham", "prob:spam"]


@pytest.fixture(scope="module")
def classifier(tiny_bert_dir, tmp_path_factory) -> Path:
    """A classifier directory as the package stage writes it (untrained head; a threshold rule)."""
    directory = tmp_path_factory.mktemp("classifier")
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    torch.manual_seed(3)
    save_classifier(load_classifier(str(tiny_bert_dir), tokenizer, LABELS, max_length=24), tokenizer, directory,
                    labels=LABELS, max_length=24, text_pair=False)
    write_model_meta(directory, LABELS, 24, False, preprocessing={"normalise_whitespace": True, "text_column": "SMS", "text_pair_column": None})
    model, tokenizer, _ = load_trained(directory)
    probs = predict_proba(model, tokenizer, pd.DataFrame({"text": WORDS}), max_length=24, text_pair=False, batch_size=8, device="cpu")
    # a threshold inside the range of p(spam), so that both classes are predicted
    rule = DecisionRule("threshold", tuple(LABELS), positive_label="spam", threshold=float(np.median(probs[:, 1])))
    (directory / RULE_FILE).write_text(json_text(rule.to_dict()))
    return directory


def sms_table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    texts = ["  ".join(rng.choice(WORDS, size=rng.integers(1, 30))) for _ in range(n)]
    return pd.DataFrame({"row": np.arange(n).astype(str), "SMS": texts, "note": "=SUM(A1)"})


def predict(*args: str) -> None:
    main(["predict", *map(str, args)])


def test_predict_writes_columns_in_input_order_with_the_rule(classifier, tmp_path):
    table = sms_table(40)
    table.loc[[3, 17], "SMS"] = ["", " \t "]  # no text: no prediction, no crash
    table.to_csv(tmp_path / "in.csv", index=False)
    predict(tmp_path / "in.csv", "-o", tmp_path / "out.csv", "--model", classifier, "--batch-size", "4")
    out = pd.read_csv(tmp_path / "out.csv", dtype={"row": str, "predicted": str}, keep_default_na=False)
    assert list(out.columns) == ["row", "SMS", "note", "predicted", *PROBS, "margin"]
    assert out["row"].tolist() == table["row"].tolist() and out["SMS"].tolist() == table["SMS"].tolist()
    assert out.loc[[3, 17], "predicted"].tolist() == ["", ""] and (out.loc[[3, 17], PROBS] == "").all().all()
    assert (out["note"] == "'=SUM(A1)").all()  # escaped as reports/errors.csv is: a spreadsheet shows it, runs nothing

    has_text = np.ones(40, bool)
    has_text[[3, 17]] = False
    model, tokenizer, _ = load_trained(classifier)
    model.eval()
    _, rule = read_classifier_files(classifier)
    probs = out.loc[has_text, PROBS].astype(float).to_numpy()
    for text, row in zip(normalise_text(table.loc[has_text, "SMS"]), probs):  # one forward pass per row, unpadded
        with torch.no_grad():
            expected = torch.softmax(model(**tokenizer(text, truncation=True, max_length=24, return_tensors="pt")).logits.double(), -1)[0]
        np.testing.assert_allclose(row, expected.numpy(), atol=1e-5)
    assert out.loc[has_text, "predicted"].tolist() == [LABELS[k] for k in rule.predict(probs)]
    assert set(out.loc[has_text, "predicted"]) == set(LABELS)
    np.testing.assert_allclose(out.loc[has_text, "margin"].astype(float), np.abs(probs[:, 1] - rule.threshold), atol=1e-9)


def test_chunks_give_the_probabilities_of_one_pass(classifier):
    model, tokenizer, _ = load_trained(classifier)
    texts = pd.DataFrame({"text": sms_table(50)["SMS"]})
    done = []
    chunked = predict_proba(model, tokenizer, texts, max_length=24, text_pair=False, batch_size=4, device="cpu", chunk_rows=7, progress=done.append)
    whole = predict_proba(model, tokenizer, texts, max_length=24, text_pair=False, batch_size=4, device="cpu")
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    assert done == [7, 14, 21, 28, 35, 42, 49, 50]


def test_parquet_in_jsonl_out_and_a_copied_classifier(classifier, tmp_path):
    sms_table(12).rename(columns={"SMS": "body"}).to_parquet(tmp_path / "in.parquet", index=False)
    copy = shutil.copytree(classifier, tmp_path / "elsewhere" / "clf")
    predict(tmp_path / "in.parquet", "-o", tmp_path / "a.jsonl", "--model", classifier, "--text-column", "body")
    predict(tmp_path / "in.parquet", "-o", tmp_path / "b.parquet", "--model", copy, "--text-column", "body")
    a = pd.read_json(tmp_path / "a.jsonl", lines=True, dtype=False)
    b = pd.read_parquet(tmp_path / "b.parquet")
    assert list(a.columns) == list(b.columns) == ["row", "body", "note", "predicted", *PROBS, "margin"]
    assert a["predicted"].tolist() == b["predicted"].tolist()
    np.testing.assert_allclose(a[PROBS].to_numpy(float), b[PROBS].to_numpy(float), atol=1e-12)


def test_the_console_script_is_installed(classifier, tmp_path):
    sms_table(3).to_csv(tmp_path / "in.csv", index=False)
    script = Path(sys.executable).parent / "skewtune"
    proc = subprocess.run([script, "predict", tmp_path / "in.csv", "-o", tmp_path / "out.csv", "--model", classifier],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"predict: 3 rows -> {tmp_path / 'out.csv'} (ham ")


def _not_a_classifier(classifier, tmp_path, missing):
    broken = shutil.copytree(classifier, tmp_path / "broken")
    (broken / missing).unlink()
    return broken


BAD = {
    "missing text column": (lambda c, t: ["--text-column", "message"], r"no column 'message'; the CSV columns are: 'row', 'SMS', 'note'"),
    "no decision rule": (lambda c, t: ["--model", _not_a_classifier(c, t, "decision.json")],
                         r"not a skewtune classifier: it has no decision.json \(decision rule\); `dvc repro package` writes one"),
    "no labels": (lambda c, t: ["--model", _not_a_classifier(c, t, "skewtune.json")],
                  r"not a skewtune classifier: it has no skewtune.json \(labels\); `dvc repro package`"),
    "no model directory": (lambda c, t: ["--model", t / "nowhere"], r"nowhere: no such model directory; `dvc repro package` writes models/classifier"),
    "unknown output extension": (lambda c, t: ["-o", t / "out.xlsx"], r"out.xlsx: unknown output extension '.xlsx'; use one of .csv, .jsonl, .parquet"),
    "output exists": (lambda c, t: ["-o", t / "exists.csv"], r"exists.csv: already exists; pass --overwrite"),
    "input not found": (lambda c, t: ["--format", "csv", "-o", t / "o.csv", "--", t / "absent.csv"], r"absent.csv: not found"),
    "input not readable": (lambda c, t: ["--format", "parquet"], r"in.csv: not a readable Parquet file"),
    "bad batch size": (lambda c, t: ["--batch-size", "0"], r"--batch-size is 0; use a positive number"),
    "input is a directory": (lambda c, t: ["--", _made(t / "folder")], r"folder: is a directory, not a file; name one table file$"),
    "unknown input extension": (lambda c, t: ["--", _made(t / "in.txt", "SMS\nhi\n")],
                                r"in.txt: cannot tell the format from the extension '.txt'; .* or set --format to one of csv, "),
    "table on a later sheet": (lambda c, t: ["--", _notes_first(t / "in.xlsx")],
                               r"sheet 'Notes' is empty; put the header in row 1 and the data below it; or is the table on another sheet\? "
                               r"The workbook's sheets are 'Notes', 'Data': set --sheet to the one that holds it$"),
}


def _made(path: Path, text: str | None = None) -> Path:
    """A folder at `path`, or a file holding `text`."""
    path.mkdir() if text is None else path.write_text(text)
    return path


def _notes_first(path: Path) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    book.active.title = "Notes"
    book.create_sheet("Data").append(["SMS"])
    book["Data"].append(["win cash now"])
    book.save(path)
    return path


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_no_output(case, classifier, tmp_path, capsys):
    sms_table(5).to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "exists.csv").write_text("keep me")
    extra, message = BAD[case]
    args = extra(classifier, tmp_path)
    explicit_input = "--" in args
    argv = ([] if explicit_input else [tmp_path / "in.csv"]) + (["-o", tmp_path / "out.csv"] if "-o" not in args else []) + ["--model", classifier] + args
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        predict(*argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("skewtune predict: error: ") and "Traceback" not in err, err
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary left behind
    assert (tmp_path / "exists.csv").read_text() == "keep me"


def test_spreadsheet_safe_escapes_formula_cells_only():
    frame = pd.DataFrame({"text": ["=1+1", "+call", "-x", "@me", "fine", "a=b"], "p": [-0.5, 0.1, 0.2, 0.3, 0.4, 0.5]})
    safe = spreadsheet_safe(frame)
    assert safe["text"].tolist() == ["'=1+1", "'+call", "'-x", "'@me", "fine", "a=b"]
    assert safe["p"].tolist() == frame["p"].tolist()


def test_decision_rule_round_trip_and_margin():
    raw = {"strategy": "offsets", "labels": ["a", "b", "c"], "positive_label": None, "threshold": None, "offsets": [0.0, 1.0, -1.0], "metric": "mcc"}
    rule = DecisionRule.from_dict(raw)  # written before blending existed: no blend key, read as 0
    assert rule.to_dict() == {**{k: v for k, v in raw.items() if k != "metric"}, "blend": 0.0} and DecisionRule.from_dict(rule.to_dict()) == rule
    blended = DecisionRule.from_dict({**raw, "blend": 0.25})
    baseline = np.array([[0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(blended.combine(np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]), baseline), [[0.4, 0.25, 0.35], [0.1, 0.1, 0.8]])
    assert rule.combine(baseline, None) is baseline and "0.25 x the TF-IDF baseline" in blended.describe()
    for bad in (1.5, -0.1, "auto", True):
        with pytest.raises(SkewtuneError, match="blend a weight in"):
            DecisionRule.from_dict({**raw, "blend": bad})
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    np.testing.assert_array_equal(rule.predict(probs), [1, 2])
    scores = np.log(probs) + [0.0, 1.0, -1.0]
    np.testing.assert_allclose(rule.margin(probs), [scores[0, 1] - scores[0, 0], scores[1, 2] - scores[1, 1]])
    assert json.loads(json_text(rule.to_dict()))["offsets"] == [0.0, 1.0, -1.0]


@pytest.mark.parametrize("unescape_html", [False, True])
def test_predict_cleans_texts_as_the_classifier_was_trained(classifier, tmp_path, unescape_html):
    """The classifier's preprocessing is applied: control characters go; HTML references are decoded only when
    ingest decoded them for training (data.unescape_html), so `win &amp; call` is then read as `win & call`."""
    copy = shutil.copytree(classifier, tmp_path / "classifier")
    write_model_meta(copy, LABELS, 24, False, preprocessing={"normalise_whitespace": True, "text_column": "SMS", "text_pair_column": None,
                                                               "remove_control_characters": True, "unescape_html": unescape_html})
    texts = ["win &amp; call now", "win & call now", "win\x00 & call\x1a now"]
    pd.DataFrame({"SMS": texts}).to_csv(tmp_path / "in.csv", index=False)
    predict(tmp_path / "in.csv", "-o", tmp_path / "out.csv", "--model", copy)
    probs = pd.read_csv(tmp_path / "out.csv")[PROBS].to_numpy()
    np.testing.assert_allclose(probs[2], probs[1], atol=1e-6)  # control characters removed
    assert np.allclose(probs[0], probs[1], atol=1e-6) == unescape_html


def test_predict_applies_the_blend_of_a_classifier_with_a_baseline(classifier, tmp_path, capsys):
    """A classifier whose rule blends in the TF-IDF baseline: `skewtune predict` averages the two models'
    probabilities with the rule's weight, and decides on that, as tune_threshold and evaluate did."""
    from skewtune.artifacts import BASELINE_FILE
    from skewtune.baseline import baseline_proba, fit_baseline, save_baseline

    table = sms_table(60, seed=1)
    train = pd.DataFrame({"text": normalise_text(table["SMS"]), "label_id": table["SMS"].str.contains("free").astype(int)})
    baseline, _ = fit_baseline(train, LABELS, min_df=1, max_features=1000, max_rows=1000)
    copy = shutil.copytree(classifier, tmp_path / "blended")
    save_baseline(baseline, copy / BASELINE_FILE)
    _, rule = read_classifier_files(classifier)
    blended = DecisionRule("threshold", rule.labels, positive_label="spam", threshold=0.5, blend=0.7)
    (copy / RULE_FILE).write_text(json_text(blended.to_dict()))
    table.to_csv(tmp_path / "in.csv", index=False)
    predict(tmp_path / "in.csv", "-o", tmp_path / "plain.csv", "--model", classifier)
    predict(tmp_path / "in.csv", "-o", tmp_path / "out.csv", "--model", copy)
    plain = pd.read_csv(tmp_path / "plain.csv")[PROBS].to_numpy()
    out = pd.read_csv(tmp_path / "out.csv")
    expected = 0.3 * plain + 0.7 * baseline_proba(baseline, train, 2)
    np.testing.assert_allclose(out[PROBS].to_numpy(), expected, atol=1e-6)
    assert out["predicted"].tolist() == [LABELS[k] for k in blended.predict(expected)]

    (copy / BASELINE_FILE).unlink()
    with pytest.raises(SystemExit) as exit_info:
        predict(tmp_path / "in.csv", "-o", tmp_path / "again.csv", "--model", copy)
    assert exit_info.value.code == 2
    assert "decision.json blends in the baseline (weight 0.7), but baseline.joblib is missing; re-run the package stage" in capsys.readouterr().err
