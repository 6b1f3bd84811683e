"""Applying a packaged classifier (models/classifier) to an unlabelled table: `skewtune predict` and the
score stage.

The input is read by ingest's readers (same formats, same errors) and its texts normalised as ingest
normalised the training texts; for an image classifier it is a table of image paths (relative to
`image_root`, by default the table's folder) or a folder of images. The output holds the input's
columns, then `predicted` (the label under the classifier's decision rule), `prob:<label>` per class
(calibrated, and blended with the TF-IDF baseline's when the rule blends, as they were when the rule was chosen:
DecisionRule.combine) and `margin` (the distance to the decision boundary on the same scale, see
DecisionRule.margin: small = uncertain).
Rows without text (or without the second text of a pair), or without a usable image, get an empty
prediction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from skewtune.artifacts import write_frame
from skewtune.config.schema import DEFAULT_MAX_IMAGE_PIXELS
from skewtune.core.columns import BYTES_COLUMN, prob_columns
from skewtune.core.errors import SkewtuneError
from skewtune.core.formats import output_format
from skewtune.core.outputs import Outputs, counted
from skewtune.core.paths import BASELINE_FILE, RULE_FILE
from skewtune.data.image_files import EXTENSIONS, inspect_image
from skewtune.data.settings import DATA_PARAMS, Settings
from skewtune.data.tables import inside, link_target, read_table
from skewtune.decision.rule import DecisionRule
from skewtune.model_dir import ModelMeta, read_classifier_files
from skewtune.models.baseline import baseline_proba, load_baseline
from skewtune.models.devices import amp_dtype, resolve_device, resolve_precision
from skewtune.models.inference import progress_printer
from skewtune.models.modality import IMAGE, for_meta

PREDICTED = "predicted"
MARGIN = "margin"


@dataclass(frozen=True)
class Summary:
    rows: int
    without_text: int  # rows without the input: a text, or a usable image
    counts: dict[str, int]
    lacking: str = "text"

    def line(self, output: str | os.PathLike) -> str:
        classes = ", ".join(f"{label} {n}" for label, n in self.counts.items())
        return f"predict: {counted(self.rows, 'row')} -> {output} ({classes})" + (
            f"; {counted(self.without_text, 'row')} without {self.lacking} got no prediction"
            if self.without_text
            else ""
        )


def check_output(output: str | os.PathLike, input_path: str | os.PathLike, overwrite: bool) -> str:
    """The output format; refuses an unknown extension, a directory, the input itself and, without `overwrite`, an
    existing file. `overwrite` replaces only a regular file: never a directory (a partitioned parquet dataset) or the input."""
    fmt = output_format(output)
    path = Path(output)
    if path.is_dir():
        raise SkewtuneError(
            f"{output}: is a directory; OUTPUT is one file, which --overwrite never puts in place of a directory: choose a file path"
        )
    if os.path.realpath(output) == os.path.realpath(input_path):
        raise SkewtuneError(f"{output}: is the input {input_path}; write the predictions to another file")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise SkewtuneError(
                f"{output}: already exists; pass --overwrite to replace it, or choose another output path"
            )
        if not path.is_file():
            raise SkewtuneError(
                f"{output}: is not a regular file; --overwrite replaces only a regular file: choose another output path"
            )
    return fmt


def text_columns(
    meta: ModelMeta, text_column: str | None, pair_column: str | None, model: str | os.PathLike, settings: Settings
) -> tuple[str, str | None]:
    """The input columns to read: the given ones, else those the classifier was trained on."""
    trained = meta.prepared_as()
    text_column = text_column or trained.text_column
    if meta.text_pair:
        pair_column = pair_column or trained.text_pair_column
        if not pair_column:
            raise SkewtuneError(
                f"{model}: classifies sentence pairs; name the column of the second text with {settings.text_pair_column}"
            )
    elif pair_column:
        raise SkewtuneError(
            f"{model}: classifies single texts, not pairs; drop {settings.text_pair_column} {pair_column}"
        )
    return text_column, pair_column


def read_input(
    path: str | os.PathLike,
    columns: list[str],
    settings: Settings,
    *,
    fmt: str = "auto",
    encoding: str = "utf-8",
    sheet: str | None = None,
) -> pd.DataFrame:
    """Every column of the input table (ingest's reader), checked for the input `columns`, which `settings` name."""
    try:
        frame = read_table(
            path, columns, fmt=fmt, encoding=encoding, sheet=sheet, other_columns=True, settings=settings
        ).frame
    except OSError as exc:  # permissions, a directory, a vanished file: the readers report format errors themselves
        raise SkewtuneError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    clash = [name for name in (PREDICTED, MARGIN) if name in frame.columns] + [
        c for c in frame.columns if str(c).startswith("prob:")
    ]
    if clash:
        raise SkewtuneError(
            f"{path}: already has the output column(s) {', '.join(map(repr, clash))}; rename or drop them (is it an earlier output?)"
        )
    return frame.reset_index(drop=True)


def prediction_columns(probs: np.ndarray, has_text: np.ndarray, rule: DecisionRule) -> pd.DataFrame:
    """predicted, prob:<label> per class and margin for every input row; empty / NaN where there is no text."""
    n = len(has_text)
    full = np.full((n, len(rule.labels)), np.nan)
    full[has_text] = probs
    predicted = np.full(n, "", dtype=object)
    margin = np.full(n, np.nan)
    if has_text.any():
        predicted[has_text] = np.asarray(rule.labels, dtype=object)[rule.predict(probs)]
        margin[has_text] = rule.margin(probs)
    return pd.DataFrame({PREDICTED: predicted, **dict(zip(prob_columns(rule.labels), full.T)), MARGIN: margin})


def image_path_column(
    meta: ModelMeta, column: str | None, text_columns: list[str | None], model: str | os.PathLike, settings: Settings
) -> str:
    """The input column of image paths: the given one, else the one the classifier was trained on."""
    given = [name for name in text_columns if name]
    if given:
        raise SkewtuneError(
            f"{model}: classifies images, not texts; name the column of image paths with {settings.image_column} "
            f"instead of {given[0]!r}"
        )
    return column or meta.prepared_as().image_column


def list_image_folder(folder: Path, column: str) -> pd.DataFrame:
    """Every image file below `folder` (sorted), as a table of paths relative to it."""
    found = sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
    )
    if not found:
        raise SkewtuneError(f"{folder}: holds no image files ({', '.join(EXTENSIONS)})")
    return pd.DataFrame({column: found})


