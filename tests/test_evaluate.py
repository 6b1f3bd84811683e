"""The tune_threshold and evaluate stages on real files (a TF-IDF + LogisticRegression spam filter, and a
synthetic 3-class sentence-pair problem), and `python -m stages.compare` in a throw-away git repo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from skewtune.artifacts import DecisionRule
from skewtune.errors import SkewtuneError

REPO = Path(__file__).resolve().parents[1]
DECISION_KEYS = {"strategy", "labels", "metric", "positive_label", "threshold", "offsets", "val_score", "val_score_argmax",
                 "tuned_threshold", "tuned_offsets", "tuned_val_score", "win_rate", "blend", "blend_setting", "blend_weight_tried",
                 "blend_val_score", "blend_win_rate", "val_score_model", "collapsed", "collapse_message"}


def _write_params(root: Path, **sections) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def _write_predictions(path: Path, split: pd.DataFrame, labels: list[str], probs: np.ndarray) -> None:
    frame = split[["id", "label"]].reset_index(drop=True)
    for k, label in enumerate(labels):
        frame[f"prob:{label}"] = probs[:, k].astype(np.float32)  # as a model's softmax would be saved
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def _write_project(root: Path, labels: list[str], splits: dict[str, pd.DataFrame], probs: dict[str, np.ndarray],
                   baseline: dict[str, np.ndarray] | None = None) -> None:
    """labels.json, data/split/{val,test}.parquet, data/predictions/{val,test}.parquet as the earlier stages write
    them, the baseline's predictions (or its tables without columns) and the score stage's table of no scored data."""
    (root / "data/interim").mkdir(parents=True, exist_ok=True)
    (root / "data/split").mkdir(parents=True, exist_ok=True)
    (root / "data/predictions/baseline").mkdir(parents=True, exist_ok=True)
    (root / "data/interim/labels.json").write_text(json.dumps({"labels": labels}))
    for name in ("val", "test"):
        splits[name].to_parquet(root / f"data/split/{name}.parquet", index=False)
    pd.DataFrame().to_parquet(root / "data/predictions/score.parquet")
    for name in ("val", "test"):
        _write_predictions(root / f"data/predictions/{name}.parquet", splits[name], labels, probs[name])
        if baseline is None:
            pd.DataFrame().to_parquet(root / f"data/predictions/baseline/{name}.parquet")
        else:
            _write_predictions(root / f"data/predictions/baseline/{name}.parquet", splits[name], labels, baseline[name])


def _run_stages(root: Path, monkeypatch) -> None:
    from stages import evaluate, relabel, tune_threshold

    monkeypatch.chdir(root)
    tune_threshold.main()
    evaluate.main()
    relabel.main()


@pytest.fixture(scope="module")
def spam(sms_splits):
    """The SMS collection split 60/20/20 and the probabilities of a TF-IDF + LogisticRegression filter."""
    train, val, test = sms_splits
    vectorizer = TfidfVectorizer(min_df=2)
    model = LogisticRegression(C=3.0).fit(vectorizer.fit_transform(train["text"]), train["label"])
    probs = {name: model.predict_proba(vectorizer.transform(split["text"])) for name, split in (("val", val), ("test", test))}
    assert list(model.classes_) == ["ham", "spam"]
    return {"val": val, "test": test, "train": train}, probs


@pytest.fixture(scope="module")
def spam_baseline(spam):
    """The probabilities of skewtune's baseline (word + char_wb TF-IDF, balanced LR) fitted on the same train rows."""
    from skewtune.baseline import baseline_proba, fit_baseline

    splits, _ = spam
    train = splits["train"].assign(label_id=splits["train"]["label"].map({"ham": 0, "spam": 1}))
    model, _ = fit_baseline(train, ["ham", "spam"], min_df=2, max_features=200_000, max_rows=200_000)
    return {name: baseline_proba(model, splits[name], 2) for name in ("val", "test")}


