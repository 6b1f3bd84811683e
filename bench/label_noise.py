"""How well the label_issues stage finds wrong labels, and what correcting them is worth (BENCHMARKS.md, issue 28).

    nice -n 10 .venv/bin/python bench/label_noise.py --out /tmp/skewtune_bench/label_noise [--data sms birds] [--seeds 1 2 3]

Per dev data set and seed: the real check_params, ingest and split stages run in a throw-away directory under --out
(split.seed = the seed), so the rows are those the pipeline trains on. Then 10% of the train + val rows of each
minority class (every class but the largest) get another class, drawn at random (seeded; test is never touched), and
the suspects finder the stage runs (skewtune.models.crossfit.label_issue_folds, out_of_fold_proba + skewtune.evaluation.label_issues.
find_suspects, the stage's defaults) ranks the noisy rows. At k = the number flipped: precision (flipped among the top
k suspects, of at most k) and recall (of the flipped, found in the top k; the two are equal when cleanlab returns
at least k suspects), and the recall of all suspects whatever their rank.

The test macro-F1 is that of the pipeline's TF-IDF baseline (fit_baseline on the train split, argmax of baseline_proba
on test), not of the fine-tuned transformer (three fine-tunings per seed cost too much here), fitted on the clean
labels, the noisy labels, and the noisy labels with the top-k suspects corrected as an annotator would: a suspect that
was flipped gets its true label back, one that was not keeps its label. `recovered` = (corrected - noisy) / (clean -
noisy) on the means over seeds. The finder's time (cross-fitting and cleanlab) is printed beside one baseline fit on
the same train + val rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import REPO, copy_project, loadavg, machine, run_stage, set_params  # noqa: E402
from quality import DATASETS, place_data  # noqa: E402

from skewtune.artifacts import read_examples, read_labels  # noqa: E402
from skewtune.config.schema import BaselineParams, LabelIssuesParams  # noqa: E402
from skewtune.evaluation.label_issues import find_suspects  # noqa: E402
from skewtune.models.baseline import baseline_proba, fit_baseline  # noqa: E402
from skewtune.models.crossfit import label_issue_folds, out_of_fold_proba  # noqa: E402

NOISE = 0.10
FEATURES = BaselineParams()
FOLDS = LabelIssuesParams().folds


def prepared(data: str, seed: int, out: Path) -> Path:
    """A directory where the real ingest and split stages have run on the dev set `data` with split.seed `seed`."""
    workdir = out / f"{data}_seed{seed}"
    if (workdir / "data/split/test.parquet").exists():
        return workdir
    copy_project(workdir)
    place_data(workdir, data, None, seed)
    set_params(workdir, {"data": DATASETS[data][1], "split": {"seed": seed}})
    for stage in ("check_params", "ingest", "split"):
        run_stage(stage, workdir, workdir / "stages.log")
    return workdir


def flip(y: np.ndarray, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, flipped positions): 10% of each minority class's rows (rounded, at least 1) get another class."""
    noisy = y.copy()
    counts = np.bincount(y, minlength=n_classes)
    flipped = []
    for c in np.flatnonzero(counts < counts.max()):
        rows = rng.choice(np.flatnonzero(y == c), max(1, round(NOISE * counts[c])), replace=False)
        others = np.delete(np.arange(n_classes), c)
        noisy[rows] = rng.choice(others, len(rows))
        flipped.append(rows)
    return noisy, np.sort(np.concatenate(flipped))


def test_f1(train: pd.DataFrame, y: np.ndarray, test: pd.DataFrame, labels: list[str]) -> float:
    from sklearn.metrics import f1_score

    model, _ = fit_baseline(
        train.assign(label_id=y),
        labels,
        min_df=FEATURES.min_df,
        max_features=FEATURES.max_features,
        max_rows=FEATURES.max_rows,
    )
    predicted = baseline_proba(model, test, len(labels)).argmax(axis=1)
    return float(f1_score(test["label_id"], predicted, average="macro", labels=range(len(labels))))


