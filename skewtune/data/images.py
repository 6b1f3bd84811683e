"""Image rows: listing a folder-per-class tree or a table of image paths under data/raw/, checking,
converting and hashing every image, and turning images into model inputs.

Every image is decoded once at ingest. One that cannot be used is a counted drop under
data.max_dropped_share, as a row without text is: a missing file (`missing_image`), a zero-size,
truncated or non-image file (`unreadable_image`), one of more pixels than data.max_image_pixels, told by
its header before any pixel is decoded (`oversized_image`: a 17 KB PNG can hold 12000 x 12000 pixels, 400 MB
decoded, and every batch would decode it again), or a pixel format without a faithful 8-bit RGB version
(`unsupported_mode`: 16-bit, 32-bit integer and float images). Every other mode (greyscale,
palette, RGBA, CMYK, ...) is converted to RGB, as Hugging Face image processors do, and counted per
mode in the report; an alpha channel is dropped. Duplicates and conflicting labels are found on a
hash of the converted pixels (and the size), so the same picture saved twice, under another name or
with other compression settings, is one image. The dataset keeps each image's file bytes (`image_bytes`), so
that the stages after ingest read only their declared inputs, never data/raw/.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from skewtune.core.columns import BYTES_COLUMN, HASH_COLUMN, IMAGE_COLUMN
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import counted
from skewtune.data.dataset import (
    DATA_DEFAULTS,
    DROP_EXAMPLES,
    check_conflict_share,
    check_missing_share,
    class_balance,
    clean_labels,
    conflict_counts,
    conflict_examples,
    conflict_lines,
    drop_counts,
    drop_reasons,
    kept_labels,
    normalise_text,
    reported_reasons,
    whole_numbers,
)
from skewtune.data.tables import DATA_PARAMS, Table, inside, link_target, read_table, resolve_raw_path

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MODE = "RGB"

# Modes that PIL converts to 8-bit RGB without losing the picture; others (I;16, I, F) are unsupported_mode.
CONVERTIBLE = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
IMAGE_PROBLEMS = ("missing_image", "unreadable_image", "oversized_image", "unsupported_mode")
DROP_REASONS = (
    *IMAGE_PROBLEMS,
    "missing_label",
    "conflicting_label",
    "outvoted_label",
    "duplicate",
    "also_in_test_file",
)

# The default model's input side is the median train image side clamped to this range: below 32 pixels the
# ResNet stem and stages (five halvings) leave no spatial extent; above 128 a from-scratch CPU run gets slow.
DEFAULT_SIDES = (32, 128)


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


def to_rgb(image):
    """`image` (PIL) as RGB; palette images with a transparent colour go through RGBA, as PIL advises."""
    if image.mode == MODE:
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert(MODE)


def decode(data: bytes):
    """The RGB PIL image of a file's bytes (ingest has checked that it decodes)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's notes on palette transparency and on EXIF
        return to_rgb(Image.open(io.BytesIO(data)))


