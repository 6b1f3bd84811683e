"""Stage resample: random over-/under-sampling of the train split only (val and test are never touched)."""

from skewtune.artifacts import read_frame, read_labels
from skewtune.config.load import load_params
from skewtune.core.outputs import Outputs
from skewtune.core.paths import RESAMPLE_REPORT, RESAMPLED, split_path
from skewtune.core.stage import run_stage
from skewtune.data.resampling import resample_by, resample_report


def main() -> None:
    params = load_params().resample
    labels = read_labels()
    train = read_frame(split_path("train"), "split")
    resampled = resample_by(train, params)
    report = resample_report(train, resampled, labels, params.strategy)
    with Outputs() as out:
        out.parquet(RESAMPLED, resampled)
        out.json(RESAMPLE_REPORT, report)
    print(f"resample ({params.strategy}): {report['before']} -> {report['after']}")
    if "synthetic" in report:
        print(f"resample: {report['synthetic']}")


if __name__ == "__main__":
    run_stage("resample", main)
