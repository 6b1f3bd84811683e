"""The resample stage: imbalanced-learn's counts on row indices, train only, clear errors for impossible ratios."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from imblearn.over_sampling import RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler

from skewtune.core import paths
from skewtune.core.errors import SkewtuneError
from skewtune.data.resampling import resample_rows
from stages import ingest, resample, split

OUTPUTS = (paths.RESAMPLED, paths.RESAMPLE_REPORT)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch project (cwd) run through ingest and split; call it with the `resample:` params."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    sizes = {"ham": 400, "spam": 100, "promo": 40}
    with open("data/raw/data.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(
            [("text", "label")] + [(f"{label} {i}", label) for label, n in sizes.items() for i in range(n)]
        )

    def configure(**params) -> None:
        Path("params.yaml").write_text(yaml.safe_dump({"data": {"source": "data/raw/data.csv"}, "resample": params}))

    configure()
    ingest.main()
    split.main()
    return configure


def _binary_train(majority: int = 300, minority: int = 60) -> pd.DataFrame:
    labels = ["neg"] * majority + ["pos"] * minority
    return (
        pd.DataFrame(
            {
                "id": [f"r{i}" for i in range(len(labels))],
                "text": [f"text {i}" for i in range(len(labels))],
                "label": labels,
            }
        )
        .sample(frac=1, random_state=0)
        .reset_index(drop=True)
    )


def _imblearn_counts(train: pd.DataFrame, steps: list) -> dict[str, int]:
    """What imbalanced-learn itself gives on the same labels."""
    X, y = np.zeros((len(train), 1)), train["label"].to_numpy(dtype=object)
    for sampler in steps:
        X, y = sampler.fit_resample(X, y)
    return pd.Series(y).value_counts().to_dict()


@pytest.mark.parametrize(
    ("strategy", "over", "under", "steps"),
    [
        ("random_over", 0.5, "auto", [RandomOverSampler(sampling_strategy=0.5, random_state=1)]),
        ("random_over", "auto", "auto", [RandomOverSampler(random_state=1)]),
        ("random_under", "auto", 0.4, [RandomUnderSampler(sampling_strategy=0.4, random_state=1)]),
        (
            "over_under",
            0.5,
            0.8,
            [
                RandomOverSampler(sampling_strategy=0.5, random_state=1),
                RandomUnderSampler(sampling_strategy=0.8, random_state=1),
            ],
        ),
        ("none", 0.5, 0.8, []),
    ],
)
def test_counts_equal_imbalanced_learn(strategy, over, under, steps):
    train = _binary_train()
    result = resample_rows(train, strategy=strategy, over_ratio=over, under_ratio=under, seed=1)
    assert result["label"].value_counts().to_dict() == _imblearn_counts(train, steps)
    # Whole rows are repeated or dropped: every (id, text, label) is one of the train split's.
    merged = result.merge(train, on=["id", "text", "label"], how="left", indicator=True)
    assert (merged["_merge"] == "both").all()


def test_multiclass_mapping_on_the_stage(project):
    project(strategy="over_under", over_ratio={"promo": 200, "spam": 200}, under_ratio={"ham": 250}, seed=5)
    before = {name: Path(f"data/split/{name}.parquet").read_bytes() for name in ("train", "val", "test")}
    resample.main()
    train = pd.read_parquet("data/split/train.parquet")
    result = pd.read_parquet(paths.RESAMPLED)
    expected = _imblearn_counts(
        train,
        [
            RandomOverSampler(sampling_strategy={"promo": 200, "spam": 200}, random_state=5),
            RandomUnderSampler(sampling_strategy={"ham": 250}, random_state=5),
        ],
    )
    assert result["label"].value_counts().to_dict() == expected == {"ham": 250, "spam": 200, "promo": 200}
    assert set(result["id"]) <= set(train["id"]) and list(result.columns) == list(train.columns)
    report = json.loads(Path(paths.RESAMPLE_REPORT).read_text())
    assert report["before"] == {"ham": 320, "promo": 32, "spam": 80}
    assert report["after"] == {"ham": 250, "promo": 200, "spam": 200}
    assert report["rows_before"] == 432 and report["rows_after"] == 650
    # val and test are never resampled: the split's files are untouched, byte for byte.
    assert {name: Path(f"data/split/{name}.parquet").read_bytes() for name in ("train", "val", "test")} == before


def test_resample_is_deterministic(project):
    project(strategy="random_over", seed=3)
    resample.main()
    first = [Path(path).read_bytes() for path in OUTPUTS]
    resample.main()
    assert [Path(path).read_bytes() for path in OUTPUTS] == first
    project(strategy="none")
    resample.main()
    pd.testing.assert_frame_equal(pd.read_parquet(paths.RESAMPLED), pd.read_parquet("data/split/train.parquet"))


@pytest.mark.parametrize(
    ("strategy", "over", "under", "pattern"),
    [
        (
            "random_over",
            0.1,
            "auto",
            r"resample\.over_ratio: 0\.1 cannot be met from the class counts it gets \(neg: 300, pos: 60\); "
            r"allowed: a float ratio from 0\.2000 \(the minority/majority ratio of the rows it gets\) up to 1",
        ),
        (
            "random_under",
            "auto",
            0.1,
            r"resample\.under_ratio: 0\.1 cannot be met.*from 0\.2000.*undersampling can only remove rows",
        ),
        (
            "over_under",
            0.6,
            0.5,
            r"resample\.under_ratio: 0\.5 cannot be met from the class counts it gets \(neg: 300, pos: 180\); "
            r"allowed: a float ratio from 0\.6000",
        ),
        (
            "random_over",
            {"pos": 10},
            "auto",
            r"resample\.over_ratio: \{'pos': 10\} cannot be met.*each count at least the class's current count",
        ),
        (
            "random_under",
            "auto",
            {"neg": 900},
            r"resample\.under_ratio: .*each count at most the class's current count",
        ),
        (
            "random_over",
            {"Pos": 100},
            "auto",
            r"resample\.over_ratio: label\(s\) 'Pos' are not in the train split \(its labels: 'neg', 'pos'\)",
        ),
        (
            "random_over",
            "majority",
            "auto",
            r"resample\.over_ratio: 'majority' cannot be met.*allowed: one of 'auto', 'minority'",
        ),
    ],
)
def test_impossible_ratios_name_the_key(strategy, over, under, pattern):
    with pytest.raises(SkewtuneError, match=pattern):
        resample_rows(_binary_train(), strategy=strategy, over_ratio=over, under_ratio=under, seed=0)


def test_float_ratio_with_three_classes_asks_for_a_mapping(project):
    project(strategy="random_under", under_ratio=0.5)
    with pytest.raises(
        SkewtuneError,
        match=r"resample\.under_ratio: a float ratio only works with 2 classes; the train split has 3 "
        r"\(ham: 320, spam: 80, promo: 32\); use a mapping \{label: target count\}",
    ):
        resample.main()
    assert not any(Path(path).exists() for path in OUTPUTS)
