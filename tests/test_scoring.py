"""`skewtune predict` on a tiny classifier directory: what it writes, that it keeps the input order, that a
copied directory works, and one clear line (exit 2, no output) for each kind of bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from skewtune.artifacts import spreadsheet_safe
from skewtune.cli import main
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import json_text
from skewtune.core.paths import RULE_FILE
from skewtune.data.cleaning import normalise_text
from skewtune.decision.rule import DecisionRule
from skewtune.model_dir import ModelMeta, TextPreprocessing, read_classifier_files, write_manifest, write_model_meta
from skewtune.models.inference import predict_proba
from skewtune.models.text import load_classifier, load_tokenizer, load_trained, save_classifier

LABELS = ["ham", "spam"]
WORDS = "free prize call now win cash meet me at home later tonight ok thanks".split()
PROBS = ["prob:ham", "prob:spam"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def classifier(tiny_bert_dir, tmp_path_factory) -> Path:
    """A classifier directory as the package stage writes it (untrained head; a threshold rule)."""
    directory = tmp_path_factory.mktemp("classifier")
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    torch.manual_seed(3)
    save_classifier(
        load_classifier(str(tiny_bert_dir), tokenizer, LABELS, max_length=24),
        tokenizer,
        directory,
        labels=LABELS,
        max_length=24,
        text_pair=False,
    )
    write_model_meta(
        directory,
        ModelMeta(tuple(LABELS), max_length=24, text_pair=False, preprocessing=TextPreprocessing(text_column="SMS")),
    )
    model, tokenizer, _ = load_trained(directory)
    probs = predict_proba(
        model, tokenizer, pd.DataFrame({"text": WORDS}), max_length=24, text_pair=False, batch_size=8, device="cpu"
    )
    # a threshold inside the range of p(spam), so that both classes are predicted
    rule = DecisionRule("threshold", tuple(LABELS), positive_label="spam", threshold=float(np.median(probs[:, 1])))
    (directory / RULE_FILE).write_text(json_text(rule.to_dict()))
    write_manifest(directory)
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
            expected = torch.softmax(
                model(**tokenizer(text, truncation=True, max_length=24, return_tensors="pt")).logits.double(), -1
            )[0]
        np.testing.assert_allclose(row, expected.numpy(), atol=1e-5)
    assert out.loc[has_text, "predicted"].tolist() == [LABELS[k] for k in rule.predict(probs)]
    assert set(out.loc[has_text, "predicted"]) == set(LABELS)
    # CSV floats have 6 significant digits: each value within 5e-7 of the exact one
    np.testing.assert_allclose(
        out.loc[has_text, "margin"].astype(float), np.abs(probs[:, 1] - rule.threshold), atol=1e-6
    )


def test_chunks_give_the_probabilities_of_one_pass(classifier):
    model, tokenizer, _ = load_trained(classifier)
    texts = pd.DataFrame({"text": sms_table(50)["SMS"]})
    done = []
    chunked = predict_proba(
        model,
        tokenizer,
        texts,
        max_length=24,
        text_pair=False,
        batch_size=4,
        device="cpu",
        chunk_rows=7,
        progress=done.append,
    )
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
    np.testing.assert_allclose(
        a[PROBS].to_numpy(float), b[PROBS].to_numpy(float), atol=5e-7
    )  # JSONL: 6 significant digits


def test_the_console_script_is_installed(classifier, tmp_path):
    sms_table(3).to_csv(tmp_path / "in.csv", index=False)
    script = Path(sys.executable).parent / "skewtune"
    proc = subprocess.run(
        [script, "predict", tmp_path / "in.csv", "-o", tmp_path / "out.csv", "--model", classifier],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"predict: 3 rows -> {tmp_path / 'out.csv'} (ham ")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _not_a_classifier(classifier, tmp_path, missing):
    broken = shutil.copytree(classifier, tmp_path / "broken")
    (broken / missing).unlink()
    return broken


BAD = {
    # Each message names the flag that changes it, not the params key the pipeline's score stage reads.
    "missing text column": (
        lambda c, t: ["--text-column", "message"],
        r"no column 'message'; the CSV columns are: 'row', 'SMS', 'note'. Set --text-column to the right names",
    ),
    "wrong encoding": (
        lambda c, t: ["--encoding", "ascii", "--", _write(t / "latin.csv", "SMS\ncaf\u00e9\n".encode("latin-1"))],
        r"is not valid ascii: .*; set --encoding to the file's real encoding",
    ),
    "pair column for single texts": (
        lambda c, t: ["--text-pair-column", "note"],
        r"classifies single texts, not pairs; drop --text-pair-column note",
    ),
    "no decision rule": (
        lambda c, t: ["--model", _not_a_classifier(c, t, "decision.json")],
        r"not a skewtune classifier: it has no decision.json \(decision rule\); `dvc repro package` writes one",
    ),
    "no labels": (
        lambda c, t: ["--model", _not_a_classifier(c, t, "skewtune.json")],
        r"not a skewtune classifier: it has no skewtune.json \(labels\); `dvc repro package`",
    ),
    "no model directory": (
        lambda c, t: ["--model", t / "nowhere"],
        r"nowhere: no such model directory; `dvc repro package` writes models/classifier",
    ),
    "a preprocessing predict cannot repeat": (
        lambda c, t: ["--model", _recorded(c, t, normalise_whitespace=False)],
        r"recorded/skewtune.json: field preprocessing.normalise_whitespace is false, expected true \(ingest always "
        r"applies this step, and predict repeats it\); re-run the package stage$",
    ),
    "unknown output extension": (
        lambda c, t: ["-o", t / "out.xlsx"],
        r"out.xlsx: unknown output extension '.xlsx'; use one of .csv, .jsonl, .parquet",
    ),
    "output exists": (lambda c, t: ["-o", t / "exists.csv"], r"exists.csv: already exists; pass --overwrite"),
    "input not found": (
        lambda c, t: ["--format", "csv", "-o", t / "o.csv", "--", t / "absent.csv"],
        r"absent.csv: not found",
    ),
    "input not readable": (lambda c, t: ["--format", "parquet"], r"in.csv: not a readable Parquet file"),
    "bad batch size": (lambda c, t: ["--batch-size", "0"], r"--batch-size is 0; use a positive number"),
    "input is a directory": (
        lambda c, t: ["--", _made(t / "folder")],
        r"folder: is a directory, not a file; name one table file$",
    ),
    "unknown input extension": (
        lambda c, t: ["--", _made(t / "in.txt", "SMS\nhi\n")],
        r"in.txt: cannot tell the format from the extension '.txt'; .* or set --format to one of csv, ",
    ),
    "table on a later sheet": (
        lambda c, t: ["--", _notes_first(t / "in.xlsx")],
        r"sheet 'Notes' is empty; put the header in row 1 and the data below it; or is the table on another sheet\? "
        r"The workbook's sheets are 'Notes', 'Data': set --sheet to the one that holds it$",
    ),
}


def _recorded(classifier: Path, tmp_path: Path, **preprocessing) -> Path:
    """A copy of `classifier` whose skewtune.json records `preprocessing` (JSON values), as if packaged so."""
    copy = shutil.copytree(classifier, tmp_path / "recorded")
    meta = json.loads((copy / "skewtune.json").read_text())
    (copy / "skewtune.json").write_text(
        json_text({**meta, "preprocessing": {**meta["preprocessing"], **preprocessing}})
    )
    write_manifest(copy)
    return copy


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
    argv = (
        ([] if explicit_input else [tmp_path / "in.csv"])
        + (["-o", tmp_path / "out.csv"] if "-o" not in args else [])
        + ["--model", classifier]
        + args
    )
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
    raw = {
        "strategy": "offsets",
        "labels": ["a", "b", "c"],
        "positive_label": None,
        "threshold": None,
        "offsets": [0.0, 1.0, -1.0],
        "metric": "mcc",
    }
    rule = DecisionRule.from_dict(raw)  # written before blending and calibration existed: no blend, no calibrator
    none = {"method": "none", "temperature": None, "scale": None, "bias": None}
    assert (
        rule.to_dict()
        == {
            **{k: v for k, v in raw.items() if k != "metric"},
            "blend": 0.0,
            "calibration": {"model": none, "baseline": none},
        }
        and DecisionRule.from_dict(rule.to_dict()) == rule
    )
    blended = DecisionRule.from_dict({**raw, "blend": 0.25})
    baseline = np.array([[0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(
        blended.combine(np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]), baseline), [[0.4, 0.25, 0.35], [0.1, 0.1, 0.8]]
    )
    assert rule.combine(baseline, None) is baseline and "0.25 x the TF-IDF baseline" in blended.describe()
    for bad in (1.5, -0.1, "auto", True, float("nan")):
        with pytest.raises(SkewtuneError, match="blend a weight in"):
            DecisionRule.from_dict({**raw, "blend": bad})
    for offsets in ([0.5, 0.0], [0.0, float("-inf"), 1.0], [0.0, True, 1.0]):  # one finite number per class
        with pytest.raises(SkewtuneError, match="'offsets' one finite number per label"):
            DecisionRule.from_dict({**raw, "offsets": offsets})
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    np.testing.assert_array_equal(rule.predict(probs), [1, 2])
    # Under offsets the margin is the gap of the probabilities with the offsets applied (p x e^offset, renormalised),
    # a probability gap as under argmax, not the gap of log p + offsets; row 0 predicts class 1 (p 0.3), not the top p.
    adjusted = probs * np.exp([0.0, 1.0, -1.0])
    adjusted /= adjusted.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(rule.margin(probs), [adjusted[0, 1] - adjusted[0, 0], adjusted[1, 2] - adjusted[1, 1]])
    assert ((rule.margin(probs) >= 0) & (rule.margin(probs) <= 1)).all() and rule.predict(probs)[0] != probs[0].argmax()
    argmax = DecisionRule("argmax", ("a", "b", "c"))
    np.testing.assert_allclose(argmax.margin(probs), [0.2, 0.7])
    assert json.loads(json_text(rule.to_dict()))["offsets"] == [0.0, 1.0, -1.0]


INVALID_RULES = {
    "threshold NaN": {"strategy": "threshold", "positive_label": "spam", "threshold": float("nan")},
    "threshold 2.0": {"strategy": "threshold", "positive_label": "spam", "threshold": 2.0},
    "offsets Infinity": {"strategy": "offsets", "positive_label": None, "offsets": [float("inf"), 0.0]},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", INVALID_RULES)
def test_an_invalid_decision_rule_stops_the_stages_that_read_it(case, tmp_path):
    """decision.json as Python's json writes NaN and Infinity: the one reader (DecisionRule.from_dict) refuses it, so
    evaluate (and package, relabel, `skewtune predict`) never apply a rule that predicts one class with NaN margins."""
    (tmp_path / "reports/threshold").mkdir(parents=True)
    (tmp_path / "data/interim").mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data/interim/labels.json").write_text(json.dumps({"labels": LABELS}))
    rule = {"labels": LABELS, "threshold": None, "offsets": None, "blend": 0.0, **INVALID_RULES[case]}
    (tmp_path / "reports/threshold/decision.json").write_text(json.dumps(rule))  # allow_nan: NaN, Infinity
    proc = subprocess.run(
        [sys.executable, "-m", "stages.evaluate"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        "skewtune evaluate: error: reports/threshold/decision.json: not a valid decision rule (strategy "
    )
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("re-run the tune_threshold stage\n")
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "reports/eval").exists()


def test_a_threshold_just_above_one_predicts_no_row_positive():
    """tune_threshold's 'no row positive' candidate when some p is exactly 1 is the float just above 1: a valid rule."""
    rule = DecisionRule.from_dict(
        {
            "strategy": "threshold",
            "labels": LABELS,
            "positive_label": "spam",
            "threshold": float(np.nextafter(1.0, 2.0)),
        }
    )
    assert rule.predict(np.array([[0.0, 1.0], [1.0, 0.0]])).tolist() == [0, 0]


