"""The files of a model directory (models/model, models/classifier) beside the transformers ones: skewtune.json, read
and written as a typed `ModelMeta`, and a packaged classifier's decision rule and manifest.json, which
`read_classifier_files` checks together.

skewtune.json holds the labels and the modality; a text model its max_length and text_pair, and a sentence-embedding
one (train.method embedding / setfit) its method and pooling; a packaged classifier
also the preprocessing its training inputs got, which `skewtune predict` repeats on new inputs (`TextPreprocessing`,
`ImagePreprocessing`). A reader of an older file fills the fields it lacks with what skewtune did when it was written.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import pandas as pd

from skewtune.artifacts import read_json
from skewtune.config.schema import MODALITIES, MODEL_METHODS, SENTENCE_METHODS, DataParams
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import json_text
from skewtune.core.paths import BASELINE_FILE, CLASSIFIER, MANIFEST_FILE, META_FILE, RULE_FILE
from skewtune.data.cleaning import normalise_text
from skewtune.data.image_files import MODE
from skewtune.decision.rule import DecisionRule, valid_labels

# ------------------------------------------------------------------------------------------ fields

_REQUIRED = object()


@dataclass(frozen=True)
class _Field:
    """A key of skewtune.json: its check, what it must be (for the error) and its value when absent."""

    check: Callable[[Any], bool]
    expected: str
    default: Any = _REQUIRED


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _bool(value: Any) -> bool:
    return isinstance(value, bool)


def _shown(value: Any) -> str:
    return f"{json.dumps(value, ensure_ascii=False):.80}"


def _read_fields(raw: Any, spec: dict[str, _Field], where: str, block: str, fix: str) -> dict[str, Any]:
    """The keys of `spec` from the JSON object `raw` (the `block` of skewtune.json at `where`; "": the whole file),
    checked: a value that is not an object, a missing required key, a value of the wrong kind or an unknown key (a
    preprocessing step this version cannot repeat) is one line naming it."""
    if not isinstance(raw, dict):
        raise SkewtuneError(f"{where}: {block or 'the file'} must be a JSON object, got {_shown(raw)}; {fix}")
    prefix = f"{block}." if block else ""
    unknown = [key for key in raw if key not in spec]
    if unknown:
        raise SkewtuneError(
            f"{where}: unknown field {prefix}{unknown[0]} (this version of skewtune knows {', '.join(spec)}); {fix}"
        )
    values = {}
    for key, field in spec.items():
        if key not in raw:
            if field.default is _REQUIRED:
                raise SkewtuneError(f"{where}: field {prefix}{key} is missing (expected {field.expected}); {fix}")
            values[key] = field.default
        elif not field.check(raw[key]):
            raise SkewtuneError(f"{where}: field {prefix}{key} is {_shown(raw[key])}, expected {field.expected}; {fix}")
        else:
            values[key] = raw[key]
    return values


def _ingest_default(key: str) -> Any:
    """What ingest does when params.yaml leaves data.`key` unset: what an older file that lacks the field recorded."""
    return DataParams.model_fields[key].default


# Steps ingest's normalise_text applies to every training text, whatever the params: a classifier records them as
# true; one that records false asks for a preprocessing that predict cannot repeat, so it is refused.
_ALWAYS = _Field(lambda value: value is True, "true (ingest always applies this step, and predict repeats it)", True)


@dataclass(frozen=True)
class TextPreprocessing:
    """How ingest prepared the training texts (`normalise` repeats it): HTML character references decoded when
    `unescape_html`, control characters removed and runs of whitespace collapsed; the input columns they came from."""

    normalise_whitespace: bool = True
    remove_control_characters: bool = True
    unescape_html: bool = _ingest_default("unescape_html")
    text_column: str = _ingest_default("text_column")
    text_pair_column: str | None = _ingest_default("text_pair_column")

    SPEC: ClassVar[dict[str, _Field]] = {
        "normalise_whitespace": _ALWAYS,
        "remove_control_characters": _ALWAYS,
        "unescape_html": _Field(_bool, "true or false", unescape_html),
        "text_column": _Field(_text, "a column name", text_column),
        "text_pair_column": _Field(
            lambda value: value is None or _text(value), "a column name or null", text_pair_column
        ),
    }

    def normalise(self, values: pd.Series) -> pd.Series:
        """`values` prepared as the training texts were: ingest's normalise_text, which always takes both _ALWAYS steps."""
        return normalise_text(values, unescape_html=self.unescape_html)


