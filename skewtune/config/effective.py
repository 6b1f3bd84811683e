"""Which params each stage reads, under which options: the effective configuration that content-addresses a stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import BaseModel

from skewtune.config.schema import EMBEDDING_SAMPLERS, LOSS_NAMES, AugmentParams, DataParams, Params
from skewtune.core.errors import SkewtuneError


def _reads_delimited(data: DataParams) -> bool:
    """Whether data.source or data.test_path is read as CSV/TSV (the embedded table is a TSV)."""
    from skewtune.core.formats import delimited_format  # tables imports QUOTINGS from here

    return any(
        delimited_format(path, data.format)
        for path in (data.source, data.test_path)
        if path is not None and not Path(path).is_dir()
    )


def _is_text(p: "Params") -> bool:
    return p.data.modality == "text"


def _is_image(p: "Params") -> bool:
    return p.data.modality == "image"


def _may_finetune(p: "Params") -> bool:
    """Whether training may fine-tune: train.method finetune, or auto, which may choose it."""
    return p.train.method in ("finetune", "auto")


# The keys that only fine-tuning reads. train.method embedding and setfit (skewtune/train/sentence.py) train with fixed
# settings of their own (a frozen body, or setfit's contrastive pass) and a logistic-regression head; the model card
# lists train.epochs, train.lr and train.batch_size only where they take effect. Not here, as other stages read them
# whatever the method: model.init_bias and loss.name (tune_threshold's collapse remedies; loss.name also the model
# card) and train.precision (predict, score).
FINETUNE_KEYS = (
    "model.hidden_dropout",
    "model.classifier_dropout",
    *(f"model.lora.{key}" for key in ("enabled", "r", "alpha", "dropout", "target_modules")),
    *(
        f"train.{key}"
        for key in (
            "epochs",
            "max_steps",
            "min_steps",
            "batch_size",
            "grad_accum",
            "lr",
            "weight_decay",
            "warmup",
            "scheduler",
            "min_lr_ratio",
            "plateau_factor",
            "plateau_patience",
            "max_grad_norm",
            "early_stopping_patience",
            "early_stopping_min_epochs",
            "ema_decay",
            "adversarial",
            "adversarial_epsilon",
            "pgd_steps",
            "pgd_alpha",
            "select_metric",
            "group_by_length",
            "nproc",
            "compile",
            "resume",
        )
    ),
    *(
        f"loss.{key}"
        for key in ("class_weights", "beta", "alpha", "gamma", "tau", "label_smoothing", "reweight_from_epoch")
    ),
)

# Keys that only some choices read: (key, whether these params read it, the choice that does). A key is read only if
# every entry of it says so (train.epochs: fine-tuning, for train.max_steps: -1). A key is listed only if no output of
# a stage that lists it changes with it under the other choices (tests/test_param_effect.py runs them):
# decision.blend and threshold.min_confidence are not, as reports/threshold/decision.json records both settings
# (blend_setting, min_confidence) whatever the options.
CONDITIONAL_KEYS: tuple[tuple[str, Callable[[Params], bool], str], ...] = (
    *((key, _may_finetune, "train.method: finetune or auto") for key in FINETUNE_KEYS),
    *((f"data.{key}", _is_text, "data.modality: text") for key in ("text_column", "text_pair_column", "unescape_html")),
    *((f"data.{key}", _is_image, "data.modality: image") for key in ("image_column", "max_image_pixels")),
    ("model.max_length", _is_text, "data.modality: text"),
    ("model.image_size", _is_image, "data.modality: image"),
    ("train.group_by_length", _is_text, "data.modality: text"),
    *((f"augment.{key}", _is_image, "data.modality: image") for key in AugmentParams.model_fields),
    ("data.quoting", lambda p: _reads_delimited(p.data), "a CSV or TSV data.source or data.test_path"),
    ("split.test_size", lambda p: p.data.test_path is None, "data.test_path: null"),
    (
        "resample.over_ratio",
        lambda p: p.resample.strategy in ("random_over", "over_under", *EMBEDDING_SAMPLERS),
        "resample.strategy: random_over, over_under, smote or adasyn",
    ),
    (
        "resample.under_ratio",
        lambda p: p.resample.strategy in ("random_under", "over_under"),
        "resample.strategy: random_under or over_under",
    ),
    ("resample.seed", lambda p: p.resample.strategy != "none", "a resample.strategy other than none"),
    *(
        (f"model.lora.{key}", lambda p: p.model.lora.enabled, "model.lora.enabled: true")
        for key in ("r", "alpha", "dropout", "target_modules")
    ),
    *(
        (f"train.setfit_{key}", lambda p: p.train.method == "setfit", "train.method: setfit")
        for key in ("iterations", "max_pairs")
    ),
    ("train.epochs", lambda p: p.train.max_steps == -1, "train.max_steps: -1"),
    ("train.min_steps", lambda p: p.train.max_steps == -1, "train.max_steps: -1"),
    ("train.min_lr_ratio", lambda p: p.train.scheduler == "cosine", "train.scheduler: cosine"),
    *(
        (
            f"train.plateau_{key}",
            lambda p: p.train.scheduler == "reduce_on_plateau",
            "train.scheduler: reduce_on_plateau",
        )
        for key in ("factor", "patience")
    ),
    (
        "train.early_stopping_min_epochs",
        lambda p: p.train.early_stopping_patience > 0,
        "train.early_stopping_patience above 0",
    ),
    ("train.adversarial_epsilon", lambda p: p.train.adversarial != "none", "train.adversarial: fgm or pgd"),
    *(
        (f"train.pgd_{key}", lambda p: p.train.adversarial == "pgd", "train.adversarial: pgd")
        for key in ("steps", "alpha")
    ),
    (
        "loss.reweight_from_epoch",
        lambda p: p.loss.name == "weighted_ce" or (p.loss.name == "focal" and p.loss.alpha is not None),
        "loss.name: weighted_ce, or focal with a loss.alpha",
    ),
    ("loss.class_weights", lambda p: p.loss.name == "weighted_ce", "loss.name: weighted_ce"),
    (
        "loss.beta",
        lambda p: p.loss.name == "weighted_ce" and p.loss.class_weights == "effective_number",
        "loss.name: weighted_ce with loss.class_weights: effective_number",
    ),
    ("loss.alpha", lambda p: p.loss.name == "focal", "loss.name: focal"),
    ("loss.gamma", lambda p: p.loss.name == "focal", "loss.name: focal"),
    ("loss.tau", lambda p: p.loss.name == "logit_adjusted", "loss.name: logit_adjusted"),
    *(
        (
            f"baseline.{key}",
            lambda p: (p.baseline.enabled or p.label_issues.enabled) and p.data.modality == "text",
            "baseline.enabled or label_issues.enabled: true on text data",
        )
        for key in ("min_df", "max_features", "max_rows")
    ),
    (
        "threshold.min_precision",
        lambda p: p.threshold.metric == "recall_at_precision",
        "threshold.metric: recall_at_precision",
    ),
)

# Keys that one stage reads only under some options, while the other stages that list them read them always (so not
# CONDITIONAL_KEYS, which leave a key out of every stage): {stage: ((key, whether these params read it there, the
# choice that does), ...)}. tests/test_param_effect.py runs them as it runs CONDITIONAL_KEYS.
STAGE_CONDITIONAL_KEYS: dict[str, tuple[tuple[str, Callable[[Params], bool], str], ...]] = {
    # train.method auto trains the method that cross-fitting calls for (skewtune/train/auto.py); the fold stages and
    # the baseline read train.cv whatever the method
    "train": (("train.cv", lambda p: p.train.method == "auto", "train.method: auto"),)
}

# The params keys each stage of dvc.yaml reads, listed once. check_params writes the values of those that take effect
# (less the unread CONDITIONAL_KEYS) to reports/effective/<stage>.json, the stage's only params dep in dvc.yaml.
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "ingest": (
        "data.modality",
        "data.source",
        "data.format",
        "data.encoding",
        "data.sheet",
        "data.text_column",
        "data.text_pair_column",
        "data.label_column",
        "data.image_column",
        "data.label_map",
        "data.test_path",
        "data.quoting",
        "data.max_dropped_share",
        "data.conflicts",
        "data.max_conflict_share",
        "data.max_image_pixels",
        "data.unescape_html",
        "data.corrections",
    ),
    "split": ("split.val_size", "split.test_size", "split.seed"),
    # The cross-fitted baseline that finds suspected label errors fits with the baseline's feature settings.
    "label_issues": (
        "data.modality",
        "label_issues.enabled",
        "label_issues.folds",
        "baseline.min_df",
        "baseline.max_features",
        "baseline.max_rows",
    ),
    "resample": ("resample.strategy", "resample.over_ratio", "resample.under_ratio", "resample.seed"),
    "train": (
        "model.name",
        "model.max_length",
        "model.image_size",
        "model.init_bias",
        "model.hidden_dropout",
        "model.classifier_dropout",
        "model.trust_remote_code",
        "model.lora.enabled",
        "model.lora.r",
        "model.lora.alpha",
        "model.lora.dropout",
        "model.lora.target_modules",
        "train.epochs",
        "train.max_steps",
        "train.min_steps",
        "train.batch_size",
        "train.eval_batch_size",
        "train.grad_accum",
        "train.lr",
        "train.weight_decay",
        "train.warmup",
        "train.scheduler",
        "train.min_lr_ratio",
        "train.plateau_factor",
        "train.plateau_patience",
        "train.max_grad_norm",
        "train.seed",
        "train.precision",
        "train.device",
        "train.early_stopping_patience",
        "train.early_stopping_min_epochs",
        "train.method",
        "train.setfit_iterations",
        "train.setfit_max_pairs",
        "train.ema_decay",
        "train.adversarial",
        "train.adversarial_epsilon",
        "train.pgd_steps",
        "train.pgd_alpha",
        "train.select_metric",
        "train.group_by_length",
        "train.nproc",
        "train.compile",
        "train.resume",
        "train.cv",  # train.method auto: STAGE_CONDITIONAL_KEYS
        "loss.name",
        "loss.class_weights",
        "loss.beta",
        "loss.alpha",
        "loss.gamma",
        "loss.tau",
        "loss.label_smoothing",
        "loss.reweight_from_epoch",
        "augment.hflip",
        "augment.vflip",
        "augment.rotation",
        "augment.crop_scale",
        "augment.brightness",
        "augment.contrast",
        # smote / adasyn oversample the sentence embeddings inside training
        "resample.strategy",
        "resample.over_ratio",
        "resample.seed",
    ),
    # Cross-fitting: the folds (train.cv, seeded by split.seed). The fold stages also depend on the train and resample
    # stages' effective files (the same recipe and resampling), the baseline on resample's (its folds are resampled).
    "train_fold": ("train.cv", "split.seed"),
    "predict": ("model.trust_remote_code", "train.eval_batch_size", "train.device", "train.precision"),
    "baseline": (
        "data.modality",
        "baseline.enabled",
        "baseline.min_df",
        "baseline.max_features",
        "baseline.max_rows",
        "train.cv",
        "split.seed",
    ),
    "tune_threshold": (
        "threshold.strategy",
        "threshold.metric",
        "threshold.min_precision",
        "threshold.positive_label",
        "threshold.min_confidence",
        "decision.blend",
        "calibration.method",
        "loss.name",
        "resample.strategy",
        "model.init_bias",  # the last 3: collapse_remedies
    ),
    "evaluate": ("evaluate.bootstrap_resamples", "evaluate.confidence", "evaluate.seed"),
    "package": (
        "data.text_column",
        "data.text_pair_column",
        "data.unescape_html",
        "data.image_column",
        "data.max_image_pixels",
        "model.name",
        "model.max_length",
        "train.method",
        "train.epochs",
        "train.lr",
        "train.batch_size",
        "train.seed",
        "loss.name",
        "resample.strategy",
        "threshold.strategy",
        "threshold.metric",
        "decision.blend",
        "calibration.method",
    ),
    "score": (
        "data.modality",
        "data.score_path",
        "data.format",
        "data.encoding",
        "data.sheet",
        "data.text_column",
        "data.text_pair_column",
        "data.image_column",
        "train.eval_batch_size",
        "train.device",
        "train.precision",
    ),
    "relabel": (
        "data.modality",
        "data.text_column",
        "data.text_pair_column",
        "data.image_column",
        "evaluate.error_rows",
    ),
}


def _value(params: BaseModel, key: str) -> Any:
    for part in key.split("."):
        params = getattr(params, part)
    return params


def unread_keys(params: Params, stage: str | None = None) -> set[str]:
    """The conditional keys that the chosen options do not read (whatever their values): in every stage, and with
    `stage`, those that stage alone does not read (STAGE_CONDITIONAL_KEYS)."""
    entries = (*CONDITIONAL_KEYS, *STAGE_CONDITIONAL_KEYS.get(stage, ()))
    return {key for key, is_read, _ in entries if not is_read(params)}


def all_keys(model: type[BaseModel] = Params, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, in its order."""
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += all_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _plain(value: Any) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else value


