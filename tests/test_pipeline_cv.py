"""Cross-fitting (train.cv) through the real `dvc` CLI in a temporary git repo, on a tiny BERT and 160 SMS rows: the
fold stages train and write out-of-fold probabilities of train + val (never test), the baseline is cross-fitted on the
same folds, tune_threshold decides on those rows and label_issues ranks them; cv off, the fold stages write tables
without columns, the decision is on val and label_issues cross-fits the baseline; a key without effect re-runs
nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from dvc_repo import dvc, env, make_repo, ran_stages, run, set_params

from skewtune.artifacts import BASELINE_OOF, read_baseline_predictions, read_examples, read_labels
from skewtune.core.paths import MAX_FOLDS
from skewtune.evaluation.label_issues import find_suspects

pytestmark = pytest.mark.slow
FOLD_STAGES = {f"train_fold@{f}" for f in range(MAX_FOLDS)}


def _params(model_dir) -> dict:
    return {
        "data": {"source": "data/raw/sms.tsv", "text_column": "SMS", "label_column": "Label"},
        "split": {"val_size": 0.2, "test_size": 0.2},
        "model": {"name": str(model_dir), "max_length": 24},
        # finetune: the fold models fine-tuned (auto's embedding on cross-fitted rows has its test below)
        "train": {
            "method": "finetune",
            "epochs": 1,
            "min_steps": 0,
            "batch_size": 16,
            "warmup": 0.0,
            "lr": 1.0e-3,
            "cv": 2,
        },
        "loss": {"name": "focal"},
    }


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_bert_dir, sms_path):
    """160 SMS rows (40 spam) after one `dvc repro` with train.cv: 2."""
    root = tmp_path_factory.mktemp("cv")
    sample = pd.read_csv(sms_path, sep="\t", dtype=str, keep_default_na=False)
    sample = pd.concat([sample[sample.Label == "spam"].head(40), sample[sample.Label == "ham"].head(120)])
    raw = root.parent / "sms_cv.tsv"
    sample.to_csv(raw, sep="\t", index=False)
    make_repo(root, _params(tiny_bert_dir), {"sms.tsv": raw})
    out = dvc(["repro"], root)
    assert FOLD_STAGES <= ran_stages(out.stdout), out.stdout
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "cv run"], root)
    return root


def _ids(repo, split: str) -> set[str]:
    return set(pd.read_parquet(repo / f"data/split/{split}.parquet")["id"].astype(str))


def test_two_folds_train_and_predict_every_train_and_val_row_once_never_test(repo):
    parts = [pd.read_parquet(repo / f"data/predictions/folds/{f}.parquet") for f in range(MAX_FOLDS)]
    assert [len(part.columns) > 0 for part in parts] == [True, True, False, False, False]
    oof = pd.concat(parts[:2], ignore_index=True)
    train_val = _ids(repo, "train") | _ids(repo, "val")
    assert sorted(oof["id"].astype(str)) == sorted(train_val) and not set(oof["id"].astype(str)) & _ids(repo, "test")
    assert list(oof.columns) == list(pd.read_parquet(repo / "data/predictions/val.parquet").columns)
    np.testing.assert_allclose(oof[["prob:ham", "prob:spam"]].sum(axis=1), 1, atol=1e-5)
    for f in range(2):
        report = json.loads((repo / f"reports/train_fold/{f}/fold.json").read_text())
        held = len(parts[f])
        assert report["trained"] and report["folds"] == 2 and report["held_out_rows"] == held
        # the other fold's rows: fitted on (resample.strategy none) or used to choose the epoch, never the held-out ones
        assert report["fit_rows"] + report["selection_rows"] == len(train_val) - held
        assert 0 < report["selection_rows"] < report["fit_rows"]
        assert (repo / f"reports/train_fold/{f}/metrics.json").is_file()  # its training curves (dvclive)
    idle = json.loads((repo / "reports/train_fold/3/fold.json").read_text())
    assert not idle["trained"] and idle["why"].startswith("train.cv: 2, 2 folds of")
    baseline = pd.read_parquet(repo / "data/predictions/baseline/oof.parquet")
    assert sorted(baseline["id"].astype(str)) == sorted(train_val)
    assert json.loads((repo / "reports/baseline.json").read_text())["cross_fitted_folds"] == 2


def test_the_decision_is_taken_on_the_out_of_fold_rows(repo):
    decision = json.loads((repo / "reports/threshold/decision.json").read_text())
    n = len(_ids(repo, "train") | _ids(repo, "val"))
    assert decision["decision_rows"] == f"out-of-fold train+val (2 folds, {n} rows)"
    assert decision["calibration"]["model"]["setting"] == "auto" and decision["calibration"]["baseline"] is not None
    if decision["tuned_threshold"] is not None:  # the guard judged the tuned rule on the same 2 folds
        assert decision["guard_folds"] == 2 and 0 <= decision["win_rate"] <= 1
    assert decision["blend_win_rate"] is not None  # decision.blend: auto judged the cross-fitted baseline too
    curve = pd.read_csv(repo / "reports/threshold/val_curve.csv")  # the plot names the rows it was tuned on
    assert set(curve["series"]) == {"out-of-fold f1_macro"}


def test_label_issues_rank_the_baseline_stages_out_of_fold_probabilities_on_text(repo, monkeypatch):
    """On text the cross-fitted baseline's probabilities (the better finder of planted flips, BENCHMARKS §15), which
    the baseline stage made on the fold models' folds: the stage runs cleanlab alone."""
    report = json.loads((repo / "reports/label_issues.json").read_text())
    assert report["source"] == "the TF-IDF baseline cross-fitted on 2 folds" and report["folds"] == 2
    monkeypatch.chdir(repo)
    labels = read_labels()
    predictions = read_baseline_predictions(BASELINE_OOF, labels)
    rows = pd.concat([read_examples(f"data/split/{s}.parquet", labels, "split") for s in ("train", "val")])
    probs = pd.DataFrame(predictions.probs, index=predictions.ids).loc[rows["id"].astype(str)].to_numpy()
    expected = rows["id"].to_numpy()[find_suspects(rows["label_id"].to_numpy(), probs).positions]
    table = pd.read_csv(repo / "reports/label_issues.csv", dtype=str, keep_default_na=False)
    assert list(table["id"]) == list(expected) and report["suspects"] == len(expected)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["label_issues"]
    folds_and_baseline = {f"data/predictions/folds/{f}.parquet" for f in range(MAX_FOLDS)}
    assert folds_and_baseline | {"data/predictions/baseline/oof.parquet"} <= {d["path"] for d in lock["deps"]}


