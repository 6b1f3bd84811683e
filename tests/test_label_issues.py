"""Suspected label errors (cleanlab on the cross-fitted baseline, or on the fold models' probabilities under train.cv)
and the relabelling round trip: the library on a real table with planted flips, the stage on fold files, the
corrections ingest applies, and the whole loop through the real `dvc` CLI and the `skewtune` console script
(export -> edit -> import -> dvc repro re-runs ingest and everything after it). tests/test_pipeline_cv.py runs the
stage after the fold stages through dvc."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dvc_repo import dvc, env, make_repo, ran_stages, run

from skewtune.core.errors import SkewtuneError
from skewtune.data.corrections import apply_corrections, merge_corrections
from skewtune.decision.folds import assign_folds, fold_count
from skewtune.evaluation.label_issues import find_suspects
from skewtune.models.crossfit import label_issue_folds, out_of_fold_proba

LABELS = ["ham", "spam"]


def _flipped(sms_splits, n_rows: int, n_flips: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """`n_rows` SMS train rows with `n_flips` spam labels turned to ham, and the flipped positions."""
    rows = sms_splits[0].head(n_rows).reset_index(drop=True)
    spam = np.flatnonzero(rows["label"] == "spam")
    flips = np.random.default_rng(seed).choice(spam, n_flips, replace=False)
    rows.loc[flips, "label"] = "ham"
    return rows.assign(label_id=rows["label"].map({"ham": 0, "spam": 1})), flips


def test_the_cross_fitted_baseline_and_cleanlab_find_planted_flips(sms_splits):
    rows, flips = _flipped(sms_splits, 1200, 16)
    assignment = label_issue_folds(rows["label_id"].to_numpy(), LABELS, 5)
    probs = out_of_fold_proba(rows, LABELS, assignment, min_df=2, max_features=200_000, max_rows=100_000)
    assert assignment.max() == 4 and probs.shape == (1200, 2) and np.allclose(probs.sum(axis=1), 1)
    suspects = find_suspects(rows["label_id"].to_numpy(), probs)
    top = suspects.positions[: len(flips)]
    assert len(set(top) & set(flips)) >= 0.6 * len(flips), (sorted(top), sorted(flips))
    # ranked by self-confidence (the out-of-fold probability of the given label), lowest first
    assert np.all(np.diff(suspects.scores) >= 0)
    assert np.allclose(suspects.scores, probs[suspects.positions, rows["label_id"].to_numpy()[suspects.positions]])
    assert (suspects.suggested[np.isin(suspects.positions, flips)] == 1).all()  # their true class, spam


@pytest.mark.parametrize(
    ("counts", "folds", "expected"),
    [((100, 50), 5, 5), ((100, 3), 5, 3), ((100, 4), 5, 4), ((100, 5), 2, 2), ((100, 2), 5, 0), ((100, 3), 2, 0)],
)
def test_fold_count_keeps_two_rows_of_every_class_in_every_training_part(counts, folds, expected):
    assert fold_count(np.array(counts), folds) == expected
    if expected:  # what StratifiedKFold does with the rarest class: each training part keeps at least 2
        y = np.repeat([0, 1], counts)
        folds = assign_folds(y, expected, seed=0)
        assert min((y[folds != f] == 1).sum() for f in range(expected)) >= 2


def _frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id", "text", "label", "subset"])


def test_corrections_relabel_the_row_and_its_repeats_and_count_the_rest():
    frame = _frame(
        [
            ("r1", "win cash", "ham", "pool"),
            ("r2", "hello", "ham", "pool"),
            ("r3", "win cash", "ham", "pool"),  # a repeat of r1: follows its correction
            ("t1", "win cash", "ham", "test"),  # the same text in the test file: its own file, untouched
            ("r4", "see you", "spam", "pool"),
        ]
    )
    corrections = pd.DataFrame(
        [
            ("r1", "win cash", "spam"),
            ("r2", "hello", "ham"),  # already the label
            ("r4", "moved", "ham"),  # the text at r4 is another one now: not applied
            ("r9", "gone", "ham"),  # no such row
        ],
        columns=["id", "text", "label"],
    )
    report = apply_corrections(frame, corrections, "text", ["text"], "data/raw/corrections.csv")
    assert frame["label"].tolist() == ["spam", "ham", "spam", "ham", "spam"]
    # decided by a person: the corrected row and its repeat, and the confirmed one; not the unmatched r4
    assert frame["reviewed"].tolist() == [True, True, True, False, False]
    assert report == {
        "file": "data/raw/corrections.csv",
        "corrections": 4,
        "applied": 1,
        "unchanged": 1,
        "unknown": 2,
        "unknown_ids": ["r4", "r9"],
        "rows_relabelled": 2,
    }
    with pytest.raises(SkewtuneError, match=r"label\(s\) 'spma' are not among the labels of the data"):
        apply_corrections(frame, corrections.assign(label="spma"), "text", ["text"], "c.csv")


def test_a_later_correction_of_an_id_replaces_the_earlier():
    earlier = pd.DataFrame([("r1", "a", "spam"), ("r2", "b", "ham")], columns=["id", "text", "label"])
    later = pd.DataFrame([("r2", "b", "spam"), ("r3", "c", "ham")], columns=["id", "text", "label"])
    merged, replaced = merge_corrections(earlier, later)
    assert replaced == 1 and merged.values.tolist() == [["r1", "a", "spam"], ["r2", "b", "spam"], ["r3", "c", "ham"]]


# ------------------------------------------------------------------------------------ the loop through dvc


def _skewtune(args: list, cwd: Path, check: bool = True):
    """The console script; PYTHONPATH makes it import the project copy under test, as the stages do (`python -m`)."""
    import subprocess

    proc = subprocess.run(
        [str(Path(sys.executable).parent / "skewtune"), *map(str, args)],
        cwd=cwd,
        env={**env(), "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"skewtune {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


TINY = {
    "split": {"val_size": 0.2, "test_size": 0.2},
    # cv off: the loop under test reads val and the train stage's model (tests/test_pipeline_cv.py cross-fits); finetune:
    # one model (auto would train embedding beside it on rows this few)
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
    "evaluate": {"error_rows": 30},
}


@pytest.fixture(scope="module")
def loop_repo(tmp_path_factory, tiny_bert_dir, sms_path):
    """A temp repo on 600 SMS rows with 12 spam texts labelled ham, after one `dvc repro`; the flipped ids."""
    root = tmp_path_factory.mktemp("relabel")
    table = pd.read_csv(sms_path, sep="\t", dtype=str, keep_default_na=False).drop_duplicates("SMS")
    sample = pd.concat([table[table.Label == "spam"].head(120), table[table.Label == "ham"].head(480)])
    flips = np.random.default_rng(0).choice(np.flatnonzero(sample["Label"] == "spam"), 12, replace=False)
    sample.iloc[flips, sample.columns.get_loc("Label")] = "ham"
    raw = root.parent / "sms_noisy.tsv"
    sample.to_csv(raw, sep="\t", index=False)
    params = {
        "data": {"source": "data/raw/sms.tsv", "text_column": "SMS", "label_column": "Label"},
        "model": {"name": str(tiny_bert_dir), "max_length": 32},
        **TINY,
    }
    make_repo(root, params, {"sms.tsv": raw})
    out = dvc(["repro"], root)
    assert "label_issues" in ran_stages(out.stdout) and "suspected label error" in out.stdout, out.stdout
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "run"], root)
    return root, {f"r{i + 1}" for i in flips}


@pytest.mark.slow
def test_relabel_loop_export_edit_import_repro(loop_repo):
    root, flipped = loop_repo
    issues = pd.read_csv(root / "reports/label_issues.csv", dtype=str, keep_default_na=False)
    report = json.loads((root / "reports/label_issues.json").read_text())
    assert report["source"] == "the TF-IDF baseline cross-fitted on 5 folds" and report["rows_checked"] > 0
    assert set(issues["split"]) <= {"train", "val"}  # never test
    test_ids = set(pd.read_parquet(root / "data/split/test.parquet")["id"])
    assert not test_ids & set(issues["id"])
    # the file's line: a header line, then one line per row (no line breaks inside these texts)
    assert (issues["line"] == "line " + (issues["id"].str[1:].astype(int) + 1).astype(str)).all()
    found = flipped & set(issues["id"])
    assert found, (sorted(flipped), issues.head(20))
    queue = pd.read_csv(root / "reports/errors.csv", dtype=str, keep_default_na=False)
    assert set(queue.loc[queue["source"] == "label_issue", "id"]) == set(issues["id"].head(30))

    done = _skewtune(["relabel", "export"], root)
    assert "reports/relabel/" in done.stdout, done.stdout
    tasks = json.loads((root / "reports/relabel/label_studio_tasks.json").read_text())
    config = (root / "reports/relabel/label_studio_config.xml").read_text()
    assert '<Choice value="spam"/>' in config and '<Text name="text" value="$text"/>' in config
    task = next(t for t in tasks if t["data"]["row_id"] in found)
    assert task["predictions"][0]["result"][0]["type"] == "choices"
    assert task["predictions"][0]["result"][0]["value"]["choices"] == ["spam"] and task["data"]["given"] == "ham"

    # The annotator: Label Studio's JSON export, each found flip answered spam, one task skipped.
    answered = [t for t in tasks if t["data"]["row_id"] in found]
    export = [
        {
            "id": k,
            "data": t["data"],
            "annotations": [
                {
                    "was_cancelled": False,
                    "result": [
                        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["spam"]}}
                    ],
                }
            ],
        }
        for k, t in enumerate(answered)
    ] + [{"id": 999, "data": tasks[-1]["data"], "annotations": []}]
    (root / "ls_export.json").write_text(json.dumps(export))
    done = _skewtune(["relabel", "import", "ls_export.json"], root)
    assert f"{len(answered)} corrections ({len(answered)} change the label" in done.stdout, done.stdout
    corrections = pd.read_csv(root / "data/raw/corrections.csv", dtype=str)
    assert set(corrections["id"]) == {t["data"]["row_id"] for t in answered}

    # The spreadsheet route: the first exported row corrected to ham; merged with the earlier file.
    table = pd.read_csv(root / "reports/relabel/relabel.csv", dtype=str, keep_default_na=False)
    first = table["id"].iloc[0]
    table.loc[0, "corrected"] = "ham"
    table.to_csv(root / "filled.csv", index=False)
    done = _skewtune(["relabel", "import", "filled.csv"], root)
    assert "1 correction (" in done.stdout, done.stdout

    assert {"ingest"} <= {name.split(":")[-1] for name in json.loads(dvc(["status", "--json"], root).stdout)}
    out = dvc(["repro"], root)
    assert {"ingest", "split", "label_issues", "train", "relabel"} <= ran_stages(out.stdout), out.stdout
    assert "corrections.csv:" in out.stdout and "0 unknown" in out.stdout, out.stdout
    dataset = pd.read_parquet(root / "data/interim/dataset.parquet").set_index("id")
    assert (dataset.loc[sorted(found - {first}), "label"] == "spam").all()
    assert dataset.loc[first, "label"] == "ham"
    ingest = json.loads((root / "reports/ingest.json").read_text())["corrections"]
    assert ingest["unknown"] == 0 and ingest["applied"] + ingest["unchanged"] == ingest["corrections"] == len(
        found | {first}
    )
    # A label a person decided (changed or confirmed) is not suspected again; those left out are counted.
    again = pd.read_csv(root / "reports/label_issues.csv", dtype=str, keep_default_na=False)
    assert not (found | {first}) & set(again["id"]), again.head()
    skipped = json.loads((root / "reports/label_issues.json").read_text())["suspects_reviewed_not_listed"]
    assert skipped >= 0 and (skipped == 0) == ("left out: a person already decided" not in out.stdout), out.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("not json", "bad.json", "bad.json: not valid JSON ("),
        ("id,label\nr1,spam\n", "bad.csv", "bad.csv: no column(s) corrected; fill the 'corrected' column"),
        (
            '[{"row_id": "r1", "text": "x", "label": "spma"}]',
            "min.json",
            "min.json: task 1 (id r1) has the label 'spma'",
        ),
        ("id,corrected\nr99999,spam\n", "gone.csv", "gone.csv: line 2 has id 'r99999', which is no row of the current"),
        ("x", "notes.txt", "notes.txt: expected Label Studio's JSON export (.json) or the CSV"),
    ],
)
def test_a_bad_import_is_one_line_and_writes_nothing(loop_repo, content, name, message):
    root, _ = loop_repo
    corrections = root / "data/raw/corrections.csv"
    before = corrections.read_bytes() if corrections.exists() else None
    (root / name).write_text(content)
    done = _skewtune(["relabel", "import", name], root, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert (corrections.read_bytes() if corrections.exists() else None) == before
    os.remove(root / name)


def _stage_project(root: Path, params: dict, rows: pd.DataFrame) -> None:
    """params.yaml, labels.json and the train/val split files (half the rows each) that the label_issues stage reads."""
    import yaml

    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "data/interim").mkdir(parents=True)
    (root / "data/split").mkdir(parents=True)
    (root / "data/interim/labels.json").write_text(json.dumps({"labels": LABELS}))
    pd.DataFrame().to_parquet(root / "data/interim/places.parquet")
    rows[::2].to_parquet(root / "data/split/train.parquet", index=False)
    rows[1::2].to_parquet(root / "data/split/val.parquet", index=False)


@pytest.mark.parametrize(
    ("params", "spam_rows", "status", "printed"),
    [
        (
            {"label_issues": {"enabled": False}},
            40,
            "disabled",
            "label_issues: label_issues.enabled is false; no rows checked",
        ),
        ({}, 2, "skipped", "class(es) 'spam' (2) of train + val have fewer than 3 rows"),
    ],
)
def test_the_stage_writes_no_rows_and_says_why(
    tmp_path, monkeypatch, capsys, sms_splits, params, spam_rows, status, printed
):
    from stages import label_issues

    train = sms_splits[0]
    rows = pd.concat([train[train.label == "ham"].head(100), train[train.label == "spam"].head(spam_rows)])
    _stage_project(tmp_path, params, rows.sample(frac=1, random_state=0))
    monkeypatch.chdir(tmp_path)
    label_issues.main()
    out = capsys.readouterr()
    assert printed in out.out + out.err
    table = pd.read_csv(tmp_path / "reports/label_issues.csv")
    assert table.empty and list(table.columns) == ["id", "line", "text", "split", "label", "suggested", "score"]
    report = json.loads((tmp_path / "reports/label_issues.json").read_text())
    assert report["status"] == status and report["reason"]


def test_under_cross_fitting_text_ranks_the_baseline_stages_probabilities(tmp_path, monkeypatch, capsys, sms_splits):
    """Under train.cv the baseline stage's out-of-fold file holds the rows in fold order, not the split's: on text the
    stage aligns them by id and runs cleanlab on them alone (no baseline is fitted again), the fold count from the
    fold files; a file of other rows is refused."""
    from skewtune.artifacts import prediction_table
    from stages import label_issues

    rows, flips = _flipped(sms_splits, 300, 6)
    _stage_project(tmp_path, {}, rows)
    # A model that knows the true class (spam before the flips) well: the flipped rows look like spam.
    truth = (np.arange(len(rows))[:, None] == flips).any(axis=1) | (rows["label"] == "spam").to_numpy()
    spam = 1 / (1 + np.exp(-(np.random.default_rng(1).normal(size=len(rows)) + np.where(truth, 3, -3))))
    probs = np.column_stack([1 - spam, spam])
    shuffled = np.random.default_rng(2).permutation(len(rows))
    (tmp_path / "data/predictions/folds").mkdir(parents=True)
    for fold, part in enumerate(np.array_split(shuffled, 2)):
        # the fold models' probabilities: not what text is ranked by (they are the opposite of the baseline's here)
        table = prediction_table(rows.iloc[part], probs[part][:, ::-1], LABELS)
        table.to_parquet(tmp_path / f"data/predictions/folds/{fold}.parquet", index=False)
    pd.DataFrame().to_parquet(tmp_path / "data/predictions/folds/2.parquet")  # a fold not trained (K = 2)
    oof = tmp_path / "data/predictions/baseline/oof.parquet"
    oof.parent.mkdir(parents=True)
    prediction_table(rows.iloc[shuffled], probs[shuffled], LABELS).to_parquet(oof, index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(label_issues, "out_of_fold_proba", None)  # the baseline is not cross-fitted again
    label_issues.main()
    assert "from the TF-IDF baseline cross-fitted on 2 folds" in capsys.readouterr().out
    report = json.loads((tmp_path / "reports/label_issues.json").read_text())
    assert report["source"] == "the TF-IDF baseline cross-fitted on 2 folds" and report["folds"] == 2
    order = np.concatenate([np.arange(0, len(rows), 2), np.arange(1, len(rows), 2)])  # the split's: train, then val
    expected = find_suspects(rows["label_id"].to_numpy()[order], probs[order])
    found = pd.read_csv(tmp_path / "reports/label_issues.csv")
    assert list(found["id"]) == list(rows["id"].to_numpy()[order][expected.positions])
    assert len(set(rows["id"].iloc[flips]) & set(found["id"])) >= 5  # of the 6 flips

    pd.read_parquet(oof).iloc[1:].to_parquet(oof, index=False)  # a row the split holds, lost
    with pytest.raises(SkewtuneError, match=r"oof.parquet were made on other train \+ val rows or labels .* re-run"):
        label_issues.main()


def test_answers_come_from_the_last_annotation_not_cancelled_or_from_json_min(tmp_path):
    from skewtune.evaluation.annotation import read_answers

    dataset = pd.DataFrame({"id": ["r1", "r2", "r3"], "text": ["a", "b", "c"], "label": ["ham", "ham", "spam"]})

    def region(label):
        return {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}

    export = [
        {
            "data": {"row_id": "r1"},
            "annotations": [
                {"was_cancelled": False, "result": [region("ham")]},
                {"was_cancelled": False, "result": [region("spam")]},
                {"was_cancelled": True, "result": [region("ham")]},
            ],
        },
        {"data": {"row_id": "r2"}, "annotations": [{"was_cancelled": True, "result": [region("spam")]}]},
        {"data": {"row_id": "r3"}, "annotations": [{"result": [region("spam")]}]},
    ]
    (tmp_path / "ls.json").write_text(json.dumps(export))
    corrections, counts = read_answers(tmp_path / "ls.json", dataset, LABELS)
    assert corrections.values.tolist() == [["r1", "a", "spam"], ["r3", "c", "spam"]]
    assert counts == {"unit": "task", "entries": 3, "corrections": 2, "changed": 1, "unanswered": 1}

    (tmp_path / "min.json").write_text(json.dumps([{"row_id": "r2", "text": "b", "given": "ham", "label": "spam"}]))
    corrections, _ = read_answers(tmp_path / "min.json", dataset, LABELS)
    assert corrections.values.tolist() == [["r2", "b", "spam"]]