def effective_config(params: Params, keys: Sequence[str], stage: str | None = None) -> dict[str, Any]:
    """{key: value} of the `keys` that take effect with these params (the unread conditional ones left out, and those
    `stage` does not read): what a stage's result depends on, so that a change to a key without effect changes
    nothing here."""
    unread = unread_keys(params, stage)
    return {key: _plain(_value(params, key)) for key in keys if key not in unread}


def effective_params(params: Params) -> dict[str, Any]:
    """The effective configurations of all stages in one mapping (what check_params writes per stage): two params
    files with the same one make the same run, e.g. when they differ only in loss.gamma under loss.name: ce."""
    return {
        key: value for stage, keys in STAGE_KEYS.items() for key, value in effective_config(params, keys, stage).items()
    }


def check_stage_keys(stage_keys: dict[str, Sequence[str]] = STAGE_KEYS) -> None:
    """Every key listed for a stage is a params key, and every params key is listed for some stage (a key that
    no stage lists would re-run nothing when changed)."""
    known = all_keys()
    unknown = sorted({key for keys in stage_keys.values() for key in keys} - set(known))
    unlisted = [key for key in known if not any(key in keys for keys in stage_keys.values())]
    if unknown or unlisted:
        raise SkewtuneError(
            f"skewtune/config/effective.py STAGE_KEYS: unknown key(s) {unknown}; key(s) no stage lists {unlisted}"
        )


