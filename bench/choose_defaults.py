"""Apply the rule of BENCHMARKS.md sections 11 and 12 to finished bench/quality.py runs of several data sets: per data set,
each config's val and test macro-F1 over the seeds, its paired val difference to the defaults, its train stage
time, and whether a candidate replaces the defaults (val only; test is reported).

    .venv/bin/python bench/choose_defaults.py sms=/tmp/skewtune_bench/v3/sms birds=/tmp/skewtune_bench/v3/birds \
        --candidates ema fgm drw
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from quality import CONFIGS, mean_sd  # noqa: E402

DEFAULTS = "a"


def load_runs(out: Path) -> dict[tuple[str, int], dict]:
    """(config, seed) -> result.json of each finished run under `out`."""
    runs = {}
    for path in sorted(out.glob("*_seed*/result.json")):
        result = json.loads(path.read_text())
        runs[result["config"], result["seed"]] = result
    return runs


def paired(runs: dict, config: str, seeds: list[int]) -> list[float]:
    """Val macro-F1 of `config` minus that of the defaults, per seed where both finished (the same split)."""
    return [
        runs[config, s]["val_f1_macro"] - runs[DEFAULTS, s]["val_f1_macro"]
        for s in seeds
        if (config, s) in runs and (DEFAULTS, s) in runs
    ]


def table(name: str, runs: dict, configs: list[str], seeds: list[int]) -> str:
    lines = [
        f"**{name}** (seeds {', '.join(map(str, seeds))})",
        "",
        "| config | runs | val macro-F1 | val − defaults, per seed | test macro-F1 | test, argmax | train stage, s | collapsed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for config in configs:
        done = [runs[config, s] for s in seeds if (config, s) in runs]
        if not done:
            continue
        diffs = paired(runs, config, seeds) if config not in (DEFAULTS, "e") else []
        diff_text = f"{mean_sd(diffs)} ({', '.join(f'{d:+.4f}' for d in diffs)})" if diffs else "—"
        train = [r["stage_wall_s"]["train"] for r in done if "train" in r["stage_wall_s"]]
        collapsed = sum(bool(r.get("review", {}).get("collapsed")) for r in done)
        lines.append(
            f"| {config}) {CONFIGS[config][0]} | {len(done)} | {mean_sd([r['val_f1_macro'] for r in done])} | {diff_text} | "
            f"{mean_sd([r['test']['chosen']['f1_macro'] for r in done])} | {mean_sd([r['test']['argmax']['f1_macro'] for r in done])} | "
            f"{mean_sd(train, 0) if train else '—'} | {collapsed if 'review' in done[0] else '—'} |"
        )
    return "\n".join(lines)


def verdict(datasets: dict[str, dict], candidates: list[str], seeds: list[int]) -> str:
    """The rule: on every data set, a positive mean paired val difference larger than its sd, over all seeds."""
    lines, winners = [], {}
    for config in candidates:
        per_data = {name: paired(runs, config, seeds) for name, runs in datasets.items()}
        gains = {
            name: statistics.mean(d) > 0 and statistics.mean(d) > statistics.stdev(d)
            for name, d in per_data.items()
            if len(d) == len(seeds)
        }  # per data set with all seeds: does it pass?
        passes = len(gains) == len(per_data) and all(gains.values())
        # A candidate that fails on one complete data set cannot qualify, whatever the others would show (not run then).
        failed = [name for name, ok in gains.items() if not ok]
        state = (
            "qualifies"
            if passes
            else f"does not qualify (fails on {', '.join(failed)})"
            if failed
            else "incomplete: not all seeds finished"
        )
        detail = "; ".join(f"{name} {mean_sd(d)} over {len(d)} seed(s)" for name, d in per_data.items())
        lines.append(f"- {config}: {state} ({detail})")
        if passes:
            winners[config] = statistics.mean([x for d in per_data.values() for x in d])
    best = max(winners, key=winners.get) if winners else None
    lines.append(f"\ndefaults: {'replaced by ' + best if best else 'unchanged'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "datasets", nargs="+", metavar="NAME=DIR", help="a bench/quality.py --out directory per data set"
    )
    parser.add_argument("--candidates", nargs="+", choices=list(CONFIGS), default=["ema", "fgm", "drw"])
    parser.add_argument("--references", nargs="*", choices=list(CONFIGS), default=["b", "e"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    datasets = {}
    for item in args.datasets:
        name, sep, directory = item.partition("=")
        if not sep:
            raise SystemExit(f"{item!r}: expected NAME=DIR")
        datasets[name] = load_runs(Path(directory))
    configs = [DEFAULTS, *args.candidates, *args.references]
    for name, runs in datasets.items():
        print(table(name, runs, configs, args.seeds), end="\n\n")
    print(verdict(datasets, args.candidates, args.seeds))


if __name__ == "__main__":
    main()
