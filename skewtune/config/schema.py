"""The params.yaml schema: every key typed, ranged and defaulted; unknown keys rejected.

Stages call `load_params()` once, which validates the whole file (so a hand-made typo such as `loss.gama` stops
whichever stage runs first), then read only the keys STAGE_KEYS (skewtune/config/effective.py) lists for them.
What each key means is documented once, beside it in params.yaml (tests/test_params_doc.py checks that every key here
has a comment there), so the fields below carry no descriptions.

One module, past ~400 lines on purpose: each section's model holds its keys and the rules between them (a
`model_validator`), and `Params` the rules across sections, so every constraint on a key reads in one place.
"""

from __future__ import annotations

import codecs
import math
import re
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from skewtune.core.formats import QUOTINGS
from skewtune.core.paths import CORRECTIONS, MAX_FOLDS

# The allowed values of the choice keys: the schema below and the code that acts on them both read these.
LOSS_NAMES = ("ce", "weighted_ce", "focal", "logit_adjusted")
WEIGHT_SCHEMES = ("balanced", "inverse_sqrt", "effective_number")
SCHEDULERS = ("linear", "cosine", "constant", "reduce_on_plateau")
ADVERSARIAL = ("none", "fgm", "pgd")
MODALITIES = ("text", "image")
# How a model can be made: fine-tuning, or a sentence-embedding classifier (frozen `embedding`, contrastively tuned
# `setfit`); train.method also takes `auto`, the default, which chooses one by the data (skewtune/train/auto.py).
SENTENCE_METHODS = ("setfit", "embedding")
MODEL_METHODS = ("finetune", *SENTENCE_METHODS)
TRAIN_METHODS = (*MODEL_METHODS, "auto")
# resample.strategy values that interpolate feature vectors: they run on the sentence embeddings inside training.
EMBEDDING_SAMPLERS = ("smote", "adasyn")
RESAMPLE_STRATEGIES = ("none", "random_over", "random_under", "over_under", *EMBEDDING_SAMPLERS)

# Names of the metrics a user can select; `f1:<label>` names the F1 of one class.
NAMED_METRICS = ("f1_macro", "balanced_accuracy", "mcc", "loss")
_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?(f1_macro|loss|f1:[^+*]+?)\s*$")


def parse_metric_expression(expr: str) -> list[tuple[float, str]]:
    """Parse `f1_macro`, `loss`, `f1:<label>` or a weighted sum such as `0.6*f1_macro + 0.4*f1:spam`.

    Returns (weight, metric) pairs; the label part of `f1:<label>` is checked against the labels
    later, when they are known.
    """
    terms = []
    for raw in str(expr).split("+"):
        match = _TERM.match(raw)
        if not match:
            raise ValueError(
                f"cannot read {raw.strip()!r} in {expr!r}; use f1_macro, loss, f1:<label>, "
                "or a weighted sum such as '0.6*f1_macro + 0.4*f1:spam'"
            )
        weight = float(match.group(1)) if match.group(1) else 1.0
        terms.append((weight, match.group(2).strip()))
    if len(terms) > 1 and any(name == "loss" for _, name in terms):
        raise ValueError(f"'loss' cannot be mixed with scores in {expr!r}: lower loss is better")
    return terms


# A number in exponent notation that YAML 1.2 (DVC's `-S`, ruamel) reads as a float but PyYAML's YAML 1.1 reads as a
# string (`1e-4` has no dot, `1.0e4` no exponent sign). Any other quoted number is a string the user wrote.
_EXPONENT_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _scalar_kind(annotation: Any) -> type | None:
    """bool, int or float: the scalar type a field holds (beside None or literal words such as 'auto'), else None."""
    args = typing.get_args(annotation) or (annotation,)
    return next((kind for kind in (bool, int, float) if kind in args), None)


