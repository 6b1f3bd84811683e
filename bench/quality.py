"""Test and val macro-F1 on a dev data set (the full SMS Spam Collection, or a stratified sample of it or of
the bird strikes): skewtune's configs against a TF-IDF baseline.

    .venv/bin/python bench/quality.py --out /tmp/skewtune_bench/quality [--seeds 1 2 3] [--configs a b c d e]
    .venv/bin/python bench/quality.py --data birds --sample 600 --configs a s --out /tmp/skewtune_bench/birds600 \
        --set 'data.label_map={"Engine Shut Down": Other}'

--sample N takes a stratified sample of N rows of the raw file per seed (the seed draws it), written into
the run's data/raw/; without it the file is linked, never copied. Every run also reports the pipeline's own
baseline stage (TF-IDF + balanced logistic regression on the same train split: metrics/test.json's
baseline_f1_macro and vs_baseline), the decision's blend weight and whether the model collapsed.

Each (config, seed) runs the real stage modules in its own directory under --out, with a params.yaml
that is the project's (snapshot at the first start) plus the config's overrides; split.seed,
train.seed and resample.seed are the seed, so every config of a seed sees the same split. A finished
run keeps its result.json and is skipped when the script is started again. Config e (TF-IDF + logistic
regression, threshold tuned by cross-validation on train) reuses the ingest and split stages.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
from pathlib import Path

# The benchmark helpers and the skewtune package of this checkout (not installed into the venv).
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import (  # noqa: E402
    PIPELINE,
    REPO,
    SMS_DATA,
    SMS_TSV,
    copy_project,
    link_sms,
    machine,
    parse_overrides,
    place_raw,
    run_stage,
    set_params,
)  # noqa: E402

BIRDS_CSV = (REPO / ".." / "shared" / "data" / "bird_strikes.csv").resolve()
# Each dev data set: its file, and its data.* params (the file goes to data.source under data/raw/).
DATASETS = {
    "sms": (SMS_TSV, SMS_DATA),
    "birds": (BIRDS_CSV, {"source": "data/raw/bird_strikes.csv", "text_column": "remarks", "label_column": "effect"}),
}
CONFIGS = {
    "a": ("skewtune defaults", {}),
    "b": (
        "plain: ce, zero bias, argmax, no blend",
        {
            "model": {"init_bias": "zero"},
            "loss": {"name": "ce"},
            "threshold": {"strategy": "argmax"},
            "decision": {"blend": "off"},
        },
    ),
    "c": ("focal loss, gamma 2", {"loss": {"name": "focal", "gamma": 2.0}}),
    "d": ("random oversampling", {"resample": {"strategy": "random_over"}}),
    "e": ("TF-IDF word+char_wb, LR balanced, tuned threshold (binary; multiclass: argmax)", {}),
    "s": ("defaults without the small-data rule (train.min_steps 0)", {"train": {"min_steps": 0}}),
    # The seeds' techniques (issue 13), each alone on top of the defaults, at the seeds' own settings.
    "ema": ("EMA of the weights, decay 0.999", {"train": {"ema_decay": 0.999}}),
    "fgm": ("FGM on the word embeddings, epsilon 1", {"train": {"adversarial": "fgm", "adversarial_epsilon": 1.0}}),
    "drw": (
        "deferred re-weighting: weighted_ce balanced from epoch 2",
        {"loss": {"name": "weighted_ce", "reweight_from_epoch": 2}},
    ),
    "epochs3": ("3 epochs instead of 2", {"train": {"epochs": 3}}),
    "lr5e-5": ("lr 5e-5 instead of 1e-4", {"train": {"lr": 5.0e-5}}),
}

# What --redecide re-runs: the stages of the decision rule, which read the model's predictions and the baseline's.
DECISION_STAGES = ("tune_threshold", "evaluate")


def place_data(workdir: Path, data: str, sample: int | None, seed: int) -> None:
    """The data set under the run's data/raw/: linked, or a stratified sample of `sample` rows drawn with `seed`."""
    path, columns = DATASETS[data]
    target = workdir / columns["source"]
    target.parent.mkdir(parents=True, exist_ok=True)
    if sample is None:
        if data == "sms":
            link_sms(workdir)
        else:
            place_raw(path, target)
        return
    import pandas as pd
    from sklearn.model_selection import train_test_split

    sep = "\t" if path.suffix == ".tsv" else ","
    table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, quoting=3 if sep == "\t" else 0)
    picked, _ = train_test_split(table, train_size=sample, stratify=table[columns["label_column"]], random_state=seed)
    picked.to_csv(target, sep=sep, index=False, quoting=3 if sep == "\t" else 0)