def image_rows(
    paths: pd.Series,
    root: Path,
    where: str,
    settings: Settings = DATA_PARAMS,
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> pd.DataFrame:
    """image_bytes of each path (relative to `root`) and why a row has none (missing, unreadable, oversized, unsupported)."""
    rows = []
    for i, cell in enumerate(paths.tolist()):
        if cell is None or (isinstance(cell, float) and np.isnan(cell)) or not str(cell).strip():
            rows.append({"problem": "missing_image"})
            continue
        full = root / str(cell).strip()
        if os.path.isabs(str(cell).strip()) or not inside(full, root):
            raise SkewtuneError(
                f"{where}: row {i + 1}: the image path {cell!r} leads outside {root}/{link_target(full)}; write paths relative to it"
                + (f" ({settings.image_root} sets it)" if settings.image_root else "")
            )
        rows.append(inspect_image(full, max_pixels))
    return pd.DataFrame(rows, columns=["problem", "bytes"]).rename(columns={"bytes": BYTES_COLUMN})


def score_file(
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    model: str | os.PathLike,
    text_column: str | None = None,
    pair_column: str | None = None,
    batch_size: int = 64,
    overwrite: bool = False,
    device: str = "auto",
    precision: str = "auto",
    fmt: str = "auto",
    encoding: str = "utf-8",
    sheet: str | None = None,
    image_column: str | None = None,
    image_root: str | os.PathLike | None = None,
    settings: Settings,
) -> Summary:
    """Predict every row of `input_path` with the classifier in `model`; write `output` atomically. For an image
    classifier, `image_column` names the column of image paths (relative to `image_root`; default: the table's
    folder), and `input_path` may be a folder of images. Errors name the `settings` the caller set these with."""
    if batch_size < 1:
        raise SkewtuneError(f"--batch-size is {batch_size}; use a positive number of rows, e.g. 64")
    out_fmt = check_output(output, input_path, overwrite)
    meta, rule = read_classifier_files(model)
    modality = for_meta(meta)
    if modality is IMAGE:
        column = image_path_column(meta, image_column, [text_column, pair_column], model, settings)
        folder = Path(input_path).is_dir()
        frame = (
            list_image_folder(Path(input_path), column)
            if folder
            else read_input(
                input_path, [column], settings.reading("image_column"), fmt=fmt, encoding=encoding, sheet=sheet
            )
        )
        root = Path(image_root) if image_root else Path(input_path) if folder else Path(input_path).parent
        rows = image_rows(
            frame[column], root, str(input_path), settings, max_pixels=meta.prepared_as().max_image_pixels
        )
        has_text, lacking = rows["problem"].isna().to_numpy(), "a usable image"
    else:
        text_column, pair_column = text_columns(meta, text_column, pair_column, model, settings)
        read = settings.reading("text_column", *(["text_pair_column"] if pair_column else []))
        frame = read_input(
            input_path,
            [text_column, *([pair_column] if pair_column else [])],
            read,
            fmt=fmt,
            encoding=encoding,
            sheet=sheet,
        )
        prepared = meta.prepared_as()  # as ingest prepared the training texts
        rows = pd.DataFrame({"text": prepared.normalise(frame[text_column])})
        if pair_column:
            rows["text_pair"] = prepared.normalise(frame[pair_column])
        has_text, lacking = rows.notna().all(axis=1).to_numpy(), "text"
    probs = np.empty((0, len(rule.labels)))
    if has_text.any():
        device = resolve_device(device, settings.device)
        classifier, processor, _ = modality.load_trained(model)
        probs = modality.predict_proba(
            classifier,
            processor,
            rows[has_text],
            meta,
            batch_size=batch_size,
            device=device,
            amp_dtype=amp_dtype(resolve_precision(precision, device)),
            progress=progress_printer(int(has_text.sum())),
        )
        baseline_probs = None
        if rule.blend:  # the classifier's rule decides on the model's probabilities blended with its baseline's
            baseline = load_baseline(Path(model) / BASELINE_FILE)
            if baseline is None:
                raise SkewtuneError(
                    f"{model}: {RULE_FILE} blends in the baseline, but {BASELINE_FILE} holds no fitted baseline; re-run the package stage"
                )
            baseline_probs = baseline_proba(baseline, rows[has_text], len(rule.labels))
        probs = rule.combine(probs, baseline_probs)  # each source calibrated as when the rule was chosen
    result = pd.concat([frame, prediction_columns(probs, has_text, rule)], axis=1)
    with Outputs() as out:
        write_frame(result, out.path(output), out_fmt, rounded=[*prob_columns(rule.labels), MARGIN])
    counts = result.loc[has_text, PREDICTED].value_counts()
    return Summary(
        len(frame), int((~has_text).sum()), {label: int(counts.get(label, 0)) for label in rule.labels}, lacking
    )