@pytest.fixture
def spam_project(tmp_path, spam, monkeypatch):
    splits, probs = spam
    _write_project(tmp_path, ["ham", "spam"], splits, probs)
    # min_confidence 0: the stages' contract for a tuned rule, whichever way the guard would decide
    _write_params(tmp_path, evaluate={"error_rows": 40}, threshold={"min_confidence": 0.0})
    _run_stages(tmp_path, monkeypatch)
    return tmp_path


def test_binary_stages_write_the_contract(spam_project):
    root = spam_project
    decision = json.loads((root / "reports/threshold/decision.json").read_text())
    assert set(decision) == DECISION_KEYS
    assert (decision["strategy"], decision["positive_label"], decision["labels"]) == ("threshold", "spam", ["ham", "spam"])
    assert decision["val_score"] >= decision["val_score_argmax"]
    curve = pd.read_csv(root / "reports/threshold/val_curve.csv")
    assert list(curve.columns) == ["threshold", "score", "precision", "recall", "series"] and len(curve) <= 501
    assert set(curve["series"]) == {"val f1_macro"}
    assert curve.loc[curve["threshold"] == decision["threshold"], "score"].item() == pytest.approx(decision["val_score"])
    markers = pd.read_csv(root / "reports/threshold/markers.csv")
    assert markers[["threshold", "score"]].to_dict("records") == [{"threshold": decision["threshold"], "score": pytest.approx(decision["val_score"])}]
    assert markers["series"].item() == f"applied: threshold (p >= {decision['threshold']:.4g})"
    # a binary task has no offset search: its plot file has the columns and no rows, so the plot is empty, not broken
    assert pd.read_csv(root / "reports/threshold/offset_search.csv").empty

    predictions = pd.read_csv(root / "reports/eval/test_predictions.csv")
    assert list(predictions.columns) == ["id", "actual", "predicted", "predicted_argmax", "rule"]
    assert set(predictions["rule"]) == {"threshold"}
    test = pd.read_parquet(root / "data/predictions/test.parquet")
    assert predictions["id"].tolist() == test["id"].tolist()
    tuned = DecisionRule.from_dict(decision).predict(test[["prob:ham", "prob:spam"]].to_numpy())
    assert predictions["predicted"].tolist() == [["ham", "spam"][k] for k in tuned]

    report = json.loads((root / "reports/eval/test.json").read_text())
    for rule, column in (("chosen", "predicted"), ("argmax", "predicted_argmax")):
        scores = report[rule]
        assert scores["f1_macro"] == pytest.approx(f1_score(predictions["actual"], predictions[column], average="macro"), abs=1e-6)
        assert scores["f1_macro_ci_low"] < scores["f1_macro"] < scores["f1_macro_ci_high"]
    assert report["n_test"] == len(test) and report["rule"] == "threshold"
    assert report["per_class"]["spam"]["support"] == int((test["label"] == "spam").sum())
    assert 0.9 < report["roc_auc"] <= 1 and 0.8 < report["pr_auc"] <= 1

    # The review metrics: the headline numbers of the full report, plus val macro-F1 of the same rule.
    review = json.loads((root / "metrics/test.json").read_text())
    assert list(review) == [
        "f1_macro", "f1_macro_ci_low", "f1_macro_ci_high", "rule", "f1_macro_argmax", "rarest_class", "f1_rarest_class",
        "val_f1_macro", "val_f1_macro_argmax", "balanced_accuracy", "pr_auc", "n_test",
        "baseline_f1_macro", "baseline_f1_macro_ci_low", "baseline_f1_macro_ci_high", "vs_baseline", "vs_baseline_ci_low",
        "vs_baseline_ci_high", "collapsed",
    ]
    assert review["f1_macro"] == report["chosen"]["f1_macro"] and review["f1_macro_argmax"] == report["argmax"]["f1_macro"]
    assert review["rule"] == "threshold" and review["rarest_class"] == "spam"
    assert review["f1_rarest_class"] == report["per_class"]["spam"]["f1"]
    val = pd.read_parquet(root / "data/predictions/val.parquet")
    val_chosen = DecisionRule.from_dict(decision).predict(val[["prob:ham", "prob:spam"]].to_numpy())
    assert review["val_f1_macro"] == pytest.approx(f1_score(val["label"], np.array(["ham", "spam"])[val_chosen], average="macro"), abs=1e-6)

    for name, columns in (("pr_curve", ["threshold", "precision", "recall", "series"]), ("roc_curve", ["threshold", "fpr", "tpr", "series"])):
        frame = pd.read_csv(root / f"reports/eval/{name}.csv")
        assert list(frame.columns) == columns and 10 < len(frame) <= 501


