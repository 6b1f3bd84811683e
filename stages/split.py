"""Stage split: stratified train/val/test split of the ingested dataset (a fixed test file stays the test split)."""

from skewtune.artifacts import read_frame, read_labels
from skewtune.config.load import load_params
from skewtune.core.outputs import Outputs
from skewtune.core.paths import DATASET, SPLIT_REPORT, split_path
from skewtune.core.stage import run_stage
from skewtune.data.splitting import split_dataset, split_report


def main() -> None:
    params = load_params().split
    labels = read_labels()
    splits = split_dataset(
        read_frame(DATASET, "ingest"),
        labels,
        val_size=params.val_size,
        test_size=params.test_size,
        seed=params.seed,
        source=DATASET,
    )
    report = split_report(splits, labels)
    with Outputs() as out:
        for name, frame in splits.items():
            out.parquet(split_path(name), frame)
        out.json(SPLIT_REPORT, report)
    print("split: " + ", ".join(f"{name} {part['rows']} {part['class_counts']}" for name, part in report.items()))


if __name__ == "__main__":
    run_stage("split", main)