class _Section(BaseModel):
    # Numbers and switches are taken as YAML typed them (strings stay strings: a column may be named 5).
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _typed_as_written(cls, value: Any, info: ValidationInfo) -> Any:
        """A quoted "5" for a count, `true` for a number or `1` for a switch is a slip to report, not to convert
        (pydantic's lax mode would accept all three)."""
        kind = _scalar_kind(cls.model_fields[info.field_name].annotation)
        if value is None or kind is None:
            return value
        if kind is bool and not isinstance(value, bool):
            raise ValueError("must be true or false")
        if kind is int and (
            isinstance(value, bool)
            or isinstance(value, float)
            or (isinstance(value, str) and value.strip().lstrip("+-").isdigit())
        ):
            raise ValueError(
                "must be a whole number, written without quotes"
                + (" or a decimal point" if isinstance(value, float) else "")
            )
        if kind is float and isinstance(value, bool):
            raise ValueError("must be a number, not true or false")
        if kind is float and isinstance(value, str):
            if not _EXPONENT_FLOAT.fullmatch(value.strip()):
                raise ValueError("must be a number, written without quotes")
            return float(value)
        return value


# numpy, sklearn, imbalanced-learn and transformers all take 32-bit unsigned seeds.
MAX_SEED = 2**32 - 1

# data.max_image_pixels: its default (about a 7300 x 5500 photo, 120 MB as 8-bit RGB), and Pillow's own bound (2 x its
# Image.MAX_IMAGE_PIXELS), above which it refuses to open an image at all.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
PILLOW_MAX_PIXELS = 178_956_970
_NAMED_SAMPLING = ("auto", "minority", "not minority", "not majority", "majority", "all")


def _sampling_strategy(value: Any) -> float | str | dict[str, int]:
    """imbalanced-learn's `sampling_strategy`: a float in (0, 1] (binary: minority/majority after
    resampling), a {label: count} mapping (multiclass), or one of its named strategies."""
    if isinstance(value, bool):
        pass
    elif isinstance(value, (int, float)) and 0 < value <= 1:
        return float(value)
    elif isinstance(value, str) and value in _NAMED_SAMPLING:
        return value
    elif isinstance(value, dict) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value.values()
    ):
        return {str(k): v for k, v in value.items()}
    raise ValueError(
        "must be a float in (0, 1] (binary: minority/majority ratio after resampling), "
        "a mapping {label: target count} (multiclass), or one of " + ", ".join(map(repr, _NAMED_SAMPLING))
    )


def _positive_floats(value: Any, what: str) -> list[float]:
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf for v in value)
    ):
        return [float(v) for v in value]
    raise ValueError(f"must be {what} or a list of positive finite numbers, one per class in labels.json order")


# The values of data.conflicts (params.yaml says what each does).
CONFLICT_POLICIES = ("majority_vote", "drop")
_SMOTE_FAMILY = {"smotenc", "smoten", "borderline_smote", "svm_smote", "kmeans_smote", "smote_tomek", "smote_enn"}


class DataParams(_Section):
    modality: Literal[MODALITIES] = "text"
    source: str = Field("embedded", min_length=1)
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "xlsx", "parquet"] = "auto"
    encoding: str = "utf-8"
    sheet: str | None = Field(None, min_length=1)
    text_column: str = Field("text", min_length=1)
    text_pair_column: str | None = Field(None, min_length=1)
    label_column: str = Field("label", min_length=1)
    image_column: str = Field("image", min_length=1)
    label_map: dict[str, str] = Field(default_factory=dict)
    test_path: str | None = None
    quoting: Literal[QUOTINGS] = "auto"
    max_dropped_share: float = Field(0.01, ge=0, le=1)
    conflicts: Literal[CONFLICT_POLICIES] = "majority_vote"
    max_conflict_share: float = Field(0.05, ge=0, le=1)
    max_image_pixels: int = Field(DEFAULT_MAX_IMAGE_PIXELS, ge=1, le=PILLOW_MAX_PIXELS)
    unescape_html: bool = False
    score_path: str | None = Field(None, min_length=1)
    corrections: str | None = Field(CORRECTIONS, min_length=1)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            is_text = codecs.lookup(value)._is_text_encoding
        except LookupError:
            is_text = False
        if not is_text:
            raise ValueError(f"{value!r} is not a text encoding; use e.g. utf-8, utf-8-sig, latin-1, cp1252, gb18030")
        return value

    @model_validator(mode="after")
    def _distinct_columns(self) -> "DataParams":
        if self.modality == "image":
            if self.image_column == self.label_column:
                raise ValueError(
                    f"image_column and label_column must name different columns (got {self.image_column!r} twice)"
                )
            if self.source == "embedded":
                raise ValueError(
                    "data.source 'embedded' is the SMS text table; with data.modality: image point data.source at a "
                    "folder-per-class directory or a table of image paths under data/raw/"
                )
            return self
        columns = [self.text_column, self.text_pair_column, self.label_column]
        named = [c for c in columns if c is not None]
        if len(set(named)) != len(named):
            raise ValueError(
                f"text_column, text_pair_column and label_column must name different columns (got {named})"
            )
        return self


