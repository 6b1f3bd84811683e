"""train.method embedding and setfit: a sentence-embedding classifier (skewtune.models.sentence) fitted on the train
rows, written to models/model with its summary in reports/train/metrics.json and the curves that dvc.yaml `plots:`
draws for every method (skewtune.train.diagnostics.CURVES, as fine-tuning writes them): setfit's contrastive loss per
step, then one point after the body's last step (step 0 for embedding, whose body is not trained): the head's loss on
its train rows and on val, and its val F1 and predicted share per class.

embedding: the body stays as it is; one forward pass embeds the train rows. setfit (Tunstall et al. 2022) first tunes
the body contrastively: pairs of train rows drawn class-balanced (`contrastive_pairs`) and the cosine-similarity loss
of sentence-transformers (the squared gap between the cosine of the two embeddings and 1 for a same-class pair, 0
otherwise). Both then fit LogisticRegression(class_weight="balanced") on the embeddings, after smote / adasyn
(resample.strategy) added synthetic rows there: to the train rows only, never to val or test.

The setfit library itself (1.2.0) is not used: it needs `datasets` and `evaluate`, which skewtune does not otherwise
depend on, its Trainer fails under dvclive unless report_to is set, and it saves its head as a pickle; the method is
the pair sampler and the loss below, on the same pooling that inference runs.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch

from skewtune.config.schema import EMBEDDING_SAMPLERS, Params
from skewtune.core.outputs import Outputs, counted, json_text
from skewtune.core.paths import MODEL, TRAIN_REPORTS
from skewtune.data.resampling import oversample_embeddings
from skewtune.models.devices import resolve_device
from skewtune.models.inference import predict_proba
from skewtune.models.modality import TEXT, model_source
from skewtune.models.sentence import (
    SentenceClassifier,
    SentenceEncoder,
    embed,
    head_weights,
    load_encoder,
    save_sentence_classifier,
)
from skewtune.models.text import class_counts, encode
from skewtune.train.diagnostics import CURVE_POINTS, curve_path, curve_points
from skewtune.train.selection import per_class_scores

# setfit's body training, as the SetFit paper and library run it: AdamW at 2e-5, 16 pairs per step, one pass over the
# pairs, the learning rate warmed up over the first 10% of the steps and decayed linearly.
SETFIT_LR = 2e-5
SETFIT_BATCH = 16
SETFIT_WARMUP = 0.1
# A progress line every this many contrastive steps (800 pairs), so that a run of minutes shows it is moving.
PROGRESS_STEPS = 50
# The logistic-regression head: sklearn's defaults, enough iterations for unit-length embeddings of a few hundred dims.
HEAD_MAX_ITER = 2000
# The series of setfit's body loss in the loss curve: not "train", which is the classification loss of fine-tuning, so
# that `dvc plots diff` does not join the two.
CONTRASTIVE_SERIES = "train (contrastive pairs)"


def contrastive_pairs(label_ids, *, iterations: int, max_pairs: int, seed: int) -> np.ndarray:
    """Pairs [n, 3] of (row a, row b, 1 if same class else 0), drawn as SetFit's oversampling does: in each of
    `iterations`, every row with one positive partner (another row of its class; itself when its class has one row)
    and one negative partner (a row of another class), so positives and negatives are equal in number whatever the
    class balance. Beyond `max_pairs`, an equal number of each kind is kept at random (a bound on the cost)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(label_ids)
    members = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    others = {c: np.flatnonzero(y != c) for c in members}
    positives, negatives = [], []
    for _ in range(iterations):
        for row, c in enumerate(y):
            same = members[c][members[c] != row] if len(members[c]) > 1 else members[c]
            positives.append((row, rng.choice(same), 1))
            negatives.append((row, rng.choice(others[c]), 0))
    half = max_pairs // 2
    if len(positives) > half:
        positives = [positives[i] for i in rng.choice(len(positives), half, replace=False)]
        negatives = [negatives[i] for i in rng.choice(len(negatives), half, replace=False)]
    pairs = np.array(positives + negatives, dtype=np.int64)
    return pairs[rng.permutation(len(pairs))]


