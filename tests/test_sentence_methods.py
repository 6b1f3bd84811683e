"""train.method embedding and setfit on a tiny BERT: the pair sampler, the head, SMOTE on the train embeddings only,
the model directory and its loading by the predict stage; refusals with one line."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file
from test_training import make_project, read_json, run_train, stray_files

from skewtune.config.load import validate_params
from skewtune.core.columns import prob_columns
from skewtune.core.errors import SkewtuneError
from skewtune.train.diagnostics import CURVES
from skewtune.train.sentence import CONTRASTIVE_SERIES, contrastive_pairs

PROBS = prob_columns(["ham", "spam"])


def test_contrastive_pairs_are_class_balanced_one_positive_and_one_negative_per_row_and_iteration():
    y = np.array([0] * 20 + [1] * 4 + [2])  # 20 / 4 / 1: the pairs are balanced whatever the classes are
    pairs = contrastive_pairs(y, iterations=3, max_pairs=10_000, seed=0)
    same, other = pairs[pairs[:, 2] == 1], pairs[pairs[:, 2] == 0]
    assert len(same) == len(other) == 3 * len(y)
    assert Counter(same[:, 0]) == Counter(other[:, 0]) == {row: 3 for row in range(len(y))}
    assert (y[same[:, 0]] == y[same[:, 1]]).all() and (y[other[:, 0]] != y[other[:, 1]]).all()
    assert (same[:, 0] != same[:, 1])[y[same[:, 0]] != 2].all()  # a partner is another row, unless a class has one
    capped = contrastive_pairs(y, iterations=3, max_pairs=40, seed=0)
    assert len(capped) == 40 and capped[:, 2].sum() == 20
    assert (contrastive_pairs(y, iterations=3, max_pairs=40, seed=0) == capped).all()


@pytest.mark.parametrize("classes", [[0, 1], [0, 2, 3]])  # binary, and 3 of 4 classes (class 1 never seen)
def test_head_weights_give_the_logistic_regressions_probabilities(classes):
    from scipy.special import softmax
    from sklearn.linear_model import LogisticRegression

    from skewtune.models.sentence import head_weights

    rng = np.random.default_rng(0)
    y = np.resize(classes, 60)
    x = rng.normal(size=(60, 5))
    lr = LogisticRegression(class_weight="balanced").fit(x + y[:, None], y)
    weight, bias = head_weights(lr.coef_, lr.intercept_, lr.classes_.tolist(), 4)
    probs = softmax(x @ weight.T + bias, axis=1)
    np.testing.assert_allclose(probs[:, classes], lr.predict_proba(x), atol=1e-9)
    assert np.allclose(probs.sum(axis=1), 1) and probs[:, [c for c in range(4) if c not in classes]].max() < 1e-12


def test_smote_and_adasyn_are_refused_with_finetune_and_auto_in_one_line():
    # auto may fine-tune (above 2,000 train rows, or on images), where no embeddings exist to interpolate
    for strategy, method in (("smote", "finetune"), ("adasyn", "finetune"), ("smote", "auto")):
        with pytest.raises(SkewtuneError) as exc:
            validate_params({"resample": {"strategy": strategy}, "train": {"method": method}})
        line = str(exc.value).splitlines()[-1]
        assert (
            f"resample.strategy is {strategy}, but train.method is {method}" in line
            and "train.method: embedding" in line
        )
    with pytest.raises(SkewtuneError, match="smote or adasyn with train.method: embedding or setfit"):
        validate_params({"resample": {"strategy": "borderline_smote"}, "train": {"method": "embedding"}})
    assert (
        validate_params({"resample": {"strategy": "smote"}, "train": {"method": "setfit"}}).resample.strategy == "smote"
    )


def predict_stage(root: Path, monkeypatch) -> dict[str, pd.DataFrame]:
    from stages import predict

    monkeypatch.chdir(root)
    predict.main()
    return {split: pd.read_parquet(root / f"data/predictions/{split}.parquet") for split in ("val", "test")}


def test_embedding_with_smote_fits_the_head_on_synthetic_train_rows_only(sms, tiny_bert_dir, tmp_path, monkeypatch):
    root = make_project(
        tmp_path, sms, tiny_bert_dir, train={"method": "embedding"}, resample={"strategy": "smote", "seed": 3}
    )
    val_before = (root / "data/split/val.parquet").read_bytes()
    run_train(root, monkeypatch)
    summary = read_json(root / "reports/train/metrics.json")
    # 48 ham and 16 spam train rows: SMOTE (sampling_strategy auto) makes 32 spam rows among the embeddings
    assert summary["method"] == "embedding" and summary["synthetic_rows"] == {"ham": 0, "spam": 32}
    assert summary["rows"] == 64 and summary["head_rows"] == 96 and summary["embedding_dim"] == 32
    # the curves dvc.yaml `plots:` draws for every method: the head's scores, one point at step 0
    curves = {name: read_json(root / f"reports/train/plots/custom/{name}.json") for name in CURVES}
    assert [(row["step"], row["series"]) for row in curves["loss"]] == [(0, "train"), (0, "val")]
    assert all(row["loss"] > 0 for row in curves["loss"])
    f1 = {row["series"]: row["f1"] for row in curves["val_f1"]}
    assert list(f1) == ["macro average", "ham", "spam"] and f1["macro average"] == pytest.approx(
        (f1["ham"] + f1["spam"]) / 2
    )
    assert f1["macro average"] == pytest.approx(summary["best"]["f1_macro"], rel=1e-4)
    assert sum(row["share"] for row in curves["val_share"]) == pytest.approx(1)
    meta = read_json(root / "models/model/skewtune.json")
    assert meta == {
        "labels": ["ham", "spam"],
        "max_length": 32,
        "text_pair": False,
        "method": "embedding",
        "pooling": "mean_l2",
    }
    head = load_file(str(root / "models/model/head.safetensors"))
    assert head["weight"].shape == (2, 32) and head["bias"].shape == (2,) and stray_files(root) == []
    # the body is the source model's, unchanged (frozen)
    body, source = (
        load_file(str(root / "models/model/model.safetensors")),
        load_file(str(tiny_bert_dir / "model.safetensors")),
    )
    assert all(np.array_equal(body[name], source[name]) for name in source)

    predictions = predict_stage(root, monkeypatch)
    assert (root / "data/split/val.parquet").read_bytes() == val_before
    assert {split: len(frame) for split, frame in predictions.items()} == {"val": 32, "test": 14}
    probs = predictions["val"][PROBS].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1) and probs.std(axis=0).min() > 0


def test_embedding_probabilities_are_the_head_on_sentence_transformers_embeddings(
    sms, tiny_bert_dir, tmp_path, monkeypatch
):
    """The pooling the model directory records (mean over the mask, L2-normalised) is what sentence-transformers
    computes for this body: the head applied to its embeddings gives the predict stage's probabilities."""
    from scipy.special import softmax
    from sentence_transformers import SentenceTransformer

    root = make_project(tmp_path, sms, tiny_bert_dir, train={"method": "embedding"})
    run_train(root, monkeypatch)
    val = predict_stage(root, monkeypatch)["val"]
    encoder = SentenceTransformer(str(tiny_bert_dir), device="cpu")
    encoder.max_seq_length = 32
    texts = pd.read_parquet(root / "data/split/val.parquet")["text"].tolist()
    head = load_file(str(root / "models/model/head.safetensors"))
    embeddings = encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    expected = softmax(embeddings @ head["weight"].T + head["bias"], axis=1)
    np.testing.assert_allclose(val[PROBS].to_numpy(), expected, atol=1e-5)


