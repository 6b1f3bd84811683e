"""The code passes ruff (ruff.toml: pyflakes, pycodestyle, import order) and is laid out as `ruff format` lays it out."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the venv's ruff (pinned by the test extra), which `make setup` installs beside this interpreter
RUFF = Path(sys.executable).with_name("ruff")


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command):
    assert RUFF.is_file(), f"{RUFF}: not installed; run make setup (pip install -e '.[test]')"
    result = subprocess.run(
        [str(RUFF), *command, "skewtune", "stages", "bench", "tests"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
