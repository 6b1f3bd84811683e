"""Stage ingest: read data.source (and the optional fixed test file), apply the hand corrections of data.corrections,
clean, de-duplicate and label-check the rows (texts, or images: see skewtune.data.images), and write the dataset every
later stage starts from, with where each text row starts in its file and whether a correction decided its label
(data/interim/places.parquet)."""

from skewtune.artifacts import write_no_table
from skewtune.config.load import load_params
from skewtune.core.outputs import Outputs
from skewtune.core.paths import DATASET, INGEST_REPORT, LABELS, PLACES, RAW_DIR
from skewtune.core.stage import run_stage
from skewtune.data.cleaning import label_lines
from skewtune.data.corrections import correction_lines
from skewtune.models.modality import MODALITIES


def main() -> None:
    data = load_params().data
    modality = MODALITIES[data.modality]
    dataset, labels, report = modality.ingest(data, RAW_DIR)
    reviewed = dataset.pop("reviewed") if "reviewed" in dataset else False
    places = (
        dataset.pop("place").to_frame().assign(id=dataset["id"], reviewed=reviewed)[["id", "place", "reviewed"]]
        if "place" in dataset
        else None
    )
    with Outputs() as out:
        out.parquet(DATASET, dataset)
        if places is None:
            write_no_table(out, PLACES)
        else:
            out.parquet(PLACES, places)
        out.json(LABELS, {"labels": labels})
        out.json(INGEST_REPORT, report)
    for line in (
        modality.summary(report)
        + (modality.summary(report["test"]) if "test" in report else [])
        + label_lines(report)
        + correction_lines(report.get("corrections"))
    ):
        print(line)
    print(f"ingest: classes {report['class_counts']}")


if __name__ == "__main__":
    run_stage("ingest", main)