def test_setfit_tunes_the_body_contrastively_then_fits_the_head(sms, tiny_bert_dir, tmp_path, monkeypatch, capsys):
    root = make_project(
        tmp_path, sms, tiny_bert_dir, train={"method": "setfit", "setfit_iterations": 2, "setfit_max_pairs": 96}
    )
    run_train(root, monkeypatch)
    summary = read_json(root / "reports/train/metrics.json")
    assert summary["method"] == "setfit" and summary["pairs"] == 96 and "synthetic_rows" not in summary
    assert read_json(root / "models/model/skewtune.json")["method"] == "setfit"
    body, source = (
        load_file(str(root / "models/model/model.safetensors")),
        load_file(str(tiny_bert_dir / "model.safetensors")),
    )
    assert not np.array_equal(
        body["encoder.layer.0.attention.self.query.weight"], source["encoder.layer.0.attention.self.query.weight"]
    )
    assert "body tuned on 96 pairs (half same-class)" in capsys.readouterr().out
    # the loss curve: the contrastive loss of each of the 6 steps of 16 pairs, then the head's losses after them
    loss = read_json(root / "reports/train/plots/custom/loss.json")
    assert [(row["step"], row["series"]) for row in loss] == [
        *((step, CONTRASTIVE_SERIES) for step in range(1, 7)),
        (6, "train"),
        (6, "val"),
    ]
    assert loss[0]["loss"] == pytest.approx(summary["contrastive_loss_first"], rel=1e-4) and loss[5]["epoch"] == 1
    assert {row["step"] for row in read_json(root / "reports/train/plots/custom/val_f1.json")} == {6}
    probs = predict_stage(root, monkeypatch)["test"][PROBS].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1)


def test_sentence_pairs_are_encoded_as_one_sequence(sms, tiny_bert_dir, tmp_path, monkeypatch):
    root = make_project(tmp_path, sms, tiny_bert_dir, train={"method": "embedding"})
    for name in ("data/resampled/train.parquet", "data/split/val.parquet", "data/split/test.parquet"):
        frame = pd.read_parquet(root / name)
        frame.assign(text_pair=frame["text"].str[::-1]).to_parquet(root / name, index=False)
    run_train(root, monkeypatch)
    assert read_json(root / "models/model/skewtune.json")["text_pair"] is True
    probs = predict_stage(root, monkeypatch)["val"][PROBS].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1)


