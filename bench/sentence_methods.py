"""Cost and macro-F1 of train.method embedding (with and without SMOTE on the embeddings) and setfit beside the TF-IDF
baseline, on stratified samples of the dev sets, the shipped all-MiniLM-L6-v2, argmax (nothing tuned).

    python bench/sentence_methods.py --rows 600 --seeds 0 [--data bird sms] [--set train.setfit_max_pairs=1000 ...]

Each sample is split 60/20/20 (train/val/test, stratified: the rarest bird-strike class has 4 rows in 600); the methods run
in-process through skewtune's own training code (skewtune.train.sentence) in a throw-away directory. Prints one row
per data set, seed and method: seconds of training (embedding the train rows included), val and test macro-F1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # this checkout first
from _common import SMS_TSV, parse_overrides  # noqa: E402

from skewtune.config.load import validate_params  # noqa: E402
from skewtune.config.schema import BaselineParams  # noqa: E402
from skewtune.models.baseline import baseline_proba, fit_baseline  # noqa: E402

BIRD_CSV = SMS_TSV.parent / "bird_strikes.csv"
METHODS = {
    "embedding": {"train": {"method": "embedding"}},
    "embedding+smote": {"train": {"method": "embedding"}, "resample": {"strategy": "smote"}},
    "setfit": {"train": {"method": "setfit"}},
}


def load(name: str) -> pd.DataFrame:
    if name == "sms":
        frame = pd.read_csv(SMS_TSV, sep="\t", quoting=3, dtype=str).rename(columns={"Label": "label", "SMS": "text"})
    else:
        frame = pd.read_csv(BIRD_CSV, dtype=str).rename(columns={"remarks": "text", "effect": "label"})
    frame = frame.dropna(subset=["text", "label"]).drop_duplicates("text")
    return frame.assign(id=[f"r{i}" for i in range(len(frame))])[["id", "text", "label"]]


def splits(frame: pd.DataFrame, rows: int, seed: int):
    sample, _ = train_test_split(frame, train_size=rows, stratify=frame["label"], random_state=seed)
    labels = sorted(sample["label"].unique())
    sample = sample.assign(label_id=sample["label"].map({label: i for i, label in enumerate(labels)}))
    train, rest = train_test_split(sample, test_size=0.4, stratify=sample["label"], random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=rest["label"], random_state=seed)
    return labels, train, val, test


def macro_f1(frame: pd.DataFrame, probs: np.ndarray, n: int) -> float:
    return f1_score(frame["label_id"], probs.argmax(axis=1), average="macro", labels=range(n), zero_division=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data", nargs="+", default=["bird", "sms"], choices=["bird", "sms"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--set", nargs="*", default=[], help="params overrides for every method, section.key=value")
    args = parser.parse_args()
    from skewtune.models.inference import predict_proba
    from skewtune.models.modality import TEXT
    from skewtune.train.sentence import train_sentence_classifier

    overrides = parse_overrides(args.set)
    print(f"load {os.getloadavg()[0]:.2f}; {args.rows} rows; overrides {overrides}", flush=True)
    print("data  seed  method           seconds  val_f1  test_f1", flush=True)
    home = os.getcwd()
    for name in args.data:
        frame = load(name)
        for seed in args.seeds:
            labels, train, val, test = splits(frame, args.rows, seed)
            b = BaselineParams()
            baseline, _ = fit_baseline(train, labels, min_df=b.min_df, max_features=b.max_features, max_rows=b.max_rows)
            scores = [macro_f1(part, baseline_proba(baseline, part, len(labels)), len(labels)) for part in (val, test)]
            print(f"{name:5} {seed:4}  {'tfidf baseline':15} {'':>8}  {scores[0]:.4f}  {scores[1]:.4f}", flush=True)
            for method in args.methods:
                sections = {**METHODS[method]}
                for section, values in overrides.items():
                    sections[section] = {**sections.get(section, {}), **values}
                params = validate_params(sections)
                with tempfile.TemporaryDirectory() as work:
                    os.chdir(work)
                    try:
                        started = time.perf_counter()
                        val_probs = train_sentence_classifier(params, labels, train, val)
                        seconds = time.perf_counter() - started
                        model, tokenizer, meta = TEXT.load_trained("models/model")
                        test_probs = predict_proba(
                            model,
                            tokenizer,
                            test,
                            max_length=meta.max_length,
                            text_pair=False,
                            batch_size=64,
                            device="cpu",
                        )
                    finally:
                        os.chdir(home)
                print(
                    f"{name:5} {seed:4}  {method:15} {seconds:8.1f}  {macro_f1(val, val_probs, len(labels)):.4f}  "
                    f"{macro_f1(test, test_probs, len(labels)):.4f}",
                    flush=True,
                )
    print(f"load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