@pytest.mark.parametrize("unescape_html", [False, True])
def test_predict_cleans_texts_as_the_classifier_was_trained(classifier, tmp_path, unescape_html):
    """The classifier's recorded preprocessing is applied: control characters go; HTML references are decoded only
    when its skewtune.json says ingest decoded them for training (data.unescape_html), so `win &amp; call` is then
    read as `win & call`."""
    copy = _recorded(classifier, tmp_path, unescape_html=unescape_html)
    texts = ["win &amp; call now", "win & call now", "win\x00 & call\x1a now"]
    pd.DataFrame({"SMS": texts}).to_csv(tmp_path / "in.csv", index=False)
    predict(tmp_path / "in.csv", "-o", tmp_path / "out.csv", "--model", copy)
    probs = pd.read_csv(tmp_path / "out.csv")[PROBS].to_numpy()
    np.testing.assert_allclose(probs[2], probs[1], atol=1e-6)  # control characters removed
    assert np.allclose(probs[0], probs[1], atol=1e-6) == unescape_html


def test_predict_writes_the_probabilities_calibrated_by_the_classifiers_rule(classifier, tmp_path):
    """A rule with a temperature: `skewtune predict` writes softmax(log p / T) of the model's probabilities, decides
    and measures the margin on them; a calibrator that is not valid stops with one line."""
    from skewtune.decision.calibration import Calibration

    table = sms_table(30, seed=2)
    table.to_csv(tmp_path / "in.csv", index=False)
    copy = shutil.copytree(classifier, tmp_path / "calibrated")
    _, rule = read_classifier_files(classifier)
    calibrated = DecisionRule(
        "threshold",
        rule.labels,
        positive_label="spam",
        threshold=0.5,
        calibration=Calibration("temperature", temperature=0.25),
    )
    (copy / RULE_FILE).write_text(json_text(calibrated.to_dict()))
    write_manifest(copy)
    predict(tmp_path / "in.csv", "-o", tmp_path / "plain.parquet", "--model", classifier)
    predict(tmp_path / "in.csv", "-o", tmp_path / "out.parquet", "--model", copy)
    plain = pd.read_parquet(tmp_path / "plain.parquet")[PROBS].to_numpy()
    out = pd.read_parquet(tmp_path / "out.parquet")
    sharpened = plain**4 / (plain**4).sum(axis=1, keepdims=True)  # T = 0.25: p^(1/T), renormalised
    np.testing.assert_allclose(out[PROBS].to_numpy(), sharpened, atol=1e-6)
    np.testing.assert_allclose(out["margin"], np.abs(sharpened[:, 1] - 0.5), atol=1e-6)
    assert out["predicted"].tolist() == [LABELS[k] for k in calibrated.predict(sharpened)]

    broken = calibrated.to_dict()
    broken["calibration"]["model"]["temperature"] = -1
    (copy / RULE_FILE).write_text(json_text(broken))
    write_manifest(copy)
    with pytest.raises(SkewtuneError, match="calibration.model: not a valid calibration.*re-run tune_threshold"):
        read_classifier_files(copy)


