"""How well the label_issues stage finds wrong labels, and what correcting them is worth (BENCHMARKS.md, issue 28).

    nice -n 10 .venv/bin/python bench/label_noise.py --out /tmp/skewtune_bench/label_noise [--data sms birds] [--seeds 1 2 3]
        [--finders baseline embedding mean]
    nice -n 10 .venv/bin/python bench/label_noise.py --out /tmp/skewtune_bench/label_cost --stage-cost

Per dev data set and seed: the real check_params, ingest and split stages run in a throw-away directory under --out
(split.seed = the seed), so the rows are those the pipeline trains on. Then 10% of the train + val rows of each
minority class (every class but the largest) get another class, drawn at random (seeded; test is never touched), and
each finder of --finders ranks the noisy rows with skewtune.evaluation.label_issues.find_suspects (cleanlab) on its
out-of-fold probabilities, all cross-fitted on the same folds (label_issue_folds at the stage's defaults):
- baseline: the TF-IDF baseline (skewtune.models.crossfit.out_of_fold_proba), what the stage runs without train.cv;
- embedding: the frozen-embedding head, what the train_fold stages of `train.method: embedding` make under train.cv:
  the default model's sentence embeddings (skewtune.models.sentence, embedded once per data set: the body is frozen)
  and, per fold, the balanced logistic regression of skewtune.train.sentence.fit_head on the other folds' rows less the
  selection slice a fold sets aside (skewtune.train.folds.selection_slice; the head does not read it);
- mean: the mean of the two's probabilities.
At k = the number flipped: precision (flipped among the top k suspects, of at most k) and recall (of the flipped,
found in the top k; the two are equal when cleanlab returns at least k suspects), and the recall of all suspects
whatever their rank.

The test macro-F1 is that of the pipeline's TF-IDF baseline (fit_baseline on the train split, argmax of baseline_proba
on test), not of the fine-tuned transformer (three fine-tunings per seed cost too much here), fitted on the clean
labels, the noisy labels, and the noisy labels with the top-k suspects corrected as an annotator would: a suspect that
was flipped gets its true label back, one that was not keeps its label. `recovered` = (corrected - noisy) / (clean -
noisy) on the means over seeds. Each finder's time (cross-fitting and cleanlab; the embedding's one pass apart) is
printed beside one baseline fit on the same train + val rows.

--stage-cost: what the stage costs when cross-fitting already ran (the issue's "under 10%"): on the SMS dev set with
train.cv: 5 and train.method: embedding (the cheapest fold models, so the share is an upper bound), the real
train_fold stages, then the label_issues stage on their probabilities, each timed as a process; then train.cv: off,
the stage cross-fitting its baseline itself.
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
from _common import REPO, copy_project, link_sms, loadavg, machine, run_stage, set_params  # noqa: E402
from quality import DATASETS, place_data  # noqa: E402

from skewtune.artifacts import read_examples, read_labels  # noqa: E402
from skewtune.config.schema import BaselineParams, LabelIssuesParams, ModelParams, TrainParams  # noqa: E402
from skewtune.core.columns import input_columns  # noqa: E402
from skewtune.evaluation.label_issues import find_suspects  # noqa: E402
from skewtune.models.baseline import baseline_proba, fit_baseline  # noqa: E402
from skewtune.models.crossfit import label_issue_folds, out_of_fold_proba  # noqa: E402

NOISE = 0.10
FEATURES = BaselineParams()
FOLDS = LabelIssuesParams().folds
MODEL, TRAIN = ModelParams(), TrainParams()
FINDERS = ("baseline", "embedding", "mean")


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


class Embeddings:
    """The frozen default model's sentence embeddings of every distinct input of some rows, computed once (the body is
    frozen, so a row's embedding is the same in every seed and fold), as train.method: embedding embeds them."""

    def __init__(self, frames: list[pd.DataFrame]) -> None:
        from skewtune.models.modality import TEXT, model_source
        from skewtune.models.sentence import embed, load_encoder

        self.columns = input_columns(frames[0])
        unique = pd.concat([frame[self.columns] for frame in frames]).drop_duplicates(ignore_index=True)
        start = time.perf_counter()
        encoder, tokenizer = load_encoder(model_source(MODEL.name, TEXT), max_length=MODEL.max_length)
        self.vectors = embed(
            encoder, tokenizer, unique, max_length=MODEL.max_length, batch_size=TRAIN.eval_batch_size, device="cpu"
        )
        self.seconds, self.index = time.perf_counter() - start, pd.MultiIndex.from_frame(unique)

    def of(self, rows: pd.DataFrame) -> np.ndarray:
        return self.vectors[self.index.get_indexer(pd.MultiIndex.from_frame(rows[self.columns]))]


