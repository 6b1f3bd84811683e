"""Wall time and peak RSS of the baseline stage (TF-IDF + logistic regression) at 10,000 and 1,000,000 rows.

    .venv/bin/python bench/baseline_speed.py [--rows 12500 1250000] [--out /tmp/skewtune_bench/baseline_speed]

The texts are the bird-strike remarks (../shared/data/bird_strikes.csv, 5 classes, `effect`), drawn with
replacement and each given a random 7-digit report number, so that a large table also has a large
vocabulary of rare tokens as real data does. Each size is split 80/10/10 into the resampled train split,
val and test, and the real `python -m stages.baseline` runs in a project copy under --out with the
project's baseline.* params: at 12,500 rows it fits 10,000 train rows; at 1,250,000 rows it fits a
stratified sample of baseline.max_rows of the 1,000,000 train rows and predicts 125,000 val and test rows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, copy_project, loadavg, machine, run_stage  # noqa: E402

BIRDS = (REPO / ".." / "shared" / "data" / "bird_strikes.csv").resolve()


def write_splits(workdir: Path, rows: int, seed: int) -> None:
    birds = pd.read_csv(BIRDS, dtype=str, keep_default_na=False)
    birds = birds[birds["remarks"].str.strip() != ""]
    rng = np.random.default_rng(seed)
    picked = birds.iloc[rng.integers(0, len(birds), rows)]
    labels = sorted(birds["effect"].unique())
    table = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(rows)],
            "text": [f"REPORT {n:07d}. {text}" for n, text in zip(rng.integers(0, 10**7, rows), picked["remarks"])],
            "label": picked["effect"].to_numpy(),
        }
    )
    cuts = {
        "data/resampled/train.parquet": (0, int(rows * 0.8)),
        "data/split/val.parquet": (int(rows * 0.8), int(rows * 0.9)),
        "data/split/test.parquet": (int(rows * 0.9), rows),
    }
    for path, (start, stop) in cuts.items():
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        table.iloc[start:stop].to_parquet(workdir / path, index=False)
    (workdir / "data/interim").mkdir(parents=True, exist_ok=True)
    (workdir / "data/interim/labels.json").write_text(json.dumps({"labels": labels}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[12_500, 1_250_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/skewtune_bench/baseline_speed"))
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    for rows in args.rows:
        workdir = args.out / f"rows{rows}"
        shutil.rmtree(workdir, ignore_errors=True)
        copy_project(workdir)
        write_splits(workdir, rows, args.seed)
        load = loadavg()
        measured = run_stage("baseline", workdir, args.out / f"log{rows}.txt")
        report = json.loads((workdir / "reports/baseline.json").read_text())
        print(
            f"{rows:,} rows (train {report['train_rows']:,}, fitted on {report['fit_rows']:,}, {report['features']:,} features): "
            f"stage {measured['wall_s']:.1f} s, peak RSS {measured['peak_rss_mib']:.0f} MiB; "
            f"1-min load before {load:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
