"""Stage check_params: validate all of params.yaml (types, ranges, unknown keys)."""

from skewtune.cli import run_stage
from skewtune.params import load_params


def main() -> None:
    load_params()
    print("params.yaml: valid")


if __name__ == "__main__":
    run_stage("check_params", main)
