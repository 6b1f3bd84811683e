"""Wall time of the calibration choice of tune_threshold (calibration.method: auto), per 10,000 val rows.

    .venv/bin/python bench/calibration_speed.py [--rows 10000 100000] [--classes 2 5] [--repeats 3]

For each size and class count: val probabilities of an over-confident model (logits sharpened 2.5 times, labels
drawn from the unsharpened ones, imbalanced classes), then `choose_calibration("auto", ...)` as the stage calls it
per source: both candidates (temperature, vector) fitted on K - 1 folds and applied to the held-out fold (K = 5),
the paired bootstrap of the per-row log losses (1,000 resamples) and the refit on all rows. Prints the best of
--repeats runs, seconds per 10,000 rows, and what was kept. The target (issue 27): under 2 s per 10,000 val rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import softmax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, loadavg, machine  # noqa: E402

sys.path.insert(0, str(REPO))  # this checkout's skewtune, not the one the venv installed
from skewtune.decision.calibration import choose_calibration  # noqa: E402


def sample(rows: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(rows, classes)) * 2 + np.log(np.geomspace(1, 0.02, classes))
    y = (rng.random(rows)[:, None] > np.cumsum(softmax(logits, axis=1), axis=1)).sum(axis=1)
    return softmax(2.5 * logits, axis=1), np.minimum(y, classes - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}; load {loadavg():.2f} at the start")
    print("rows     classes  seconds  s/10k rows  kept (T or per-class scales)")
    for rows in args.rows:
        for classes in args.classes:
            probs, y = sample(rows, classes, seed=rows + classes)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                calibration, record = choose_calibration("auto", probs, y, min_confidence=0.95)
                times.append(time.perf_counter() - start)
            best = min(times)
            kept = (
                f"{calibration.method} T={calibration.temperature:.3f}"
                if calibration.method == "temperature"
                else f"{calibration.method} {[round(s, 3) for s in calibration.scale or ()]}"
            )
            print(f"{rows:<8} {classes:<8} {best:<8.3f} {best / rows * 10_000:<11.3f} {kept}")
    print(f"load {loadavg():.2f} at the end")


if __name__ == "__main__":
    main()
