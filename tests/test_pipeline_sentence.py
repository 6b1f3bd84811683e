"""train.method embedding (with SMOTE on the train embeddings) and setfit through the real `dvc` CLI in a temporary git
repo: the resample stage passes the rows through, train makes the synthetic rows, and the packaged classifier, copied
elsewhere, gives through `skewtune predict` the probabilities that the predict stage gave evaluate; `dvc plots show` loads
every plot of dvc.yaml for both methods (the train stage writes its curves whatever the method)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dvc_repo import dvc, make_repo, ran_stages, run, set_params

from skewtune.core.columns import prob_columns

pytestmark = pytest.mark.slow
PROBS = prob_columns(["ham", "spam"])


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_bert_dir, sms_path):
    """A temp repo on 400 rows of the SMS collection after `dvc repro` with train.method embedding and SMOTE."""
    root = tmp_path_factory.mktemp("sentence_pipeline")
    sample = pd.read_csv(sms_path, sep="\t", dtype=str, keep_default_na=False)
    sample = pd.concat([sample[sample.Label == "spam"].head(60), sample[sample.Label == "ham"].head(340)])
    raw = root.parent / "sms_sentence_sample.tsv"
    sample.to_csv(raw, sep="\t", index=False)
    params = {
        "data": {"source": "data/raw/sms.tsv", "text_column": "SMS", "label_column": "Label"},
        "split": {"val_size": 0.2, "test_size": 0.2},
        "model": {"name": str(tiny_bert_dir), "max_length": 32},
        "train": {"method": "embedding"},
        "resample": {"strategy": "smote"},
        # the model's probabilities as they are: `skewtune predict` must give those the predict stage gave evaluate
        "decision": {"blend": "off"},
        "calibration": {"method": "none"},
    }
    make_repo(root, params, {"sms.tsv": raw})
    dvc(["repro"], root)
    return root


# dvc.yaml's titles of the plots of the train stage's curves (reports/train/plots/custom), which every method writes
TRAIN_PLOTS = ("Loss (", "Validation F1 (", "Share of val rows predicted per class (")


def plots_shown(repo: Path) -> dict[str, list[dict]]:
    """{title: the rows drawn} of each plot of dvc.yaml, as `dvc plots show --json` gives them for the workspace; it
    fails on any plot file DVC could not load (a file a stage does not write is one)."""
    shown = json.loads(dvc(["plots", "show", "--json"], repo).stdout)
    assert shown.get("errors", []) == [], shown["errors"]
    return {
        title: [row for plot in plots for row in plot["content"]["data"]["values"]]
        for title, plots in shown["data"].items()
    }


def test_smote_makes_rows_among_the_train_embeddings_and_leaves_the_splits_alone(repo):
    split, resampled = (pd.read_parquet(repo / f"data/{name}/train.parquet") for name in ("split", "resampled"))
    pd.testing.assert_frame_equal(split, resampled)  # the resample stage passes the rows through
    report = json.loads((repo / "reports/resample.json").read_text())
    assert (
        report["rows_before"] == report["rows_after"]
        and "sentence embeddings inside the train stage" in report["synthetic"]
    )
    summary = json.loads((repo / "reports/train/metrics.json").read_text())
    counts = split["label"].value_counts()
    # SMOTE's default strategy: the minority class made as large as the majority, in the head's rows only
    assert summary["synthetic_rows"] == {"ham": 0, "spam": int(counts["ham"] - counts["spam"])}
    assert summary["head_rows"] == 2 * int(counts["ham"])
    predicted = {s: len(pd.read_parquet(repo / f"data/predictions/{s}.parquet")) for s in ("val", "test")}
    assert predicted == {s: len(pd.read_parquet(repo / f"data/split/{s}.parquet")) for s in ("val", "test")}


def test_every_plot_of_an_embedding_run_loads_with_the_heads_val_scores_at_step_0(repo):
    shown = plots_shown(repo)
    assert all(rows for rows in shown.values()), [title for title, rows in shown.items() if not rows]
    train = {prefix: next(rows for title, rows in shown.items() if title.startswith(prefix)) for prefix in TRAIN_PLOTS}
    assert all({row["step"] for row in rows} == {0} for rows in train.values())
    assert [row["series"] for row in train["Loss ("]] == ["train", "val"]
    f1 = {row["series"]: row["f1"] for row in train["Validation F1 ("]}
    summary = json.loads((repo / "reports/train/metrics.json").read_text())
    assert set(f1) == {"macro average", "ham", "spam"} and f1["macro average"] == pytest.approx(
        summary["best"]["f1_macro"], rel=1e-4
    )


def test_a_copied_classifier_predicts_what_evaluate_saw(repo, tmp_path):
    meta = json.loads((repo / "models/classifier/skewtune.json").read_text())
    assert meta["method"] == "embedding" and meta["pooling"] == "mean_l2"
    assert (repo / "models/classifier/head.safetensors").is_file()
    card = (repo / "models/classifier/README.md").read_text()
    assert "(`train.method: embedding`)" in card and "| `train.method` | `embedding` |" in card
    elsewhere = shutil.copytree(repo / "models/classifier", tmp_path / "machine2" / "classifier")
    script = str(Path(sys.executable).parent / "skewtune")
    test = repo / "data/split/test.parquet"
    run(
        [script, "predict", test, "-o", "out.csv", "--text-column", "text", "--model", elsewhere], tmp_path / "machine2"
    )
    predicted = pd.read_csv(tmp_path / "machine2" / "out.csv", dtype={"id": str})
    evaluated = pd.read_parquet(repo / "data/predictions/test.parquet")
    assert predicted["id"].tolist() == evaluated["id"].tolist()
    np.testing.assert_allclose(predicted[PROBS].to_numpy(), evaluated[PROBS].to_numpy(), atol=1e-4)
    chosen = pd.read_csv(repo / "reports/eval/test_predictions.csv", dtype={"id": str})
    assert predicted["predicted"].tolist() == chosen["predicted"].tolist()


def test_setfit_reruns_train_and_after(repo):
    set_params(repo, {"train": {"method": "setfit", "setfit_iterations": 1, "setfit_max_pairs": 64}})
    out = dvc(["repro"], repo)
    assert {"train", "predict", "package"} <= ran_stages(out.stdout) and "resample" not in ran_stages(out.stdout)
    summary = json.loads((repo / "reports/train/metrics.json").read_text())
    assert summary["method"] == "setfit" and summary["pairs"] == 64 and summary["synthetic_rows"]["spam"] > 0
    assert json.loads((repo / "models/classifier/skewtune.json").read_text())["method"] == "setfit"
    loss = next(rows for title, rows in plots_shown(repo).items() if title.startswith("Loss ("))
    # 64 pairs: 4 contrastive steps of 16, then the head's train and val loss after the last
    assert [(row["step"], row["series"]) for row in loss] == [
        (step, "train (contrastive pairs)") for step in (1, 2, 3, 4)
    ] + [(4, "train"), (4, "val")]
