"""Stage score: predict data.score_path (an unlabelled file under data/raw/) with models/classifier, as
`skewtune predict` does, into data/predictions/score.parquet; unset, it writes a table without rows or
columns at once (skewtune.artifacts.write_no_table)."""

from dataclasses import replace

from skewtune.apply import score_file
from skewtune.artifacts import write_no_table
from skewtune.config.load import load_params
from skewtune.core.outputs import Outputs
from skewtune.core.paths import CLASSIFIER, RAW_DIR, SCORED
from skewtune.core.stage import run_stage
from skewtune.data.images import raw_input
from skewtune.data.settings import DATA_PARAMS
from skewtune.models.modality import MODALITIES


def main() -> None:
    p = load_params()
    data = p.data
    if data.score_path is None:
        with Outputs() as out:
            write_no_table(out, SCORED)
        print("score: data.score_path is not set; nothing to score")
        return
    columns = MODALITIES[data.modality].raw_columns(data)
    summary = score_file(
        raw_input(data.score_path, "data.score_path", RAW_DIR, folders="image" in columns),
        SCORED,
        model=CLASSIFIER,
        text_column=columns.get("text"),
        pair_column=columns.get("text_pair"),
        image_column=columns.get("image"),
        image_root=RAW_DIR,
        batch_size=p.train.eval_batch_size,
        overwrite=True,
        device=p.train.device,
        precision=p.train.precision,
        fmt=data.format,
        encoding=data.encoding,
        sheet=data.sheet,
        settings=replace(
            DATA_PARAMS, quoting=None
        ),  # the quoting of a scored file is decided per file, as predict decides it
    )
    print("score: " + summary.line(SCORED).removeprefix("predict: "))


if __name__ == "__main__":
    run_stage("score", main)
