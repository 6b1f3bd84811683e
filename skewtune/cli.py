"""The `skewtune` console script (installed by pyproject.toml's [project.scripts]).

skewtune --version
skewtune predict INPUT -o OUTPUT [--model models/classifier] [--text-column C] [--text-pair-column C2]
                 [--image-column C] [--image-root DIR] [--batch-size N] [--overwrite] [--device D]
                 [--format F] [--encoding E] [--sheet S]
"""

from __future__ import annotations

import argparse
from importlib.metadata import version

from skewtune.apply import score_file
from skewtune.core.formats import FORMATS
from skewtune.core.paths import CLASSIFIER
from skewtune.core.stage import run_stage
from skewtune.data.settings import Settings

# What a message about the input or device asks the user to change: predict's flags (it reads no label column,
# and decides the CSV quoting per file).
PREDICT_FLAGS = Settings(
    text_column="--text-column",
    text_pair_column="--text-pair-column",
    label_column=None,
    image_column="--image-column",
    format="--format",
    encoding="--encoding",
    sheet="--sheet",
    quoting=None,
    device="--device",
    image_root="--image-root",
)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="skewtune", description="Apply a classifier trained by the skewtune pipeline.")
    top.add_argument("--version", action="version", version=f"skewtune {version('skewtune')}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict",
        help="predict the label of every row of a table",
        description="Predict every row of INPUT with a packaged classifier (`dvc repro package` writes models/classifier) and "
        "write the input's columns, predicted, prob:<label> per class and margin to OUTPUT. predicted is the class "
        "under the classifier's decision rule: under a threshold or per-class offsets it need not be the highest "
        "prob:<label>. margin is a probability gap in [0, 1], small = uncertain: |p(positive) - threshold| under a "
        "threshold, else the gap between the two highest probabilities (under offsets, of the probabilities with the "
        "offsets applied: p x e^offset, renormalised).",
    )
    predict.add_argument(
        "input",
        metavar="INPUT",
        help="a table ingest reads: .csv .tsv .jsonl .json .xlsx .parquet; "
        "for an image classifier also a folder of images",
    )
    predict.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT", help="where to write: .csv, .jsonl or .parquet"
    )
    predict.add_argument("--model", default=CLASSIFIER, help=f"classifier directory (default: {CLASSIFIER})")
    predict.add_argument("--text-column", help="column of the text (default: the one the classifier was trained on)")
    predict.add_argument("--text-pair-column", help="column of the second text, for a classifier of sentence pairs")
    predict.add_argument(
        "--image-column", help="image classifier: column of image paths (default: the one it was trained on)"
    )
    predict.add_argument(
        "--image-root", help="image classifier: the folder image paths are relative to (default: INPUT's folder)"
    )
    predict.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (default: 64)")
    predict.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    predict.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the model runs: cuda (a GPU), cpu, or auto: cuda when a GPU is visible (default: auto)",
    )
    predict.add_argument(
        "--format", choices=("auto", *FORMATS), default="auto", help="INPUT format (default: from the extension)"
    )
    predict.add_argument(
        "--encoding", default="utf-8", help="text encoding of a CSV/TSV/JSON(L) INPUT (default: utf-8)"
    )
    predict.add_argument("--sheet", help="XLSX sheet (default: the first)")
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    def predict() -> None:
        summary = score_file(
            args.input,
            args.output,
            model=args.model,
            text_column=args.text_column,
            pair_column=args.text_pair_column,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            device=args.device,
            fmt=args.format,
            encoding=args.encoding,
            sheet=args.sheet,
            image_column=args.image_column,
            image_root=args.image_root,
            settings=PREDICT_FLAGS,
        )
        print(summary.line(args.output))

    run_stage(args.command, predict)