def test_relabelling_queue_is_val_mistakes_most_confident_first_never_test(spam_project):
    root = spam_project
    errors = pd.read_csv(root / "reports/errors.csv", keep_default_na=False)
    assert list(errors.columns) == ["source", "id", "text", "label", "predicted", "margin", "prob:ham", "prob:spam"]
    decision = json.loads((root / "reports/threshold/decision.json").read_text())
    val = pd.read_parquet(root / "data/predictions/val.parquet")
    wrong = DecisionRule.from_dict(decision).predict(val[["prob:ham", "prob:spam"]].to_numpy()) != val["label"].map({"ham": 0, "spam": 1}).to_numpy()
    assert 0 < len(errors) == min(40, int(wrong.sum())) and set(errors["source"]) == {"val"}
    assert (errors["label"] != errors["predicted"]).all() and errors["margin"].is_monotonic_decreasing
    assert set(errors["id"]) <= set(val["id"][wrong]) and not set(errors["id"]) & set(pd.read_parquet(root / "data/split/test.parquet")["id"])
    split = pd.read_parquet(root / "data/split/val.parquet").set_index("id")
    texts = [("'" + t if t[0] in "=+-@" else t) for t in split.loc[errors["id"], "text"]]  # formulas escaped
    assert errors["text"].tolist() == texts and errors["label"].tolist() == split.loc[errors["id"], "label"].tolist()


def test_evaluate_is_reproducible(spam_project, monkeypatch):
    from stages import evaluate

    first = (spam_project / "metrics/test.json").read_text()
    monkeypatch.chdir(spam_project)
    evaluate.main()
    assert (spam_project / "metrics/test.json").read_text() == first


@pytest.fixture
def pair_project(tmp_path, monkeypatch):
    """A seeded 3-class sentence-pair problem (70/20/10) with probabilities of a noisy model."""
    rng = np.random.default_rng(0)
    labels = ["contradiction", "entailment", "neutral"]
    splits, probs = {}, {}
    for name, n in (("val", 400), ("test", 300)):
        y = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
        logits = rng.normal(size=(n, 3)) + 1.2 * np.eye(3)[y] + [0.8, 0, 0]
        probs[name] = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        splits[name] = pd.DataFrame(
            {"id": [f"{name}-{i}" for i in range(n)], "text": [f"premise {i}" for i in range(n)], "text_pair": [f"hypothesis {i}" for i in range(n)], "label": [labels[k] for k in y]}
        )
    _write_project(tmp_path, labels, splits, probs)
    _write_params(tmp_path, evaluate={"error_rows": 500, "bootstrap_resamples": 1000}, threshold={"min_confidence": 0.0})
    _run_stages(tmp_path, monkeypatch)
    return tmp_path


