"""CPU training throughput of this checkout's train stage Trainer against an older commit's, side by side.

    .venv/bin/python bench/train_speed_ab.py --against 34d08c7 [--rounds 2] [--seed 1] [--epochs 1] [--rows 0]

The older commit's tree comes from `git archive` into a temporary directory; each run is a fresh process
with that tree (or this checkout's working tree) first on sys.path, which calls that tree's own
bench/train_speed.py `skewtune_run` on the train split of the SMS Spam Collection (seed --seed; --rows: that
many random rows of it, the same in both trees, for a loaded machine) with that
tree's params.yaml, fp32 on the CPU: the same model, data, batch size and learning rate as
bench/train_speed.py's skewtune run. The runs alternate (before, after, then after, before, ...) so that a
change in the machine's load falls on both alike; each prints its epoch time and the 1-minute load average
at its start and end, and the last line is the ratio of the summed samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, SMS_TSV, loadavg, machine  # noqa: E402

CHILD = """
import json, sys, tempfile
tree, seed, epochs, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sys.path[:0] = [tree + "/bench", tree]
import train_speed
from skewtune.models.text import resolve_model_source
from skewtune.config.load import load_params
p = load_params(tree + "/params.yaml")
train, val, labels = train_speed.sms_splits(seed, p.split.val_size, p.split.test_size)
train = train.sample(rows, random_state=seed) if rows else train
with tempfile.TemporaryDirectory() as out:
    source = resolve_model_source(p.model.name)
    run = train_speed.skewtune_run(p, source, train, val, labels, out, epochs=epochs, device="cpu", precision="fp32")
seconds, positions, counted = run["timer"].measured()
print(json.dumps({"seconds": seconds, "samples": len(train) * counted, "positions": positions}))
"""


def run(tree: Path, seed: int, epochs: int, rows: int) -> dict:
    start = loadavg()
    # The older tree lies outside the checkout, where ../shared is not: name the SMS file for both.
    env = {**os.environ, "SKEWTUNE_BENCH_SMS": str(SMS_TSV), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), str(seed), str(epochs), str(rows)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode:
        raise SystemExit(f"the run in {tree} failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load": (start, loadavg())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the older commit (any git revision)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rows", type=int, default=0, help="train on this many random train rows (0: all 4,128)")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", args.against], capture_output=True, text=True, check=True
    ).stdout.strip()
    head = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"machine: {machine()}\nbefore: {commit}; after: this checkout ({head})", flush=True)
    totals = {"before": [0.0, 0], "after": [0.0, 0]}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        for round_ in range(args.rounds):
            order = [("before", old), ("after", REPO)]
            for name, tree in order if round_ % 2 == 0 else order[::-1]:
                result = run(tree, args.seed, args.epochs, args.rows)
                totals[name][0] += result["seconds"]
                totals[name][1] += result["samples"]
                print(
                    f"round {round_ + 1} {name}: {result['seconds']:.1f} s, {result['samples'] / result['seconds']:.1f} samples/s, "
                    f"{result['positions']} token positions; load {result['load'][0]:.2f} -> {result['load'][1]:.2f}",
                    flush=True,
                )
    speed = {name: samples / seconds for name, (seconds, samples) in totals.items()}
    print(
        f"samples/s over all rounds: before {speed['before']:.1f}, after {speed['after']:.1f}; after / before "
        f"{speed['after'] / speed['before']:.3f}x"
    )


if __name__ == "__main__":
    main()
