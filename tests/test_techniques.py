"""The training techniques of the train params, each through the real SkewtuneTrainer on a tiny random BERT:
adversarial training (FGM, PGD), EMA of the weights, deferred re-weighting, early stopping after a minimum number of
epochs, the plateau and cosine-floor schedulers, and the dropout keys."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import DataCollatorWithPadding, TrainerCallback

from skewtune.config.schema import LossParams, TrainParams
from skewtune.core.errors import SkewtuneError
from skewtune.models.text import encode, load_classifier, load_tokenizer
from skewtune.train.arguments import training_arguments
from skewtune.train.callbacks import ExponentialMovingAverage
from skewtune.train.losses import build_loss
from skewtune.train.selection import parse_selection
from skewtune.train.trainer import build_trainer, build_training_loss

LABELS = ["ham", "spam"]
SELECTION = parse_selection("f1_macro", LABELS)
CE = build_loss(LossParams(), class_counts=[3, 1], labels=LABELS)


@pytest.fixture(scope="module")
def rows(sms_path, quiet_bert) -> list[dict]:
    """32 encoded SMS rows, 24 ham and 8 spam."""
    frame = pd.read_csv(sms_path, sep="\t")
    frame.columns = ["label", "text"]
    frame = pd.concat([frame[frame.label == "ham"].head(24), frame[frame.label == "spam"].head(8)])
    frame = frame.assign(label_id=(frame.label == "spam").astype(int))
    return encode(load_tokenizer(str(quiet_bert)), frame, 32)


def fresh_model(model_dir: Path):
    torch.manual_seed(0)
    return load_classifier(str(model_dir), load_tokenizer(str(model_dir)), LABELS, max_length=32)


def trainer_for(model, model_dir, rows, tmp_path, *, loss=CE, callbacks=(), sgd=False, **train):
    settings = {
        "batch_size": 8,
        "eval_batch_size": 8,
        "lr": 1e-3,
        "warmup": 0,
        "scheduler": "constant",
        "seed": 0,
        "early_stopping_patience": 0,
        "group_by_length": False,
        **train,
    }
    params = TrainParams(**settings)
    args = training_arguments(
        str(tmp_path / "checkpoints"), params, precision="fp32", device="cpu", selection=SELECTION
    )
    if sgd:  # plain SGD: the update is -lr * gradient, so a hand-computed gradient gives the weights exactly
        args.optim = "sgd"
    tokenizer = load_tokenizer(str(model_dir))
    return build_trainer(
        model,
        tokenizer,
        args,
        rows,
        rows[:8],
        train=params,
        loss_fn=loss,
        labels=LABELS,
        selection=SELECTION,
        callbacks=list(callbacks),
    )


class EmbeddingsBeforeUpdate(TrainerCallback):
    """The word embeddings as the optimizer finds them: after the attack, before the first update."""

    def __init__(self) -> None:
        self.weight = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.weight is None:
            self.weight = model.get_input_embeddings().weight.detach().clone()


def _loss_backward(model, batch) -> None:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    CE(model(**inputs).logits, batch["labels"], len(batch["labels"])).backward()


def _reference_step(
    model, batch, lr: float, attack: str | None, epsilon: float, alpha: float = 0.0, steps: int = 0
) -> dict:
    """One SGD step with FGM / PGD written out from the papers' recipe, independently of skewtune.adversarial."""
    model.train()
    weight = model.get_input_embeddings().weight
    original = weight.detach().clone()
    _loss_backward(model, batch)
    if attack == "fgm":
        with torch.no_grad():
            weight += epsilon * weight.grad / weight.grad.norm()
        _loss_backward(model, batch)
    elif attack == "pgd":
        clean = {n: p.grad.clone() for n, p in model.named_parameters()}
        delta = torch.zeros_like(original)
        for step in range(steps):
            with torch.no_grad():
                delta = delta + alpha * weight.grad / weight.grad.norm()
                if delta.norm() > epsilon:
                    delta = delta * epsilon / delta.norm()
                weight.copy_(original + delta)
            for n, p in model.named_parameters():
                p.grad = clean[n].clone() if step == steps - 1 else None
            _loss_backward(model, batch)
    with torch.no_grad():
        weight.copy_(original)
        return {n: p - lr * p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "attack, options",
    [("fgm", {"adversarial_epsilon": 0.5}), ("pgd", {"adversarial_epsilon": 0.5, "pgd_alpha": 0.3, "pgd_steps": 3})],
)
def test_adversarial_step_matches_a_hand_computed_reference(attack, options, quiet_bert, rows, tmp_path):
    """One optimizer step on 8 rows: the weights equal the clean + adversarial SGD step computed by hand, the
    embeddings were restored exactly before the update, and the step differs from a step without the attack."""
    batch_rows = rows[:4] + rows[-4:]  # ham and spam
    capture = EmbeddingsBeforeUpdate()
    model = fresh_model(quiet_bert)
    start = model.get_input_embeddings().weight.detach().clone()
    trainer = trainer_for(
        model,
        quiet_bert,
        batch_rows,
        tmp_path,
        sgd=True,
        callbacks=[capture],
        max_steps=1,
        lr=0.5,
        weight_decay=0.0,
        max_grad_norm=0.0,
        adversarial=attack,
        **options,
    )
    trainer.train()
    assert torch.equal(capture.weight, start)

    batch = DataCollatorWithPadding(load_tokenizer(str(quiet_bert)))(batch_rows)
    expected = _reference_step(
        fresh_model(quiet_bert),
        batch,
        0.5,
        attack,
        options["adversarial_epsilon"],
        options.get("pgd_alpha", 0.0),
        options.get("pgd_steps", 0),
    )
    clean = _reference_step(fresh_model(quiet_bert), batch, 0.5, None, 0.0)
    trained = dict(trainer.model.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(trained[name].detach(), value, rtol=1e-5, atol=1e-6, msg=name)
    moved = max((expected[n] - clean[n]).abs().max().item() for n in expected)
    assert moved > 1e-4  # the attack changed the step: the comparison above can tell the two apart


def test_adversarial_needs_trainable_word_embeddings(quiet_bert, rows, tmp_path):
    model = fresh_model(quiet_bert)
    model.get_input_embeddings().weight.requires_grad_(False)
    with pytest.raises(
        SkewtuneError,
        match=r"^train.adversarial is fgm, but the word embeddings of model.name's BertForSequenceClassification",
    ):
        trainer_for(model, quiet_bert, rows, tmp_path, adversarial="fgm")


class StepWeights(TrainerCallback):
    """The raw trained weights at the start and after every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def _take(self, model) -> None:
        self.steps.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._take(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._take(model)


def test_ema_weights_are_evaluated_restored_and_saved(quiet_bert, rows, tmp_path):
    """One epoch of 4 steps, decay 0.5: the model left by training (what the stage saves) is the EMA computed by
    hand from the raw weights of each step (with the warm-up decay min(0.5, (1 + n) / (10 + n)) after n updates),
    and the logged val loss is that of the EMA weights."""
    steps = StepWeights()
    trainer = trainer_for(
        fresh_model(quiet_bert), quiet_bert, rows, tmp_path, callbacks=[steps], epochs=1, lr=1e-2, ema_decay=0.5
    )
    trainer.train()
    assert len(steps.steps) == 5
    expected = dict(steps.steps[0])
    for n_before, raw in enumerate(steps.steps[1:]):
        decay = min(0.5, (1 + n_before) / (10 + n_before))
        expected = {n: decay * expected[n] + (1 - decay) * raw[n] for n in expected}
    final = dict(trainer.model.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(final[name].detach(), value, rtol=1e-5, atol=1e-7, msg=name)
    assert not torch.allclose(final["classifier.weight"], steps.steps[-1]["classifier.weight"])  # not the raw weights
    logged = next(entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(logged, rel=1e-6)


def test_ema_decay_warms_up_to_the_configured_one():
    """TensorFlow's num_updates warm-up: the first update nearly replaces the shadow, the configured decay is reached
    after (10 * decay - 1) / (1 - decay) updates (8 for 0.5, ~8,990 for 0.999) and never exceeded."""
    assert ExponentialMovingAverage(0.5).decay_at(0) == pytest.approx(0.1)
    assert ExponentialMovingAverage(0.5).decay_at(7) == pytest.approx(8 / 17)
    assert ExponentialMovingAverage(0.5).decay_at(8) == 0.5 == ExponentialMovingAverage(0.5).decay_at(10**6)
    assert ExponentialMovingAverage(0.999).decay_at(255) == pytest.approx(256 / 265)  # a short run: ~30 steps averaged
    assert ExponentialMovingAverage(0.999).decay_at(8991) == 0.999


class StopAfterEpoch(TrainerCallback):
    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_training_stop = True


class ShadowAtEnd(TrainerCallback):
    """The EMA shadow after the last step of the run (read from the trainer's EMA callback)."""

    def __init__(self) -> None:
        self.trainer, self.shadow = None, None

    def on_epoch_end(self, args, state, control, **kwargs):
        self.shadow = {n: t.clone() for n, t in self.trainer.ema.shadow.items()}


def test_resume_continues_the_ema(quiet_bert, rows, tmp_path):
    """Two epochs straight, or one epoch, a stop, and a resume from its checkpoint: the same EMA at the end."""
    straight = ShadowAtEnd()
    trainer = trainer_for(
        fresh_model(quiet_bert),
        quiet_bert,
        rows,
        tmp_path / "straight",
        callbacks=[straight],
        epochs=2,
        lr=1e-2,
        ema_decay=0.9,
    )
    straight.trainer = trainer
    trainer.train()

    trainer_for(
        fresh_model(quiet_bert),
        quiet_bert,
        rows,
        tmp_path / "resumed",
        callbacks=[StopAfterEpoch()],
        epochs=2,
        lr=1e-2,
        ema_decay=0.9,
    ).train()
    checkpoint = next((tmp_path / "resumed" / "checkpoints").glob("checkpoint-*"))
    assert checkpoint.name == "checkpoint-4" and (checkpoint / "raw_weights.safetensors").is_file()
    resumed = ShadowAtEnd()
    trainer = trainer_for(
        fresh_model(quiet_bert),
        quiet_bert,
        rows,
        tmp_path / "resumed",
        callbacks=[resumed],
        epochs=2,
        lr=1e-2,
        ema_decay=0.9,
    )
    resumed.trainer = trainer
    trainer.train(resume_from_checkpoint=str(checkpoint))
    for name, value in straight.shadow.items():
        torch.testing.assert_close(resumed.shadow[name], value, rtol=1e-5, atol=1e-6, msg=name)


class LossPhases(TrainerCallback):
    """Per optimizer step: the epoch number (from 1) and whether the class-weighted loss is in use."""

    def __init__(self, loss) -> None:
        self.loss, self.phases = loss, []

    def on_step_begin(self, args, state, control, **kwargs):
        self.phases.append((int(state.epoch) + 1, self.loss.reweighting))


def test_deferred_reweighting_switches_at_its_epoch(quiet_bert, rows, tmp_path):
    settings = LossParams(name="weighted_ce", reweight_from_epoch=3)
    loss = build_training_loss(settings, [24, 8], LABELS)
    phases = LossPhases(loss)
    trainer_for(fresh_model(quiet_bert), quiet_bert, rows, tmp_path, loss=loss, callbacks=[phases], epochs=4).train()
    assert phases.phases == [(epoch, epoch >= 3) for epoch in (1, 2, 3, 4) for _ in range(4)]
    logits, labels = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 0, 1])
    plain = build_loss(LossParams(), class_counts=[24, 8], labels=LABELS)
    weighted = build_loss(settings, class_counts=[24, 8], labels=LABELS)
    assert torch.equal(loss(logits, labels, None), weighted(logits, labels, None))  # the last phase
    loss.reweighting = False
    assert torch.equal(loss(logits, labels, None), plain(logits, labels, None))


