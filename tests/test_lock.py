"""The committed dvc.lock must describe the committed code and params (the review baseline)."""

import json

from dvc_repo import REPO, dvc


def test_committed_lock_is_current_for_code_and_params():
    assert (REPO / "dvc.lock").exists(), "dvc.lock is missing: run `dvc repro` and commit dvc.lock and metrics/"
    status = json.loads(dvc(["status", "--json"], REPO).stdout or "{}")
    stale = {
        stage: entry
        for stage, entries in status.items()
        for entry in entries
        if isinstance(entry, dict) and ("changed deps" in entry or "changed command" in entry)
    }
    stale.update({stage: "not in dvc.lock" for stage, entries in status.items() if entries == ["always changed"] or not entries})
    assert not stale, f"dvc.lock is stale; run `dvc repro` and commit dvc.lock and metrics/: {stale}"