class SplitParams(_Section):
    val_size: float = Field(0.1, gt=0, lt=1)
    test_size: float = Field(0.1, gt=0, lt=1)
    seed: int = Field(42, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _leaves_train(self) -> "SplitParams":
        if self.val_size + self.test_size >= 1:
            raise ValueError(f"val_size + test_size must be below 1 (got {self.val_size} + {self.test_size})")
        return self


class ResampleParams(_Section):
    strategy: Literal[RESAMPLE_STRATEGIES] = "none"
    over_ratio: Any = "auto"
    under_ratio: Any = "auto"
    seed: int = Field(42, ge=0, le=MAX_SEED)

    @field_validator("over_ratio", "under_ratio", mode="before")
    @classmethod
    def _imblearn_strategy(cls, value: Any) -> Any:
        return _sampling_strategy(value)

    @field_validator("strategy", mode="before")
    @classmethod
    def _no_interpolation(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in _SMOTE_FAMILY:
            raise ValueError(
                f"{value!r} is not supported; to synthesise rows by interpolation use smote or adasyn with "
                "train.method: embedding or setfit (they act on sentence embeddings), else random_over, random_under "
                "or over_under"
            )
        return value


class LoraParams(_Section):
    enabled: bool = False
    r: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Any = "all-linear"

    @field_validator("target_modules", mode="before")
    @classmethod
    def _modules(cls, value: Any) -> Any:
        if value == "all-linear" or (
            isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)
        ):
            return value
        raise ValueError("must be 'all-linear' or a non-empty list of module names such as [q_proj, v_proj]")


class ModelParams(_Section):
    name: str = Field("default", min_length=1)
    max_length: int = Field(128, ge=8, le=131072)
    init_bias: Literal["prior", "zero"] = "prior"
    hidden_dropout: float | None = Field(None, ge=0, lt=1)
    classifier_dropout: float | None = Field(None, ge=0, lt=1)
    image_size: Any = None
    trust_remote_code: bool = False
    lora: LoraParams = Field(default_factory=LoraParams)

    @field_validator("image_size", mode="before")
    @classmethod
    def _image_size(cls, value: Any) -> Any:
        if value is None:
            return None
        sides = value if isinstance(value, list) else [value, value]
        if len(sides) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096 for v in sides):
            return [int(v) for v in sides]
        raise ValueError("must be null, a side in pixels (8-4096) or [height, width]")


