"""The split stage: stratification within a row per class, no text in two splits, fixed test files, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from skewtune.core import paths
from skewtune.core.errors import SkewtuneError
from skewtune.data.splitting import split_dataset
from stages import ingest, split

OUTPUTS = [paths.split_path(name) for name in ("train", "val", "test")] + [paths.SPLIT_REPORT]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch project (cwd); call it with params sections and raw rows to ingest them for real."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw").mkdir(parents=True)

    def ingest_rows(rows: list[tuple], test_rows: list[tuple] | None = None, **params) -> None:
        data = {"source": "data/raw/data.csv"}
        for name, content in (("data.csv", rows), ("test.csv", test_rows)):
            if content is not None:
                with open(f"data/raw/{name}", "w", newline="", encoding="utf-8") as handle:
                    csv.writer(handle).writerows([("text", "label"), *content])
        if test_rows is not None:
            data["test_path"] = "data/raw/test.csv"
        Path("params.yaml").write_text(yaml.safe_dump({"data": data, **params}), encoding="utf-8")
        ingest.main()

    return ingest_rows


def _rows(sizes: dict[str, int]) -> list[tuple]:
    return [(f"{label} message {i}", label) for label, n in sizes.items() for i in range(n)]


def _splits() -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(paths.split_path(name)) for name in ("train", "val", "test")}


def test_stratified_split_and_report(project):
    sizes = {"ham": 700, "spam": 211, "promo": 57}
    project(_rows(sizes), split={"val_size": 0.15, "test_size": 0.1, "seed": 3})
    split.main()
    splits = _splits()
    for name, share in (("val", 0.15), ("test", 0.1), ("train", 0.75)):
        counts = splits[name]["label"].value_counts()
        for label, n in sizes.items():
            assert abs(counts[label] - share * n) <= 1, (name, label)
        assert list(splits[name].columns) == ["id", "text", "label"]
    report = json.loads(Path(paths.SPLIT_REPORT).read_text())
    assert (
        report["val"]["class_counts"]
        == splits["val"]["label"].value_counts().reindex(["ham", "promo", "spam"]).to_dict()
    )
    assert report["train"]["rows"] + report["val"]["rows"] + report["test"]["rows"] == sum(sizes.values())
    assert report["test"]["share"] == pytest.approx(0.1, abs=0.002)
    assert report["train"]["class_shares"]["promo"] == pytest.approx(57 / 968, abs=0.002)
    # No text in two splits, and every row in exactly one.
    texts = [set(frame["text"]) for frame in splits.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    dataset = pd.read_parquet(paths.DATASET)
    assert sorted(pd.concat(splits.values())["id"]) == sorted(dataset["id"])


@pytest.mark.slow  # 60 seeded splits: over 1 s
def test_stratification_tolerance_over_many_shapes():
    # val and test within one row per class of exact; train, the remainder of both cuts, within two.
    rng = np.random.default_rng(0)
    for trial in range(60):
        sizes = rng.integers(30, 400, size=rng.integers(2, 5))
        val_size, test_size = rng.uniform(0.05, 0.3, size=2)
        labels = np.repeat([f"c{i}" for i in range(len(sizes))], sizes)
        dataset = pd.DataFrame(
            {
                "id": [f"r{i}" for i in range(len(labels))],
                "text": [f"t{i}" for i in range(len(labels))],
                "label": labels,
                "subset": "pool",
            }
        )
        splits = split_dataset(dataset, sorted(set(labels)), val_size=val_size, test_size=test_size, seed=trial)
        for name, share, tolerance in (
            ("val", val_size, 1),
            ("test", test_size, 1),
            ("train", 1 - val_size - test_size, 2),
        ):
            counts = splits[name]["label"].value_counts()
            for i, n in enumerate(sizes):
                assert abs(counts.get(f"c{i}", 0) - share * n) <= tolerance, (trial, name, i)


def test_fixed_test_file_is_the_test_split(project):
    test_rows = [("held out ham 1", "ham"), ("held out spam 1", "spam"), ("ham message 3", "ham")]
    project(_rows({"ham": 300, "spam": 60}), test_rows, split={"val_size": 0.2, "test_size": 0.3})
    split.main()
    splits = _splits()
    assert splits["test"]["id"].tolist() == ["t1", "t2", "t3"]
    assert len(splits["train"]) + len(splits["val"]) == 359  # "ham message 3" left the pool: it is in the test file
    counts = splits["val"]["label"].value_counts()
    assert abs(counts["ham"] - 0.2 * 299) <= 1 and abs(counts["spam"] - 0.2 * 60) <= 1
    assert not set(splits["test"]["text"]) & (set(splits["train"]["text"]) | set(splits["val"]["text"]))


def test_class_too_small_names_class_count_and_minimum(project):
    project(_rows({"ham": 100, "spam": 40, "rare": 6}))
    with pytest.raises(
        SkewtuneError,
        match=r"class 'rare' has 6 row\(s\) but splitting train 80%, val 10%, test 10% with "
        r"stratification needs at least 10 rows per class",
    ):
        split.main()
    assert not any(Path(path).exists() for path in OUTPUTS)


def test_repeated_text_in_dataset_is_refused(project):
    project(_rows({"ham": 30, "spam": 30}))
    dataset = pd.read_parquet(paths.DATASET)
    dataset.loc[5, "text"] = dataset.loc[40, "text"]  # as if edited by hand
    dataset.to_parquet(paths.DATASET, index=False)
    with pytest.raises(SkewtuneError, match=r"1 repeated text\(s\), e\.g\. rows r6, r41 share 'spam message 10'"):
        split.main()
    assert not any(Path(path).exists() for path in OUTPUTS)


def test_split_is_deterministic_and_seeded(project):
    project(_rows({"ham": 200, "spam": 50}))
    split.main()
    first = {path: Path(path).read_bytes() for path in OUTPUTS}
    split.main()
    assert {path: Path(path).read_bytes() for path in OUTPUTS} == first
    Path("params.yaml").write_text(Path("params.yaml").read_text() + "split:\n  seed: 7\n")
    split.main()
    assert Path(OUTPUTS[1]).read_bytes() != first[OUTPUTS[1]]