def collapse_remedies(params: Params) -> str:
    """What a warning about a model collapsed onto one class advises, less what `params` already set: a loss that
    weights the classes (or their logits), a resampling or a start bias already chosen is not advised again."""
    remedies = ["more epochs (train.epochs, train.min_steps) or a higher train.lr"]
    remedies.append("loss.name " + " / ".join(name for name in LOSS_NAMES if name not in ("ce", params.loss.name)))
    if params.resample.strategy in ("none", "random_under"):  # random_over and over_under already oversample
        remedies.append("resample.strategy random_over")
    if params.model.init_bias != "prior":
        remedies.append("model.init_bias prior")
    return ", ".join(remedies)


def unused_settings(params: Params) -> list[str]:
    """One line per key set away from its default that the chosen options do not read, e.g. loss.gamma
    with loss.name: ce. Such a setting is silently without effect (yet, as a DVC param of its stage, a
    change to it still re-runs that stage), which is worth a warning rather than an error: a sweep may
    switch the choice that reads it on and off."""
    defaults = Params()
    lacking: dict[str, list[str]] = {}  # key -> the choices that would read it and are not made, in one line per key
    for key, is_read, reader in CONDITIONAL_KEYS:
        if _value(params, key) != _value(defaults, key) and not is_read(params):
            lacking.setdefault(key, []).append(reader)
    return [
        f"{key} is {_value(params, key)!r}, but only {' with '.join(readers)} reads it: it has no effect here (its "
        f"default is {_value(defaults, key)!r})"
        for key, readers in lacking.items()
    ]
