"""How a model reads image rows: the default model's input size from the train images, the rows' file bytes decoded
to RGB and through the image processor a batch at once (ImageRows, ImageCollator, pixel_values), and the augment.*
changes of training batches."""

from __future__ import annotations

import io
import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from skewtune.core.columns import BYTES_COLUMN
from skewtune.data.image_files import to_rgb

# The default model's input side is the median train image side clamped to this range: below 32 pixels the
# ResNet stem and stages (five halvings) leave no spatial extent; above 128 a from-scratch CPU run gets slow.
DEFAULT_SIDES = (32, 128)


def decode(data: bytes):
    """The RGB PIL image of a file's bytes (ingest has checked that it decodes)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's notes on palette transparency and on EXIF
        return to_rgb(Image.open(io.BytesIO(data)))


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