@dataclass(frozen=True)
class ImagePreprocessing:
    """How ingest prepared the training images: converted to `convert_to`, images of more than `max_image_pixels`
    refused; `image_column` named their paths. Resizing and scaling are the saved image processor's."""

    convert_to: str = MODE
    image_column: str = _ingest_default("image_column")
    max_image_pixels: int = _ingest_default("max_image_pixels")  # absent: packaged before the bound existed

    SPEC: ClassVar[dict[str, _Field]] = {
        "convert_to": _Field(
            lambda value: value == MODE, f"{json.dumps(MODE)} (predict converts every image to it)", MODE
        ),
        "image_column": _Field(_text, "a column name", image_column),
        "max_image_pixels": _Field(_positive, "a positive whole number", max_image_pixels),
    }


_PREPROCESSING = {"text": TextPreprocessing, "image": ImagePreprocessing}
# How a sentence-embedding model (train.method embedding / setfit) turns token states into one vector: the mean over
# the attention mask, then L2 normalisation (what sentence-transformers does for all-MiniLM-L6-v2).
POOLING = "mean_l2"
_LABELS = _Field(valid_labels, "a list of two or more distinct strings")
_MODALITY = _Field(lambda value: value in MODALITIES, f"one of {', '.join(MODALITIES)}", "text")  # absent: text
_BLOCK = _Field(lambda value: True, "", None)  # the preprocessing object, read by its modality's SPEC
# The keys of skewtune.json by modality (an invalid modality is reported by the text keys' check of it).
_META_SPEC = {
    "text": {
        "labels": _LABELS,
        "modality": _MODALITY,
        "max_length": _Field(_positive, "a positive whole number"),
        "text_pair": _Field(_bool, "true or false"),
        # absent: a fine-tuned model (written before the sentence-embedding methods existed)
        "method": _Field(lambda value: value in MODEL_METHODS, f"one of {', '.join(MODEL_METHODS)}", "finetune"),
        "pooling": _Field(lambda value: value in (None, POOLING), f"null or {json.dumps(POOLING)}", None),
        "preprocessing": _BLOCK,
    },
    "image": {"labels": _LABELS, "modality": _MODALITY, "preprocessing": _BLOCK},
}


@dataclass(frozen=True)
class ModelMeta:
    """skewtune.json of a model directory: labels (in class index order), modality; for text max_length (tokens
    kept), text_pair (sentence pairs), the train.method that made it and, for a sentence-embedding method, its
    pooling; `preprocessing` in a packaged classifier only (None in models/model)."""

    labels: tuple[str, ...]
    modality: str = "text"
    max_length: int | None = None
    text_pair: bool | None = None
    method: str = "finetune"
    pooling: str | None = None
    preprocessing: TextPreprocessing | ImagePreprocessing | None = None

    @classmethod
    def from_dict(cls, raw: Any, where: str, fix: str) -> ModelMeta:
        """The meta of the JSON value `raw` (read from `where`), checked; `fix` says how to get a good file."""
        modality = raw.get("modality") if isinstance(raw, dict) else None
        spec = _META_SPEC.get(modality, _META_SPEC["text"]) if isinstance(modality, str) else _META_SPEC["text"]
        values = _read_fields(raw, spec, where, "", fix)
        if values.get("method") in SENTENCE_METHODS and values["pooling"] != POOLING:
            raise SkewtuneError(
                f"{where}: field pooling is {_shown(values['pooling'])}, but a {values['method']} model needs "
                f"{json.dumps(POOLING)}; {fix}"
            )
        kind = _PREPROCESSING[values["modality"]]
        if values["preprocessing"] is not None:
            values["preprocessing"] = kind(
                **_read_fields(values["preprocessing"], kind.SPEC, where, "preprocessing", fix)
            )
        return cls(**{**values, "labels": tuple(values["labels"])})

    def to_dict(self) -> dict:
        """What skewtune.json holds: a text model's max_length and text_pair (and method and pooling unless
        fine-tuned, so a fine-tuned model's file reads as before), an image model's modality."""
        text = self.modality == "text"
        sentence = self.method in SENTENCE_METHODS
        return {
            "labels": list(self.labels),
            **({} if text else {"modality": self.modality}),
            **({"max_length": self.max_length, "text_pair": self.text_pair} if text else {}),
            **({"method": self.method, "pooling": self.pooling} if sentence else {}),
            **({} if self.preprocessing is None else {"preprocessing": asdict(self.preprocessing)}),
        }

    def prepared_as(self) -> TextPreprocessing | ImagePreprocessing:
        """The preprocessing new inputs get: the recorded one, else (models/model, or a classifier packaged before
        it was recorded) what ingest does by default."""
        return self.preprocessing or _PREPROCESSING[self.modality]()