def tfidf_baseline(workdir: Path, seed: int) -> dict:
    """Word (1-2) and char_wb (2-5) TF-IDF + LogisticRegression(class_weight='balanced'), its threshold
    tuned for macro-F1 by TunedThresholdClassifierCV on train; scored on the run's val and test splits."""
    import numpy as np
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import TunedThresholdClassifierCV
    from sklearn.pipeline import make_pipeline, make_union

    from skewtune.artifacts import read_labels
    from skewtune.evaluation.report import evaluation_report

    labels = read_labels(workdir / "data/interim/labels.json")
    train, val, test = (pd.read_parquet(workdir / f"data/split/{name}.parquet") for name in ("train", "val", "test"))
    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    model = make_pipeline(features, LogisticRegression(class_weight="balanced", max_iter=5000))
    binary = len(labels) == 2
    # TunedThresholdClassifierCV is binary only: a multiclass task is decided at argmax.
    tuned = (TunedThresholdClassifierCV(model, scoring="f1_macro", random_state=seed) if binary else model).fit(
        train["text"], train["label"]
    )
    fitted = tuned.estimator_ if binary else tuned
    assert list(tuned.classes_) == labels, (tuned.classes_, labels)
    index = {label: i for i, label in enumerate(labels)}
    y_val, y_test = val["label"].map(index).to_numpy(), test["label"].map(index).to_numpy()
    val_pred = np.array([index[v] for v in tuned.predict(val["text"])])
    test_pred = np.array([index[v] for v in tuned.predict(test["text"])])
    probs = tuned.predict_proba(test["text"])
    rule = "threshold" if binary else "argmax"
    report = evaluation_report(
        y_test,
        probs,
        test_pred,
        labels,
        rule=rule,
        blend=0.0,
        y_model=probs.argmax(axis=1),
        positive=1 if binary else None,
        resamples=1000,
        confidence=0.95,
        seed=0,
    )
    return {
        "val_f1_macro": float(f1_score(y_val, val_pred, average="macro")),
        "val_f1_macro_argmax": float(f1_score(y_val, fitted.predict_proba(val["text"]).argmax(1), average="macro")),
        "threshold": float(tuned.best_threshold_) if binary else None,
        "test": report,
    }


def split_digest(workdir: Path) -> str:
    return hashlib.sha256(
        b"".join((workdir / f"data/split/{n}.parquet").read_bytes() for n in ("train", "val", "test"))
    ).hexdigest()[:12]


def run_one(
    out: Path,
    snapshot: Path,
    config: str,
    seed: int,
    data: str = "sms",
    sample: int | None = None,
    extra: dict | None = None,
    redecide: bool = False,
) -> dict:
    workdir = out / f"{config}_seed{seed}"
    result_file = workdir / "result.json"
    log = workdir / "log.txt"
    overrides = {
        "data": dict(DATASETS[data][1]),
        "split": {"seed": seed},
        "train": {"seed": seed},
        "resample": {"seed": seed},
    }
    for section, values in [*(extra or {}).items(), *CONFIGS[config][1].items()]:
        overrides.setdefault(section, {}).update(values)
    if result_file.is_file():
        finished = json.loads(result_file.read_text())
        if not redecide or config == "e":
            return finished
        # The config's decision params changed since the run: only the decision stages re-run (the model is the same).
        set_params(workdir, overrides)
        walls = {
            **finished["stage_wall_s"],
            **{name: run_stage(name, workdir, log)["wall_s"] for name in DECISION_STAGES},
        }
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(snapshot, workdir, ignore=shutil.ignore_patterns("__pycache__"))
        place_data(workdir, data, sample, seed)
        set_params(workdir, overrides)
        stages = PIPELINE[:2] if config == "e" else PIPELINE
        walls = {name: run_stage(name, workdir, log)["wall_s"] for name in stages}
    if config == "e":
        result = tfidf_baseline(workdir, seed)
    else:
        decision = json.loads((workdir / "reports/threshold/decision.json").read_text())
        result = {
            "val_f1_macro": decision["val_score"],
            "val_f1_macro_argmax": decision["val_score_argmax"],
            "threshold": decision["threshold"],
            "test": json.loads((workdir / "reports/eval/test.json").read_text()),
            "review": json.loads((workdir / "metrics/test.json").read_text()),
        }
    result.update({"config": config, "seed": seed, "split_sha": split_digest(workdir), "stage_wall_s": walls})
    result_file.write_text(json.dumps(result, indent=2))
    t = result["test"]["chosen"]
    review = result.get("review", {})
    vs = (
        f"  baseline {review['baseline_f1_macro']:.4f}, vs {review['vs_baseline']:+.4f}"
        if review.get("baseline_f1_macro") is not None
        else ""
    )
    collapsed = "  COLLAPSED" if review.get("collapsed") else ""
    print(
        f"{config} seed {seed}: val {result['val_f1_macro']:.4f}  test {t['f1_macro']:.4f} "
        f"[{t['f1_macro_ci_low']:.4f}, {t['f1_macro_ci_high']:.4f}]{vs}{collapsed}  ({sum(walls.values()):.0f} s)",
        flush=True,
    )
    return result


