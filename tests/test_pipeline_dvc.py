"""The whole pipeline through the real `dvc` CLI in a temporary git repo, at tiny scale.

One session-scoped repo runs `dvc repro` once; each test then changes params and asserts what DVC
sees as changed or re-runs, and restores params.yaml afterwards.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dvc_repo import REPO, dvc, make_repo, ran_stages, run, set_params
from sklearn.metrics import f1_score

from skewtune.config.effective import all_keys, check_stage_keys

pytestmark = pytest.mark.slow
DATA = ("ingest",)
ALL_AFTER_TRAIN = ("train", "predict", "tune_threshold", "evaluate", "package", "score", "relabel")
READ_INPUT = ("ingest", "score")  # the stages that read raw files
COLUMNS = ("ingest", "package", "score", "relabel")

# Every params key -> (a different valid value, the stages in which it takes effect with tiny_params: those whose
# reports/effective/<stage>.json changes). `check_params` tracks every key and is expected on every change.
KEY_CHANGES: dict[str, tuple[object, tuple[str, ...]]] = {
    # images: the text keys lose their effect and the image keys gain it; no baseline, no blend
    "data.modality": (
        "image",
        ("ingest", "train", "baseline", "label_issues", "tune_threshold", "package", "score", "relabel"),
    ),
    "data.image_column": ("path", ()),  # text data: the image keys have no effect
    "data.max_image_pixels": (1000, ()),
    "model.image_size": (32, ()),
    **{f"augment.{key}": (0.5, ()) for key in ("hflip", "vflip", "rotation", "crop_scale", "brightness", "contrast")},
    "data.source": ("data/raw/other.tsv", DATA),
    "data.format": ("tsv", READ_INPUT),
    "data.encoding": ("latin-1", READ_INPUT),
    "data.sheet": ("Sheet1", READ_INPUT),
    "data.text_column": ("body", COLUMNS),
    "data.text_pair_column": ("second", COLUMNS),
    "data.label_column": ("y", DATA),
    "data.label_map": ({"ham": "legit"}, DATA),
    "data.test_path": ("data/raw/test.tsv", (*DATA, "split")),  # split.test_size then has no effect
    "data.quoting": ("none", DATA),
    "data.max_dropped_share": (0.05, DATA),
    "data.conflicts": ("drop", DATA),
    "data.max_conflict_share": (0.1, DATA),
    "data.unescape_html": (True, (*DATA, "package")),
    "data.score_path": ("data/raw/new.tsv", ("score",)),
    "data.corrections": ("data/raw/fixes.csv", DATA),
    "split.val_size": (0.25, ("split",)),
    "split.test_size": (0.25, ("split",)),
    "split.seed": (7, ("split", "train_fold", "baseline")),  # the folds of train.cv are seeded by it
    "resample.strategy": (
        "random_under",
        ("resample", "train", "tune_threshold", "package"),
    ),  # train: smote / adasyn on the embeddings; tune_threshold: collapse_remedies
    "resample.over_ratio": (0.5, ()),  # resample.strategy none: no effect, nothing re-runs
    "resample.under_ratio": (0.8, ()),
    "resample.seed": (7, ()),
    "model.name": ("some/other-model", ("train", "package")),
    "model.max_length": (48, ("train", "package")),
    "model.init_bias": ("zero", ("train", "tune_threshold")),
    "model.hidden_dropout": (0.2, ("train",)),
    "model.classifier_dropout": (0.2, ("train",)),
    "model.trust_remote_code": (True, ("train", "predict")),
    "model.lora.enabled": (True, ("train",)),
    "model.lora.r": (4, ()),  # LoRA off
    "model.lora.alpha": (8, ()),
    "model.lora.dropout": (0.1, ()),
    "model.lora.target_modules": (["query", "value"], ()),
    "train.epochs": (2, ("train", "package")),
    "train.max_steps": (5, ("train", "package")),  # train.epochs then has no effect: the card's epochs go
    "train.min_steps": (100, ("train",)),
    "train.batch_size": (8, ("train", "package")),
    "train.eval_batch_size": (16, ("train", "predict", "score")),
    "train.grad_accum": (2, ("train",)),
    "train.lr": (1.0e-4, ("train", "package")),
    "train.weight_decay": (0.0, ("train",)),
    "train.warmup": (0.2, ("train",)),
    "train.scheduler": ("cosine", ("train",)),
    "train.min_lr_ratio": (0.1, ()),  # linear scheduler
    "train.plateau_factor": (0.5, ()),
    "train.plateau_patience": (2, ()),
    "train.max_grad_norm": (0.5, ("train",)),
    "train.seed": (7, ("train", "package")),
    "train.precision": ("fp32", ("train", "predict", "score")),
    "train.device": ("cpu", ("train", "predict", "score")),
    "train.early_stopping_patience": (0, ("train",)),
    "train.early_stopping_min_epochs": (3, ("train",)),
    "train.method": ("embedding", ("train", "package")),
    "train.setfit_iterations": (2, ()),  # train.method finetune
    "train.setfit_max_pairs": (100, ()),
    "train.ema_decay": (0.999, ("train",)),
    "train.adversarial": ("fgm", ("train",)),
    "train.adversarial_epsilon": (0.5, ()),  # no adversarial training
    "train.pgd_steps": (2, ()),
    "train.pgd_alpha": (0.1, ()),
    "train.select_metric": ("loss", ("train",)),
    "train.group_by_length": (False, ("train",)),
    "train.nproc": (2, ("train",)),
    "train.compile": (True, ("train",)),
    "train.resume": (True, ("train",)),
    "loss.name": ("weighted_ce", ("train", "tune_threshold", "package")),
    "loss.class_weights": ("inverse_sqrt", ()),  # focal loss without alpha
    "loss.beta": (0.99, ()),
    "loss.alpha": ("balanced", ("train",)),
    "loss.gamma": (3.0, ("train",)),
    "loss.tau": (0.5, ()),
    "loss.label_smoothing": (0.1, ("train",)),
    # valid only with 2 epochs (ALSO), which is what re-runs train; focal without alpha has no weights to defer
    "loss.reweight_from_epoch": (2, ("train", "package")),
    "baseline.enabled": (False, ("baseline", "tune_threshold", "package")),  # decision.blend then has no effect
    "baseline.min_df": (3, ("baseline", "label_issues")),  # the cross-fitted baseline's features too
    "baseline.max_features": (5000, ("baseline", "label_issues")),
    "baseline.max_rows": (200, ("baseline", "label_issues")),
    "label_issues.enabled": (False, ("label_issues",)),
    "label_issues.folds": (3, ("label_issues",)),
    "decision.blend": ("off", ("tune_threshold", "package")),
    "calibration.method": ("temperature", ("tune_threshold", "package")),
    "threshold.strategy": ("argmax", ("tune_threshold", "package")),
    "threshold.metric": ("mcc", ("tune_threshold", "package")),
    "threshold.min_precision": (0.5, ()),  # threshold.metric f1_macro
    "threshold.positive_label": ("ham", ("tune_threshold",)),
    "threshold.min_confidence": (0.5, ("tune_threshold",)),
    "evaluate.bootstrap_resamples": (2000, ("evaluate",)),
    "evaluate.confidence": (0.9, ("evaluate",)),
    "evaluate.seed": (1, ("evaluate",)),
    "evaluate.error_rows": (10, ("relabel",)),
    "train.cv": (2, ("train_fold", "baseline")),
}
# The fold stages of train.cv depend on the train and resample stages' effective files (the same recipe and
# resampling), the baseline on resample's (its folds are resampled alike).
for _key, (_value, _stages) in KEY_CHANGES.items():
    _more = {"train_fold"} if "train" in _stages else set()
    _more |= {"train_fold", "baseline"} if "resample" in _stages else set()
    KEY_CHANGES[_key] = (_value, tuple(dict.fromkeys((*_stages, *sorted(_more)))))
FOLD_STAGES = {f"train_fold@{f}" for f in range(5)}


def tiny_params(model_dir) -> dict:
    return {
        "data": {"source": "data/raw/sms.tsv", "text_column": "SMS", "label_column": "Label"},
        "split": {"val_size": 0.2, "test_size": 0.2},
        "model": {"name": str(model_dir), "max_length": 32},
        # cv off: these tests are of the pipeline on val (tests/test_pipeline_cv.py cross-fits); finetune: of fine-tuning
        # (auto would train embedding beside it on rows this few)
        "train": {
            "method": "finetune",
            "epochs": 1,
            "min_steps": 0,
            "batch_size": 16,
            "eval_batch_size": 64,
            "warmup": 0.0,
            "lr": 1.0e-3,
            "cv": "off",
        },
        "loss": {"name": "focal", "gamma": 2.0},
        # A fixed weight: the blend is applied by every stage after the decision and by `skewtune predict`, whatever val says.
        "decision": {"blend": 0.5},
    }


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_bert_dir, sms_path):
    """A temp repo on 400 rows of the SMS collection after one full `dvc repro`."""
    root = tmp_path_factory.mktemp("pipeline")
    sample = pd.read_csv(sms_path, sep="\t", dtype=str, keep_default_na=False)
    sample = pd.concat([sample[sample.Label == "spam"].head(80), sample[sample.Label == "ham"].head(320)])
    raw = root.parent / "sms_sample.tsv"
    sample.to_csv(raw, sep="\t", index=False)
    make_repo(root, tiny_params(tiny_bert_dir), {"sms.tsv": raw})
    out = dvc(["repro"], root)
    assert ran_stages(out.stdout) == {
        "check_params",
        "ingest",
        "split",
        "label_issues",
        "resample",
        "baseline",
        *ALL_AFTER_TRAIN,
        *FOLD_STAGES,
    }, out.stdout
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "baseline run"], root)
    return root


# Keys changed together with the one under test: a fixed decision.blend needs the baseline (and text); a
# re-weighting epoch needs that many epochs.
ALSO = {
    "baseline.enabled": {"decision": {"blend": "auto"}},
    "data.modality": {"decision": {"blend": "auto"}},
    "loss.reweight_from_epoch": {"train": {"epochs": 2}},
}


def changed_stages(repo) -> set[str]:
    status = json.loads(dvc(["status", "--json"], repo).stdout or "{}")
    return {name.split(":")[-1].split("@")[0] for name in status}  # train_fold@3: train_fold


def write_effective(repo, monkeypatch) -> None:
    """What `dvc repro` runs first: check_params, which rewrites reports/effective/ (the stages' params deps)."""
    from stages import check_params

    monkeypatch.chdir(repo)
    check_params.main()


def test_every_params_key_is_in_the_table():
    assert set(KEY_CHANGES) == set(all_keys())
    check_stage_keys()  # and every key is listed for the stages that read it


def test_clean_after_repro(repo):
    assert changed_stages(repo) == set()


@pytest.mark.parametrize("key", sorted(KEY_CHANGES))
def test_one_key_changes_exactly_its_stages(repo, key, monkeypatch):
    value, expected = KEY_CHANGES[key]
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    section, rest = key.split(".", 1)
    try:
        set_params(repo, {section: {rest: value}, **ALSO.get(key, {})})
        write_effective(repo, monkeypatch)
        assert changed_stages(repo) == {"check_params", *expected}
    finally:
        params_file.write_text(original)
        write_effective(repo, monkeypatch)


def test_threshold_metric_reruns_only_the_stages_after_the_model(repo):
    original = (repo / "params.yaml").read_text()
    try:
        # min_precision is read only by recall_at_precision: check_params warns that it has no effect with mcc.
        set_params(repo, {"threshold": {"metric": "mcc", "min_precision": 0.8}})
        out = dvc(["repro"], repo)
        assert ran_stages(out.stdout) == {
            "check_params",
            "tune_threshold",
            "evaluate",
            "package",
            "score",
            "relabel",
        }, out.stdout
        assert (
            "params.yaml: warning: threshold.min_precision is 0.8, but only threshold.metric: recall_at_precision reads it"
            in out.stdout + out.stderr
        )
    finally:
        (repo / "params.yaml").write_text(original)
        dvc(["repro"], repo)


def test_loss_gamma_reruns_train_and_after_but_no_data_stage(repo):
    original = (repo / "params.yaml").read_text()
    try:
        set_params(repo, {"loss": {"gamma": 3.0}})
        out = dvc(["repro"], repo)
        # the fold stages read the train recipe's keys; cv off, each writes its table without columns again
        assert ran_stages(out.stdout) == {"check_params", *ALL_AFTER_TRAIN, *FOLD_STAGES}, out.stdout
    finally:
        (repo / "params.yaml").write_text(original)
        dvc(["repro"], repo)


def test_baseline_keys_rerun_the_baseline_and_its_readers_never_the_model(repo):
    """baseline.min_df: the baseline and label_issues (whose cross-fitted baseline has its features) and what reads
    them; never train or predict."""
    original = (repo / "params.yaml").read_text()
    try:
        set_params(repo, {"baseline": {"min_df": 1}})
        out = dvc(["repro"], repo)
        assert ran_stages(out.stdout) == {
            "check_params",
            "baseline",
            "label_issues",  # its cross-fitted baseline has the same features
            "tune_threshold",
            "evaluate",
            "package",
            "score",
            "relabel",
        }, out.stdout
        report = json.loads((repo / "metrics/test.json").read_text())
        assert (
            0 <= report["baseline_f1_macro"] <= 1
            and report["vs_baseline_ci_low"] <= report["vs_baseline"] <= report["vs_baseline_ci_high"]
        )
        assert json.loads((repo / "reports/threshold/decision.json").read_text())["blend"] == 0.5
        assert (repo / "models/classifier/baseline.safetensors").is_file()
    finally:
        (repo / "params.yaml").write_text(original)
        dvc(["repro"], repo)


def test_exp_run_of_a_key_without_effect_reruns_nothing_but_check_params(repo):
    """The design card's first experiment, `-S loss.gamma=3.0` under `loss.name: ce`, in this repo's terms: its loss
    is focal, which does not read loss.tau. DVC runs check_params, whose effective configurations stay the same."""
    original = (repo / "params.yaml").read_text()
    try:
        out = dvc(["exp", "run", "-S", "loss.tau=3.0"], repo)
        assert ran_stages(out.stdout) == {"check_params"}, out.stdout
        assert (
            "params.yaml: warning: loss.tau is 3.0, but only loss.name: logit_adjusted reads it"
            in out.stdout + out.stderr
        )
        shown = pd.read_csv(io.StringIO(dvc(["exp", "show", "--csv"], repo).stdout))
        assert (
            3.0 in shown["loss.tau"].tolist() and "train.lr" in shown.columns
        )  # every key stays a column of `dvc exp show`
    finally:
        (repo / "params.yaml").write_text(original)
        dvc(["repro"], repo)


def test_typo_in_params_fails_repro_with_the_key(repo):
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    try:
        params_file.write_text(original.replace("gamma:", "gama:", 1))
        out = dvc(["repro"], repo, check=False)
        assert out.returncode != 0
        assert "loss.gama: unknown key" in out.stdout + out.stderr
    finally:
        params_file.write_text(original)


REVIEW_METRICS = [
    "f1_macro",
    "f1_macro_ci_low",
    "f1_macro_ci_high",
    "rule",
    "blend",
    "f1_macro_model",
    "rarest_class",
    "f1_rarest_class",
    "val_f1_macro",
    "val_f1_macro_model",
    "balanced_accuracy",
    "pr_auc",
    "ece",
    "n_test",
    "baseline_f1_macro",
    "baseline_f1_macro_ci_low",
    "baseline_f1_macro_ci_high",
    "vs_baseline",
    "vs_baseline_ci_low",
    "vs_baseline_ci_high",
    "collapsed",
]


def _flat(tree: dict, prefix: str = "") -> set[str]:
    return {
        key
        for name, value in tree.items()
        for key in (_flat(value, f"{prefix}{name}.") if isinstance(value, dict) else {prefix + name})
    }


def _columns(markdown: str) -> list[str]:
    """The column names of a Markdown table's header row."""
    return [c.strip() for c in markdown.splitlines()[0].strip().strip("|").split("|")]


def test_exp_show_has_only_the_review_metrics(repo):
    """One metrics file, headline first, no name shared with a param (the train summary used to add `train.lr`)."""
    shown = json.loads(dvc(["exp", "show", "--json"], repo).stdout)
    data = shown[0]["data"]
    assert list(data["metrics"]) == ["metrics/test.json"]
    assert list(data["metrics"]["metrics/test.json"]["data"]) == REVIEW_METRICS and len(REVIEW_METRICS) <= 21
    review = data["metrics"]["metrics/test.json"]["data"]
    assert review["rule"] in ("argmax", "threshold") and review["blend"] == 0.5  # tiny_params: decision.blend 0.5
    # beside the blended decision's score, the model alone's: argmax of the fine-tuned model's own test probabilities
    test = pd.read_parquet(repo / "data/predictions/test.parquet")
    alone = test[["prob:ham", "prob:spam"]].to_numpy().argmax(axis=1)
    assert review["f1_macro_model"] == pytest.approx(
        f1_score(test["label"], np.array(["ham", "spam"])[alone], average="macro"), abs=1e-5
    )
    params = _flat(data["params"]["params.yaml"]["data"])
    assert not params & _flat(data["metrics"]["metrics/test.json"]["data"])
    columns = _columns(dvc(["exp", "show", "--md"], repo).stdout)
    assert columns[2:5] == ["f1_macro", "f1_macro_ci_low", "f1_macro_ci_high"], columns  # after Experiment, Created


def test_metrics_diff_in_a_fresh_clone_loads_every_metric(repo, tmp_path):
    """All metrics are git-tracked: a clone without a DVC remote diffs them with no "failed to load"."""
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    out = dvc(["metrics", "diff", "--all", "--json"], clone)  # HEAD vs the workspace, as a reviewer runs it
    assert "failed to load" not in out.stdout + out.stderr, out.stderr
    diff = json.loads(out.stdout)
    assert list(diff) == ["metrics/test.json"] and "f1_macro" in diff["metrics/test.json"]
    shown = dvc(["metrics", "show"], clone)
    assert "failed to load" not in shown.stdout + shown.stderr and "f1_macro" in shown.stdout


def test_plots_show_draws_each_plot_once_and_renders_the_data(repo):
    """Only the named top-level plots (a file also declared as a stage plot would be drawn twice, against its
    row index), each with its data: none is an empty box (the decision-rule chart draws a binary task's threshold
    curve and markers, a multiclass task's offset search)."""
    out = dvc(["plots", "show", "--json"], repo)
    shown = json.loads(out.stdout)
    named = [name for entry in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"] for name in entry]
    assert "errors" not in shown and "WARNING" not in out.stderr, out.stderr
    assert sorted(shown["data"]) == sorted(named)
    empty = {name for name, plots in shown["data"].items() if not plots or not plots[0]["content"]["data"]["values"]}
    assert empty == set()
    tuning = next(
        plots[0]["content"]["data"]["values"]
        for name, plots in shown["data"].items()
        if "tuning the decision rule" in name
    )
    assert {row["filename"] for row in tuning} == {"val_curve.csv", "markers.csv"}  # binary: no offset search
    assert all(row["dvc_inferred_x_value"] == row["threshold"] for row in tuning)
    content = {name: json.dumps(plots[0]["content"]) for name, plots in shown["data"].items() if plots}
    confusion = next(text for name, text in content.items() if name.startswith("Confusion matrix"))
    assert '"percent_of_y"' in confusion and '"field": "rule"' in confusion  # normalised; a row of charts per rule
    loss = next(
        plots[0]["content"]["data"]["values"] for name, plots in shown["data"].items() if name.startswith("Loss")
    )
    assert {row["series"] for row in loss} == {"train", "val"}
    assert sum(row["series"] == "train" for row in loss) > 2  # a curve, not a point per epoch
    f1 = next(
        plots[0]["content"]["data"]["values"]
        for name, plots in shown["data"].items()
        if name.startswith("Validation F1")
    )
    assert {row["series"] for row in f1} == {"macro average", "ham", "spam"}


def test_forced_rerun_leaves_the_tracked_files_byte_identical(repo):
    """`dvc repro --force` recomputes every stage, training included; git then sees only what DVC records."""
    dvc(["repro"], repo)  # the outputs of the current params, whatever the tests before left in the workspace
    tracked = [
        f for f in run(["git", "ls-files", "metrics", "reports"], repo).stdout.split() if not f.endswith(".gitignore")
    ]
    before = {f: (repo / f).read_bytes() for f in tracked}
    dvc(["repro", "--force"], repo)
    assert [f for f in tracked if (repo / f).read_bytes() != before[f]] == []
    assert run(["git", "status", "--porcelain", "--", "metrics", "reports"], repo).stdout == ""


def test_exp_run_then_metrics_diff_lists_macro_f1(repo):
    out = dvc(["exp", "run", "-S", "loss.gamma=1.0"], repo)
    assert ran_stages(out.stdout) == {"check_params", *ALL_AFTER_TRAIN, *FOLD_STAGES}, out.stdout
    diff = dvc(["metrics", "diff", "HEAD", "--json", "--all"], repo)  # --all: also the metrics that did not move
    flat = json.dumps(json.loads(diff.stdout))
    assert "f1_macro" in flat, diff.stdout
    shown = dvc(["exp", "show", "--json"], repo)
    assert "f1_macro" in shown.stdout
    # The review view of README "Experiment workflow", run as written there: the decision and the headline always,
    # else only what changed, no dependency hashes. The default view has a column per metric, param and dep.
    everything = _columns(dvc(["exp", "show", "--md"], repo).stdout)
    command = next(
        line
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("$ dvc exp show --only-changed")
    )
    review = _columns(dvc(shlex.split(command)[2:] + ["--md"], repo).stdout)
    print(f"dvc exp show: {len(everything)} columns; the review view: {len(review)}: {review}")
    assert len(everything) > 150 and not [c for c in review if "/" in c]
    assert (
        review[:6] == ["Experiment", "f1_macro", "rule", "blend", "f1_macro_model", "val_f1_macro"]
        and "loss.gamma" in review
    )
    assert len(review) <= 12 and "train.lr" not in review  # params that did not change are left out


def skewtune_predict(args: list, cwd) -> None:
    run([str(Path(sys.executable).parent / "skewtune"), "predict", *map(str, args)], cwd)


def test_predict_on_the_test_texts_equals_evaluate_and_a_copied_classifier_works(repo, tmp_path):
    evaluated = pd.read_csv(repo / "reports/eval/test_predictions.csv", dtype=str)
    skewtune_predict(["data/split/test.parquet", "-o", tmp_path / "test.csv", "--text-column", "text"], repo)
    predicted = pd.read_csv(tmp_path / "test.csv", dtype={"id": str})
    assert predicted["id"].tolist() == evaluated["id"].tolist()
    assert predicted["predicted"].tolist() == evaluated["predicted"].tolist()  # row for row, at the chosen rule

    elsewhere = shutil.copytree(repo / "models/classifier", tmp_path / "machine2" / "classifier")
    skewtune_predict(
        [repo / "data/split/test.parquet", "-o", "again.csv", "--text-column", "text", "--model", elsewhere],
        tmp_path / "machine2",
    )
    again = pd.read_csv(tmp_path / "machine2" / "again.csv", dtype={"id": str})
    assert again["predicted"].tolist() == predicted["predicted"].tolist()

    card = (repo / "models/classifier/README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert (
        meta["pipeline_tag"] == "text-classification"
        and meta["model-index"][0]["results"][0]["metrics"][0]["type"] == "f1"
    )
    assert "## Decision rule" in card and "## Limitations" in card
    assert "A TF-IDF + logistic regression baseline fitted on the same training rows scores macro-F1" in card
    assert "x the TF-IDF baseline's probabilities" in card  # the rule blends (decision.blend 0.5)
    assert "| the model alone (argmax, no blend) |" in card  # so its score stands beside the blended decision's
    for row in ("| `train.epochs` | `1` |", "| `train.seed` | `42` |", "| `decision.blend` | `0.5` |"):
        assert row in card, card
    artifacts = yaml.safe_load((repo / "dvc.yaml").read_text())["artifacts"]
    assert (
        artifacts["skewtune-classifier"]["path"] == "models/classifier"
        and artifacts["skewtune-classifier"]["type"] == "model"
    )


def test_calibration_is_chosen_on_val_measured_and_shipped_to_predict(repo, tmp_path):
    """decision.json records the calibrators chosen out of fold on val, per source (the model and the baseline the
    rule blends in); evaluate measures what the rule decides on with and without them; `skewtune predict` on a copied
    classifier writes the calibrated probabilities that evaluate saw (rule.combine of the predict and baseline
    stages' test probabilities)."""
    from skewtune.artifacts import aligned, read_predictions
    from skewtune.decision.rule import DecisionRule

    decision = json.loads((repo / "reports/threshold/decision.json").read_text())
    for source in ("model", "baseline"):
        record = decision["calibration"][source]
        assert record["setting"] == "auto" and record["candidate"] in ("temperature", "vector")
        assert 2 <= record["folds"] <= 5 and 0 <= record["win_rate"] <= 1
        assert record["kept"] == (record["method"] != "none") and record["why"].startswith(
            f"auto: {record['candidate']}"
        )
        assert record["kept"] == (
            record["oof_log_loss_after"] < record["oof_log_loss_before"] and record["win_rate"] >= 0.95
        )
    rule = DecisionRule.from_dict(decision)
    report = json.loads((repo / "reports/eval/test.json").read_text())
    review = json.loads((repo / "metrics/test.json").read_text())
    labels = ["ham", "spam"]
    test = read_predictions(repo / "data/predictions/test.parquet", labels)
    baseline = aligned(test, read_predictions(repo / "data/predictions/baseline/test.parquet", labels), "test")
    shipped = rule.combine(test.probs, baseline.probs)  # decision.blend 0.5: both sources, each calibrated
    measured = report["calibration"]
    assert (
        measured["model"] == rule.calibration.to_dict() and measured["baseline"] == rule.baseline_calibration.to_dict()
    )
    assert measured["test"]["rows"] == len(test.y) == review["n_test"]
    for when in ("uncalibrated", "calibrated"):
        assert (
            set(measured["test"][when]) == set(measured["val"][when]) == {"ece", "ece_classwise", "brier", "log_loss"}
        )
    from sklearn.metrics import log_loss

    assert measured["test"]["calibrated"]["log_loss"] == pytest.approx(log_loss(test.y, shipped), rel=1e-5)
    assert review["ece"] == measured["test"]["calibrated"]["ece"]
    reliability = pd.read_csv(repo / "reports/eval/reliability.csv")
    assert reliability.loc[reliability["series"] == "top label", "rows"].sum() == 2 * len(test.y)  # before and after

    elsewhere = shutil.copytree(repo / "models/classifier", tmp_path / "machine3" / "classifier")
    assert json.loads((elsewhere / "decision.json").read_text())["calibration"] == rule.to_dict()["calibration"]
    skewtune_predict(
        [repo / "data/split/test.parquet", "-o", "out.parquet", "--text-column", "text", "--model", elsewhere],
        tmp_path / "machine3",
    )
    out = pd.read_parquet(tmp_path / "machine3" / "out.parquet")
    assert out["id"].astype(str).tolist() == test.ids.tolist()
    np.testing.assert_allclose(out[["prob:ham", "prob:spam"]].to_numpy(), shipped, atol=1e-5)
    np.testing.assert_allclose(out["margin"].to_numpy(), rule.margin(shipped), atol=1e-5)
    card = (elsewhere / "README.md").read_text()
    assert "## Calibration" in card and f"on {len(test.y)} held-out test rows" in card
    assert (
        f"| top-label ECE | {measured['test']['uncalibrated']['ece']:.4f} | {measured['test']['calibrated']['ece']:.4f} |"
        in card
    )


def test_score_stage_scores_data_score_path_and_feeds_the_queue(repo):
    assert pd.read_parquet(repo / "data/predictions/score.parquet").columns.empty  # unset: a table without columns
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    new = repo / "data/raw/new.csv"
    pd.DataFrame(
        {
            "SMS": ["WIN a FREE prize, call now", "", "see you at home later", "=cmd|' /C calc'!A0"],
            "from": ["a", "b", "c", "d"],
        }
    ).to_csv(new, index=False)
    try:
        set_params(repo, {"data": {"score_path": "data/raw/new.csv"}})
        out = dvc(["repro"], repo)
        assert ran_stages(out.stdout) == {"check_params", "ingest", "score", "relabel"}, (
            out.stdout
        )  # ingest: data/raw changed
        assert "1 row without text got no prediction" in out.stdout
        scored = pd.read_parquet(repo / "data/predictions/score.parquet")
        assert list(scored.columns) == ["SMS", "from", "predicted", "prob:ham", "prob:spam", "margin"]
        assert scored["predicted"].tolist()[1] == "" and set(scored["predicted"].tolist()[::2]) <= {"ham", "spam"}
        queue = pd.read_csv(repo / "reports/errors.csv", keep_default_na=False)
        from_scored = queue[queue["source"] == "score"]
        assert len(from_scored) == 3 and from_scored["margin"].astype(float).is_monotonic_increasing
        assert "'=cmd|' /C calc'!A0" in from_scored["text"].tolist()  # a formula is escaped for spreadsheets
        assert changed_stages(repo) == set()
    finally:
        params_file.write_text(original)
        new.unlink()
        dvc(["repro"], repo)
    assert pd.read_parquet(repo / "data/predictions/score.parquet").columns.empty
