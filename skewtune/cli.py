"""The `skewtune` console script (installed by pyproject.toml's [project.scripts]).

skewtune --version
skewtune compare REV_A REV_B [--rule chosen|argmax|model] [--resamples N] [--seed S] [--confidence C]
skewtune compare --seeds [--confidence C]
skewtune predict INPUT -o OUTPUT [--model models/classifier] [--text-column C] [--text-pair-column C2]
                 [--image-column C] [--image-root DIR] [--batch-size N] [--overwrite] [--device D]
                 [--format F] [--encoding E] [--sheet S]
skewtune relabel export [--out DIR]
skewtune relabel import FILE
"""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

from skewtune.core.errors import SkewtuneError
from skewtune.core.formats import FORMATS
from skewtune.core.outputs import Outputs, counted, json_text
from skewtune.core.paths import CLASSIFIER, DATASET, ERRORS, LABELS, RAW_DIR, RELABEL_EXPORT_DIR, TEST_PREDICTIONS_CSV
from skewtune.core.stage import run_stage
from skewtune.data.settings import Settings
from skewtune.evaluation.compare_runs import RULE_COLUMNS, seed_groups, two_runs
from skewtune.evaluation.revisions import WORKSPACE, dvc_experiments, experiment_runs

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
    top = argparse.ArgumentParser(
        prog="skewtune",
        description="Apply a classifier trained by the skewtune pipeline, and compare the pipeline's runs.",
    )
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
    add_compare(commands)
    add_relabel(commands)
    return top


def add_relabel(commands) -> None:
    relabel = commands.add_parser(
        "relabel",
        help="the relabelling round trip: the queue out to Label Studio or a spreadsheet, the corrections back",
        description=f"export: write the queue ({ERRORS}: val mistakes and suspected label errors; scored rows are left "
        "out) as a Label Studio import file with the suggested label as a pre-annotation, the labeling config to paste "
        "into the project, and a CSV with an empty 'corrected' column. import: read Label Studio's JSON (or JSON-MIN) "
        "export, or that CSV filled in, and merge the corrections into data.corrections (a later correction of a row "
        "replaces an earlier one); the next `dvc repro` re-runs ingest with them and everything after it.",
    )
    actions = relabel.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write the queue for Label Studio and for spreadsheets")
    export.add_argument("--out", default=RELABEL_EXPORT_DIR, help=f"folder to write to (default: {RELABEL_EXPORT_DIR})")
    imported = actions.add_parser("import", help="merge corrections into data.corrections")
    imported.add_argument("file", metavar="FILE", help="Label Studio's JSON export (.json) or the filled CSV (.csv)")


def add_compare(commands) -> None:
    compare = commands.add_parser(
        "compare",
        help="compare two runs, or experiments over seeds, as Markdown for a pull request",
        description="Two runs (REV_A REV_B): pair their test predictions "
        f"({TEST_PREDICTIONS_CSV}) row by row: macro-F1 of each and its paired-bootstrap difference with CI and "
        "p-value, the decision each applied with its model alone's macro-F1, the candidates a guard refused, F1 per "
        "class and the params that differ. --seeds: group the experiments of the current commit (dvc exp show) by "
        "their effective configuration minus the seed keys: mean ± sd per group, and each group against the first, "
        "seed by seed. Prints Markdown on stdout.",
    )
    compare.add_argument(
        "revs",
        nargs="*",
        metavar="REV",
        help=f"two runs: A (baseline) and B (candidate): a git revision, a DVC experiment name, or {WORKSPACE!r}",
    )
    compare.add_argument(
        "--seeds",
        action="store_true",
        help="instead of two runs: group this commit's experiments by their effective configuration minus the seed keys",
    )
    compare.add_argument(
        "--rule",
        choices=tuple(RULE_COLUMNS),
        default="chosen",
        help="predictions to compare: those of the decision each run chose on val (default), argmax of what it decides "
        "on, or the model alone (argmax, no blend)",
    )
    compare.add_argument(
        "--resamples", type=int, default=10_000, help="paired bootstrap resamples of the test rows (default: 10000)"
    )
    compare.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap (default: 0)")
    compare.add_argument("--confidence", type=float, default=0.95, help="level of the intervals (default: 0.95)")