def one_run(data: str, seed: int, out: Path) -> dict:
    workdir = prepared(data, seed, out)
    labels = read_labels(workdir / "data/interim/labels.json")
    split = {
        name: read_examples(workdir / f"data/split/{name}.parquet", labels, "split")
        for name in ("train", "val", "test")
    }
    rows = pd.concat([split["train"], split["val"]], ignore_index=True)
    y = rows["label_id"].to_numpy()
    noisy, flipped = flip(y, len(labels), np.random.default_rng(seed))
    k = len(flipped)

    start = time.perf_counter()
    assignment = label_issue_folds(noisy, labels, FOLDS)
    folds = int(assignment.max()) + 1
    probs = out_of_fold_proba(
        rows.assign(label_id=noisy),
        labels,
        assignment,
        min_df=FEATURES.min_df,
        max_features=FEATURES.max_features,
        max_rows=FEATURES.max_rows,
    )
    suspects = find_suspects(noisy, probs)
    finder_s = time.perf_counter() - start
    start = time.perf_counter()
    fit_baseline(rows, labels, min_df=FEATURES.min_df, max_features=FEATURES.max_features, max_rows=FEATURES.max_rows)
    one_fit_s = time.perf_counter() - start

    top = suspects.positions[:k]
    hits = int(np.isin(top, flipped).sum())
    corrected = noisy.copy()
    found = top[np.isin(top, flipped)]
    corrected[found] = y[found]  # the annotator restores the true label of a flipped suspect; the others stay

    n_train = len(split["train"])
    f1 = {
        name: test_f1(split["train"], labels_[:n_train], split["test"], labels)
        for name, labels_ in (("clean", y), ("noisy", noisy), ("corrected", corrected))
    }
    return {
        "data": data,
        "seed": seed,
        "rows": len(rows),
        "flipped": k,
        "flipped_in_train": int((flipped < n_train).sum()),
        "suspects": len(suspects.positions),
        "precision_at_k": hits / max(1, min(k, len(suspects.positions))),
        "recall_at_k": hits / k,
        "recall_all": float(np.isin(flipped, suspects.positions).mean()),  # flips among all suspects, at any rank
        "majority_given_in_top_k": float((noisy[top] == np.bincount(y).argmax()).mean()),
        "folds": folds,
        "finder_s": finder_s,
        "one_fit_s": one_fit_s,
        "test_f1": f1,
        "load": loadavg(),
    }


def summary(results: list[dict]) -> list[str]:
    lines = [
        "| data | seed | rows | flipped | suspects | precision@k | recall@k | recall, all suspects "
        "| F1 clean | F1 noisy | F1 corrected | finder s | one fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f1 = r["test_f1"]
        lines.append(
            f"| {r['data']} | {r['seed']} | {r['rows']:,} | {r['flipped']} | {r['suspects']} | {r['precision_at_k']:.3f} | "
            f"{r['recall_at_k']:.3f} | {r['recall_all']:.3f} | {f1['clean']:.4f} | {f1['noisy']:.4f} | {f1['corrected']:.4f} | "
            f"{r['finder_s']:.1f} | {r['one_fit_s']:.1f} |"
        )
    for data in dict.fromkeys(r["data"] for r in results):
        runs = [r for r in results if r["data"] == data]

        def mean(get):
            return statistics.mean(get(r) for r in runs)

        lost = mean(lambda r: r["test_f1"]["clean"] - r["test_f1"]["noisy"])
        won = mean(lambda r: r["test_f1"]["corrected"] - r["test_f1"]["noisy"])
        lines.append(
            f"{data}: mean precision@k {mean(lambda r: r['precision_at_k']):.3f}, recall@k {mean(lambda r: r['recall_at_k']):.3f}; "
            f"macro-F1 lost to the noise {lost:+.4f}, won back by correcting the top k {won:+.4f} "
            f"(recovered {won / lost:.0%} of the loss)"
            if lost
            else f"{data}: mean precision@k {mean(lambda r: r['precision_at_k']):.3f}; the noise cost no macro-F1"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"{machine()}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load {loadavg():.2f}; repo {REPO}", flush=True
    )
    results = []
    for data in args.data:
        for seed in args.seeds:
            result = one_run(data, seed, args.out)
            results.append(result)
            print(json.dumps(result), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n".join(summary(results)))


if __name__ == "__main__":
    main()