def tune_contrastively(
    encoder: SentenceEncoder, tokenizer, train: pd.DataFrame, pairs: np.ndarray, *, max_length: int, device: str
) -> list[float]:
    """One pass of the cosine-similarity loss over `pairs` (rows of `train`), updating the body in place; the loss of
    each step."""
    from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

    rows = encode(tokenizer, train, max_length, with_labels=False)
    collate = DataCollatorWithPadding(tokenizer)
    steps = math.ceil(len(pairs) / SETFIT_BATCH)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=SETFIT_LR)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(SETFIT_WARMUP * steps), steps)
    encoder.to(device).train()
    losses, started = [], time.perf_counter()
    for start in range(0, len(pairs), SETFIT_BATCH):
        batch = pairs[start : start + SETFIT_BATCH]
        a, b = (
            encoder(**{key: value.to(device) for key, value in collate([rows[i] for i in side]).items()})
            for side in (batch[:, 0], batch[:, 1])
        )
        target = torch.as_tensor(batch[:, 2], dtype=a.dtype, device=device)
        loss = torch.nn.functional.mse_loss((a * b).sum(dim=-1), target)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        step = len(losses)
        if step % PROGRESS_STEPS == 0 and step < steps:
            rate = step * SETFIT_BATCH / (time.perf_counter() - started)
            print(f"train (setfit): step {step}/{steps}, loss {losses[-1]:.4f} ({rate:.1f} pairs/s)", flush=True)
    return losses


def fit_head(embeddings: np.ndarray, label_ids: np.ndarray, n_classes: int, seed: int):
    """(weight, bias) of LogisticRegression(class_weight="balanced") on the embeddings, as head_weights lays them."""
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(class_weight="balanced", max_iter=HEAD_MAX_ITER, random_state=seed)
    head.fit(embeddings, label_ids)
    return head_weights(head.coef_, head.intercept_, head.classes_.tolist(), n_classes)


