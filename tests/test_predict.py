"""The predict stage against a direct forward pass of the saved model, row by row."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from skewtune.core.errors import SkewtuneError
from skewtune.models.inference import predict_proba, progress_printer
from skewtune.models.text import load_classifier, load_tokenizer, load_trained, save_classifier

LABELS = ["billing", "other", "outage"]
WORDS = "the service was down again and my invoice shows a charge i do not recognise please help".split()


def split_table(n: int, seed: int, pairs: bool) -> pd.DataFrame:
    """Rows of random lengths in random order, so that batching by length reorders them."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 40))) for _ in range(n)]
    frame = pd.DataFrame({"id": [f"r{seed}-{i}" for i in range(n)], "text": texts, "label": rng.choice(LABELS, size=n)})
    if pairs:
        frame.insert(2, "text_pair", [" ".join(rng.choice(WORDS, size=rng.integers(1, 10))) for _ in range(n)])
    return frame


@pytest.mark.parametrize("pairs", [False, True])
def test_predict_stage_matches_forward_pass(pairs, tiny_bert_dir, tmp_path, monkeypatch):
    from stages import predict

    tokenizer = load_tokenizer(str(tiny_bert_dir))
    torch.manual_seed(1)
    save_classifier(
        load_classifier(str(tiny_bert_dir), tokenizer, LABELS, max_length=24),
        tokenizer,
        tmp_path / "models/model",
        labels=LABELS,
        max_length=24,
        text_pair=pairs,
    )
    tables = {"val": split_table(21, 0, pairs), "test": split_table(9, 1, pairs)}
    (tmp_path / "data/split").mkdir(parents=True)
    for name, frame in tables.items():
        frame.to_parquet(tmp_path / f"data/split/{name}.parquet", index=False)
    (tmp_path / "data/interim").mkdir(parents=True)
    (tmp_path / "data/interim/labels.json").write_text(json.dumps({"labels": LABELS}))
    (tmp_path / "params.yaml").write_text("train: {eval_batch_size: 4}\n")
    monkeypatch.chdir(tmp_path)
    predict.main()

    model, tokenizer, _ = load_trained(tmp_path / "models/model")
    model.eval()
    for name, frame in tables.items():
        out = pd.read_parquet(tmp_path / f"data/predictions/{name}.parquet")
        assert list(out.columns) == ["id", "label"] + [f"prob:{label}" for label in LABELS]
        assert out["id"].tolist() == frame["id"].tolist() and out["label"].tolist() == frame["label"].tolist()
        probs = out[[f"prob:{label}" for label in LABELS]].to_numpy()
        assert probs.dtype == np.float64 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-12, rtol=0)
        for i, row in enumerate(frame.itertuples()):
            encoded = tokenizer(
                row.text, row.text_pair if pairs else None, truncation=True, max_length=24, return_tensors="pt"
            )
            with torch.no_grad():
                expected = torch.softmax(model(**encoded).logits.double(), -1)[0].numpy()
            np.testing.assert_allclose(probs[i], expected, atol=1e-5, err_msg=f"{name} row {i}")
        assert len(np.unique(probs.round(6), axis=0)) > 1  # rows differ, so a mix-up of rows would show


def _two_labels(config: dict) -> dict:
    return {**config, "id2label": {"0": "a", "1": "b"}, "label2id": {"a": 0, "b": 1}}


TAMPERED_MODEL = {
    "max_length beyond the positions": (
        "skewtune.json",
        lambda meta: {**meta, "max_length": 100000},
        "models/model: skewtune.json has max_length 100000, but the model handles at most 128 tokens "
        "(max_position_embeddings / tokenizer limit); re-run the train stage",
    ),
    "config of another class count": (
        "config.json",
        _two_labels,
        "models/model: config.json gives the model 2 outputs (num_labels), but skewtune.json lists 3 labels; "
        "re-run the train stage",
    ),
}


@pytest.mark.parametrize("case", TAMPERED_MODEL)
def test_a_model_directory_that_contradicts_skewtune_json_is_one_line(case, tiny_bert_dir, tmp_path):
    """skewtune.json is checked against the model before its weights load, in the predict stage as in `skewtune
    predict`: one line, exit 2, no predictions (not transformers' RuntimeError about tensor sizes)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    save_classifier(
        load_classifier(str(tiny_bert_dir), tokenizer, LABELS, max_length=24),
        tokenizer,
        tmp_path / "models/model",
        labels=LABELS,
        max_length=24,
        text_pair=False,
    )
    name, edit, message = TAMPERED_MODEL[case]
    path = tmp_path / "models/model" / name
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    (tmp_path / "data/split").mkdir(parents=True)
    for split in ("val", "test"):
        split_table(5, 0, False).to_parquet(tmp_path / f"data/split/{split}.parquet", index=False)
    (tmp_path / "data/interim").mkdir(parents=True)
    (tmp_path / "data/interim/labels.json").write_text(json.dumps({"labels": LABELS}))
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "stages.predict"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr == f"skewtune predict: error: {message}\n", proc.stderr
    assert not (tmp_path / "data/predictions").exists()


def test_weights_that_do_not_fit_the_config_are_one_line(tiny_bert_dir, tmp_path):
    """config.json and skewtune.json both edited to 2 labels, the weights still of 3 outputs."""
    from skewtune.model_dir import ModelMeta, write_model_meta

    tokenizer = load_tokenizer(str(tiny_bert_dir))
    directory = tmp_path / "model"
    save_classifier(
        load_classifier(str(tiny_bert_dir), tokenizer, LABELS, max_length=24),
        tokenizer,
        directory,
        labels=LABELS,
        max_length=24,
        text_pair=False,
    )
    (directory / "config.json").write_text(json.dumps(_two_labels(json.loads((directory / "config.json").read_text()))))
    write_model_meta(directory, ModelMeta(tuple(LABELS[:2]), max_length=24, text_pair=False))
    with pytest.raises(
        SkewtuneError, match=r"model: the weights do not fit config.json \(.+\); re-run the train stage$"
    ) as caught:
        load_trained(directory)
    assert "\n" not in str(caught.value)


def test_pickled_weights_are_refused(tiny_bert_dir, tmp_path):
    """Only safetensors load: a directory holding a pickled pytorch_model.bin is rejected."""
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    directory = tmp_path / "model"
    save_classifier(
        load_classifier(str(tiny_bert_dir), tokenizer, LABELS, max_length=24),
        tokenizer,
        directory,
        labels=LABELS,
        max_length=24,
        text_pair=False,
    )
    torch.save(load_file(directory / "model.safetensors"), directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    with pytest.raises(SkewtuneError, match="cannot load the trained model"):
        load_trained(directory)
    assert json.loads((directory / "skewtune.json").read_text())["labels"] == LABELS


def test_long_predictions_print_a_progress_line_per_chunk(tiny_bert_dir, capsys):
    """Inputs longer than one chunk print one whole line per chunk (no carriage returns); short ones none."""
    model = load_classifier(tiny_bert_dir, load_tokenizer(tiny_bert_dir), ["ham", "spam"], max_length=16)
    frame = pd.DataFrame({"text": [f"message number {i}" for i in range(25)]})
    kwargs = dict(max_length=16, text_pair=False, batch_size=8, device="cpu", chunk_rows=10)
    predict_proba(
        model, load_tokenizer(tiny_bert_dir), frame, progress=progress_printer(25, "val ", chunk_rows=10), **kwargs
    )
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "predict: val 10/25 rows",
        "predict: val 20/25 rows",
        "predict: val 25/25 rows",
    ]
    assert progress_printer(10, chunk_rows=10) is None
