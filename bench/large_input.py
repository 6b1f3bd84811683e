"""Wall time and peak RSS of ingest, split and resample on a generated 1,000,000-row CSV.

    .venv/bin/python bench/large_input.py [--rows 1000000] [--seed 0] [--out /tmp/skewtune_bench/large_input]

The file (data/raw/large.csv of a project copy under --out) has random-word texts, 13% "spam", and on
top of the unique rows: repeated texts with the same label (4%), texts repeated with the other label
(1%), blank texts (0.8%) and missing labels (0.2%). The real stage modules run on it; resample runs
once with each of resample.strategy none (the default) and random_over.
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
from _common import copy_project, loadavg, machine, run_stage, set_params  # noqa: E402

SHARES = {"duplicate": 0.04, "conflicting": 0.01, "blank_text": 0.008, "missing_label": 0.002}


def generate(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(20_000)])
    extra = {name: int(rows * share) for name, share in SHARES.items()}
    n_unique = rows - sum(extra.values())
    lengths = rng.integers(3, 40, n_unique)
    words = vocabulary[rng.integers(0, len(vocabulary), lengths.sum())]
    cuts = np.cumsum(lengths)[:-1]
    # The row number makes every base text unique even where the random words coincide.
    texts = [f"{i} " + " ".join(chunk) for i, chunk in enumerate(np.split(words, cuts))]
    labels = np.where(rng.random(n_unique) < 0.13, "spam", "ham").astype(object)
    base = pd.DataFrame({"text": texts, "label": labels})
    parts = [base]
    picked = base.sample(extra["duplicate"], random_state=seed)
    parts.append(picked)
    flipped = base.sample(extra["conflicting"], random_state=seed + 1)
    parts.append(flipped.assign(label=np.where(flipped["label"] == "spam", "ham", "spam")))
    parts.append(pd.DataFrame({"text": [" "] * extra["blank_text"], "label": "ham"}))
    parts.append(base.sample(extra["missing_label"], random_state=seed + 2).assign(label=None))
    return pd.concat(parts, ignore_index=True).sample(frac=1, random_state=seed).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/skewtune_bench/large_input"))
    args = parser.parse_args()
    workdir = args.out / "repo"
    shutil.rmtree(workdir, ignore_errors=True)
    copy_project(workdir)
    source = workdir / "data/raw/large.csv"
    generate(args.rows, args.seed).to_csv(source, index=False)
    set_params(workdir, {"data": {"source": "data/raw/large.csv", "text_column": "text", "label_column": "label"}})
    print(
        f"machine: {machine()}; 1-min load {loadavg():.2f}\n{source}: {args.rows} rows, {source.stat().st_size / 2**20:.0f} MiB",
        flush=True,
    )
    results = {}
    for name, strategy in (("ingest", None), ("split", None), ("resample", "none"), ("resample", "random_over")):
        label = name if strategy is None else f"{name} ({strategy})"
        if strategy is not None:
            set_params(workdir, {"resample": {"strategy": strategy}})
        results[label] = run_stage(name, workdir, args.out / "log.txt")
        print(
            f"{label}: {results[label]['wall_s']:.1f} s, peak RSS {results[label]['peak_rss_mib']:.0f} MiB", flush=True
        )
    ingest = json.loads((workdir / "reports/ingest.json").read_text())
    print(f"ingest kept {ingest['rows_kept']} of {ingest['rows_in']}; dropped {ingest['dropped']}")
    results["ingest_report"] = {k: ingest[k] for k in ("rows_in", "rows_kept", "dropped", "conflicts", "duplicates")}
    (args.out / "large_input.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