def test_multiclass_stages_tune_offsets_and_report_per_class(pair_project):
    root = pair_project
    decision = json.loads((root / "reports/threshold/decision.json").read_text())
    assert decision["strategy"] == "offsets" and decision["positive_label"] is None and len(decision["offsets"]) == 3
    steps = pd.read_csv(root / "reports/threshold/offset_search.csv")
    assert list(steps.columns) == ["step", "sweep", "class", "offset", "score", "series"] and steps["score"].is_monotonic_increasing
    assert steps["step"].tolist() == list(range(len(steps)))
    assert pd.read_csv(root / "reports/threshold/val_curve.csv").empty and pd.read_csv(root / "reports/threshold/markers.csv").empty
    report = json.loads((root / "reports/eval/test.json").read_text())
    assert set(report["per_class"]) == {"contradiction", "entailment", "neutral"}
    assert report["chosen"]["f1_macro"] != report["argmax"]["f1_macro"]
    pr = pd.read_csv(root / "reports/eval/pr_curve.csv")
    assert set(pr["series"]) == {"contradiction", "entailment", "neutral"}
    errors = pd.read_csv(root / "reports/errors.csv")
    assert list(errors.columns[:4]) == ["source", "id", "text", "text_pair"] and (errors["label"] != errors["predicted"]).all()
    first = errors.iloc[0]
    assert first["id"].startswith("val-") and first["text_pair"] == "hypothesis " + first["id"].removeprefix("val-")


def test_stage_errors_are_one_line_and_exit_2(tmp_path):
    _write_params(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "stages.evaluate"], cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "skewtune evaluate: error: data/interim/labels.json: not found; run the ingest stage first (dvc repro ingest)"


def test_evaluate_refuses_predictions_of_another_test_split(spam_project, monkeypatch):
    from stages import evaluate

    split = pd.read_parquet(spam_project / "data/split/test.parquet")
    split.iloc[5:].to_parquet(spam_project / "data/split/test.parquet", index=False)
    monkeypatch.chdir(spam_project)
    with pytest.raises(SkewtuneError, match=r"data/split/test.parquet: 5 prediction id\(s\) are not in it .* re-run the predict stage"):
        evaluate.main()


# ------------------------------------------------------------------------------------------ compare


def _git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True).stdout.strip()


