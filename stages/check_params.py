"""Stage check_params: validate all of params.yaml (types, ranges, unknown keys) and warn about settings
that the chosen options do not read."""

import sys

from skewtune.cli import run_stage
from skewtune.params import load_params, unused_settings


def main() -> None:
    params = load_params()
    print("params.yaml: valid")
    for line in unused_settings(params):
        print(f"params.yaml: warning: {line}", file=sys.stderr)


if __name__ == "__main__":
    run_stage("check_params", main)
