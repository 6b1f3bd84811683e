"""The committed dvc.lock must describe the committed code and params (the review baseline)."""

import json

import pytest
from dvc_repo import REPO, dvc

pytestmark = pytest.mark.slow  # the real dvc CLI


def stale_deps(status: dict) -> dict:
    """Deps whose content differs from dvc.lock. A 'deleted' file dep is an output of an earlier
    stage that a fresh clone (no DVC cache) simply lacks; params report a dict of changed keys."""
    stale = {}
    for stage, entries in status.items():
        for entry in entries:
            if entry == "changed command" or (isinstance(entry, dict) and "changed command" in entry):
                stale[stage] = "changed command"
            if isinstance(entry, dict):
                changed = {dep: how for dep, how in entry.get("changed deps", {}).items() if how != "deleted"}
                if changed:
                    stale[stage] = changed
    return stale


def test_committed_lock_is_current_for_code_and_params():
    assert (REPO / "dvc.lock").exists(), "dvc.lock is missing: run `dvc repro` and commit dvc.lock and metrics/"
    status = json.loads(dvc(["status", "--json"], REPO).stdout or "{}")
    stale = stale_deps(status)
    assert not stale, f"dvc.lock is stale; run `dvc repro` and commit dvc.lock and metrics/: {stale}"


def test_rendered_plots_are_git_ignored():
    """`dvc plots show` writes dvc_plots/index.html into the repo: a rendering, never something to commit."""
    import subprocess

    assert subprocess.run(["git", "check-ignore", "-q", "dvc_plots/index.html"], cwd=REPO).returncode == 0