def test_a_head_that_does_not_fit_the_body_is_one_line(sms, tiny_bert_dir, tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    from skewtune.models.modality import TEXT

    root = make_project(tmp_path, sms, tiny_bert_dir, train={"method": "embedding"})
    run_train(root, monkeypatch)
    save_file(
        {"weight": np.zeros((2, 8), dtype=np.float32), "bias": np.zeros(2, dtype=np.float32)},
        str(root / "models/model/head.safetensors"),
    )
    with pytest.raises(SkewtuneError, match=r"expected weight \[2, 32\] and bias \[2\].*re-run the train stage"):
        TEXT.load_trained(root / "models/model")
    meta = json.loads((root / "models/model/skewtune.json").read_text())
    (root / "models/model/skewtune.json").write_text(json.dumps({**meta, "pooling": None}))
    with pytest.raises(SkewtuneError, match="field pooling is null, but a embedding model needs"):
        TEXT.load_trained(root / "models/model")


def test_auto_plans_embedding_where_rows_are_cross_fitted_finetune_on_images_and_large_data():
    from skewtune.train.auto import AUTO_MAX_ROWS, plan

    cv = "train.cv: auto, 5 folds of 600 train + val rows"
    text = {"text": True, "processes": 1, "cross_fitting": None}
    assert plan(480, **{**text, "cross_fitting": cv}).candidates == ("embedding",)
    assert plan(480, **{**text, "cross_fitting": cv}).why.startswith(cv + ": the decision is tuned on out-of-fold")
    assert plan(480, **{**text, "cross_fitting": cv, "processes": 2}).candidates == ("embedding",)
    assert plan(480, **{**text, "cross_fitting": cv, "text": False}).candidates == ("finetune",)
    assert plan(AUTO_MAX_ROWS, **text).candidates == ("finetune", "embedding") and plan(AUTO_MAX_ROWS, **text).compares
    assert plan(AUTO_MAX_ROWS + 1, **text).candidates == ("finetune",)
    assert "above the bound" in plan(AUTO_MAX_ROWS + 1, **text).why
    assert plan(480, **{**text, "processes": 2}).candidates == ("finetune",)
    assert plan(480, **{**text, "text": False}).why.startswith("images: finetune")


def test_auto_keeps_finetune_unless_embedding_wins_under_the_guard():
    from skewtune.train.auto import AUTO_MAX_ROWS, choose_method, only_candidate, plan

    why = "120 train rows (bound 2000)"
    y = np.array([0] * 150 + [1] * 50)
    right, wrong = np.eye(2)[y], np.eye(2)[1 - y]
    # finetune misses every row of class 1, embedding only the last 5 of them: embedding wins every resample
    finetune = np.where((y == 1)[:, None], wrong, right)
    embedding = np.where((np.arange(200) >= 195)[:, None], wrong, right)
    chosen, record = choose_method(y, {"finetune": finetune, "embedding": embedding}, 120, 2, why)
    assert chosen == "embedding" and record["win_rate"] == 1.0 and record["val_f1_macro"]["finetune"] < 0.5
    assert "embedding kept: it beat finetune in 100% of paired val bootstrap resamples" in record["reason"]
    # a tie keeps finetune; so does a challenger that wins by one row (too few for the guard)
    assert choose_method(y, {"finetune": embedding, "embedding": embedding}, 120, 2, why)[0] == "finetune"
    one_better = np.where((np.arange(200) >= 196)[:, None], wrong, right)
    chosen, record = choose_method(y, {"finetune": embedding, "embedding": one_better}, 120, 2, why)
    assert chosen == "finetune" and record["win_rate"] < record["min_confidence"] == 0.95
    assert record["reason"].startswith(why + "; val macro-F1 at argmax: finetune ")
    chosen, record = only_candidate(
        plan(AUTO_MAX_ROWS + 1, text=True, processes=1, cross_fitting=None), AUTO_MAX_ROWS + 1
    )
    assert chosen == "finetune" and record["win_rate"] is None and "above the bound" in record["reason"]


def test_auto_trains_both_candidates_and_writes_the_chosen_one_and_why(
    sms, tiny_bert_dir, tmp_path, monkeypatch, capsys
):
    # cv off: on rows this few train.cv would cross-fit, and auto then trains embedding alone (tests/test_pipeline_cv.py)
    root = make_project(tmp_path, sms, tiny_bert_dir, train={"method": "auto", "epochs": 1, "cv": "off"})
    run_train(root, monkeypatch)
    record = read_json(root / "reports/train/method.json")
    assert record["setting"] == "auto" and set(record["val_f1_macro"]) == {"finetune", "embedding"}
    assert read_json(root / "models/model/skewtune.json").get("method", "finetune") == record["method"]
    if record["method"] == "embedding":
        assert (root / "models/model/head.safetensors").is_file()
    else:
        assert (root / "reports/train/plots").is_dir() and not (root / "models/model/head.safetensors").exists()
    assert f"train (auto): {record['method']}: {record['reason']}" in capsys.readouterr().out
    assert not (root / "models/candidates").exists() and stray_files(root) == []
    assert np.allclose(predict_stage(root, monkeypatch)["val"][PROBS].sum(axis=1), 1)
