"""Image rows: listing a folder-per-class tree or a table of image paths under data/raw/, checking every image once
at ingest (skewtune.data.image_files) and assembling the image dataset.

An image that cannot be used is a counted drop under data.max_dropped_share, as a row without text is; the modes
converted to RGB are counted per mode in the report. Duplicates and conflicting labels are found on the hash of the
converted pixels (and the size), so the same picture saved twice, under another name or with other compression
settings, is one image. The dataset keeps each image's file bytes (`image_bytes`), so that the stages after ingest read
only their declared inputs, never data/raw/. How a model reads these rows is skewtune.models.image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from skewtune.core.columns import BYTES_COLUMN, HASH_COLUMN, IMAGE_COLUMN
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import counted
from skewtune.data.cleaning import clean_labels, normalise_text, whole_numbers
from skewtune.data.corrections import apply_corrections
from skewtune.data.dataset import DATA_DEFAULTS, class_balance, kept_labels
from skewtune.data.drops import (
    DROP_EXAMPLES,
    check_conflict_share,
    check_missing_share,
    conflict_counts,
    conflict_examples,
    conflict_lines,
    drop_counts,
    drop_reasons,
    reported_reasons,
)
from skewtune.data.image_files import EXTENSIONS, IMAGE_PROBLEMS, MODE, inspect_image
from skewtune.data.settings import DATA_PARAMS
from skewtune.data.tables import Table, inside, link_target, read_table, resolve_raw_path

DROP_REASONS = (
    *IMAGE_PROBLEMS,
    "missing_label",
    "conflicting_label",
    "outvoted_label",
    "duplicate",
    "also_in_test_file",
)


# ------------------------------------------------------------------------------------------ reading


def _tree(directory: Path, key: str, raw_dir: str | os.PathLike, image_column: str, label_column: str) -> Table:
    """A folder-per-class tree: each subfolder of `directory` is a class, every image file below it an example."""
    loose = sorted(p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    if loose:
        raise SkewtuneError(
            f"{key}: {directory} holds files directly ({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''}); a folder-per-class "
            f"tree keeps every image in a subfolder named after its class ({directory}/<class>/<image>), so move them into one"
        )
    classes = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels, others = [], [], []
    for folder in classes:
        entries = sorted(
            p for p in folder.rglob("*") if not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        # rglob does not descend into a linked folder: its images would be neither read nor counted.
        linked = next((p for p in entries if p.is_symlink() and p.is_dir()), None)
        if linked is not None:
            raise SkewtuneError(
                f"{key}: {linked} is a symbolic link to the folder {os.path.realpath(linked)}, which the walk of the tree "
                "does not follow, so its images would not be read: put the folder itself (or its images) in its place"
            )
        for path in (p for p in entries if p.is_file()):
            if not inside(path, raw_dir):
                raise SkewtuneError(
                    f"{key}: {path} leads outside {raw_dir}/{link_target(path)}; DVC tracks {raw_dir}/ as the pipeline's "
                    "input and nothing elsewhere is read: copy the file there in place of the link"
                )
            if path.suffix.lower() in EXTENSIONS:
                files.append(os.path.relpath(path, raw_dir))
                labels.append(folder.name)
            else:
                others.append(os.path.relpath(path, raw_dir))
    if not files:
        raise SkewtuneError(
            f"{key}: {directory} has no image files ({', '.join(EXTENSIONS)}) in class subfolders "
            f"({', '.join(p.name for p in classes[:5]) or 'none found'}); expected {directory}/<class>/<image>"
        )
    frame = pd.DataFrame({image_column: files, label_column: labels}, index=pd.RangeIndex(1, len(files) + 1))
    reading = {
        "format": "folder",
        "class_folders": len(classes),
        "other_files": len(others),
        "other_file_examples": others[:DROP_EXAMPLES],
    }
    return Table(frame, np.arange(1, len(files) + 1), "image", reading)


def raw_input(value: str, key: str, raw_dir: str | os.PathLike, *, folders: bool = True) -> Path:
    """`value` (the params key `key`): a folder (with `folders`) or a file inside `raw_dir`, which DVC tracks."""
    path = Path(value)
    if not (folders and path.is_dir()):
        return resolve_raw_path(value, key, raw_dir)
    if not inside(value, raw_dir):
        raise SkewtuneError(
            f"{key}: {value!r} is outside {raw_dir}/{link_target(value)}; DVC tracks {raw_dir}/ as the pipeline's "
            "input, so move the folder there"
        )
    return path


def read_images_source(
    source: str,
    key: str,
    *,
    image_column: str,
    label_column: str,
    raw_dir: str | os.PathLike,
    fmt: str = "auto",
    encoding: str = "utf-8",
    sheet: str | None = None,
    quoting: str = "auto",
) -> Table:
    """data.source (or data.test_path) of images: a folder-per-class directory or a table of image paths under `raw_dir`."""
    path = raw_input(source, key, raw_dir)
    if path.is_dir():
        return _tree(path, key, raw_dir, image_column, label_column)
    return read_table(
        path,
        [image_column, label_column],
        fmt=fmt,
        encoding=encoding,
        sheet=sheet,
        quoting=quoting,
        settings=DATA_PARAMS.reading("image_column", "label_column"),
    )


# ------------------------------------------------------------------------------------------ images


def _checked_path(cell, name: str, table: Table, position: int, raw_dir: str | os.PathLike) -> Path | None:
    """The file a table cell names, relative to `raw_dir`; None for an empty cell. A path leading out of
    `raw_dir` stops ingest: DVC would not track that file, and a table must not reach for files elsewhere."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)) or not str(cell).strip():
        return None
    cell = str(cell).strip()
    full = os.path.join(raw_dir, cell)
    if os.path.isabs(cell) or not inside(full, raw_dir):
        raise SkewtuneError(
            f"{name}: {table.place(position)}: the image path {cell!r} leads outside {raw_dir}/{link_target(full)}; "
            "image paths are relative to "
            f"{raw_dir}/, which DVC tracks as the pipeline's input: copy the image there and write its path relative to {raw_dir}/"
        )
    return Path(full)


