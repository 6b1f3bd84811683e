"""Calibration on the predictions of finished pipeline runs: the tune_threshold and evaluate stages with
`calibration.method: none` and `auto`, side by side (no training).

    .venv/bin/python bench/calibration_quality.py RUN_DIR [RUN_DIR ...] [--out /tmp/skewtune_bench/calibration_quality]

Each RUN_DIR is a project directory after `dvc repro` (data/interim/labels.json, data/split/{val,test}.parquet,
data/predictions/{val,test}.parquet and baseline/; under train.cv also the fold models' and the baseline's out-of-fold
predictions, on which the decision is then taken). For each run and method, the real `python -m stages.tune_threshold`
and `python -m stages.evaluate` run in a copy of this checkout under --out, with this checkout's params.yaml and
`calibration.method` set. Printed per run: what auto kept (per source) and why; val: the chosen rule's score, its
blend, and the top-label ECE / log loss of what the rule decides on (in-sample for the calibrated probabilities);
test (reported, never used to choose): macro-F1 of the rule and the ECE / log loss before and after.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import copy_project, env, loadavg, machine, set_params  # noqa: E402

from skewtune.artifacts import BASELINE_OOF  # noqa: E402
from skewtune.core.paths import MAX_FOLDS, baseline_predictions_path, fold_predictions_path  # noqa: E402

INPUTS = (
    "data/interim/labels.json",
    "data/split/val.parquet",
    "data/split/test.parquet",
    "data/predictions/val.parquet",
    "data/predictions/test.parquet",
    "data/predictions/baseline/val.parquet",
    "data/predictions/baseline/test.parquet",
)
# The out-of-fold predictions of train.cv: a run without cross-fitting has tables without columns there (or, from
# before train.cv, none).
CROSS_FIT_INPUTS = (*(fold_predictions_path(f) for f in range(MAX_FOLDS)), baseline_predictions_path(BASELINE_OOF))


def run_decision(run: Path, workdir: Path, method: str) -> tuple[dict, dict]:
    """(decision.json, test.json) of the run's predictions under calibration.method `method`."""
    if workdir.exists():
        shutil.rmtree(workdir)
    copy_project(workdir)
    set_params(workdir, {"calibration": {"method": method}})
    for name in (*INPUTS, *(name for name in CROSS_FIT_INPUTS if (run / name).exists())):
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / name, workdir / name)
    for stage in ("tune_threshold", "evaluate"):
        done = subprocess.run(
            [sys.executable, "-m", f"stages.{stage}"], cwd=workdir, env=env(), capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"{run}: {stage} failed:\n{done.stdout}\n{done.stderr}")
    read = lambda path: json.loads((workdir / path).read_text())  # noqa: E731
    return read("reports/threshold/decision.json"), read("reports/eval/test.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path("/tmp/skewtune_bench/calibration_quality"))
    args = parser.parse_args()
    print(f"machine: {machine()}; load {loadavg():.2f} at the start")
    print(
        "run | method | kept (model; baseline) | val rule score | blend | val ECE | val log loss | test macro-F1 | "
        "test ECE | test log loss"
    )
    for run in args.runs:
        for method in ("none", "auto"):
            decision, test = run_decision(run, args.out / run.name / method, method)
            kept = "; ".join(
                (record or {}).get("method", "-")
                for record in (decision["calibration"][s] for s in ("model", "baseline"))
            )
            val, held = test["calibration"]["val"]["calibrated"], test["calibration"]["test"]
            print(
                f"{run.name} | {method} | {kept} | {decision['metric']} {decision['val_score']:.4f} ({decision['strategy']}) | "
                f"{decision['blend']:g} | {val['ece']:.4f} | {val['log_loss']:.4f} | {test['chosen']['f1_macro']:.4f} | "
                f"{held['uncalibrated']['ece']:.4f} -> {held['calibrated']['ece']:.4f} | "
                f"{held['uncalibrated']['log_loss']:.4f} -> {held['calibrated']['log_loss']:.4f}"
            )
            if method == "auto":
                for source in ("model", "baseline"):
                    if decision["calibration"][source]:
                        print(f"    {source}: {decision['calibration'][source]['why']}")
    print(f"load {loadavg():.2f} at the end")


if __name__ == "__main__":
    main()