def compare(args: argparse.Namespace) -> None:
    if args.resamples < 100 or not 0.5 < args.confidence < 1:
        raise SkewtuneError("--resamples must be at least 100 and --confidence within (0.5, 1)")
    if args.seeds:
        if args.revs:
            raise SkewtuneError("--seeds reads the experiments of the current commit; give no revisions with it")
        print(seed_groups(experiment_runs(dvc_experiments()), args.confidence), end="")
        return
    if len(args.revs) != 2:
        raise SkewtuneError(f"give two revisions (A B), or --seeds; got {len(args.revs)}")
    bootstrap = {"resamples": args.resamples, "seed": args.seed, "confidence": args.confidence}
    print(two_runs(*args.revs, args.rule, **bootstrap), end="")


def predict(args: argparse.Namespace) -> None:
    # Imported here: it loads torch and transformers, which take seconds and which compare does not use.
    from skewtune.apply import score_file

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


EXPORT_FILES = {"tasks": "label_studio_tasks.json", "config": "label_studio_config.xml", "table": "relabel.csv"}


def relabel(args: argparse.Namespace) -> None:
    import pandas as pd

    from skewtune.artifacts import read_frame, read_labels
    from skewtune.evaluation.annotation import answers_line, export_queue, read_answers

    labels = read_labels(LABELS)
    dataset = read_frame(DATASET, "ingest")
    if args.action == "export":
        try:
            queue = pd.read_csv(ERRORS, dtype=str, keep_default_na=False)
        except FileNotFoundError:
            raise SkewtuneError(f"{ERRORS}: not found; run the pipeline first (dvc repro)") from None
        done = export_queue(queue, dataset, labels)
        out_dir = Path(args.out)
        with Outputs() as out:
            out.text(out_dir / EXPORT_FILES["tasks"], json_text(done.tasks))
            out.text(out_dir / EXPORT_FILES["config"], done.config)
            out.csv(out_dir / EXPORT_FILES["table"], done.table)
        left = ", ".join(f"{n} {why}" for why, n in done.left_out.items() if n)
        print(
            f"relabel export: {counted(len(done.tasks), 'row')} of {ERRORS} -> {out_dir}/: {EXPORT_FILES['tasks']} (import "
            f"into Label Studio, with {EXPORT_FILES['config']} as the labeling config), {EXPORT_FILES['table']} (fill "
            "the 'corrected' column)" + (f"; left out: {left}" if left else "")
        )
        return
    from skewtune.config.load import load_params
    from skewtune.data.corrections import merge_corrections, read_corrections
    from skewtune.data.tables import inside

    target = load_params().data.corrections
    if target is None or not inside(target, RAW_DIR):
        raise SkewtuneError(
            f"data.corrections is {target!r} in params.yaml; set it to a file under {RAW_DIR}/ (DVC tracks it as "
            "ingest's input) to import corrections"
        )
    corrections, counts = read_answers(args.file, dataset, labels)
    print(answers_line(args.file, counts))
    if corrections.empty:
        print(f"relabel import: nothing to write; {target} unchanged")
        return
    merged, replaced = merge_corrections(read_corrections(target, "text"), corrections)
    with Outputs() as out:
        out.csv(target, merged)
    print(
        f"relabel import: {target}: {counted(len(corrections), 'correction')} written ({replaced} replaced an earlier "
        f"one), {len(merged)} in all; `dvc repro` applies them (ingest and every stage after it re-run)"
    )


COMMANDS = {"compare": compare, "predict": predict, "relabel": relabel}


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    run_stage(args.command, lambda: COMMANDS[args.command](args))
