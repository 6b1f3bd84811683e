"""dvc.yaml's code deps of each stage are exactly the project modules its `python -m stages.X` runs.

A module the stage runs but does not list would not re-run it when changed (a stale result that DVC calls
up to date); one it lists but does not run re-runs it for nothing. `python tests/stage_deps.py` fixes dvc.yaml.
"""

import pytest
from stage_deps import stage_code


@pytest.mark.slow  # parses the import closure of every stage: about 2 s
def test_every_stage_lists_exactly_the_project_modules_it_runs():
    wrong = {
        name: {"missing": sorted(runs - listed), "not run": sorted(listed - runs)}
        for name, (listed, runs) in stage_code().items()
        if listed != runs
    }
    assert wrong == {}, "dvc.yaml's code deps differ from the imports; `python tests/stage_deps.py` rewrites them"
