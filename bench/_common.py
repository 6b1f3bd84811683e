"""Shared helpers of the benchmark scripts: a throw-away working directory holding a snapshot of the
project's code and a params.yaml with overrides, and running a stage in it with wall time and peak RSS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# Elsewhere (a GPU machine without ../shared), SKEWTUNE_BENCH_SMS names the file.
SMS_TSV = Path(
    os.environ.get("SKEWTUNE_BENCH_SMS") or REPO / ".." / "shared" / "data" / "sms_spam_collection.tsv"
).resolve()
# The SMS Spam Collection as a data.source: a file under data/raw/ with header `Label<TAB>SMS`.
SMS_DATA = {"source": "data/raw/sms_spam_collection.tsv", "text_column": "SMS", "label_column": "Label"}
# "train_fold <f>": the fold stages of train.cv (dvc.yaml's foreach), each run with its fold number; without them
# tune_threshold would decide on val whatever train.cv says.
PIPELINE = (
    "ingest",
    "split",
    "resample",
    "train",
    *(f"train_fold {fold}" for fold in range(5)),
    "baseline",
    "predict",
    "tune_threshold",
    "evaluate",
)

# The test suite's helpers for copying the project and editing its params.yaml serve here too.
sys.path.insert(0, str(REPO / "tests"))
from dvc_repo import copy_project, env, set_params  # noqa: E402,F401


def parse_overrides(items: list[str]) -> dict:
    """`section.key=value` strings (value in YAML) as set_params overrides, e.g. train.max_steps=2."""
    overrides: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, rest = key.partition(".")
        if not (sep and dot and rest):
            raise SystemExit(f"--set {item!r}: expected section.key=value, e.g. train.max_steps=2")
        overrides.setdefault(section, {})[rest] = yaml.safe_load(value)
    return overrides


def place_raw(source: Path, target: Path) -> None:
    """`source` at `target` under a run's data/raw/: a hard link (no copy) where the filesystem allows, else a copy.
    Not a symbolic link: ingest refuses a link that resolves outside data/raw/."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copyfile(source, target)


def link_sms(workdir: Path) -> None:
    """data/raw/sms_spam_collection.tsv: the shared file, hard-linked (place_raw)."""
    place_raw(SMS_TSV, workdir / SMS_DATA["source"])


def run_measured(args: list[str], cwd: Path, log: Path | None = None) -> dict:
    """Run a command; its wall time and peak RSS in MiB, from GNU time's %M.

    Not from wait4's ru_maxrss: Linux carries the RSS high-water mark of the forking process over
    the exec, so a child of this (possibly large) Python process would report at least its size.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as measured:
        out = open(log, "a", encoding="utf-8") if log else subprocess.DEVNULL
        try:
            start = time.perf_counter()
            rc = subprocess.run(
                ["/usr/bin/time", "-f", "%M", "-o", measured.name, *args],
                cwd=cwd,
                env=env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            ).returncode
            wall = time.perf_counter() - start
        finally:
            if log:
                out.close()
        peak_kib = int(measured.read().split()[-1])
    return {"wall_s": wall, "peak_rss_mib": peak_kib / 1024, "rc": rc}


def run_stage(name: str, workdir: Path, log: Path | None = None) -> dict:
    """`python -m stages.<name>` in `workdir` (`name` may carry arguments: "train_fold 2"); raises when it fails (the log
    says why)."""
    result = run_measured([sys.executable, "-m", *f"stages.{name}".split()], workdir, log)
    if result["rc"] != 0:
        raise RuntimeError(f"stage {name} failed in {workdir} (exit {result['rc']}); see {log}")
    return result


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine() -> str:
    """CPU model, cores, memory and the torch version: the line BENCHMARKS.md records."""
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem = (
        int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
        / 2**20
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.1f} GiB, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
