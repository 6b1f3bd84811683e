"""A non-editable install (`pip install .`) ships every subpackage: a stage runs from it, outside the checkout."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_of_the_project_runs_a_stage(tmp_path):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    source = tmp_path / "source"  # a clean copy: a build inside the checkout would reuse (and leave) its build/
    shutil.copytree(REPO / "skewtune", source / "skewtune", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    # --no-build-isolation: the venv's setuptools builds the wheel, so the test needs no index
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "wheel", source], check=True)
    wheel = next((tmp_path / "wheel").glob("skewtune-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", tmp_path / "site", wheel], check=True)
    project = tmp_path / "project"  # the stages and params of the checkout, without its skewtune/
    shutil.copytree(REPO / "stages", project / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", project)
    env = {"PYTHONPATH": str(tmp_path / "site"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    where = subprocess.run(
        [sys.executable, "-c", "import skewtune.train.recipe as m; print(m.__file__)"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(tmp_path / "site")), where.stdout + where.stderr
    stage = subprocess.run(
        [sys.executable, "-m", "stages.check_params"], cwd=project, env=env, capture_output=True, text=True
    )
    assert stage.returncode == 0, stage.stdout + stage.stderr
    written = sorted(p.name for p in (project / "reports/effective").iterdir())
    assert "train.json" in written and "tune_threshold.json" in written