def embedding_proba(
    features: np.ndarray, y: np.ndarray, folds: np.ndarray, n_classes: int, selection_share: float, seed: int
) -> np.ndarray:
    """Out-of-fold probabilities of the frozen-embedding head, as a train_fold stage of train.method: embedding makes
    them: per fold, fit_head on the other folds' rows less the selection slice (seeded with split.seed = `seed`), the
    head's softmax on the held-out rows."""
    from scipy.special import softmax

    from skewtune.train.folds import selection_slice
    from skewtune.train.sentence import fit_head

    probs = np.zeros((len(y), n_classes))
    for fold in np.unique(folds):
        held_out = folds == fold
        part = np.flatnonzero(~held_out)
        fit = part[~selection_slice(pd.DataFrame({"label_id": y[part]}), selection_share, seed)]
        weight, bias = fit_head(features[fit], y[fit], n_classes, TRAIN.seed)
        probs[held_out] = softmax(features[held_out] @ weight.T + bias, axis=1)
    return probs


def ranked(suspects, flipped: np.ndarray, noisy: np.ndarray, majority: int) -> dict:
    """The finder's figures at k = the number flipped."""
    k, top = len(flipped), suspects.positions[: len(flipped)]
    hits = int(np.isin(top, flipped).sum())
    return {
        "suspects": len(suspects.positions),
        "precision_at_k": hits / max(1, min(k, len(suspects.positions))),
        "recall_at_k": hits / k,
        "recall_all": float(np.isin(flipped, suspects.positions).mean()),  # flips among all suspects, at any rank
        "majority_given_in_top_k": float((noisy[top] == majority).mean()),
    }


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


def one_run(data: str, seed: int, out: Path, finders: list[str], embeddings: Embeddings | None) -> dict:
    workdir = prepared(data, seed, out)
    labels = read_labels(workdir / "data/interim/labels.json")
    split = {
        name: read_examples(workdir / f"data/split/{name}.parquet", labels, "split")
        for name in ("train", "val", "test")
    }
    rows = pd.concat([split["train"], split["val"]], ignore_index=True)
    y = rows["label_id"].to_numpy()
    noisy, flipped = flip(y, len(labels), np.random.default_rng(seed))
    k, n_train = len(flipped), len(split["train"])
    assignment = label_issue_folds(noisy, labels, FOLDS)

    probs, seconds = {}, {}
    if {"baseline", "mean"} & set(finders):
        start = time.perf_counter()
        probs["baseline"] = out_of_fold_proba(
            rows.assign(label_id=noisy),
            labels,
            assignment,
            min_df=FEATURES.min_df,
            max_features=FEATURES.max_features,
            max_rows=FEATURES.max_rows,
        )
        seconds["baseline"] = time.perf_counter() - start
    if {"embedding", "mean"} & set(finders):
        start = time.perf_counter()
        share = len(split["val"]) / len(rows)  # a fold's selection slice: val's share of train + val, as train.cv's
        probs["embedding"] = embedding_proba(embeddings.of(rows), noisy, assignment, len(labels), share, seed)
        seconds["embedding"] = time.perf_counter() - start
    if "mean" in finders:  # its time: the averaging and cleanlab only, the two it averages being there already
        probs["mean"], seconds["mean"] = (probs["baseline"] + probs["embedding"]) / 2, 0.0
    start = time.perf_counter()
    fit_baseline(rows, labels, min_df=FEATURES.min_df, max_features=FEATURES.max_features, max_rows=FEATURES.max_rows)
    one_fit_s = time.perf_counter() - start

    result = {
        "data": data,
        "seed": seed,
        "rows": len(rows),
        "flipped": k,
        "flipped_in_train": int((flipped < n_train).sum()),
        "folds": int(assignment.max()) + 1,
        "one_fit_s": one_fit_s,
        "test_f1": {
            name: test_f1(split["train"], labels_[:n_train], split["test"], labels)
            for name, labels_ in (("clean", y), ("noisy", noisy))
        },
        "finders": {},
        "load": loadavg(),
    }
    for name in finders:
        start = time.perf_counter()
        suspects = find_suspects(noisy, probs[name])
        figures = ranked(suspects, flipped, noisy, int(np.bincount(y).argmax()))
        top = suspects.positions[:k]
        found = top[np.isin(top, flipped)]
        corrected = noisy.copy()
        corrected[found] = y[found]  # the annotator restores the true label of a flipped suspect; the others stay
        figures["finder_s"] = seconds[name] + time.perf_counter() - start
        figures["f1_corrected"] = test_f1(split["train"], corrected[:n_train], split["test"], labels)
        result["finders"][name] = figures
    return result


