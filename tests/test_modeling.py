"""Model resolution, head bias init, tokenisation and input checks, on the tiny random BERT."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from skewtune.artifacts import read_examples
from skewtune.config.schema import LossParams
from skewtune.core.errors import SkewtuneError
from skewtune.models.text import (
    add_lora,
    classifier_head,
    encode,
    load_classifier,
    load_tokenizer,
    resolve_model_source,
)
from skewtune.train.losses import build_loss, init_head_bias

LABELS = ["neg", "neu", "pos"]
CE = build_loss(LossParams(), class_counts=[6, 3, 1], labels=LABELS)


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return load_tokenizer(str(tiny_bert_dir))


@pytest.fixture()
def model(tiny_bert_dir, tokenizer):
    return load_classifier(str(tiny_bert_dir), tokenizer, LABELS, max_length=64)


def test_prior_bias_is_log_class_priors(model):
    init_head_bias(model, [6, 3, 1], "prior", LABELS, CE)
    name, head = classifier_head(model, 3)
    assert name == "classifier"
    expected = [math.log(0.6), math.log(0.3), math.log(0.1)]  # -0.5108, -1.2040, -2.3026
    assert head.bias.tolist() == pytest.approx(expected, abs=1e-6)
    # With the head's weights at zero the untrained model predicts exactly the training priors.
    torch.nn.init.zeros_(head.weight)
    model.eval()
    logits = model(input_ids=torch.tensor([[101, 2023, 102]])).logits
    assert torch.softmax(logits, -1)[0].tolist() == pytest.approx([0.6, 0.3, 0.1], abs=1e-6)
    init_head_bias(model, [6, 3, 1], "zero", LABELS, CE)
    assert head.bias.abs().sum() == 0


def test_prior_bias_needs_every_class(model):
    with pytest.raises(SkewtuneError, match="class neu has no training rows"):
        init_head_bias(model, [6, 0, 1], "prior", LABELS, CE)


def test_classifier_config_carries_the_labels(model):
    assert model.config.id2label == {0: "neg", 1: "neu", 2: "pos"} and model.config.label2id["pos"] == 2
    assert next(model.parameters()).dtype == torch.float32


def test_max_length_beyond_position_embeddings(tiny_bert_dir, tokenizer):
    with pytest.raises(
        SkewtuneError, match=r"max_length is 129, but .* at most 128 tokens.*set model.max_length to 128"
    ):
        load_classifier(str(tiny_bert_dir), tokenizer, LABELS, max_length=129)


def test_model_sources(tmp_path):
    assert (resolve_model_source("default") + "/config.json").endswith("model/config.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SkewtuneError, match="directory without config.json"):
        resolve_model_source(str(tmp_path / "empty"))
    with pytest.raises(SkewtuneError, match="not a model directory"):
        resolve_model_source(str(tmp_path / "missing"))
    with pytest.raises(SkewtuneError, match=r"hub is unreachable \(HF_HUB_OFFLINE=1\).*Use a local directory"):
        resolve_model_source("nobody-here/tiny-model")


def test_encode_truncates_and_does_not_pad(tokenizer):
    frame = pd.DataFrame({"text": ["short", "a much longer text " * 20], "label_id": [0, 2]})
    rows = encode(tokenizer, frame, 16)
    assert [len(r["input_ids"]) for r in rows] == [3, 16]
    assert [r["labels"] for r in rows] == [0, 2] and rows[0]["attention_mask"] == [1, 1, 1]
    pairs = encode(tokenizer, frame.assign(text_pair=["other side", "x " * 40]), 16, with_labels=False)
    assert len(pairs[1]["input_ids"]) == 16 and "labels" not in pairs[0]
    assert pairs[0]["token_type_ids"] == [0, 0, 0, 1, 1, 1]  # [CLS] short [SEP] other side [SEP]


def test_read_examples_checks_labels_and_columns(tmp_path):
    path = tmp_path / "val.parquet"
    pd.DataFrame({"id": ["a", "b"], "text": ["x", "y"], "label": ["pos", "happy"]}).to_parquet(path)
    with pytest.raises(SkewtuneError, match=r"row 1 \(id 'b'\) has label 'happy', which is not in labels.json"):
        read_examples(path, LABELS, "split")
    pd.DataFrame({"id": ["a"], "label": ["pos"]}).to_parquet(path)
    with pytest.raises(SkewtuneError, match="missing column.*text"):
        read_examples(path, LABELS, "split")
    pd.DataFrame({"id": ["a", "b"], "text": ["x", "y"], "label": ["pos", "neg"]}).to_parquet(path)
    assert read_examples(path, LABELS, "split")["label_id"].tolist() == [2, 0]


def test_lora_trains_adapters_and_the_whole_head(model):
    wrapped = add_lora(model, 3, r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    trainable = [name for name, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or ".classifier." in name for name in trainable)
    assert any("classifier.modules_to_save" in name for name in trainable)


def test_lora_unknown_target_module(model):
    with pytest.raises(SkewtuneError, match="target_modules.*linear layers are named.*query"):
        add_lora(model, 3, r=4, alpha=8, dropout=0.0, target_modules=["no_such_layer"])