def _compare(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.compare", *args], cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_compare_two_commits_and_an_experiment(tmp_path, spam, monkeypatch):
    from stages import evaluate, tune_threshold

    splits, probs = spam
    root = tmp_path
    _write_project(root, ["ham", "spam"], splits, probs)
    _git(root, "init", "-q")
    monkeypatch.chdir(root)
    tables = {}
    for strategy in ("argmax", "tune"):
        _write_params(root, threshold={"strategy": strategy, "min_confidence": 0.0})
        tune_threshold.main()
        evaluate.main()
        tables[strategy] = pd.read_csv(root / "reports/eval/test_predictions.csv")
        _git(root, "add", "params.yaml", "reports/eval/test_predictions.csv")
        _git(root, "commit", "-q", "-m", strategy)
    # how DVC stores a finished experiment: refs/exps/<2 hex>/<baseline sha rest>/<name>
    head = _git(root, "rev-parse", "HEAD")
    _git(root, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/exp-1a2b3", head)

    proc = _compare(root, "HEAD~1", "exp-1a2b3", "--resamples", "2000")
    assert proc.returncode == 0, proc.stderr
    f1_a = f1_score(tables["argmax"]["actual"], tables["argmax"]["predicted"], average="macro")
    f1_b = f1_score(tables["tune"]["actual"], tables["tune"]["predicted"], average="macro")
    out = proc.stdout
    assert f"| A | `HEAD~1` | {f1_a:.4f} |" in out and f"| B | `exp-1a2b3` | {f1_b:.4f} |" in out
    assert f"**{f1_b - f1_a:+.4f}**" in out and f"n_test = {len(tables['tune'])}." in out
    assert "**Verdict:**" in out and "(the rule each run chose on val)" in out
    assert "Rules applied: A `argmax`, B `threshold`." in out
    spam_f1 = [f1_score(tables[s]["actual"], tables[s]["predicted"], labels=["spam"], average=None)[0] for s in ("argmax", "tune")]
    support = int((tables["tune"]["actual"] == "spam").sum())
    assert f"| `spam` | {support} | {spam_f1[0]:.4f} | {spam_f1[1]:.4f} | {spam_f1[1] - spam_f1[0]:+.4f} |" in out
    assert "| `threshold.strategy` | `argmax` | `tune` |" in out and "threshold.min_confidence" not in out

    # the argmax columns of both commits are the same predictions
    same = _compare(root, "HEAD~1", "workspace", "--rule", "argmax", "--resamples", "500")
    assert same.returncode == 0, same.stderr
    assert "**+0.0000** (95% CI +0.0000 to +0.0000)" in same.stdout and "Not distinguishable from noise at 95% (p = 1)" in same.stdout


SEED_STAGE = """stages:
  run:
    cmd: python run.py
    deps: [run.py]
    params: [train.seed, train.lr]
    metrics:
      - metrics/test.json:
          cache: false
"""
SEED_SCRIPT = """import json, yaml
t = yaml.safe_load(open("params.yaml"))["train"]
json.dump({"f1_macro": 0.9 + t["lr"] / 10 + t["seed"] / 1000, "val_f1_macro": 0.8 + t["lr"] / 10}, open("metrics/test.json", "w"))
"""


@pytest.mark.slow
def test_compare_seeds_groups_queued_experiments_by_params_minus_seeds(tmp_path):
    """Through the real `dvc exp run --queue` on a one-stage project whose metric is a known function of the
    params: two learning rates over three seeds are two groups, each seed a paired draw."""
    from dvc_repo import dvc, env, run

    (tmp_path / "metrics").mkdir()
    (tmp_path / "params.yaml").write_text("train:\n  seed: 1\n  lr: 0.1\n")
    (tmp_path / "dvc.yaml").write_text(SEED_STAGE)
    (tmp_path / "run.py").write_text(SEED_SCRIPT)
    run(["git", "init", "-q"], tmp_path)
    dvc(["init", "-q"], tmp_path)
    dvc(["repro", "-q"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-q", "-m", "baseline"], tmp_path)
    dvc(["exp", "run", "--queue", "-S", "train.seed=1,2,3", "-S", "train.lr=0.1,0.2"], tmp_path)
    dvc(["exp", "run", "--run-all"], tmp_path)
    compare = subprocess.run([sys.executable, "-m", "stages.compare", "--seeds"], cwd=tmp_path, capture_output=True, text=True, env={**env(), "PYTHONPATH": str(REPO)})
    assert compare.returncode == 0, compare.stderr
    out = compare.stdout
    assert "### skewtune: macro-F1 over seeds (6 runs, 2 configurations)" in out  # the baseline commit is seed 1 of A
    assert "| A | `train.lr=0.1` | 3 | 0.9120 ± 0.0010 | 0.8100 ± 0.0000 |" in out
    assert "| B | `train.lr=0.2` | 3 | 0.9220 ± 0.0010 | 0.8200 ± 0.0000 |" in out
    assert "Seed keys set apart: `train.seed`" in out
    assert "**B − A** (test macro-F1, same seeds, n = 3): mean +0.0100, sd 0.0000" in out and "B is better than A" in out
    assert "higher on 3 of 3 seeds." in out


def test_compare_refuses_different_test_sets_and_unknown_revisions(tmp_path, monkeypatch):
    from stages import compare

    root = tmp_path
    (root / "reports/eval").mkdir(parents=True)
    table = pd.DataFrame({"id": ["a", "b", "c"], "actual": ["x", "y", "x"], "predicted": ["x", "x", "x"], "predicted_argmax": ["x", "y", "y"]})
    table.to_csv(root / "reports/eval/test_predictions.csv", index=False)
    _git(root, "init", "-q")
    _git(root, "add", "reports")
    _git(root, "commit", "-q", "-m", "a")
    _git(root, "update-ref", "refs/exps/ab/cdef/exp-good", "HEAD")
    monkeypatch.chdir(root)

    table.assign(id=["a", "b", "d"]).to_csv(root / "reports/eval/test_predictions.csv", index=False)
    monkeypatch.setattr(sys, "argv", ["compare", "HEAD", "workspace"])
    with pytest.raises(SkewtuneError, match=r"HEAD and workspace were evaluated on different test sets: 1 id\(s\) only in HEAD, 1 only in workspace"):
        compare.main()
    table.assign(actual=["x", "x", "x"]).to_csv(root / "reports/eval/test_predictions.csv", index=False)
    with pytest.raises(SkewtuneError, match=r"different test sets: 1 id\(s\) have different true labels \(e.g. id 'b': 'y' vs 'x'\)"):
        compare.main()
    monkeypatch.setattr(sys, "argv", ["compare", "exp-nope", "workspace"])
    with pytest.raises(SkewtuneError, match=r"'exp-nope' is neither a git revision nor a DVC experiment \(experiments: exp-good\)"):
        compare.main()
    (root / "reports/eval/test_predictions.csv").unlink()
    monkeypatch.setattr(sys, "argv", ["compare", "exp-good", "workspace"])
    with pytest.raises(SkewtuneError, match=r"workspace: reports/eval/test_predictions.csv not found; run the evaluate stage"):
        compare.main()


def test_tune_threshold_keeps_a_clear_win_and_refuses_a_fluke(tmp_path, spam, monkeypatch, capsys):
    """The guard through the stage, on real predictions (TF-IDF + LR on SMS). Their tuned threshold scores
    ~0.005 above argmax on val, a few rows, and wins in only ~80% of val resamples: argmax stays. The same
    predictions with the spam odds divided by 5 (a model trained at another class prior) leave argmax missing
    much of the spam: the tuned threshold wins in every resample and is kept."""
    from stages import tune_threshold

    splits, probs = spam
    _write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    _write_project(tmp_path, ["ham", "spam"], splits, probs)
    tune_threshold.main()
    fluke = json.loads((tmp_path / "reports/threshold/decision.json").read_text())
    assert fluke["strategy"] == "argmax" and fluke["threshold"] is None and 0.7 < fluke["win_rate"] < 0.95
    assert fluke["tuned_val_score"] > fluke["val_score"] == fluke["val_score_argmax"] and fluke["tuned_threshold"] is not None
    assert "kept argmax: the tuned threshold" in capsys.readouterr().out
    markers = pd.read_csv(tmp_path / "reports/threshold/markers.csv")
    assert markers["threshold"].tolist() == [0.5, fluke["tuned_threshold"]]
    assert markers["series"].tolist() == [
        "applied: argmax (p >= 0.5)", f"tuned, not kept: won {fluke['win_rate']:.0%} of val resamples (p >= {fluke['tuned_threshold']:.4g})"
    ]

    odds = probs["val"][:, 1] / 5 / probs["val"][:, 0]
    _write_project(tmp_path, ["ham", "spam"], splits, {**probs, "val": np.c_[1 / (1 + odds), odds / (1 + odds)]})
    tune_threshold.main()
    clear = json.loads((tmp_path / "reports/threshold/decision.json").read_text())
    assert clear["strategy"] == "threshold" and clear["win_rate"] == 1.0 and clear["threshold"] == clear["tuned_threshold"] < 0.2
    assert clear["val_score"] > clear["val_score_argmax"] + 0.05


# ------------------------------------------------------------------------------------------- blend


def _noisy(probs: np.ndarray, seed: int) -> np.ndarray:
    """A worse model: the spam log-odds with much noise added (its ranking degraded, not just its calibration)."""
    logit = np.log(probs[:, 1] / probs[:, 0]) + np.random.default_rng(seed).normal(scale=4.0, size=len(probs))
    p = 1 / (1 + np.exp(-logit))
    return np.c_[1 - p, p]


def test_blend_auto_keeps_the_baseline_when_it_clearly_helps_and_everything_applies_it(tmp_path, spam, spam_baseline, monkeypatch):
    splits, probs = spam
    noisy = {name: _noisy(probs[name], seed) for seed, name in enumerate(("val", "test"))}
    _write_project(tmp_path, ["ham", "spam"], splits, noisy, spam_baseline)
    _write_params(tmp_path)  # the defaults: decision.blend auto, threshold.min_confidence 0.95
    _run_stages(tmp_path, monkeypatch)
    decision = json.loads((tmp_path / "reports/threshold/decision.json").read_text())
    assert set(decision) == DECISION_KEYS and decision["blend_setting"] == "auto"
    assert 0 < decision["blend"] == decision["blend_weight_tried"] <= 1 and decision["blend_win_rate"] >= 0.95
    assert decision["val_score"] == decision["blend_val_score"] > decision["val_score_model"] + 0.05
    rule = DecisionRule.from_dict(decision)
    # the rule was tuned on the blended val probabilities: its recorded val score is theirs
    val_y = splits["val"]["label"].map({"ham": 0, "spam": 1}).to_numpy()
    blended_val = rule.combine(noisy["val"], spam_baseline["val"])
    assert f1_score(val_y, rule.predict(blended_val), average="macro") == pytest.approx(decision["val_score"], abs=1e-5)

    predictions = pd.read_csv(tmp_path / "reports/eval/test_predictions.csv")
    blended_test = rule.combine(noisy["test"].astype(np.float32), spam_baseline["test"].astype(np.float32))
    assert predictions["predicted"].tolist() == [["ham", "spam"][k] for k in rule.predict(blended_test)]
    review = json.loads((tmp_path / "metrics/test.json").read_text())
    report = json.loads((tmp_path / "reports/eval/test.json").read_text())
    baseline_f1 = f1_score(predictions["actual"], [["ham", "spam"][k] for k in spam_baseline["test"].argmax(axis=1)], average="macro")
    assert report["blend"] == decision["blend"] and review["baseline_f1_macro"] == pytest.approx(baseline_f1, abs=1e-5)
    assert review["baseline_f1_macro_ci_low"] < baseline_f1 < review["baseline_f1_macro_ci_high"]
    assert review["vs_baseline"] == pytest.approx(review["f1_macro"] - baseline_f1, abs=1e-5)
    assert review["vs_baseline_ci_low"] <= review["vs_baseline"] <= review["vs_baseline_ci_high"]
    assert review["collapsed"] is False and report["collapse_message"] is None
    # val macro-F1 in the review metrics is the blended rule's, as chosen
    assert review["val_f1_macro"] == pytest.approx(decision["val_score"], abs=1e-6)
    errors = pd.read_csv(tmp_path / "reports/errors.csv")
    first = errors.iloc[0]
    row = np.flatnonzero(splits["val"]["id"].to_numpy() == first["id"])[0]
    assert first["prob:spam"] == pytest.approx(blended_val[row, 1], abs=1e-6)  # the queue shows what was decided on


def test_blend_auto_stays_off_without_a_gain_and_a_fixed_weight_is_used(tmp_path, spam, spam_baseline, monkeypatch, capsys):
    splits, probs = spam
    y = {name: splits[name]["label"].map({"ham": 0, "spam": 1}).to_numpy() for name in ("val", "test")}
    sure = {name: np.where(np.eye(2)[y[name]] == 1, 0.9, 0.1) for name in ("val", "test")}  # a model right on every row
    _write_project(tmp_path, ["ham", "spam"], splits, sure, spam_baseline)
    _write_params(tmp_path)
    _run_stages(tmp_path, monkeypatch)
    decision = json.loads((tmp_path / "reports/threshold/decision.json").read_text())
    assert decision["blend"] == 0.0 and decision["val_score"] == decision["val_score_model"] == 1.0
    assert decision["blend_weight_tried"] == 0.1 and decision["blend_val_score"] <= 1.0
    assert "decision: baseline not blended in: weight 0.1 scored val" in capsys.readouterr().out

    _write_params(tmp_path, decision={"blend": 0.5})
    _run_stages(tmp_path, monkeypatch)
    decision = json.loads((tmp_path / "reports/threshold/decision.json").read_text())
    assert decision["blend"] == 0.5 == decision["blend_weight_tried"] and decision["blend_setting"] == 0.5

    _write_params(tmp_path, decision={"blend": "off"})
    _run_stages(tmp_path, monkeypatch)
    decision = json.loads((tmp_path / "reports/threshold/decision.json").read_text())
    assert decision["blend"] == 0.0 and decision["blend_weight_tried"] is None


def test_a_fixed_blend_without_baseline_predictions_is_one_clear_error(tmp_path, spam, monkeypatch):
    from stages import tune_threshold

    splits, probs = spam
    _write_project(tmp_path, ["ham", "spam"], splits, probs)  # the baseline's tables without columns: it was not fitted
    _write_params(tmp_path, decision={"blend": 0.3})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SkewtuneError, match=r"^decision.blend is 0.3, but the baseline was not fitted \(see reports/baseline.json\); set decision.blend: auto or off$"):
        tune_threshold.main()


def test_a_collapsed_model_is_flagged_in_the_metrics(tmp_path, spam, monkeypatch, capsys):
    splits, _ = spam
    flat = {name: np.tile([0.97, 0.03], (len(splits[name]), 1)) for name in ("val", "test")}  # ham for every row
    _write_project(tmp_path, ["ham", "spam"], splits, flat)
    _write_params(tmp_path)
    _run_stages(tmp_path, monkeypatch)
    review = json.loads((tmp_path / "metrics/test.json").read_text())
    report = json.loads((tmp_path / "reports/eval/test.json").read_text())
    assert review["collapsed"] is True and report["collapse_message"].startswith("the trained model predicts 'ham' for 100% of the val rows (87% are 'ham')")
    assert "evaluate: WARNING: collapsed: the trained model predicts 'ham'" in capsys.readouterr().err
    # Remedies the params do not already set: the default start bias is already prior.
    assert report["collapse_message"].endswith("Remedies: more epochs (train.epochs, train.min_steps) or a higher train.lr, "
                                               "loss.name weighted_ce / focal / logit_adjusted, resample.strategy random_over; see reports/train")
    assert review["baseline_f1_macro"] is None and review["vs_baseline"] is None  # no baseline predictions: no comparison


def test_model_card_lists_the_params_that_took_effect_as_params_yaml_writes_them():
    """The card's params: train.epochs 2 (not 2.0), train.seed and decision.blend; a key the chosen options do not
    read (decision.blend without the baseline) is left out. Built from this repo's tracked reports of a real run."""
    from skewtune.artifacts import read_decision
    from skewtune.card import model_card
    from skewtune.params import Params, effective_config
    from stages.package import CARD_PARAMS

    root = Path(__file__).resolve().parents[1]
    report = lambda path: json.loads((root / path).read_text())
    decision = report("reports/threshold/decision.json")
    labels = decision["labels"]
    meta = {"labels": labels, "max_length": 128, "text_pair": False,
            "preprocessing": {"text_column": "text", "text_pair_column": None, "unescape_html": False}}

    def card(**sections) -> str:
        params = Params.model_validate(sections)
        return model_card(rule=read_decision(root / "reports/threshold/decision.json", labels), decision=decision, meta=meta,
                          params=effective_config(params, CARD_PARAMS), ingest=report("reports/ingest.json"),
                          split=report("reports/split.json"), test=report("reports/eval/test.json"))

    text = card(train={"epochs": 2.0, "seed": 7, "lr": 1e-4})
    for row in ("| `train.epochs` | `2` |", "| `train.seed` | `7` |", "| `train.lr` | `0.0001` |", "| `decision.blend` | `auto` |"):
        assert row in text, text
    assert "`decision.blend`" not in card(baseline={"enabled": False})
    assert "`train.epochs`" not in card(train={"max_steps": 100})
