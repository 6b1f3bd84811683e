"""Stage resample: random over-/under-sampling of the train split only (val and test are never touched)."""

from skewtune.cli import run_stage
from skewtune.io import Outputs, read_labels, read_table
from skewtune.params import load_params
from skewtune.resampling import resample_report, resample_rows

TRAIN = "data/split/train.parquet"
LABELS = "data/interim/labels.json"
RESAMPLED = "data/resampled/train.parquet"
METRICS = "metrics/resample.json"


def main() -> None:
    params = load_params().resample
    labels = read_labels(LABELS)
    train = read_table(TRAIN, "split")
    resampled = resample_rows(train, strategy=params.strategy, over_ratio=params.over_ratio,
                              under_ratio=params.under_ratio, seed=params.seed)
    report = resample_report(train, resampled, labels, params.strategy)
    with Outputs() as out:
        out.parquet(RESAMPLED, resampled)
        out.json(METRICS, report)
    print(f"resample ({params.strategy}): {report['before']} -> {report['after']}")


if __name__ == "__main__":
    run_stage("resample", main)
