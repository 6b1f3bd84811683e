"""Build a throw-away git + DVC repo holding this project's files, for driving the real `dvc` CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    """The environment for dvc and the stages it runs: this venv's `python` first on PATH, offline, and this
    checkout's code on PYTHONPATH, so that the venv's `skewtune` script runs it (the venv's editable install may
    point at another worktree; a stage in a project copy imports the copy's code, first on sys.path)."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check)


def project_files() -> list[str]:
    """Files git would carry: tracked plus untracked-not-ignored, minus the committed run results."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [
        f
        for f in out
        if f != "dvc.lock" and not f.startswith(("metrics/", "reports/", "bench/", "tests/")) and (REPO / f).exists()
    ]


def copy_project(dest: Path) -> Path:
    """A copy of the project's files (as in the working tree) in `dest`."""
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    return dest


def make_repo(dest: Path, params: dict, raw_files: dict[str, Path] | None = None) -> Path:
    """Copy the project into `dest`, override `params` (section -> {key: value}), add raw data, commit."""
    copy_project(dest)
    for name, source in (raw_files or {}).items():
        shutil.copy2(source, dest / "data" / "raw" / name)
    set_params(dest, params)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "init"], dest)
    return dest


def set_params(repo: Path, overrides: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        for key, value in values.items():
            node = params[section]
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def ran_stages(output: str) -> set[str]:
    """Stages that `dvc repro` / `dvc exp run` actually executed, from their log lines."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}