def test_fold_stages_never_read_test_and_list_their_inputs(repo):
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for f in range(MAX_FOLDS):
        deps = {d["path"] for d in lock[f"train_fold@{f}"]["deps"]}
        assert "data/split/test.parquet" not in deps and "data/resampled/train.parquet" not in deps
        assert {"data/split/train.parquet", "data/split/val.parquet", "reports/effective/train.json"} <= deps


def test_a_fold_not_trained_imports_no_torch(repo):
    code = "import sys; from stages.train_fold import main; main(4); assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], cwd=repo, env=env(), check=True, capture_output=True, text=True)


def test_a_key_without_effect_reruns_nothing_and_cv_off_decides_on_val(repo):
    original = (repo / "params.yaml").read_text()
    try:
        set_params(repo, {"loss": {"tau": 3.0}})  # focal does not read loss.tau
        assert ran_stages(dvc(["repro"], repo).stdout) == {"check_params"}
        set_params(repo, {"train": {"cv": "off"}})
        out = dvc(["repro"], repo)
        # the folds write tables without columns, the decision moves to val, label_issues cross-fits the baseline;
        # the train stage's model is not touched
        ran = ran_stages(out.stdout)
        assert {"check_params", *FOLD_STAGES, "baseline", "tune_threshold", "label_issues"} <= ran, out.stdout
        assert not ran & {"ingest", "split", "resample", "train", "predict"}, out.stdout
        assert all(
            pd.read_parquet(repo / f"data/predictions/folds/{f}.parquet").columns.empty for f in range(MAX_FOLDS)
        )
        assert pd.read_parquet(repo / "data/predictions/baseline/oof.parquet").columns.empty
        decision = json.loads((repo / "reports/threshold/decision.json").read_text())
        assert decision["decision_rows"] == f"val ({len(_ids(repo, 'val'))} rows)"
        source = json.loads((repo / "reports/label_issues.json").read_text())["source"]
        assert source.startswith("the TF-IDF baseline cross-fitted on "), source
    finally:
        (repo / "params.yaml").write_text(original)
        dvc(["repro"], repo)


def test_auto_trains_embedding_where_the_rows_are_cross_fitted_in_the_folds_and_the_train_stage(repo):
    """The fold models are trained by the train stage's recipe, so train.method reaches them: under auto (the default),
    on rows that train.cv cross-fits, an embedding head per fold (seconds) and in the train stage, whose out-of-fold
    probabilities the decision then uses; method.json says why."""
    original = (repo / "params.yaml").read_text()
    before = pd.read_parquet(repo / "data/predictions/folds/0.parquet")
    try:
        set_params(repo, {"train": {"method": "auto"}})
        out = dvc(["repro"], repo)
        assert {"train_fold@0", "train_fold@1", "train", "tune_threshold"} <= ran_stages(out.stdout), out.stdout
        for reports in ("reports/train_fold/0", "reports/train_fold/1", "reports/train"):
            assert json.loads((repo / f"{reports}/metrics.json").read_text())["method"] == "embedding"
            record = json.loads((repo / f"{reports}/method.json").read_text())
            assert record["method"] == "embedding" and record["win_rate"] is None
            assert record["reason"].startswith("train.cv: 2, 2 folds of") and "out-of-fold" in record["reason"]
        assert "train (auto): embedding: train.cv: 2, 2 folds of" in out.stdout
        after = pd.read_parquet(repo / "data/predictions/folds/0.parquet")
        assert list(after["id"]) == list(before["id"])  # the same held-out rows, other probabilities
        assert not np.allclose(after["prob:spam"], before["prob:spam"])
        decision = json.loads((repo / "reports/threshold/decision.json").read_text())
        assert decision["decision_rows"].startswith("out-of-fold train+val (2 folds")
    finally:
        (repo / "params.yaml").write_text(original)
        dvc(["repro"], repo)
