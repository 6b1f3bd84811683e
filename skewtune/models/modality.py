"""The modality seam: everything that differs between text rows and image rows, decided in one place.

A table between stages tells its modality by its columns (image rows have `image`, text rows `text`),
a model directory by skewtune.json's `modality`; the data stages (split, resample) and the back half
(decision, evaluation, the relabelling queue) then work on ids, labels and probabilities alone.
`for_rows` / `for_meta` give the modality object whose methods the ingest, train, predict and
package stages and `skewtune predict` call: how rows are read, which columns identify a row
how a model and its processor (tokenizer or image processor) are loaded,
trained, saved and applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd

from skewtune.config.schema import SENTENCE_METHODS
from skewtune.core import columns
from skewtune.core.errors import SkewtuneError
from skewtune.data import images
from skewtune.model_dir import ImagePreprocessing, ModelMeta, TextPreprocessing, read_model_meta, write_model_meta
from skewtune.models import image

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Prepared:
    """What the train stage needs from a modality: processor (tokenizer or image processor), model, datasets,
    collator (None: the Trainer's default), an optional batch augmentation, lines and metrics to report, and the
    mean size of a training row in tokens, by which train.batch_size auto sizes batches on a GPU (images: the
    16x16 patches of the input size, as a vision transformer would count them)."""

    processor: object
    model: object
    train_set: object
    val_set: object
    collator: object | None
    augment: Callable | None
    lines: list[str]
    metrics: dict[str, float]
    tokens_per_row: float


class TextModality:
    name = "text"
    pipeline_tag = "text-classification"
    by_length = True  # train.group_by_length applies: batches of similar length need less padding

    def ingest(self, data, raw_dir: str) -> tuple[pd.DataFrame, list[str], dict]:
        """(dataset, labels, report) of data.source and data.test_path (the `data` params)."""
        from skewtune.data.corrections import data_corrections
        from skewtune.data.dataset import assemble_dataset
        from skewtune.data.tables import read_source, read_table, resolve_raw_path

        columns = [data.text_column, *([data.text_pair_column] if data.text_pair_column else []), data.label_column]
        reading = {"fmt": data.format, "encoding": data.encoding, "sheet": data.sheet, "quoting": data.quoting}
        pool = read_source(data.source, columns, raw_dir=raw_dir, **reading)
        test = None
        if data.test_path:
            test = read_table(resolve_raw_path(data.test_path, "data.test_path", raw_dir), columns, **reading)
        return assemble_dataset(
            pool,
            test,
            text_column=data.text_column,
            pair_column=data.text_pair_column,
            label_column=data.label_column,
            label_map=dict(data.label_map),
            pool_name=data.source,
            test_name=data.test_path,
            max_dropped_share=data.max_dropped_share,
            conflicts=data.conflicts,
            max_conflict_share=data.max_conflict_share,
            unescape_html=data.unescape_html,
            corrections=data_corrections(data.corrections, "text", raw_dir),
        )

    def summary(self, report: dict) -> list[str]:
        from skewtune.data.dataset import summary_lines

        return summary_lines(report)

    def raw_columns(self, data) -> dict[str, str]:
        """{input column between stages: the column of a raw table that holds it} under the `data` params."""
        return {"text": data.text_column, **({"text_pair": data.text_pair_column} if data.text_pair_column else {})}

    def preprocessing(self, data) -> TextPreprocessing:
        """What a packaged classifier records of how training inputs were prepared (predict repeats it)."""
        return TextPreprocessing(
            unescape_html=data.unescape_html, text_column=data.text_column, text_pair_column=data.text_pair_column
        )

    def check(self, source: str, m, train: pd.DataFrame) -> str | None:
        """A warning about the train texts (SkewtuneError when the model cannot read them), once before training."""
        from skewtune.models.text import check_coverage, load_tokenizer, token_coverage

        tokenizer = load_tokenizer(source, trust_remote_code=m.trust_remote_code)
        return check_coverage(token_coverage(tokenizer, train, m.max_length), tokenizer, source)

    def prepare(
        self, source: str, m, train: pd.DataFrame, val: pd.DataFrame, labels: Sequence[str], augment=None
    ) -> Prepared:
        from transformers import DataCollatorWithPadding

        from skewtune.models.text import encode, load_classifier, load_tokenizer, token_coverage

        tokenizer = load_tokenizer(source, trust_remote_code=m.trust_remote_code)
        coverage = token_coverage(tokenizer, train, m.max_length)
        model = load_classifier(
            source,
            tokenizer,
            labels,
            max_length=m.max_length,
            trust_remote_code=m.trust_remote_code,
            hidden_dropout=m.hidden_dropout,
            classifier_dropout=m.classifier_dropout,
        )
        line = (
            f"train: tokens of {coverage['rows']} train texts: {coverage['unknown_share']:.1%} unknown; "
            f"{coverage['truncated_share']:.1%} of the texts are longer than model.max_length ({m.max_length}) and get cut off"
        )
        train_set = encode(tokenizer, train, m.max_length)
        return Prepared(
            tokenizer,
            model,
            train_set,
            encode(tokenizer, val, m.max_length),
            DataCollatorWithPadding(tokenizer),
            None,
            [line],
            {f"tokens/{name}": round(coverage[name], 6) for name in ("unknown_share", "truncated_share")},
            sum(len(row["input_ids"]) for row in train_set) / max(len(train_set), 1),
        )

    def save(self, model, processor, directory, *, labels: Sequence[str], m, train: pd.DataFrame) -> None:
        from skewtune.models.text import save_classifier

        save_classifier(
            model, processor, directory, labels=labels, max_length=m.max_length, text_pair="text_pair" in train.columns
        )

    def load_trained(self, directory, *, trust_remote_code: bool = False):
        """(model, tokenizer, meta): a fine-tuned sequence classifier, or a sentence-embedding one (train.method
        embedding / setfit, by skewtune.json's method); both give the logits that predict_proba reads."""
        from skewtune.models.text import load_trained

        if read_model_meta(directory).method in SENTENCE_METHODS:
            from skewtune.models.sentence import load_sentence_classifier

            return load_sentence_classifier(directory, trust_remote_code=trust_remote_code)
        return load_trained(directory, trust_remote_code=trust_remote_code)

    def predict_proba(self, model, processor, frame: pd.DataFrame, meta: ModelMeta, **kwargs) -> np.ndarray:
        from skewtune.models.inference import predict_proba

        return predict_proba(model, processor, frame, max_length=meta.max_length, text_pair=meta.text_pair, **kwargs)


class ImageModality:
    name = "image"
    pipeline_tag = "image-classification"
    by_length = False  # images are resized to one size

    def ingest(self, data, raw_dir: str) -> tuple[pd.DataFrame, list[str], dict]:
        reading = {
            "image_column": data.image_column,
            "label_column": data.label_column,
            "raw_dir": raw_dir,
            "fmt": data.format,
            "encoding": data.encoding,
            "sheet": data.sheet,
            "quoting": data.quoting,
        }
        from skewtune.data.corrections import data_corrections

        pool = images.read_images_source(data.source, "data.source", **reading)
        test = images.read_images_source(data.test_path, "data.test_path", **reading) if data.test_path else None
        return images.assemble_images(
            pool,
            test,
            image_column=data.image_column,
            label_column=data.label_column,
            label_map=dict(data.label_map),
            pool_name=data.source,
            test_name=data.test_path,
            max_dropped_share=data.max_dropped_share,
            conflicts=data.conflicts,
            max_conflict_share=data.max_conflict_share,
            raw_dir=raw_dir,
            max_image_pixels=data.max_image_pixels,
            corrections=data_corrections(data.corrections, columns.IMAGE_COLUMN, raw_dir),
        )

    def summary(self, report: dict) -> list[str]:
        return images.summary_lines(report)

    def raw_columns(self, data) -> dict[str, str]:
        return {columns.IMAGE_COLUMN: data.image_column}

    def preprocessing(self, data) -> ImagePreprocessing:
        # resizing and scaling: the saved image processor; predict refuses the images that ingest would have refused
        return ImagePreprocessing(image_column=data.image_column, max_image_pixels=data.max_image_pixels)

    def check(self, source: str | None, m, train: pd.DataFrame) -> str | None:
        return None  # every image was checked at ingest

    def prepare(
        self, source: str | None, m, train: pd.DataFrame, val: pd.DataFrame, labels: Sequence[str], augment=None
    ) -> Prepared:
        from skewtune.models.text import set_dropout

        labels = list(labels)
        naming = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
        }
        if source is None:
            processor, config = default_image_model(m.image_size or image.default_size(train), naming)
        else:
            processor, config = _local_image_model(source, m, naming)
        set_dropout(config, "model.hidden_dropout", m.hidden_dropout)
        set_dropout(config, "model.classifier_dropout", m.classifier_dropout)
        model = _image_classifier(source, config)
        size = _input_size(processor)
        line = f"train: images resized to {size[0]}x{size[1]} (height x width) by {type(processor).__name__}" + (
            "; a small ResNet built from its config and trained from scratch (model.name: default)"
            if source is None
            else ""
        )
        return Prepared(
            processor,
            model,
            image.ImageRows(train),
            image.ImageRows(val),
            image.ImageCollator(processor),
            image.augmentation(augment, processor) if augment is not None else None,
            [line],
            {},
            size[0] * size[1] / 256,
        )

    def save(self, model, processor, directory, *, labels: Sequence[str], m, train: pd.DataFrame) -> None:
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
        write_model_meta(directory, ModelMeta(tuple(labels), modality=self.name))

    def load_trained(self, directory, *, trust_remote_code: bool = False):
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        from skewtune.models.text import load_weights, trained_config

        meta = read_model_meta(directory)
        try:
            config = trained_config(directory, meta, trust_remote_code=trust_remote_code)
            model = load_weights(
                AutoModelForImageClassification, directory, config, trust_remote_code=trust_remote_code
            )
            processor = AutoImageProcessor.from_pretrained(
                directory, backend="pil", trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise SkewtuneError(
                f"{directory}: cannot load the trained image model ({exc}); re-run the train stage"
            ) from None
        return model, processor, meta

    def predict_proba(
        self,
        model,
        processor,
        frame: pd.DataFrame,
        meta: ModelMeta,
        *,
        batch_size: int,
        device: str,
        amp_dtype: torch.dtype | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Softmax class probabilities [rows, classes] (float64) of the rows' image bytes, in row order."""
        import torch

        data = frame[columns.BYTES_COLUMN].tolist()
        probs = np.empty((len(data), model.config.num_labels), dtype=np.float64)
        model.to(device).eval()
        with (
            torch.inference_mode(),
            torch.autocast(device_type=device, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None),
        ):
            for start in range(0, len(data), batch_size):
                pixels = image.pixel_values(processor, data[start : start + batch_size]).to(device)
                probs[start : start + len(pixels)] = (
                    torch.softmax(model(pixel_values=pixels).logits.double(), dim=-1).cpu().numpy()
                )
                if progress is not None and (start // batch_size) % 64 == 63:
                    progress(start + len(pixels))
        return probs


# Widths of the default image model: a 3-stage basic-block ResNet of ~0.3 M parameters, small enough to train
# from scratch on a CPU in minutes and, being convolutional, data-efficient on small images.
DEFAULT_RESNET = {"embedding_size": 32, "hidden_sizes": [32, 64, 128], "depths": [1, 1, 1], "layer_type": "basic"}


def default_image_model(size: Sequence[int], naming: dict):
    """(image processor, config) of model.name: default for images: a small ResNet (transformers ResNetConfig, random
    weights) and a processor that resizes to `size` [height, width] and scales pixels to [-1, 1]."""
    from transformers import ResNetConfig, ViTImageProcessorPil

    processor = ViTImageProcessorPil(
        size={"height": int(size[0]), "width": int(size[1])}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return processor, ResNetConfig(num_channels=3, **DEFAULT_RESNET, **naming)


def _local_image_model(source: str, m, naming: dict):
    from transformers import AutoConfig, AutoImageProcessor

    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=m.trust_remote_code, **naming)
        processor = AutoImageProcessor.from_pretrained(source, backend="pil", trust_remote_code=m.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise SkewtuneError(
            f"model.name: cannot load an image model config and image processor from {source} ({exc}); the directory needs "
            "config.json and preprocessor_config.json, as save_pretrained of a model and its AutoImageProcessor write them"
        ) from None
    if getattr(config, "num_channels", 3) != 3:
        raise SkewtuneError(
            f"model.name: {source} takes {config.num_channels}-channel images; skewtune feeds RGB images (3 channels)"
        )
    if m.image_size is not None:
        processor.size = {"height": m.image_size[0], "width": m.image_size[1]}
        if getattr(processor, "do_center_crop", False):
            processor.crop_size = dict(processor.size)
    return processor, config


def _image_classifier(source: str | None, config):
    import torch
    from transformers import AutoModelForImageClassification

    if source is None:
        return AutoModelForImageClassification.from_config(config)
    try:
        # The pretrained head (e.g. 1000 ImageNet classes) is replaced by one output per label.
        return AutoModelForImageClassification.from_pretrained(
            source, config=config, dtype=torch.float32, use_safetensors=True, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError) as exc:
        raise SkewtuneError(
            f"model.name: {source} cannot be loaded as an image classifier ({exc}); it needs safetensors weights and a "
            "model type that transformers has an image-classification head for (ResNet, ConvNeXt, ViT, MobileNet, ...)"
        ) from None


def _input_size(processor) -> tuple[int, int]:
    size = (
        getattr(processor, "crop_size", None)
        if getattr(processor, "do_center_crop", False)
        else getattr(processor, "size", None)
    )
    size = dict(size or {})
    if "height" in size:
        return size["height"], size["width"]
    side = size.get("shortest_edge", 0)
    return side, side


TEXT, IMAGE = TextModality(), ImageModality()
MODALITIES = {modality.name: modality for modality in (TEXT, IMAGE)}


def for_rows(frame: pd.DataFrame) -> TextModality | ImageModality:
    """The modality of a table between stages, from its columns."""
    return IMAGE if columns.holds_images(frame) else TEXT


def for_meta(meta: ModelMeta) -> TextModality | ImageModality:
    """The modality of a model directory's skewtune.json."""
    return MODALITIES[meta.modality]


def model_source(name: str, modality: TextModality | ImageModality, *, trust_remote_code: bool = False) -> str | None:
    """model.name resolved for the modality: for images, `default` is None (a model built from a config)."""
    from skewtune.models.text import DEFAULT_MODEL, resolve_model_source

    if modality is IMAGE and name == DEFAULT_MODEL:
        return None
    return resolve_model_source(name, trust_remote_code=trust_remote_code)