@pytest.mark.parametrize("min_epochs, stopped_at", [(0, 2), (3, 4)])
def test_min_epochs_hold_off_early_stopping(min_epochs, stopped_at, quiet_bert, rows, tmp_path):
    """With a learning rate too small to change val macro-F1, patience 1 stops at epoch 2; evaluations up to
    epoch early_stopping_min_epochs do not count, so with 3 it stops at epoch 3 + 1."""
    trainer = trainer_for(
        fresh_model(quiet_bert),
        quiet_bert,
        rows,
        tmp_path,
        epochs=6,
        lr=1e-9,
        early_stopping_patience=1,
        early_stopping_min_epochs=min_epochs,
    )
    trainer.train()
    assert trainer.state.epoch == stopped_at


def test_plateau_settings_and_cosine_floor_reach_the_scheduler(quiet_bert, rows, tmp_path):
    trainer = trainer_for(
        fresh_model(quiet_bert),
        quiet_bert,
        rows,
        tmp_path / "plateau",
        scheduler="reduce_on_plateau",
        plateau_factor=0.5,
        plateau_patience=3,
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    plateau = trainer.lr_scheduler
    assert (type(plateau).__name__, plateau.factor, plateau.patience, plateau.mode) == (
        "ReduceLROnPlateau",
        0.5,
        3,
        "max",
    )

    trainer = trainer_for(
        fresh_model(quiet_bert), quiet_bert, rows, tmp_path / "cosine", scheduler="cosine", min_lr_ratio=0.1, lr=1e-3
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    for _ in range(10):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(1e-4)


def test_dropout_keys_set_the_model_config(quiet_bert, tmp_path):
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = load_tokenizer(str(quiet_bert))
    model = load_classifier(
        str(quiet_bert), tokenizer, LABELS, max_length=32, hidden_dropout=0.3, classifier_dropout=0.2
    )
    assert model.config.hidden_dropout_prob == 0.3 and model.bert.encoder.layer[0].output.dropout.p == 0.3
    assert model.dropout.p == 0.2  # the dropout before BERT's classifier
    assert load_classifier(str(quiet_bert), tokenizer, LABELS, max_length=32).config.hidden_dropout_prob == 0.0
    Qwen3Model(
        Qwen3Config(
            vocab_size=30522,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
        )
    ).save_pretrained(tmp_path)
    with pytest.raises(
        SkewtuneError, match=r"model.hidden_dropout is 0.3, but the qwen3 config of model.name has no such dropout"
    ):
        load_classifier(str(tmp_path), tokenizer, LABELS, max_length=32, hidden_dropout=0.3)


def test_train_stage_with_every_technique(sms_path, quiet_bert, tmp_path, monkeypatch):
    """The stage wires the keys through: EMA, PGD, deferred focal alpha (scalar), dropout, min epochs, cosine floor."""
    from test_training import make_project, run_train

    from skewtune.models.text import load_trained

    sms = pd.read_csv(sms_path, sep="\t")
    sms.columns = ["label", "text"]
    sms = sms.assign(id=[f"sms{i}" for i in range(len(sms))])
    root = make_project(
        tmp_path,
        sms,
        quiet_bert,
        model={"hidden_dropout": 0.1, "classifier_dropout": 0.2},
        train={
            "epochs": 2,
            "ema_decay": 0.9,
            "adversarial": "pgd",
            "pgd_steps": 2,
            "early_stopping_min_epochs": 1,
            "scheduler": "cosine",
            "min_lr_ratio": 0.1,
        },
        loss={"name": "focal", "alpha": 0.25, "reweight_from_epoch": 2},
    )
    run_train(root, monkeypatch)
    model, _, meta = load_trained(root / "models/model")
    assert (
        list(meta.labels) == LABELS
        and model.config.hidden_dropout_prob == 0.1
        and model.config.classifier_dropout == 0.2
    )
    assert json.loads((root / "reports/train/metrics.json").read_text())["step"] == 1
