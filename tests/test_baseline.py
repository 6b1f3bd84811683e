"""The baseline stage (TF-IDF + logistic regression) on real SMS rows and on sentence pairs, its markers when
disabled or unable to fit, and the params checks of baseline.* and decision.blend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import f1_score

from skewtune.artifacts import is_no_table, read_predictions
from skewtune.config.load import validate_params
from skewtune.core.errors import SkewtuneError

REPO = Path(__file__).resolve().parents[1]


def write_split_project(
    root: Path, labels: list[str], train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, **params
) -> None:
    """labels.json, the train split (also as resampled: resample.strategy none), the val / test splits as the earlier
    stages write them, and params.yaml."""
    for path, frame in (
        ("data/split/train.parquet", train),
        ("data/resampled/train.parquet", train),
        ("data/split/val.parquet", val),
        ("data/split/test.parquet", test),
    ):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / path, index=False)
    (root / "data/interim").mkdir(parents=True, exist_ok=True)
    (root / "data/interim/labels.json").write_text(json.dumps({"labels": labels}))
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in params.items():
        raw[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))


def run_baseline(root: Path, monkeypatch) -> None:
    from stages import baseline

    monkeypatch.chdir(root)
    baseline.main()


@pytest.mark.slow  # fits the baseline (word and char TF-IDF) on the full SMS train split: about 4 s
def test_baseline_stage_writes_predictions_as_predict_does(tmp_path, sms_splits, monkeypatch, capsys):
    train, val, test = sms_splits
    write_split_project(tmp_path, ["ham", "spam"], train, val, test)
    run_baseline(tmp_path, monkeypatch)
    for name, split in (("val", val), ("test", test)):
        predictions = read_predictions(
            tmp_path / f"data/predictions/baseline/{name}.parquet", ["ham", "spam"], "baseline"
        )
        assert predictions.ids.tolist() == split["id"].tolist()
        # the classic spam filter: far above chance, as in BENCHMARKS.md section 1
        assert f1_score(predictions.y, predictions.probs.argmax(axis=1), average="macro") > 0.93
    report = json.loads((tmp_path / "reports/baseline.json").read_text())
    assert (
        report["status"] == "fitted"
        and report["train_rows"] == report["fit_rows"] == len(train)
        and report["features"] > 10_000
    )
    assert "fitted on 3,344 train rows" in capsys.readouterr().out
    # stored without pickle (safetensors), and rebuilt it gives the stage's probabilities bit for bit
    from safetensors import safe_open

    from skewtune.models.baseline import baseline_proba, load_baseline

    with safe_open(tmp_path / "models/baseline.safetensors", "np") as stored:
        assert set(stored.keys()) == {"spec", "idf.0", "idf.1", "coef", "intercept", "classes"}
    loaded = load_baseline(tmp_path / "models/baseline.safetensors")
    for name, split in (("val", val), ("test", test)):
        written = read_predictions(
            tmp_path / f"data/predictions/baseline/{name}.parquet", ["ham", "spam"], "baseline"
        ).probs
        assert np.array_equal(baseline_proba(loaded, split, 2), written)


def test_a_stored_multiclass_baseline_gives_identical_probabilities_and_a_damaged_one_a_clear_error(tmp_path):
    from skewtune.models.baseline import baseline_proba, fit_baseline, load_baseline, save_baseline

    rng = np.random.default_rng(1)
    words = np.array("red green blue cyan plum gold jade rust sand teal".split())
    label_id = rng.integers(0, 3, 300)
    train = pd.DataFrame(
        {"text": [" ".join(rng.choice(words[k * 3 : k * 3 + 4], 5)) for k in label_id], "label_id": label_id}
    )
    fitted, _ = fit_baseline(train, ["a", "b", "c"], min_df=1, max_features=1000, max_rows=1000)
    save_baseline(fitted, tmp_path / "b.safetensors")
    assert np.array_equal(
        baseline_proba(load_baseline(tmp_path / "b.safetensors"), train, 3), baseline_proba(fitted, train, 3)
    )
    (tmp_path / "b.safetensors").write_bytes((tmp_path / "b.safetensors").read_bytes()[:200])
    with pytest.raises(
        SkewtuneError, match=r"b\.safetensors: not a readable baseline \(.*\); re-run the baseline stage"
    ):
        load_baseline(tmp_path / "b.safetensors")


@pytest.mark.slow  # the baseline stage on the full SMS splits (a sample of 1,000 fitted, every row predicted): over 1 s
def test_baseline_fits_a_stratified_sample_of_at_most_max_rows_and_bounds_the_vocabulary(
    tmp_path, sms_splits, monkeypatch, capsys
):
    train, val, test = sms_splits
    write_split_project(tmp_path, ["ham", "spam"], train, val, test, baseline={"max_rows": 1000, "max_features": 500})
    run_baseline(tmp_path, monkeypatch)
    report = json.loads((tmp_path / "reports/baseline.json").read_text())
    assert (report["train_rows"], report["fit_rows"]) == (len(train), 1000) and report[
        "features"
    ] == 1000  # 2 vectorizers x 500
    assert "a stratified sample of 1,000 of 3,344 rows: baseline.max_rows" in capsys.readouterr().out


def test_sentence_pairs_get_features_of_both_texts(tmp_path, monkeypatch):
    """The label depends on the second text only: a baseline that read only the first would be at chance."""
    from skewtune.models.baseline import load_baseline

    rng = np.random.default_rng(0)
    words = "cat dog bird fish horse cow sheep goat".split()
    n = 900
    negated = rng.random(n) < 0.3
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "text": [" ".join(rng.choice(words, 4)) for _ in range(n)],
            "text_pair": [" ".join(rng.choice(words, 3)) + (" never" if neg else " always") for neg in negated],
            "label": np.where(negated, "contradiction", "entailment"),
        }
    )
    write_split_project(tmp_path, ["contradiction", "entailment"], frame[:600], frame[600:750], frame[750:])
    run_baseline(tmp_path, monkeypatch)
    test = read_predictions(
        tmp_path / "data/predictions/baseline/test.parquet", ["contradiction", "entailment"], "baseline"
    )
    assert f1_score(test.y, test.probs.argmax(axis=1), average="macro") == 1.0
    model = load_baseline(tmp_path / "models/baseline.safetensors")
    assert [vectorizer[:2] for vectorizer in model.vectorizers] == [
        ("text", "word"),
        ("text", "char_wb"),
        ("text_pair", "word"),
        ("text_pair", "char_wb"),
    ]


def test_disabled_baseline_writes_tables_without_columns_and_no_model(tmp_path, sms_splits, monkeypatch, capsys):
    """No 0-byte outputs (DVC warns that each is empty at every run): tables without columns, and None as the model."""
    from skewtune.models.baseline import load_baseline

    train, val, test = sms_splits
    write_split_project(tmp_path, ["ham", "spam"], train, val, test, baseline={"enabled": False})
    run_baseline(tmp_path, monkeypatch)
    for split in ("val", "test"):
        path = tmp_path / f"data/predictions/baseline/{split}.parquet"
        assert path.stat().st_size > 0 and is_no_table(path) and pd.read_parquet(path).shape == (0, 0)
    assert (tmp_path / "models/baseline.safetensors").stat().st_size > 0 and load_baseline(
        tmp_path / "models/baseline.safetensors"
    ) is None
    assert json.loads((tmp_path / "reports/baseline.json").read_text()) == {
        "status": "disabled",
        "reason": "baseline.enabled is false",
    }


def test_a_class_with_one_train_row_skips_the_baseline_with_a_warning(tmp_path, sms_splits, monkeypatch, capsys):
    train, val, test = sms_splits
    thin = pd.concat([train[train.label == "ham"], train[train.label == "spam"].head(1)])
    write_split_project(tmp_path, ["ham", "spam"], thin, val, test)
    run_baseline(tmp_path, monkeypatch)
    assert is_no_table(tmp_path / "data/predictions/baseline/val.parquet")
    report = json.loads((tmp_path / "reports/baseline.json").read_text())
    message = "the training split has fewer than 2 rows of class(es) 'spam' (1), too few to fit the baseline"
    assert report == {"status": "skipped", "reason": message}
    assert f"baseline: warning: skipped: {message}; the pipeline goes on without it" in capsys.readouterr().err


def test_blend_without_a_baseline_is_refused_before_any_stage_runs():
    with pytest.raises(
        SkewtuneError,
        match=r"decision.blend is 0.3, but baseline.enabled is false: there is no baseline to blend in; set "
        r"baseline.enabled: true, or decision.blend: auto or off",
    ):
        validate_params({"baseline": {"enabled": False}, "decision": {"blend": 0.3}})
    assert (
        validate_params({"baseline": {"enabled": False}}).decision.blend == "auto"
    )  # the default simply has nothing to blend
    with pytest.raises(
        SkewtuneError,
        match=r"decision.blend: must be auto \(a weight chosen on val\), off, or the baseline's weight in \[0, 1\]",
    ):
        validate_params({"decision": {"blend": 1.5}})
    assert validate_params({"decision": {"blend": 1}}).decision.blend == 1.0