def _inspect_table(
    name: str, table: Table, image_column: str, raw_dir: str | os.PathLike, max_pixels: int
) -> pd.DataFrame:
    rows = []
    for position, cell in enumerate(table.frame[image_column].tolist()):
        path = _checked_path(cell, name, table, position, raw_dir)
        rows.append(
            inspect_image(path, max_pixels)
            if path is not None
            else {"problem": "missing_image", "detail": "no path in the cell"}
        )
    return pd.DataFrame(rows, columns=["problem", "detail", "bytes", "hash", "mode", "width", "height"])


# ------------------------------------------------------------------------------------------ dataset


def _standardise(
    name: str,
    table: Table,
    columns: dict[str, str],
    prefix: str,
    subset: str,
    raw_dir: str | os.PathLike,
    max_pixels: int,
) -> pd.DataFrame:
    inspected = _inspect_table(name, table, columns["image"], raw_dir, max_pixels)
    raw_label = normalise_text(table.frame[columns["label"]])
    return pd.DataFrame(
        {
            "id": prefix + pd.Series(table.frame.index, dtype="int64").astype("str"),
            IMAGE_COLUMN: table.frame[columns["image"]].astype("str").str.strip().array,
            "label": whole_numbers(raw_label).array,
            "subset": subset,
            "raw_label": raw_label.array,
            **{column: inspected[column].array for column in inspected.columns},
        }
    )


def _summary(values: pd.Series) -> dict:
    return {"min": int(values.min()), "median": float(values.median()), "max": int(values.max())} if len(values) else {}


