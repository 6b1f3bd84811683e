"""Stage split: stratified train/val/test split of the ingested dataset (a fixed test file stays the test split)."""

from skewtune.cli import run_stage
from skewtune.io import Outputs, read_labels, read_table
from skewtune.params import load_params
from skewtune.splitting import split_dataset, split_report

DATASET = "data/interim/dataset.parquet"
LABELS = "data/interim/labels.json"
SPLIT_DIR = "data/split"
METRICS = "metrics/split.json"


def main() -> None:
    params = load_params().split
    labels = read_labels(LABELS)
    splits = split_dataset(read_table(DATASET, "ingest"), labels, val_size=params.val_size, test_size=params.test_size,
                           seed=params.seed, source=DATASET)
    report = split_report(splits, labels)
    with Outputs() as out:
        for name, frame in splits.items():
            out.parquet(f"{SPLIT_DIR}/{name}.parquet", frame)
        out.json(METRICS, report)
    print("split: " + ", ".join(f"{name} {part['rows']} {part['class_counts']}" for name, part in report.items()))


if __name__ == "__main__":
    run_stage("split", main)