def summary(results: list[dict]) -> list[str]:
    lines = [
        "| data | seed | rows | flipped | finder | suspects | precision@k | recall@k | recall, all suspects "
        "| F1 clean | F1 noisy | F1 corrected | finder s | one fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f1 = r["test_f1"]
        for name, f in r["finders"].items():
            lines.append(
                f"| {r['data']} | {r['seed']} | {r['rows']:,} | {r['flipped']} | {name} | {f['suspects']} | "
                f"{f['precision_at_k']:.3f} | {f['recall_at_k']:.3f} | {f['recall_all']:.3f} | {f1['clean']:.4f} | "
                f"{f1['noisy']:.4f} | {f['f1_corrected']:.4f} | {f['finder_s']:.1f} | {r['one_fit_s']:.1f} |"
            )
    for data in dict.fromkeys(r["data"] for r in results):
        runs = [r for r in results if r["data"] == data]
        lost = statistics.mean(r["test_f1"]["clean"] - r["test_f1"]["noisy"] for r in runs)
        for name in runs[0]["finders"]:

            def mean(key):
                return statistics.mean(r["finders"][name][key] for r in runs)

            won = mean("f1_corrected") - statistics.mean(r["test_f1"]["noisy"] for r in runs)
            lines.append(
                f"{data}, {name}: mean precision@k {mean('precision_at_k'):.3f}, recall@k {mean('recall_at_k'):.3f}, "
                f"recall of all {mean('suspects'):.0f} suspects {mean('recall_all'):.3f}; macro-F1 lost to the noise "
                f"{lost:+.4f}, won back by correcting the top k {won:+.4f}"
                + (f" (recovered {won / lost:.0%} of the loss)" if lost else "")
            )
    return lines


def stage_cost(out: Path) -> None:
    """The label_issues stage's time on the fold models' probabilities against one train_fold's, and against itself
    cross-fitting the baseline (train.cv: off); processes as dvc runs them (see the module doc)."""
    workdir = out / "sms_cv5_embedding"
    copy_project(workdir)
    link_sms(workdir)
    log = workdir / "stages.log"
    set_params(workdir, {"data": DATASETS["sms"][1], "train": {"cv": 5, "method": "embedding"}})
    for stage in ("check_params", "ingest", "split"):
        run_stage(stage, workdir, log)
    timed = {f"train_fold {f}": run_stage(f"train_fold {f}", workdir, log) for f in range(5)}
    timed["label_issues (fold probabilities)"] = run_stage("label_issues", workdir, log)
    set_params(workdir, {"train": {"cv": "off"}})
    run_stage("check_params", workdir, log)
    for f in range(5):
        run_stage(f"train_fold {f}", workdir, log)
    timed["label_issues (cv off: the baseline cross-fitted)"] = run_stage("label_issues", workdir, log)
    for name, figures in timed.items():
        print(f"{name}: {figures['wall_s']:.1f} s, peak RSS {figures['peak_rss_mib']:.0f} MiB; load {loadavg():.2f}")
    folds = [timed[f"train_fold {f}"]["wall_s"] for f in range(5)]
    stage = timed["label_issues (fold probabilities)"]["wall_s"]
    print(
        f"label_issues on the fold probabilities: {stage:.1f} s = {stage / statistics.mean(folds):.1%} of one "
        f"train_fold ({statistics.mean(folds):.1f} s on the mean), {stage / sum(folds):.1%} of the five"
    )
    print("\n".join(line for line in log.read_text().splitlines() if line.startswith("label_issues:")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--finders", nargs="+", default=["baseline"], choices=FINDERS)
    parser.add_argument("--stage-cost", action="store_true", help="time the stage against train_fold instead")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"{machine()}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load {loadavg():.2f}; repo {REPO}", flush=True
    )
    if args.stage_cost:
        stage_cost(args.out)
        return
    results = []
    for data in args.data:
        workdirs = [prepared(data, seed, args.out) for seed in args.seeds]
        embeddings = None
        if {"embedding", "mean"} & set(args.finders):
            embeddings = Embeddings(
                [
                    pd.read_parquet(workdir / f"data/split/{name}.parquet")
                    for workdir in workdirs
                    for name in ("train", "val")
                ]
            )
            print(
                f"{data}: {len(embeddings.vectors):,} distinct inputs embedded once in {embeddings.seconds:.1f} s",
                flush=True,
            )
        for seed in args.seeds:
            result = one_run(data, seed, args.out, args.finders, embeddings)
            results.append(result)
            print(json.dumps(result), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n".join(summary(results)))


if __name__ == "__main__":
    main()