def _image_report(frame: pd.DataFrame, kept: pd.DataFrame) -> dict:
    """Sizes and modes of the readable images, and how many were converted to RGB from which mode."""
    readable = frame[frame["mode"].notna()]
    modes = readable["mode"].value_counts()
    sizes = (
        readable["width"].astype(int).astype(str) + "x" + readable["height"].astype(int).astype(str)
    ).value_counts()
    return {
        "modes": {mode: int(n) for mode, n in modes.items()},
        "converted_to_rgb": {mode: int(n) for mode, n in kept["mode"].value_counts().items() if mode != MODE},
        "alpha_dropped": int(kept["mode"].isin(["LA", "La", "PA", "RGBA", "RGBa"]).sum()),
        "width": _summary(kept["width"]),
        "height": _summary(kept["height"]),
        "distinct_sizes": int(len(sizes)),
        "most_common_sizes": {size: int(n) for size, n in sizes.head(5).items()},
    }


def _file_report(
    name: str,
    table: Table,
    frame: pd.DataFrame,
    reason: np.ndarray,
    reasons: list[str],
    labels: list[str],
    conflicts: str,
    max_conflict_share: float,
) -> dict:
    dropped = pd.Series(reason).value_counts()
    kept = frame[reason == None]  # noqa: E711

    def examples(key: str) -> list[dict]:
        rows = np.flatnonzero(reason == key)[:DROP_EXAMPLES]
        return [
            {
                "at": table.place(i),
                "image": frame[IMAGE_COLUMN].iloc[i],
                "label": frame["raw_label"].iloc[i],
                **({"why": frame["detail"].iloc[i]} if isinstance(frame["detail"].iloc[i], str) else {}),
            }
            for i in rows
        ]

    return {
        **drop_counts(name, table, reason, reasons),
        "drop_examples": {key: examples(key) for key in reasons if dropped.get(key, 0)},
        "images": _image_report(frame, kept),
        **conflict_counts(frame, reason, [HASH_COLUMN], conflicts, max_conflict_share),
        **class_balance(kept["label"], labels),
    }


