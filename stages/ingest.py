"""Stage ingest: read data.source (and the optional fixed test file), clean, de-duplicate and label-check
the rows (texts, or images: see skewtune.data.images), and write the dataset every later stage starts from."""

from skewtune.config.load import load_params
from skewtune.core.outputs import Outputs
from skewtune.core.paths import DATASET, INGEST_REPORT, LABELS, RAW_DIR
from skewtune.core.stage import run_stage
from skewtune.data.cleaning import label_lines
from skewtune.models.modality import MODALITIES


def main() -> None:
    data = load_params().data
    modality = MODALITIES[data.modality]
    dataset, labels, report = modality.ingest(data, RAW_DIR)
    with Outputs() as out:
        out.parquet(DATASET, dataset)
        out.json(LABELS, {"labels": labels})
        out.json(INGEST_REPORT, report)
    for line in (
        modality.summary(report) + (modality.summary(report["test"]) if "test" in report else []) + label_lines(report)
    ):
        print(line)
    print(f"ingest: classes {report['class_counts']}")


if __name__ == "__main__":
    run_stage("ingest", main)