def mean_sd(values: list[float], digits: int = 4) -> str:
    """Mean ± sample sd ("—" for none, the value alone for one)."""
    if not values:
        return "—"
    sd = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{sd}"


def summary(results: list[dict], seeds: list[int]) -> str:
    lines = [
        "| config | test macro-F1 (mean ± sd) | per seed: test [bootstrap 95% CI] | test argmax | val macro-F1 (mean ± sd) |",
        "|---|---|---|---|---|",
    ]
    for config, (name, _) in CONFIGS.items():
        runs = sorted((r for r in results if r["config"] == config), key=lambda r: r["seed"])
        if not runs:
            continue
        tests = [r["test"]["chosen"]["f1_macro"] for r in runs]
        per_seed = "; ".join(
            f"{r['seed']}: {r['test']['chosen']['f1_macro']:.4f} [{r['test']['chosen']['f1_macro_ci_low']:.3f}, "
            f"{r['test']['chosen']['f1_macro_ci_high']:.3f}]"
            for r in runs
        )
        argmax = mean_sd([r["test"]["argmax"]["f1_macro"] for r in runs])
        lines.append(
            f"| {config}) {name} | {mean_sd(tests)} | {per_seed} | {argmax} | {mean_sd([r['val_f1_macro'] for r in runs])} |"
        )
    lines += [
        "",
        "| config | collapsed runs | blend weight per seed | pipeline baseline test macro-F1 (mean ± sd) | chosen − "
        "baseline per seed [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for config, (name, _) in CONFIGS.items():
        runs = sorted(
            (r for r in results if r["config"] == config and r.get("review", {}).get("baseline_f1_macro") is not None),
            key=lambda r: r["seed"],
        )
        if runs:
            diffs = "; ".join(
                f"{r['seed']}: {r['review']['vs_baseline']:+.4f} [{r['review']['vs_baseline_ci_low']:+.3f}, "
                f"{r['review']['vs_baseline_ci_high']:+.3f}]"
                for r in runs
            )
            blends = ", ".join(f"{r['test']['blend']:g}" for r in runs)
            lines.append(
                f"| {config}) {name} | {sum(bool(r['review']['collapsed']) for r in runs)} of {len(runs)} | "
                f"{blends} | {mean_sd([r['review']['baseline_f1_macro'] for r in runs])} | {diffs} |"
            )
    val = {c: [r["val_f1_macro"] for r in results if r["config"] == c] for c in CONFIGS}
    val = {c: v for c, v in val.items() if v}
    best = max(val, key=lambda c: statistics.mean(val[c]))
    ties = [c for c in val if statistics.mean(val[c]) == statistics.mean(val[best])]
    lines.append(f"\nbest mean val macro-F1: {', '.join(ties)} ({statistics.mean(val[best]):.4f})")
    for seed in seeds:
        digests = {r["split_sha"] for r in results if r["seed"] == seed}
        lines.append(
            f"\nseed {seed}: {'identical' if len(digests) == 1 else 'DIFFERENT'} splits across configs ({', '.join(sorted(digests))})"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/skewtune_bench/quality"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list("abcde"))
    parser.add_argument("--data", choices=list(DATASETS), default="sms")
    parser.add_argument(
        "--sample", type=int, help="a stratified sample of this many rows per seed instead of the whole file"
    )
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="params of every run (VALUE in YAML)"
    )
    parser.add_argument(
        "--redecide",
        action="store_true",
        help="finished runs: apply the configs' current params and re-run only tune_threshold and evaluate",
    )
    args = parser.parse_args()
    snapshot = args.out / "code"
    if not snapshot.is_dir():
        copy_project(snapshot)
    print(f"machine: {machine()}\ncode snapshot: {snapshot}", flush=True)
    # Seeds outermost: an interrupted grid still has every config on the seeds it finished.
    print(
        f"data: {args.data}"
        + (f", a stratified sample of {args.sample} rows per seed" if args.sample else "")
        + f"; set: {args.set}",
        flush=True,
    )
    extra = parse_overrides(args.set)
    results = [
        run_one(args.out, snapshot, config, seed, args.data, args.sample, extra, args.redecide)
        for seed in args.seeds
        for config in args.configs
    ]
    text = summary(results, args.seeds)
    (args.out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