def sentence_curves(
    labels: list[str],
    contrastive_losses: list[float],
    head_train: tuple[np.ndarray, np.ndarray],
    head_val: tuple[np.ndarray, np.ndarray],
) -> dict[str, list[dict]]:
    """The rows of each curve of CURVES for a sentence-embedding run: the contrastive loss of setfit's steps (the mean
    of each window of steps, at most CURVE_POINTS points as fine-tuning draws its training loss), then at the body's
    last step (0 when the body is not trained; a setfit step's epoch is its share of the one pass over the pairs) the
    head's cross-entropy on its train rows and on val, and its val F1 at argmax (macro and per class) and predicted
    share per class. `head_train` and `head_val`: (label ids, the head's probabilities)."""
    from sklearn.metrics import log_loss

    steps = len(contrastive_losses)
    every = max(1, steps // CURVE_POINTS)
    ends = sorted({*range(every, steps + 1, every), steps} - {0})
    loss = [
        point
        for start, end in zip([0, *ends], ends)
        for point in curve_points(
            "loss", end, end / steps, [(CONTRASTIVE_SERIES, float(np.mean(contrastive_losses[start:end])))]
        )
    ]
    at = {"step": steps, "epoch": 1.0 if steps else 0.0}
    classes = list(range(len(labels)))
    head_loss = [
        (series, log_loss(y, probs, labels=classes))
        for series, (y, probs) in (("train", head_train), ("val", head_val))
    ]
    y_val, val_probs = head_val
    per_class, share = per_class_scores(y_val, val_probs.argmax(axis=1), len(labels))
    return {
        "loss": loss + curve_points("loss", **at, values=head_loss),
        "val_f1": curve_points("val_f1", **at, values=[("macro average", per_class.mean()), *zip(labels, per_class)]),
        "val_share": curve_points("val_share", **at, values=list(zip(labels, share))),
    }


def train_sentence_classifier(
    p: Params,
    labels: list[str],
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    model_dir: str = MODEL,
    reports_dir: str = TRAIN_REPORTS,
) -> np.ndarray:
    """Fit p.train.method (embedding | setfit) on `train`, score it on `val`, and write the model to `model_dir` and
    reports_dir/metrics.json with its curves, atomically; the val probabilities."""
    from scipy.special import softmax
    from transformers import set_seed

    m, t, method = p.model, p.train, p.train.method
    started = time.perf_counter()
    device = resolve_device(t.device)
    set_seed(t.seed)
    source = model_source(m.name, TEXT, trust_remote_code=m.trust_remote_code)
    warning = TEXT.check(source, m, train)  # as fine-tuning checks: a vocabulary that misses the text stops here
    if warning:
        print(warning, flush=True)
    encoder, tokenizer = load_encoder(source, max_length=m.max_length, trust_remote_code=m.trust_remote_code)
    counts = class_counts(train["label_id"], len(labels))
    share = ", ".join(f"{label} {n}" for label, n in zip(labels, counts))
    print(f"train ({method}): {source} on {len(train)} rows ({share}), val {len(val)} rows; {device}", flush=True)
    summary: dict = {"method": method, "rows": len(train)}
    losses: list[float] = []  # setfit's contrastive loss per step
    if method == "setfit":
        pairs = contrastive_pairs(
            train["label_id"], iterations=t.setfit_iterations, max_pairs=t.setfit_max_pairs, seed=t.seed
        )
        losses = tune_contrastively(encoder, tokenizer, train, pairs, max_length=m.max_length, device=device)
        summary.update(pairs=len(pairs), contrastive_loss_first=losses[0], contrastive_loss_last=losses[-1])
        print(
            f"train (setfit): body tuned on {counted(len(pairs), 'pair')} (half same-class), "
            f"loss {losses[0]:.4f} -> {losses[-1]:.4f}",
            flush=True,
        )
    batch = {"max_length": m.max_length, "batch_size": t.eval_batch_size, "device": device}
    features, y = embed(encoder, tokenizer, train, **batch), train["label_id"].to_numpy()
    if p.resample.strategy in EMBEDDING_SAMPLERS:
        r = p.resample
        features, y = oversample_embeddings(
            features, y, labels, strategy=r.strategy, over_ratio=r.over_ratio, seed=r.seed
        )
        synthetic = dict(zip(labels, np.subtract(class_counts(y, len(labels)), counts).tolist()))
        summary["synthetic_rows"] = synthetic
        made = ", ".join(f"{label} {n}" for label, n in synthetic.items() if n)
        print(
            f"train ({r.strategy}): {counted(sum(synthetic.values()), 'synthetic row')} among the train embeddings "
            f"({made or 'none needed'}); val and test untouched",
            flush=True,
        )
    weight, bias = fit_head(features, y, len(labels), t.seed)
    classifier = SentenceClassifier(encoder, weight, bias)
    probs = predict_proba(classifier, tokenizer, val, text_pair="text_pair" in train.columns, **batch)
    # the head on its own train rows (synthetic ones included), as the classifier computes it
    train_probs = softmax(features @ weight.T + bias, axis=1)
    curves = sentence_curves(labels, losses, (y, train_probs), (val["label_id"].to_numpy(), probs))
    f1 = curves["val_f1"][0]["f1"]  # the macro average
    seconds = time.perf_counter() - started
    # no wall time in the summary: an output that differs between two runs of the same inputs is not content-addressed
    summary.update(embedding_dim=int(features.shape[1]), head_rows=len(y), best={"f1_macro": float(f1)})
    with Outputs() as out:
        save_sentence_classifier(
            encoder,
            tokenizer,
            weight,
            bias,
            out.path(model_dir, directory=True),
            labels=labels,
            max_length=m.max_length,
            text_pair="text_pair" in train.columns,
            method=method,
        )
        out.json(f"{reports_dir}/metrics.json", summary)
        for name, rows in curves.items():
            out.text(curve_path(reports_dir, name), json_text(rows))
    print(
        f"train ({method}): {seconds:.0f} s; balanced logistic regression on {counted(len(y), 'embedding')}; val "
        f"macro-F1 at argmax {f1:.4f}; saved {model_dir}",
        flush=True,
    )
    return probs