class TrainParams(_Section):
    epochs: float = Field(2.0, gt=0, le=1000)
    max_steps: int = Field(-1, ge=-1)
    min_steps: int = Field(200, ge=0)
    batch_size: int | Literal["auto"] = "auto"
    eval_batch_size: int = Field(64, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-4, gt=0, lt=1)
    weight_decay: float = Field(0.01, ge=0, lt=1)
    warmup: float = Field(0.1, ge=0)
    scheduler: Literal[SCHEDULERS] = "linear"
    min_lr_ratio: float = Field(0.0, ge=0, lt=1)
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    plateau_patience: int = Field(0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    seed: int = Field(42, ge=0, le=MAX_SEED)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    early_stopping_patience: int = Field(2, ge=0)
    early_stopping_min_epochs: int = Field(0, ge=0)
    method: Literal[TRAIN_METHODS] = "auto"
    setfit_iterations: int = Field(5, ge=1, le=100)
    setfit_max_pairs: int = Field(2000, ge=2)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    adversarial: Literal[ADVERSARIAL] = "none"
    adversarial_epsilon: float = Field(1.0, gt=0, le=100)
    pgd_steps: int = Field(3, ge=1, le=20)
    pgd_alpha: float = Field(0.3, gt=0, le=100)
    select_metric: str = "f1_macro"
    group_by_length: bool = True
    nproc: int = Field(1, ge=1, le=64)
    compile: bool = False
    resume: bool = False
    cv: int | Literal["auto", "off"] = "auto"

    @field_validator("cv", mode="before")
    @classmethod
    def _folds_or_auto(cls, value: Any) -> Any:
        # PyYAML reads YAML 1.1, where an unquoted `off` is the boolean false, and `dvc exp run -S train.cv=off`
        # writes it unquoted: false is the choice off, the one boolean taken.
        if value is False:
            return "off"
        if value in ("auto", "off") or (
            isinstance(value, int) and not isinstance(value, bool) and 2 <= value <= MAX_FOLDS
        ):
            return value
        raise ValueError(f"must be auto, off or a number of folds from 2 to {MAX_FOLDS} (dvc.yaml's train_fold stages)")

    @field_validator("batch_size", mode="before")
    @classmethod
    def _rows_or_auto(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(
            "must be auto (32 on the CPU, sized by tokens per step on a GPU) or a whole number of rows of at least 1"
        )

    @field_validator("max_steps")
    @classmethod
    def _some_steps(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (train for train.epochs) or a number of optimizer steps of at least 1")
        return value

    @field_validator("warmup")
    @classmethod
    def _whole_steps(cls, value: float) -> float:
        if value >= 1 and value != int(value):
            raise ValueError(f"a warmup of 1 or more is a number of steps and must be whole (got {value})")
        return value

    @field_validator("select_metric")
    @classmethod
    def _parsable(cls, value: str) -> str:
        parse_metric_expression(value)
        return value


class LossParams(_Section):
    name: Literal[LOSS_NAMES] = "ce"
    class_weights: Any = "balanced"
    beta: float = Field(0.999, ge=0, lt=1)
    alpha: Any = None
    gamma: float = Field(2.0, ge=0, le=20)
    tau: float = Field(1.0, ge=0, le=10)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    reweight_from_epoch: int | None = Field(None, ge=2)

    @field_validator("class_weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if value in WEIGHT_SCHEMES:
            return value
        return _positive_floats(value, ", ".join(map(repr, WEIGHT_SCHEMES)))

    @field_validator("alpha", mode="before")
    @classmethod
    def _alpha(cls, value: Any) -> Any:
        if value is None or value == "balanced":
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if 0 < value < 1:
                return float(value)
            raise ValueError(
                "a single alpha is the weight of the positive class (the second in labels.json) and must be in (0, 1)"
            )
        return _positive_floats(value, "null, 'balanced', a number in (0, 1)")


class ThresholdParams(_Section):
    strategy: Literal["tune", "argmax"] = "tune"
    metric: str = "f1_macro"
    min_precision: float = Field(0.9, gt=0, le=1)
    positive_label: str | None = Field(None, min_length=1)
    min_confidence: float = Field(0.95, ge=0, lt=1)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value in ("f1_macro", "balanced_accuracy", "mcc", "recall_at_precision") or (
            value.startswith("f1:") and len(value) > 3
        ):
            return value
        raise ValueError(
            f"unknown metric {value!r}; use f1_macro, f1:<label>, balanced_accuracy, mcc or recall_at_precision"
        )


class BaselineParams(_Section):
    enabled: bool = True
    min_df: int = Field(2, ge=1)
    max_features: int = Field(200_000, ge=100)
    max_rows: int = Field(100_000, ge=100)


class LabelIssuesParams(_Section):
    enabled: bool = True
    folds: int = Field(5, ge=2, le=20)


BLEND_CHOICES = ("auto", "off")


class DecisionParams(_Section):
    blend: Any = "auto"

    @field_validator("blend", mode="before")
    @classmethod
    def _weight(cls, value: Any) -> Any:
        if value is False:  # an unquoted `off` (YAML 1.1, as `dvc exp run -S` writes it): see TrainParams.cv
            return "off"
        if value in BLEND_CHOICES:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
            return float(value)
        raise ValueError(
            "must be auto (a weight chosen on val), off, or the baseline's weight in [0, 1] (0 = the model alone, 1 = the baseline alone)"
        )


class CalibrationParams(_Section):
    method: Literal["auto", "none", "temperature", "vector"] = "auto"


class EvaluateParams(_Section):
    bootstrap_resamples: int = Field(1000, ge=1000, le=1_000_000)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    error_rows: int = Field(200, ge=0)


class AugmentParams(_Section):
    hflip: float = Field(0.0, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    rotation: float = Field(0.0, ge=0, le=180)
    crop_scale: float = Field(1.0, gt=0, le=1)
    brightness: float = Field(0.0, ge=0, le=1)
    contrast: float = Field(0.0, ge=0, le=1)


class Params(_Section):
    data: DataParams = Field(default_factory=DataParams)
    split: SplitParams = Field(default_factory=SplitParams)
    resample: ResampleParams = Field(default_factory=ResampleParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    loss: LossParams = Field(default_factory=LossParams)
    baseline: BaselineParams = Field(default_factory=BaselineParams)
    label_issues: LabelIssuesParams = Field(default_factory=LabelIssuesParams)
    augment: AugmentParams = Field(default_factory=AugmentParams)
    threshold: ThresholdParams = Field(default_factory=ThresholdParams)
    decision: DecisionParams = Field(default_factory=DecisionParams)
    calibration: CalibrationParams = Field(default_factory=CalibrationParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)

    @model_validator(mode="after")
    def _compatible(self) -> "Params":
        """Combinations that cannot work, refused before any stage runs."""
        t, lora = self.train, self.model.lora.enabled
        if t.ema_decay is not None and lora:
            raise ValueError(
                "train.ema_decay is set, but model.lora.enabled is true: EMA of LoRA adapters is not supported; set "
                "train.ema_decay: null or turn LoRA off"
            )
        if t.adversarial != "none" and lora:
            raise ValueError(
                f"train.adversarial is {t.adversarial}, but model.lora.enabled is true: LoRA freezes the word "
                "embeddings that it perturbs; set train.adversarial: none or turn LoRA off"
            )
        blend = self.decision.blend
        if isinstance(blend, float) and blend > 0 and not self.baseline.enabled:
            raise ValueError(
                f"decision.blend is {blend:g}, but baseline.enabled is false: there is no baseline to blend in; set "
                "baseline.enabled: true, or decision.blend: auto or off"
            )
        if isinstance(blend, float) and blend > 0 and self.data.modality != "text":
            raise ValueError(
                f"decision.blend is {blend:g}, but data.modality is {self.data.modality}: the TF-IDF baseline reads "
                "text; set decision.blend: auto or off"
            )
        if self.data.modality == "image":
            if lora:
                raise ValueError(
                    "model.lora.enabled is true, but data.modality is image: LoRA is supported for text models only; turn it off"
                )
            if t.adversarial != "none":
                raise ValueError(
                    f"train.adversarial is {t.adversarial}, but data.modality is image: FGM/PGD perturb word embeddings, "
                    "which an image model has none of; set train.adversarial: none (augment.* varies images instead)"
                )
        sampler = self.resample.strategy
        if sampler in EMBEDDING_SAMPLERS and t.method not in SENTENCE_METHODS:
            raise ValueError(
                f"resample.strategy is {sampler}, but train.method is {t.method}: {sampler} interpolates sentence "
                f"embeddings, which only train.method {' or '.join(SENTENCE_METHODS)} has; set train.method: embedding "
                "or setfit, or resample.strategy: random_over"
            )
        if t.method in SENTENCE_METHODS and self.data.modality != "text":
            raise ValueError(
                f"train.method is {t.method}, but data.modality is {self.data.modality}: sentence embeddings read "
                "text; set train.method: finetune"
            )
        start = self.loss.reweight_from_epoch
        if start is not None and t.max_steps == -1 and start > math.ceil(t.epochs):
            raise ValueError(
                f"loss.reweight_from_epoch is {start}, beyond the last epoch (train.epochs is {t.epochs:g}): the "
                "class weights would never apply"
            )
        return self