def write_model_meta(directory: str | os.PathLike, meta: ModelMeta) -> None:
    """skewtune.json of a model directory."""
    (Path(directory) / META_FILE).write_text(json_text(meta.to_dict()), encoding="utf-8")


def read_model_meta(directory: str | os.PathLike, producer: str = "train") -> ModelMeta:
    """skewtune.json of a model directory written by the stage `producer`, checked."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise SkewtuneError(
            f"{path}: not found; {directory} is not a model written by the {producer} stage (dvc repro {producer})"
        )
    return ModelMeta.from_dict(read_json(path, producer), str(path), f"re-run the {producer} stage")


# ------------------------------------------------------------------------------------- classifiers


def file_digests(directory: str | os.PathLike) -> dict[str, str]:
    """The SHA-256 of every file below `directory` by its relative path, sorted; without the manifest and hidden
    files (.DS_Store and the like, which no loader reads)."""
    directory = Path(directory)
    digests = {}
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if path.is_file() and name != MANIFEST_FILE and not any(part.startswith(".") for part in name.split("/")):
            with path.open("rb") as handle:
                digests[name] = hashlib.file_digest(handle, "sha256").hexdigest()
    return digests


def write_manifest(directory: str | os.PathLike) -> None:
    """manifest.json of a classifier directory: the SHA-256 of each of its files, which read_classifier_files verifies."""
    (Path(directory) / MANIFEST_FILE).write_text(json_text({"sha256": file_digests(directory)}), encoding="utf-8")


def check_manifest(directory: Path) -> None:
    """Refuse a classifier directory whose files are not those the package stage wrote (manifest.json): a changed,
    missing or added file. What is loaded then (weights, tokenizer, rule, baseline) is what was packaged."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise SkewtuneError(
            f"{directory}: has no {MANIFEST_FILE} (the SHA-256 of each of its files); re-run the package stage, "
            "which writes it, or copy the whole classifier directory"
        )
    raw = read_json(path, "package")
    recorded = raw.get("sha256") if isinstance(raw, dict) else None
    if not isinstance(recorded, dict):
        raise SkewtuneError(f'{path}: expected {{"sha256": {{file: digest}}}}; re-run the package stage')
    actual = file_digests(directory)
    changed = [name for name in recorded if name in actual and actual[name] != recorded[name]]
    missing = [name for name in recorded if name not in actual]
    added = [name for name in actual if name not in recorded]
    if changed or missing or added:
        found = "; ".join(
            f"{what}: {', '.join(names[:5])}"
            for what, names in (("changed", changed), ("missing", missing), ("added", added))
            if names
        )
        raise SkewtuneError(
            f"{directory}: its files are not those the package stage wrote ({found}; see {MANIFEST_FILE}); "
            "copy the classifier directory again from where it was packaged, or re-run the package stage"
        )


def read_classifier_files(directory: str | os.PathLike) -> tuple[ModelMeta, DecisionRule]:
    """(skewtune.json, decision rule) of a classifier directory written by the package stage."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SkewtuneError(
            f"{directory}: no such model directory; `dvc repro package` writes {CLASSIFIER}, or pass --model DIR"
        )
    missing = [name for name in (META_FILE, RULE_FILE) if not (directory / name).is_file()]
    if missing:
        what = {META_FILE: "labels", RULE_FILE: "decision rule"}
        raise SkewtuneError(
            f"{directory}: not a skewtune classifier: it has no {' and no '.join(f'{name} ({what[name]})' for name in missing)}; "
            f"`dvc repro package` writes one to {CLASSIFIER}"
        )
    check_manifest(directory)
    meta = read_model_meta(directory, "package")
    rule = DecisionRule.from_dict(read_json(directory / RULE_FILE, "package"), str(directory / RULE_FILE))
    if rule.labels != meta.labels:
        raise SkewtuneError(
            f"{directory}: {RULE_FILE} was made for labels {list(rule.labels)}, but {META_FILE} lists "
            f"{list(meta.labels)}; re-run the package stage"
        )
    if rule.blend and not (directory / BASELINE_FILE).is_file():
        raise SkewtuneError(
            f"{directory}: {RULE_FILE} blends in the baseline (weight {rule.blend:g}), but {BASELINE_FILE} is "
            "missing; re-run the package stage"
        )
    return meta, rule
