"""The README's main command on a fresh clone from a plain shell: the real Makefile target and dvc.yaml commands.

The shell's `python` here is any interpreter without the project's packages (a stand-in that fails when run), so
a stage that DVC starts with the shell's `python` instead of the venv's fails the test on any machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from dvc_repo import make_repo, ran_stages, run, set_params
from test_pipeline_dvc import tiny_params

pytestmark = pytest.mark.slow
VENV = Path(sys.executable).parent.parent


def plain_shell_env(tmp_path: Path) -> dict[str, str]:
    """A new user's shell: no virtualenv on PATH or in VIRTUAL_ENV, and a `python` that lacks the packages."""
    shell_bin = tmp_path / "shell-bin"
    shell_bin.mkdir()
    for name in ("python", "python3"):
        fake = shell_bin / name
        fake.write_text("#!/bin/sh\necho \"the shell's $0: not the project's Python\" >&2\nexit 1\n")
        fake.chmod(0o755)
    venv_bin = str(VENV / "bin")
    path = [
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != Path(venv_bin).resolve()
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    return {**env, "PATH": os.pathsep.join([str(shell_bin), *path])}


def make_repro(clone: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`make repro` reusing this test run's venv (the `.installed` stamp is taken as up to date: no reinstall)."""
    return subprocess.run(
        ["make", "-o", f"{VENV}/.installed", "repro", f"VENV={VENV}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_make_repro_from_a_plain_shell_on_a_fresh_clone(tmp_path, tiny_bert_dir, sms_path):
    sample = pd.read_csv(sms_path, sep="\t", dtype=str, keep_default_na=False)
    raw = tmp_path / "sms.tsv"
    pd.concat([sample[sample.Label == "spam"].head(60), sample[sample.Label == "ham"].head(240)]).to_csv(
        raw, sep="\t", index=False
    )
    origin = make_repo(tmp_path / "origin", tiny_params(tiny_bert_dir), {"sms.tsv": raw})
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    env = plain_shell_env(tmp_path)
    assert (
        subprocess.run(["python", "-c", "pass"], env=env, capture_output=True).returncode == 1
    )  # the stand-in is what PATH finds

    done = make_repro(clone, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {"check_params", "ingest", "train", "evaluate", "package"} <= ran_stages(done.stdout)
    metrics = json.loads((clone / "metrics/test.json").read_text())
    assert 0 <= metrics["f1_macro"] <= 1

    # A stage that fails (a column the file does not have) leaves every git-tracked file in place.
    run(["git", "add", "-A"], clone)
    run(["git", "commit", "-q", "-m", "first run"], clone)
    tracked = run(["git", "ls-files"], clone).stdout.split()
    committed_report = (clone / "reports/ingest.json").read_text()
    set_params(clone, {"data": {"text_column": "Message"}})
    failed = make_repro(clone, env)
    assert failed.returncode != 0
    assert "column" in failed.stderr and "Message" in failed.stderr, failed.stderr[-3000:]
    assert "Traceback" not in failed.stderr
    assert [f for f in tracked if not (clone / f).exists()] == []
    assert (clone / "reports/ingest.json").read_text() == committed_report
    deleted = [
        line for line in run(["git", "status", "--porcelain"], clone).stdout.splitlines() if line[:2].strip() == "D"
    ]
    assert deleted == []