def assemble_images(
    pool: Table,
    test: Table | None,
    *,
    image_column: str,
    label_column: str,
    label_map: dict[str, str],
    pool_name: str,
    test_name: str | None = None,
    max_dropped_share: float = 0.01,
    conflicts: str = DATA_DEFAULTS.conflicts,
    max_conflict_share: float = DATA_DEFAULTS.max_conflict_share,
    raw_dir: str | os.PathLike = "data/raw",
    max_image_pixels: int = DATA_DEFAULTS.max_image_pixels,
    corrections: tuple[str, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, list[str], dict]:
    """The image dataset (id, image, label, subset, hash, image_bytes), its sorted labels and a report, from the
    data file or tree (`pool`) and an optional fixed test one; the drops and `corrections` as in
    skewtune.data.dataset.assemble_dataset, with the image problems in place of missing texts and the content hash as
    the key."""
    columns = {"image": image_column, "label": label_column}
    parts = [_standardise(pool_name, pool, columns, "r", "pool", raw_dir, max_image_pixels)]
    if test is not None:
        parts.append(_standardise(test_name, test, columns, "t", "test", raw_dir, max_image_pixels))
    frame = pd.concat(parts, ignore_index=True)
    label_notes = clean_labels(frame, label_map, pool_name + (f" or {test_name}" if test is not None else ""))
    problem = frame["problem"].to_numpy()
    # A row without a usable image has no hash: a unique stand-in keeps it out of the duplicate checks.
    frame[HASH_COLUMN] = frame[HASH_COLUMN].where(frame[HASH_COLUMN].notna(), "unusable:" + frame["id"])
    corrected = (
        apply_corrections(frame, corrections[1], IMAGE_COLUMN, [HASH_COLUMN], corrections[0]) if corrections else None
    )
    unusable = [(problem == name, name) for name in IMAGE_PROBLEMS]
    reason = drop_reasons(frame, [HASH_COLUMN], unusable, conflicts)
    is_test = (frame["subset"] == "test").to_numpy()
    cause = (
        "image files that are missing, damaged, larger than data.max_image_pixels or in a pixel format without an 8-bit RGB "
        "version (see `why` in the report); or the wrong column or image folder"
    )
    per_file = [(pool_name, pool, ~is_test)] + ([(test_name, test, is_test)] if test is not None else [])
    for name, table, rows in per_file:
        check_missing_share(
            name,
            table,
            frame[rows],
            reason[rows],
            columns,
            max_dropped_share,
            reasons=(*IMAGE_PROBLEMS, "missing_label"),
            lacking="a usable image or a label",
            cause=cause,
        )
    check_conflict_share(
        [(name, rows) for name, _, rows in per_file],
        frame,
        reason,
        [HASH_COLUMN],
        unusable,
        conflicts,
        max_conflict_share,
        shown=[IMAGE_COLUMN],
        noun="images",
    )
    reasons = reported_reasons(DROP_REASONS, conflicts=conflicts, has_test=test is not None)
    kept = frame[reason == None].reset_index(drop=True)  # noqa: E711
    labels = kept_labels(
        kept,
        pool_name,
        test_name,
        has_test=test is not None,
        lacking="a usable image or a label",
        columns=f"column {image_column!r}" if pool.reading.get("format") != "folder" else "class folders",
        fix="check data.source and data.image_column",
        one_class=(
            "in its class folders; a classifier needs at least 2: add a folder per class"
            if pool.reading.get("format") == "folder"
            else f"in column {label_column!r}; a classifier needs at least 2: check data.label_column"
        )
        + (" and data.label_map" if label_map else ""),
    )
    conflict_settings = (conflicts, max_conflict_share)
    report = _file_report(pool_name, pool, frame[~is_test], reason[~is_test], reasons, labels, *conflict_settings)
    examples = conflict_examples(frame, reason, [HASH_COLUMN], [IMAGE_COLUMN])
    paths = frame.set_index("id")[IMAGE_COLUMN]
    report["conflict_examples"] = [{**example, "images": [paths[i] for i in example["ids"]]} for example in examples]
    report.update(label_notes)
    if corrected is not None:
        report["corrections"] = corrected
    if test is not None:
        report["test"] = _file_report(
            test_name,
            test,
            frame[is_test],
            reason[is_test],
            [r for r in reasons if r != "also_in_test_file"],
            labels,
            *conflict_settings,
        )
    dataset = (
        kept[["id", IMAGE_COLUMN, "label", "subset", HASH_COLUMN]]
        .astype("str")
        .assign(**{BYTES_COLUMN: kept["bytes"].array})
    )
    return dataset, labels, report


def summary_lines(report: dict) -> list[str]:
    """The printed account of one image source: what was read, kept, dropped and converted."""
    dropped = ", ".join(f"{n} {reason}" for reason, n in report["dropped"].items() if n) or "none"
    reading, images = report["reading"], report["images"]
    how = (
        "a folder-per-class tree"
        if reading["format"] == "folder"
        else f"a {reading['format'].upper()} table of image paths"
    )
    lines = [
        f"ingest: {report['source']}: read {how}; kept {report['rows_kept']} of {counted(report['rows_in'], 'image')}; dropped: {dropped}",
        *conflict_lines(report, "images"),
    ]
    if reading.get("other_files"):
        lines.append(
            f"ingest: {report['source']}: {counted(reading['other_files'], 'file')} without an image extension not read "
            f"(e.g. {', '.join(reading['other_file_examples'])})"
        )
    if images["converted_to_rgb"]:
        lines.append(
            f"ingest: {report['source']}: converted to RGB: "
            + ", ".join(f"{n} {mode}" for mode, n in images["converted_to_rgb"].items())
            + (f" ({images['alpha_dropped']} lost an alpha channel)" if images["alpha_dropped"] else "")
        )
    if images["width"]:
        lines.append(
            f"ingest: {report['source']}: {images['distinct_sizes']} distinct sizes; width "
            f"{images['width']['min']}-{images['width']['max']}, "
            f"height {images['height']['min']}-{images['height']['max']}"
        )
    return lines
