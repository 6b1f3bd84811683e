"""Runs as git and DVC keep them, for `skewtune compare`: a file at a git revision, a DVC experiment or the
workspace, and the experiments `dvc exp show` lists."""

from __future__ import annotations

import json
import subprocess

import yaml

from skewtune.config.effective import effective_params
from skewtune.config.load import validate_params
from skewtune.core.errors import SkewtuneError
from skewtune.core.paths import DECISION, PARAMS_FILE, TEST_METRICS

WORKSPACE = "workspace"  # the revision that names the files on disk


def _git(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SkewtuneError("git is not installed; skewtune compare reads revisions with git") from None


def resolve(rev: str) -> str:
    """A git object name for `rev`: itself if git knows it, else the experiment ref of that name."""
    if _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode == 0:
        return rev
    listing = _git("for-each-ref", "--format=%(refname)", "refs/exps")
    if listing.returncode != 0:
        raise SkewtuneError(f"git: {listing.stderr.strip()}; run skewtune compare inside the project's git repository")
    refs = [r for r in listing.stdout.split() if r.rsplit("/", 1)[-1] == rev]
    if len(refs) == 1:
        return refs[0]
    if refs:
        raise SkewtuneError(f"{rev!r} names several experiments ({', '.join(refs)}); pass one of these refs instead")
    known = sorted({r.rsplit("/", 1)[-1] for r in listing.stdout.split()} - {"stash"})
    raise SkewtuneError(
        f"{rev!r} is neither a git revision nor a DVC experiment"
        + (f" (experiments: {', '.join(known)})" if known else " (no experiments under refs/exps)")
        + f"; use a commit, branch, tag, experiment name or {WORKSPACE!r}"
    )


def file_at(rev: str, path: str, producer: str) -> str:
    """The text of `path` at `rev` (WORKSPACE: on disk); `producer` is the stage that writes it."""
    if rev == WORKSPACE:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            raise SkewtuneError(
                f"{WORKSPACE}: {path} not found; run the {producer} stage (dvc repro {producer})"
            ) from None
    shown = _git("show", f"{resolve(rev)}:{path}")
    if shown.returncode != 0:
        raise SkewtuneError(
            f"{rev}: has no {path} ({shown.stderr.strip()}); was {producer} run and its outputs committed there?"
        )
    return shown.stdout


def decision_at(rev: str) -> dict | None:
    """reports/threshold/decision.json at `rev`, or None where that revision has none (or an unreadable one)."""
    try:
        decision = json.loads(file_at(rev, DECISION, "tune_threshold"))
    except (SkewtuneError, json.JSONDecodeError):
        return None
    return decision if isinstance(decision, dict) else None


def flat(tree: dict, prefix: str = "") -> dict:
    """{dotted key: value} of a nested mapping (params.yaml)."""
    out = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def params_at(rev: str) -> dict:
    """params.yaml at `rev`, flat."""
    return flat(yaml.safe_load(file_at(rev, PARAMS_FILE, "check_params")))


def dvc_experiments() -> list:
    """`dvc exp show --json` run in the current directory: the commits and experiments of the current commit."""
    try:
        shown = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SkewtuneError(
            "dvc is not installed; skewtune compare --seeds reads experiments with dvc exp show"
        ) from None
    if shown.returncode != 0:
        raise SkewtuneError(f"dvc exp show failed: {shown.stderr.strip()[:300]}")
    return json.loads(shown.stdout or "[]")


def experiment_runs(shown: list) -> list[dict]:
    """Runs of `dvc exp show --json` with a test macro-F1: {name, timestamp, params (flat), effective (effective_params),
    test, val}. The baseline commit counts as a run; the workspace does not (it is the baseline or an unfinished change)."""
    runs = []

    def add(entry: dict, name: str) -> None:
        data = entry.get("data") or {}
        metrics = ((data.get("metrics") or {}).get(TEST_METRICS) or {}).get("data") or {}
        params = ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data")
        if isinstance(metrics.get("f1_macro"), (int, float)) and params is not None and not entry.get("error"):
            runs.append(
                {
                    "name": name,
                    "timestamp": data.get("timestamp") or "",
                    "params": flat(params),
                    "effective": effective_params(validate_params(params, f"experiment {name}: {PARAMS_FILE}")),
                    "test": float(metrics["f1_macro"]),
                    "val": metrics.get("val_f1_macro"),
                }
            )

    for commit in shown:
        if commit.get("rev") == WORKSPACE:
            continue
        add(commit, commit.get("name") or str(commit.get("rev"))[:7])
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                add(rev, rev.get("name") or experiment.get("name") or str(rev.get("rev"))[:7])
    return runs
