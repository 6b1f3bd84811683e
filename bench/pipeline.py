"""`dvc repro` on the default params: full, no-op, one threshold key, loss.gamma; peak RSS per stage.

    .venv/bin/python bench/pipeline.py [--out /tmp/skewtune_bench/pipeline]

The project's files (tracked plus untracked-not-ignored, as git would carry them) are copied into a
fresh git repository under --out and committed; the real `dvc` CLI of this venv runs there with the
venv first on PATH and HF_HUB_OFFLINE=1. Each step prints its wall time and the stages DVC ran.

Peak RSS per stage: ahead of the venv on PATH sits a `python` that execs the venv's python under GNU
time (`time -f %M`), so each stage command of dvc.yaml (`python -m stages.<name>`) reports its
maximum resident set size; dvc itself runs from the venv directly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import copy_project, env, loadavg, machine, parse_overrides, set_params  # noqa: E402

STEPS = (
    ("full dvc repro (empty cache)", None),
    ("no-op dvc repro", None),
    ("threshold.metric f1_macro -> balanced_accuracy", {"threshold": {"metric": "balanced_accuracy"}}),
    ("loss.gamma 2.0 -> 1.0 (loss.name stays ce)", {"loss": {"gamma": 1.0}}),
)


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", *args],
        cwd=repo,
        env={
            **env(),
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@localhost",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@localhost",
        },
        check=True,
        capture_output=True,
    )


def measuring_python(bin_dir: Path, log: Path) -> None:
    """A `python` that runs the venv's python under GNU time, appending "command|seconds|peak KiB" to `log`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/time -a -o "{log}" -f "%C|%e|%M" "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)


def repro(repo: Path, bin_dir: Path) -> tuple[float, list[str], str]:
    dvc = str(Path(sys.executable).parent / "dvc")
    run_env = env()
    run_env["PATH"] = f"{bin_dir}{os.pathsep}{run_env['PATH']}"
    start = time.perf_counter()
    proc = subprocess.run([dvc, "repro"], cwd=repo, env=run_env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    ran = [line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage '")]
    return wall, ran, proc.stdout + proc.stderr


def stage_usage(log: Path) -> dict[str, dict]:
    """{stage: {"wall_s", "peak_rss_mib"}} from the wrapper's lines (`python -m stages.<name>|s|KiB`)."""
    usage = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        command, seconds, kib = line.rsplit("|", 2)
        if "stages." in command:
            usage[command.split("stages.")[1].split()[0]] = {"wall_s": float(seconds), "peak_rss_mib": int(kib) / 1024}
    return usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/skewtune_bench/pipeline"))
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="params.yaml overrides (default: none)"
    )
    args = parser.parse_args()
    repo = args.out / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    copy_project(repo)
    set_params(repo, parse_overrides(args.set))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bench")
    print(f"machine: {machine()}; 1-min load {loadavg():.2f}", flush=True)
    bin_dir, time_log = args.out / "bin", args.out / "stage_time.log"
    measuring_python(bin_dir, time_log)
    results = []
    for name, overrides in STEPS:
        if overrides:
            set_params(repo, overrides)
        time_log.unlink(missing_ok=True)
        wall, ran, log = repro(repo, bin_dir)
        (args.out / f"step{len(results)}.log").write_text(log)
        stages = stage_usage(time_log)
        results.append({"step": name, "wall_s": wall, "stages_run": ran, "stages": stages})
        print(f"{name}: {wall:.1f} s; ran {', '.join(ran) or 'nothing'}", flush=True)
        for stage, use in stages.items():
            print(f"    {stage}: {use['wall_s']:.1f} s, peak RSS {use['peak_rss_mib']:.0f} MiB", flush=True)
    (args.out / "pipeline.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
