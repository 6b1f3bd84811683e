"""Stage check_params: validate all of params.yaml (types, ranges, unknown keys), warn about settings that the
chosen options do not read, and write each stage's effective configuration (reports/effective/<stage>.json):
the values of the keys it reads (skewtune.config.effective.STAGE_KEYS), less those without effect. Stages depend on
these files, so a change that has no effect (loss.gamma with loss.name: ce) re-runs nothing."""

import sys

from skewtune.config.effective import STAGE_KEYS, check_stage_keys, effective_config, unused_settings
from skewtune.config.load import load_params
from skewtune.core.outputs import Outputs
from skewtune.core.paths import effective_path
from skewtune.core.stage import run_stage


def main() -> None:
    params = load_params()
    check_stage_keys()
    print("params.yaml: valid")
    for line in unused_settings(params):
        print(f"params.yaml: warning: {line}", file=sys.stderr)
    with Outputs() as out:
        for stage, keys in STAGE_KEYS.items():
            out.json(effective_path(stage), effective_config(params, keys, stage))


if __name__ == "__main__":
    run_stage("check_params", main)
