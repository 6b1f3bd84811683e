"""Test and val macro-F1 on the full SMS Spam Collection: skewtune's configs against a TF-IDF baseline.

    .venv/bin/python bench/quality.py --out /tmp/skewtune_bench/quality [--seeds 1 2 3] [--configs a b c d e]

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
from _common import PIPELINE, SMS_DATA, copy_project, link_sms, machine, run_stage, set_params  # noqa: E402

CONFIGS = {
    "a": ("skewtune defaults", {}),
    "b": ("plain: ce, zero bias, argmax", {"model": {"init_bias": "zero"}, "loss": {"name": "ce"}, "threshold": {"strategy": "argmax"}}),
    "c": ("focal loss, gamma 2", {"loss": {"name": "focal", "gamma": 2.0}}),
    "d": ("random oversampling", {"resample": {"strategy": "random_over"}}),
    "e": ("TF-IDF word+char_wb, LR balanced, tuned threshold", {}),
}


def tfidf_baseline(workdir: Path, seed: int) -> dict:
    """Word (1-2) and char_wb (2-5) TF-IDF + LogisticRegression(class_weight='balanced'), its threshold
    tuned for macro-F1 by TunedThresholdClassifierCV on train; scored on the run's val and test splits."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import TunedThresholdClassifierCV
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.feature_extraction.text import TfidfVectorizer

    from skewtune.artifacts import read_labels
    from skewtune.metrics import evaluation_report

    labels = read_labels(workdir / "data/interim/labels.json")
    train, val, test = (pd.read_parquet(workdir / f"data/split/{name}.parquet") for name in ("train", "val", "test"))
    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    model = make_pipeline(features, LogisticRegression(class_weight="balanced", max_iter=5000))
    tuned = TunedThresholdClassifierCV(model, scoring="f1_macro", random_state=seed).fit(train["text"], train["label"])
    assert list(tuned.classes_) == labels, (tuned.classes_, labels)
    index = {label: i for i, label in enumerate(labels)}
    y_val, y_test = val["label"].map(index).to_numpy(), test["label"].map(index).to_numpy()
    val_pred = np.array([index[v] for v in tuned.predict(val["text"])])
    test_pred = np.array([index[v] for v in tuned.predict(test["text"])])
    probs = tuned.predict_proba(test["text"])
    report = evaluation_report(y_test, probs, test_pred, labels, rule="threshold", positive=1, resamples=1000, confidence=0.95, seed=0)
    return {
        "val_f1_macro": float(f1_score(y_val, val_pred, average="macro")),
        "val_f1_macro_argmax": float(f1_score(y_val, tuned.estimator_.predict_proba(val["text"]).argmax(1), average="macro")),
        "threshold": float(tuned.best_threshold_),
        "test": report,
    }


def split_digest(workdir: Path) -> str:
    return hashlib.sha256(b"".join((workdir / f"data/split/{n}.parquet").read_bytes() for n in ("train", "val", "test"))).hexdigest()[:12]


def run_one(out: Path, snapshot: Path, config: str, seed: int) -> dict:
    workdir = out / f"{config}_seed{seed}"
    result_file = workdir / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(snapshot, workdir, ignore=shutil.ignore_patterns("__pycache__"))
    link_sms(workdir)
    overrides = {"data": SMS_DATA, "split": {"seed": seed}, "train": {"seed": seed}, "resample": {"seed": seed}}
    for section, values in CONFIGS[config][1].items():
        overrides.setdefault(section, {}).update(values)
    set_params(workdir, overrides)
    log = workdir / "log.txt"
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
        }
    result.update({"config": config, "seed": seed, "split_sha": split_digest(workdir), "stage_wall_s": walls})
    result_file.write_text(json.dumps(result, indent=2))
    t = result["test"]["chosen"]
    print(f"{config} seed {seed}: val {result['val_f1_macro']:.4f}  test {t['f1_macro']:.4f} "
          f"[{t['f1_macro_ci_low']:.4f}, {t['f1_macro_ci_high']:.4f}]  ({sum(walls.values()):.0f} s)", flush=True)
    return result


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


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
            f"{r['seed']}: {r['test']['chosen']['f1_macro']:.4f} [{r['test']['chosen']['f1_macro_ci_low']:.3f}, {r['test']['chosen']['f1_macro_ci_high']:.3f}]"
            for r in runs
        )
        argmax = mean_sd([r["test"]["argmax"]["f1_macro"] for r in runs])
        lines.append(f"| {config}) {name} | {mean_sd(tests)} | {per_seed} | {argmax} | {mean_sd([r['val_f1_macro'] for r in runs])} |")
    val = {c: [r["val_f1_macro"] for r in results if r["config"] == c] for c in CONFIGS}
    val = {c: v for c, v in val.items() if v}
    best = max(val, key=lambda c: statistics.mean(val[c]))
    ties = [c for c in val if statistics.mean(val[c]) == statistics.mean(val[best])]
    lines.append(f"\nbest mean val macro-F1: {', '.join(ties)} ({statistics.mean(val[best]):.4f})")
    for seed in seeds:
        digests = {r["split_sha"] for r in results if r["seed"] == seed}
        lines.append(f"\nseed {seed}: {'identical' if len(digests) == 1 else 'DIFFERENT'} splits across configs ({', '.join(sorted(digests))})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/skewtune_bench/quality"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args()
    snapshot = args.out / "code"
    if not snapshot.is_dir():
        copy_project(snapshot)
    print(f"machine: {machine()}\ncode snapshot: {snapshot}", flush=True)
    # Seeds outermost: an interrupted grid still has every config on the seeds it finished.
    results = [run_one(args.out, snapshot, config, seed) for seed in args.seeds for config in args.configs]
    text = summary(results, args.seeds)
    (args.out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