def inspect_image(path: Path, max_pixels: int) -> dict:
    """What ingest needs of one image file: its bytes, size, mode and content hash, or why it cannot be used
    (`problem`: one of IMAGE_PROBLEMS, with `detail`). An image of more than `max_pixels` is refused from its header."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return {"problem": "missing_image", "detail": "no such file"}
    data = path.read_bytes()
    if not data:
        return {"problem": "unreadable_image", "detail": "the file is empty (0 bytes)"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))  # reads the header only
            if image.width * image.height > max_pixels:
                return {
                    "problem": "oversized_image",
                    "width": image.width,
                    "height": image.height,
                    "detail": f"{image.width}x{image.height} = {image.width * image.height:,} pixels, above the bound of {max_pixels:,}",
                }
            image.load()  # decodes every pixel: a truncated file fails here
    except Image.DecompressionBombError as exc:  # Pillow's own bound (twice its MAX_IMAGE_PIXELS), above any max_pixels
        return {"problem": "oversized_image", "detail": str(exc)[:200]}
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return {"problem": "unreadable_image", "detail": str(exc)[:200] or type(exc).__name__}
    if image.mode not in CONVERTIBLE:
        return {
            "problem": "unsupported_mode",
            "detail": f"mode {image.mode} (e.g. 16-bit or float pixels) has no faithful 8-bit RGB version",
            "mode": image.mode,
            "width": image.width,
            "height": image.height,
        }
    rgb = to_rgb(image)
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()
    return {
        "problem": None,
        "bytes": data,
        "hash": digest,
        "mode": image.mode,
        "width": image.width,
        "height": image.height,
    }


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
) -> tuple[pd.DataFrame, list[str], dict]:
    """The image dataset (id, image, label, subset, hash, image_bytes), its sorted labels and a report, from the
    data file or tree (`pool`) and an optional fixed test one; the drops as in skewtune.data.dataset.assemble_dataset,
    with the image problems in place of missing texts and the content hash as the key."""
    columns = {"image": image_column, "label": label_column}
    parts = [_standardise(pool_name, pool, columns, "r", "pool", raw_dir, max_image_pixels)]
    if test is not None:
        parts.append(_standardise(test_name, test, columns, "t", "test", raw_dir, max_image_pixels))
    frame = pd.concat(parts, ignore_index=True)
    label_notes = clean_labels(frame, label_map, pool_name + (f" or {test_name}" if test is not None else ""))
    problem = frame["problem"].to_numpy()
    # A row without a usable image has no hash: a unique stand-in keeps it out of the duplicate checks.
    frame[HASH_COLUMN] = frame[HASH_COLUMN].where(frame[HASH_COLUMN].notna(), "unusable:" + frame["id"])
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


# ------------------------------------------------------------------------------------ model inputs


def default_size(frame: pd.DataFrame) -> list[int]:
    """[height, width] for the default model: the median train image size, each side clamped to DEFAULT_SIDES."""
    from PIL import Image

    sizes = np.array(
        [Image.open(io.BytesIO(data)).size for data in frame[BYTES_COLUMN]]
    )  # (width, height); header only
    low, high = DEFAULT_SIDES
    return [int(np.clip(np.median(sizes[:, 1]), low, high)), int(np.clip(np.median(sizes[:, 0]), low, high))]


def pixel_values(processor, images: Sequence[bytes]):
    """The processor's model input for a batch of image files' bytes (converted to RGB first)."""
    return processor([decode(data) for data in images], return_tensors="pt")["pixel_values"]


class ImageRows:
    """A torch map-style dataset of image rows: the file's bytes and the class index; ImageCollator decodes a batch
    at once. The bytes go by the model input's name, pixel_values, which the Trainer's column filter keeps."""

    def __init__(self, frame: pd.DataFrame, *, with_labels: bool = True) -> None:
        self.images = frame[BYTES_COLUMN].tolist()
        self.labels = frame["label_id"].tolist() if with_labels else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.images[i], **({"labels": self.labels[i]} if self.labels is not None else {})}


class ImageCollator:
    """Batches of ImageRows as {"pixel_values", "labels"}: one processor call per batch."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        batch = {"pixel_values": pixel_values(self.processor, [row["pixel_values"] for row in rows])}
        if "labels" in rows[0]:
            batch["labels"] = torch.tensor([row["labels"] for row in rows], dtype=torch.long)
        return batch


def augmentation(settings, processor) -> Callable | None:
    """The augment.* changes as a function of a batch of processed pixel_values (train batches only; None when
    all are off). kornia works on [0, 1] images, so the processor's normalisation is undone around it; its
    random draws come from torch's generator, which the Trainer seeds with train.seed."""
    import kornia.augmentation as K
    import torch

    def steps(size: tuple[int, int]) -> list:
        return [
            *([K.RandomHorizontalFlip(p=settings.hflip)] if settings.hflip else []),
            *([K.RandomVerticalFlip(p=settings.vflip)] if settings.vflip else []),
            *([K.RandomRotation(degrees=settings.rotation, p=1.0)] if settings.rotation else []),
            # back to the batch's own size, so that the model sees what the processor makes
            *(
                [K.RandomResizedCrop(size=size, scale=(settings.crop_scale, 1.0), p=1.0)]
                if settings.crop_scale < 1
                else []
            ),
            *(
                [K.ColorJitter(brightness=settings.brightness, contrast=settings.contrast, p=1.0)]
                if settings.brightness or settings.contrast
                else []
            ),
        ]

    if not steps((1, 1)):
        return None
    normalised = bool(getattr(processor, "do_normalize", False))
    mean = torch.tensor(processor.image_mean if normalised else [0.0] * 3).view(1, -1, 1, 1)
    std = torch.tensor(processor.image_std if normalised else [1.0] * 3).view(1, -1, 1, 1)
    built: dict[tuple[int, int], K.AugmentationSequential] = {}

    def augment(pixels):
        size = tuple(pixels.shape[-2:])
        if size not in built:
            built[size] = K.AugmentationSequential(*steps(size))
        mean_, std_ = mean.to(pixels), std.to(pixels)
        images = built[size]((pixels * std_ + mean_).clamp(0, 1))
        return (images - mean_) / std_

    return augment