def test_predict_applies_the_blend_of_a_classifier_with_a_baseline(classifier, tmp_path, capsys):
    """A classifier whose rule blends in the TF-IDF baseline: `skewtune predict` averages the two models'
    probabilities with the rule's weight, and decides on that, as tune_threshold and evaluate did."""
    from skewtune.core.paths import BASELINE_FILE
    from skewtune.models.baseline import baseline_proba, fit_baseline, save_baseline

    table = sms_table(60, seed=1)
    train = pd.DataFrame(
        {"text": normalise_text(table["SMS"]), "label_id": table["SMS"].str.contains("free").astype(int)}
    )
    baseline, _ = fit_baseline(train, LABELS, min_df=1, max_features=1000, max_rows=1000)
    copy = shutil.copytree(classifier, tmp_path / "blended")
    save_baseline(baseline, copy / BASELINE_FILE)
    _, rule = read_classifier_files(classifier)
    blended = DecisionRule("threshold", rule.labels, positive_label="spam", threshold=0.5, blend=0.7)
    (copy / RULE_FILE).write_text(json_text(blended.to_dict()))
    write_manifest(copy)
    table.to_csv(tmp_path / "in.csv", index=False)
    predict(tmp_path / "in.csv", "-o", tmp_path / "plain.csv", "--model", classifier)
    predict(tmp_path / "in.csv", "-o", tmp_path / "out.csv", "--model", copy)
    plain = pd.read_csv(tmp_path / "plain.csv")[PROBS].to_numpy()
    out = pd.read_csv(tmp_path / "out.csv")
    expected = 0.3 * plain + 0.7 * baseline_proba(baseline, train, 2)
    np.testing.assert_allclose(out[PROBS].to_numpy(), expected, atol=1e-6)
    assert out["predicted"].tolist() == [LABELS[k] for k in blended.predict(expected)]

    (copy / BASELINE_FILE).unlink()
    write_manifest(copy)
    with pytest.raises(SystemExit) as exit_info:
        predict(tmp_path / "in.csv", "-o", tmp_path / "again.csv", "--model", copy)
    assert exit_info.value.code == 2
    assert (
        "decision.json blends in the baseline (weight 0.7), but baseline.safetensors is missing; re-run the package stage"
        in capsys.readouterr().err
    )


