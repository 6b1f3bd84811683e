"""Stage check_params: validate all of params.yaml (types, ranges, unknown keys), warn about settings that the
chosen options do not read, and write each stage's effective configuration (reports/effective/<stage>.json):
the values of the keys it reads (skewtune.params.STAGE_KEYS), less those without effect. Stages depend on
these files, so a change that has no effect (loss.gamma with loss.name: ce) re-runs nothing."""

import sys

from skewtune.artifacts import effective_path
from skewtune.cli import run_stage
from skewtune.io import Outputs
from skewtune.params import STAGE_KEYS, check_stage_keys, effective_config, load_params, unused_settings


def main() -> None:
    params = load_params()
    check_stage_keys()
    print("params.yaml: valid")
    for line in unused_settings(params):
        print(f"params.yaml: warning: {line}", file=sys.stderr)
    with Outputs() as out:
        for stage, keys in STAGE_KEYS.items():
            out.json(effective_path(stage), effective_config(params, keys))


if __name__ == "__main__":
    run_stage("check_params", main)
