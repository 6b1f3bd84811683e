"""Does a threshold tuned on val beat argmax on new rows? Checked on val alone, from the runs of quality.py.

    .venv/bin/python bench/threshold_guard.py --quality /tmp/skewtune_bench/quality [--splits 100]

For each run's saved val predictions: split val into two stratified halves (--splits random splits), choose
the decision rule on one half with skewtune's own tune_decision, score macro-F1 on the other half, against
argmax on that half. Two rules: the tuned threshold always (threshold.min_confidence 0) and the guarded one
(the default 0.95: kept only if it beats argmax in 95% of paired bootstrap resamples of the tuning half).
Then, on each run's whole val, the guard's win rate and decision.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.model_selection import StratifiedShuffleSplit  # noqa: E402

from skewtune.artifacts import DecisionRule, read_predictions  # noqa: E402
from skewtune.thresholds import tune_decision  # noqa: E402

LABELS = ["ham", "spam"]


def decide(y, probs, min_confidence: float) -> dict:
    return tune_decision(y, probs, LABELS, strategy="tune", metric="f1_macro", min_precision=0.9, positive_label=None, min_confidence=min_confidence)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality", type=Path, default=Path("/tmp/skewtune_bench/quality"))
    parser.add_argument("--splits", type=int, default=100)
    args = parser.parse_args()
    runs = sorted(d for d in args.quality.iterdir() if (d / "data/predictions/val.parquet").is_file())
    print("| run | held-out gain over argmax: tuned always | guarded (0.95) | whole val: tuned threshold | win rate | kept |\n|---|---|---|---|---|---|")
    for run in runs:
        val = read_predictions(run / "data/predictions/val.parquet", LABELS)
        y, probs = val.y, val.probs
        gains = {0.0: [], 0.95: []}
        for tune_rows, held_out in StratifiedShuffleSplit(n_splits=args.splits, test_size=0.5, random_state=0).split(probs, y):
            argmax = f1_score(y[held_out], probs[held_out].argmax(1), average="macro")
            for min_confidence, out in gains.items():
                decision = decide(y[tune_rows], probs[tune_rows], min_confidence)
                out.append(f1_score(y[held_out], DecisionRule.from_dict(decision).predict(probs[held_out]), average="macro") - argmax)
        whole = decide(y, probs, 0.95)
        print(f"| {run.name} | {np.mean(gains[0.0]):+.4f} | {np.mean(gains[0.95]):+.4f} | {whole['tuned_threshold']:.3f} | "
              f"{whole['win_rate']:.3f} | {'threshold' if whole['strategy'] == 'threshold' else 'argmax'} |", flush=True)


if __name__ == "__main__":
    main()