def skewtune_script(*args) -> subprocess.CompletedProcess:
    """The installed `skewtune` console script, run as a user runs it (on this checkout's code)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [Path(sys.executable).parent / "skewtune", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def tree_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_overwrite_replaces_only_a_regular_file_never_a_directory_or_the_input(classifier, tmp_path):
    sms_table(5).to_csv(tmp_path / "in.csv", index=False)
    dataset = tmp_path / "results.parquet"  # a partitioned parquet dataset, as Spark and pyarrow write one
    (dataset / "year=2025").mkdir(parents=True)
    sms_table(2).to_parquet(dataset / "year=2025" / "part-0.parquet")
    (dataset / "_SUCCESS").write_text("")
    (tmp_path / "link.csv").symlink_to(tmp_path / "in.csv")
    before = tree_of(tmp_path)
    cases = [
        (
            dataset,
            f"{dataset}: is a directory; OUTPUT is one file, which --overwrite never puts in place of a directory: choose a file path",
        ),
        (
            tmp_path / "in.csv",
            f"{tmp_path / 'in.csv'}: is the input {tmp_path / 'in.csv'}; write the predictions to another file",
        ),
        (
            tmp_path / "link.csv",
            f"{tmp_path / 'link.csv'}: is the input {tmp_path / 'in.csv'}; write the predictions to another file",
        ),
    ]
    for output, message in cases:
        proc = skewtune_script("predict", tmp_path / "in.csv", "-o", output, "--model", classifier, "--overwrite")
        assert proc.returncode == 2 and proc.stderr == f"skewtune predict: error: {message}\n", proc.stderr
        assert (
            tree_of(tmp_path) == before and (tmp_path / "link.csv").is_symlink()
        )  # nothing removed, replaced or left behind
    (tmp_path / "out.csv").write_text("an earlier output")
    proc = skewtune_script(
        "predict", tmp_path / "in.csv", "-o", tmp_path / "out.csv", "--model", classifier, "--overwrite"
    )
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(tmp_path / "out.csv")) == 5


class Payload:
    """What a pickle may do when loaded: run a command (here: create a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


TAMPERED = {
    "a pickle in place of the baseline": ("baseline.safetensors", "added: baseline.safetensors"),
    "another decision rule": (RULE_FILE, "changed: decision.json"),
    "other weights": ("model.safetensors", "changed: model.safetensors"),
    "a deleted tokenizer file": ("tokenizer.json", "missing: tokenizer.json"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_classifier_directory_is_refused_before_anything_is_loaded(case, classifier, tmp_path, capsys):
    """manifest.json (the package stage's SHA-256 of every file) is verified first: a replaced, added or deleted file
    is one line, exit 2, and nothing of the directory is loaded (no pickle is ever unpickled)."""
    import pickle

    copy = shutil.copytree(classifier, tmp_path / "classifier")
    name, found = TAMPERED[case]
    marker = tmp_path / "payload-ran"
    if name == "tokenizer.json":
        (copy / name).unlink()
    elif name == RULE_FILE:
        (copy / name).write_text(json_text({**json.loads((copy / name).read_text()), "threshold": 0.0}))
    else:
        (copy / name).write_bytes(pickle.dumps(Payload(marker)))
    sms_table(4).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(SystemExit) as exit_info:
        predict(tmp_path / "in.csv", "-o", tmp_path / "out.csv", "--model", copy)
    assert exit_info.value.code == 2 and capsys.readouterr().err == (
        f"skewtune predict: error: {copy}: its files are not those the package stage wrote ({found}; see manifest.json); "
        "copy the classifier directory again from where it was packaged, or re-run the package stage\n"
    )
    assert not marker.exists() and not (tmp_path / "out.csv").exists()


def test_a_full_disk_during_predict_is_one_line_and_leaves_nothing(classifier, tmp_path):
    from test_ingest import run_on_full_disk

    sms_table(400).to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "small").mkdir()
    script = Path(sys.executable).parent / "skewtune"
    result, left = run_on_full_disk(
        [script, "predict", tmp_path / "in.csv", "-o", "small/out.csv", "--model", classifier],
        tmp_path / "small",
        tmp_path,
    )
    assert result.returncode == 1 and re.fullmatch(
        r"skewtune predict: error: small/out\.csv: no space left on device while writing it \(\d+\.\d KiB free there"
        r"(; the outputs had taken \d+\.\d KiB when it ran out, they need more)?\); nothing was written: free space and re-run\n",
        result.stderr,
    ), result.stderr
    assert left == []  # no half-written output, no temporary


def test_the_score_stage_names_the_params_keys(classifier, tmp_path):
    """The same reader under the score stage's settings: its messages name the params keys, not predict's flags."""
    from dataclasses import replace

    from skewtune.apply import score_file
    from skewtune.data.settings import DATA_PARAMS

    sms_table(3).to_csv(tmp_path / "in.csv", index=False)
    settings = replace(DATA_PARAMS, quoting=None)
    with pytest.raises(SkewtuneError, match=r"no column 'body'.*Set data.text_column to the right names"):
        score_file(
            tmp_path / "in.csv", tmp_path / "out.parquet", model=classifier, text_column="body", settings=settings
        )
    with pytest.raises(SkewtuneError, match=r"drop data.text_pair_column note"):
        score_file(
            tmp_path / "in.csv", tmp_path / "out.parquet", model=classifier, pair_column="note", settings=settings
        )
    assert not (tmp_path / "out.parquet").exists()


def test_an_image_path_outside_the_root_names_the_flag_that_moves_the_root(tmp_path):
    from skewtune.apply import image_rows
    from skewtune.cli import PREDICT_FLAGS
    from skewtune.data.settings import DATA_PARAMS

    with pytest.raises(SkewtuneError, match=r"leads outside .*; write paths relative to it \(--image-root sets it\)$"):
        image_rows(pd.Series(["../x.png"]), tmp_path, "in.csv", PREDICT_FLAGS)
    with pytest.raises(
        SkewtuneError, match=r"leads outside .*; write paths relative to it$"
    ):  # the score stage: always data/raw
        image_rows(pd.Series(["../x.png"]), tmp_path, "in.csv", DATA_PARAMS)


def test_text_outputs_write_six_significant_digits_and_plain_slashes(classifier, tmp_path):
    """prob:<label> and margin get 6 significant digits in CSV and JSONL (parquet keeps every bit); the input's own
    columns stay as read, and JSONL writes "/" as "/" (pandas would write "\\/")."""
    table = sms_table(6).assign(url="http://example.com/a/b", amount=1234567.891)
    table.to_parquet(tmp_path / "in.parquet", index=False)
    for name in ("out.csv", "out.jsonl", "out.parquet"):
        predict(tmp_path / "in.parquet", "-o", tmp_path / name, "--model", classifier, "--text-column", "SMS")
    exact = pd.read_parquet(tmp_path / "out.parquet")
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert '"url":"http://example.com/a/b"' in lines[0] and "\\/" not in lines[0]
    csv_text = (tmp_path / "out.csv").read_text()
    for out in (pd.read_csv(tmp_path / "out.csv"), pd.DataFrame([json.loads(line) for line in lines])):
        assert out["amount"].tolist() == [1234567.891] * 6
        for column in [*PROBS, "margin"]:
            np.testing.assert_allclose(out[column], exact[column], rtol=5e-6)
            assert out[column].tolist() == [float(f"{v:.6g}") for v in exact[column]]
    longest = max(len(cell) for row in csv_text.splitlines()[1:] for cell in row.split(",")[-3:])
    assert longest <= len("0.000123456"), csv_text


def test_summary_lines_count_in_the_right_number():
    from skewtune.apply import Summary
    from skewtune.core.outputs import counted

    assert [counted(n, "row") for n in (0, 1, 2)] == ["0 rows", "1 row", "2 rows"]
    assert counted(1, "val mistake") == "1 val mistake" and counted(3, "class", "classes") == "3 classes"
    assert (
        Summary(1, 1, {"ham": 0, "spam": 0}).line("o.csv")
        == "predict: 1 row -> o.csv (ham 0, spam 0); 1 row without text got no prediction"
    )
    assert Summary(2, 0, {"ham": 2, "spam": 0}).line("o.csv") == "predict: 2 rows -> o.csv (ham 2, spam 0)"


@pytest.mark.slow
def test_the_console_script_has_a_version_and_documents_every_flag():
    from importlib.metadata import version

    from skewtune.cli import parser

    proc = skewtune_script("--version")
    assert proc.returncode == 0 and proc.stdout == f"skewtune {version('skewtune')}\n", proc
    predict_parser = next(a for a in parser()._actions if a.dest == "command").choices["predict"]
    assert [a.option_strings for a in predict_parser._actions if not a.help] == []
    proc = skewtune_script("predict", "--help")
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and "--device {auto,cpu,cuda} where the model runs" in text, proc.stdout
    assert "it need not be the highest prob:<label>. margin is a probability gap in [0, 1]" in text


def test_device_errors_name_the_setting_the_user_has():
    from skewtune.models.devices import resolve_device

    with pytest.raises(SkewtuneError, match="^--device is 'tpu'; use auto, cpu or cuda$"):
        resolve_device("tpu", "--device")
    if not torch.cuda.is_available():
        with pytest.raises(SkewtuneError, match="--device is cuda, but no CUDA GPU is visible .* set --device to cpu"):
            resolve_device("cuda", "--device")
