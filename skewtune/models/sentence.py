"""Sentence-embedding classifiers (train.method embedding / setfit): a transformer body whose token states are averaged
over the attention mask and L2-normalised (POOLING, as sentence-transformers pools all-MiniLM-L6-v2), and a linear
head on that vector holding a logistic regression's coefficients.

Its model directory holds the body as `save_pretrained` writes it (safetensors) with its tokenizer, the head as plain
numbers (HEAD_FILE: weight [classes, dim], bias [classes]) and skewtune.json with method and pooling. Loaded, it is one
module that gives logits like a fine-tuned sequence classifier, so predict, package, score and `skewtune predict` run
it through the same `predict_proba`. Sentence pairs are encoded as a fine-tuned model reads them: one sequence,
`[CLS] text [SEP] pair [SEP]`, with the tokenizer's segment ids.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from skewtune.core.errors import SkewtuneError
from skewtune.core.paths import HEAD_FILE
from skewtune.model_dir import POOLING, ModelMeta, read_model_meta, write_model_meta
from skewtune.models.inference import batched_outputs
from skewtune.models.text import load_tokenizer, position_limit

# Logit bias of a class the head never saw in training (a logistic regression only knows the classes of its rows):
# its probability is then below 1e-13 instead of an arbitrary share.
_UNSEEN_BIAS = -30.0


class SentenceEncoder(nn.Module):
    """The body and POOLING: tokens in, one unit-length vector per row out."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        states = self.body(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(mean, p=2, dim=-1)


class SentenceClassifier(nn.Module):
    """SentenceEncoder + a linear head: `.logits` and `.config.num_labels` as a transformers sequence classifier has."""

    def __init__(self, encoder: SentenceEncoder, weight: np.ndarray, bias: np.ndarray) -> None:
        from transformers import PretrainedConfig

        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        self.config = PretrainedConfig(num_labels=weight.shape[0])

    def forward(self, **batch):
        from transformers.modeling_outputs import SequenceClassifierOutput

        return SequenceClassifierOutput(logits=self.head(self.encoder(**batch)))


def load_encoder(source: str, *, max_length: int, trust_remote_code: bool = False) -> tuple[SentenceEncoder, object]:
    """(encoder, tokenizer) of the model at `source` (a local directory or hub id): its body without any head, from
    safetensors only; model.max_length must fit its positions."""
    from transformers import AutoConfig, AutoModel

    tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        limit = position_limit(config, tokenizer)
        if limit is not None and max_length > limit:
            raise SkewtuneError(
                f"model.max_length is {max_length}, but {source} handles at most {limit} tokens; set model.max_length "
                f"to {limit} or less"
            )
        body = AutoModel.from_pretrained(
            source, config=config, dtype=torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise SkewtuneError(
            f"model.name: {source} cannot be loaded as a text encoder ({exc}); train.method embedding and setfit need "
            "a transformers model directory with safetensors weights"
        ) from None
    return SentenceEncoder(body), tokenizer


def embed(encoder: SentenceEncoder, tokenizer, frame: pd.DataFrame, *, max_length: int, batch_size: int, device: str):
    """The unit-length sentence embeddings [rows, dim] of the frame's texts (or pairs), in row order."""
    encoder.to(device).eval()
    return batched_outputs(
        lambda batch: encoder(**batch),
        encoder.body.config.hidden_size,
        tokenizer,
        frame,
        max_length=max_length,
        batch_size=batch_size,
        device=device,
    )


def head_weights(coef: np.ndarray, intercept: np.ndarray, classes: Sequence[int], n_classes: int):
    """(weight [n_classes, dim], bias [n_classes]) whose softmax gives a fitted sklearn LogisticRegression's
    predict_proba: a binary one is sigmoid(w.x + b) = softmax([0, w.x + b]); a class it never saw gets no weight
    and a very negative bias."""
    coef, intercept = np.asarray(coef, dtype=np.float64), np.asarray(intercept, dtype=np.float64)
    if len(classes) == 2:
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    weight = np.zeros((n_classes, coef.shape[1]))
    bias = np.full(n_classes, _UNSEEN_BIAS)
    weight[list(classes)], bias[list(classes)] = coef, intercept
    return weight, bias


def save_sentence_classifier(
    encoder: SentenceEncoder,
    tokenizer,
    weight: np.ndarray,
    bias: np.ndarray,
    directory: str | os.PathLike,
    *,
    labels: Sequence[str],
    max_length: int,
    text_pair: bool,
    method: str,
) -> None:
    """The body (safetensors) and tokenizer, HEAD_FILE and skewtune.json."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    encoder.body.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_file(
        {"weight": np.ascontiguousarray(weight, dtype=np.float32), "bias": np.asarray(bias, dtype=np.float32)},
        str(directory / HEAD_FILE),
    )
    meta = ModelMeta(
        tuple(labels), max_length=int(max_length), text_pair=bool(text_pair), method=method, pooling=POOLING
    )
    write_model_meta(directory, meta)


def load_sentence_classifier(directory: str | os.PathLike, *, trust_remote_code: bool = False):
    """(SentenceClassifier, tokenizer, meta) of a directory written by `save_sentence_classifier`."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    directory = Path(directory)
    meta = read_model_meta(directory)
    encoder, tokenizer = load_encoder(str(directory), max_length=meta.max_length, trust_remote_code=trust_remote_code)
    try:
        head = load_file(str(directory / HEAD_FILE))
    except (OSError, SafetensorError) as exc:
        raise SkewtuneError(f"{directory / HEAD_FILE}: cannot read the classifier head ({exc}); re-run the train stage")
    weight, bias = head.get("weight"), head.get("bias")
    dim = encoder.body.config.hidden_size
    if weight is None or bias is None or weight.shape != (len(meta.labels), dim) or bias.shape != (len(meta.labels),):
        raise SkewtuneError(
            f"{directory / HEAD_FILE}: expected weight [{len(meta.labels)}, {dim}] and bias [{len(meta.labels)}] "
            f"(one row per label of skewtune.json, the body's width), got "
            f"{ {name: list(value.shape) for name, value in head.items()} }; re-run the train stage"
        )
    return SentenceClassifier(encoder, weight, bias), tokenizer, meta
