"""The one Trainer subclass (loss, class weights, adversarial steps, length-grouped batches) and how it is built."""

from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices, nested_gather

from skewtune.config.schema import LossParams, TrainParams
from skewtune.core.errors import SkewtuneError
from skewtune.train.adversarial import FGM, PGD
from skewtune.train.callbacks import DeferredReweighting, EarlyStoppingAfter, ExponentialMovingAverage
from skewtune.train.diagnostics import STEP_VALUES, DiagnosticsCallback
from skewtune.train.losses import LossFn, build_loss, unweighted
from skewtune.train.selection import Selection, make_compute_metrics

# Length-grouped batches: the fewest batches per megabatch (a random share of the rows, sorted by length and
# cut into batches). A batch pads to its longest row, and in a megabatch of M batches each batch spans about 1/M
# of the length distribution. transformers' own rule keeps 4 megabatches per epoch, which at large batches
# leaves few batches in each: 4 at batch 256 on 4,128 rows, 48% of the SMS positions padding (16: 19%).
MIN_MEGABATCH_BATCHES = 16


def loss_hook(loss_fn: Callable) -> Callable:
    """Adapt a skewtune.train.losses function (logits, labels, num_items_in_batch) to the Trainer's
    compute_loss_func, which receives the model outputs."""

    def compute_loss(outputs, labels, num_items_in_batch=None):
        return loss_fn(outputs.logits.float(), labels, num_items_in_batch)

    return compute_loss


def build_training_loss(settings: LossParams, class_counts: Sequence[int], labels: Sequence[str]) -> LossFn:
    """The loss of the `loss` params; with loss.reweight_from_epoch, the DeferredReweighting callback that is that loss."""
    weighted = build_loss(settings, class_counts=class_counts, labels=labels)
    if settings.reweight_from_epoch is None:
        return weighted
    return DeferredReweighting(
        build_loss(unweighted(settings), class_counts=class_counts, labels=labels),
        weighted,
        settings.reweight_from_epoch,
    )


class LengthGroupedBatches(LengthGroupedSampler):
    """transformers' length-grouped sampler with megabatches of at least MIN_MEGABATCH_BATCHES batches (or the
    whole epoch). Where transformers' rule gives that many already (e.g. batch 32 on 2,048 rows or more, the
    defaults), the order is transformers' own, unchanged. Otherwise a megabatch covers most or all of the
    epoch, whose batches would then run from the longest rows to the shortest (on SMS: from spam-rich to
    ham-rich), so the order of the full batches is shuffled; the first (it holds the longest row, so that a
    batch too large for memory fails at once) and a short last batch keep their places."""

    def __iter__(self):
        rows, size = len(self.lengths), self.batch_size
        if min(rows // (size * 4), 50) >= MIN_MEGABATCH_BATCHES:
            return iter(get_length_grouped_indices(self.lengths, size, generator=self.generator))
        batches = math.ceil(rows / size)
        indices = get_length_grouped_indices(
            self.lengths, size, mega_batch_mult=min(MIN_MEGABATCH_BATCHES, batches), generator=self.generator
        )
        full = rows // size
        order = (
            [0, *(torch.randperm(full - 1, generator=self.generator) + 1).tolist(), *range(full, batches)]
            if full > 1
            else range(batches)
        )
        return iter([i for batch in order for i in indices[batch * size : (batch + 1) * size]])


# The raw (non-EMA) weights in a checkpoint of a run with train.ema_decay, for resuming it.
RAW_WEIGHTS = "raw_weights.safetensors"


class SkewtuneTrainer(Trainer):
    """The Trainer with the techniques that cannot be callbacks: adversarial training on the word embeddings
    and image augmentation of training batches (`training_step`), the EMA weights in evaluation and checkpoints
    (`evaluate`, `_save_checkpoint`, `_load_from_checkpoint`), and each optimizer step's loss and pre-clipping
    gradient norm handed, on the device, to the DiagnosticsCallback among the callbacks (`training_step`,
    `_get_grad_norm`), whose values each windowed log entry carries (`log`); length-grouped batches come from
    LengthGroupedBatches (`_get_train_sampler`). `attack` is an FGM or PGD, `ema` the ExponentialMovingAverage
    callback, `augment` a function of a batch's pixel_values; None (and no DiagnosticsCallback) turns each off,
    and the Trainer then runs unchanged."""

    def __init__(
        self,
        *args,
        attack: FGM | PGD | None = None,
        ema: ExponentialMovingAverage | None = None,
        augment: Callable | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.attack, self.ema, self.augment = attack, ema, augment
        self.diagnostics = next(
            (c for c in self.callback_handler.callbacks if isinstance(c, DiagnosticsCallback)), None
        )
        self._step_loss: torch.Tensor | None = None  # the clean loss of the optimizer step under way, on the device

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.augment is not None:  # training batches only: evaluation and prediction see the images as they are
            inputs = {**inputs, "pixel_values": self.augment(inputs["pixel_values"])}
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.attack is not None:
            # One more forward/backward at the perturbed embeddings; the logged loss stays the clean one.
            self.attack(
                self.model.get_input_embeddings(),
                lambda: super(SkewtuneTrainer, self).training_step(model, inputs, num_items_in_batch),
            )
        if self.diagnostics is not None:
            # Summed over the micro-batches of gradient accumulation, as the Trainer's own running loss is.
            self._step_loss = loss if self._step_loss is None else self._step_loss + loss
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        # Called once per optimizer step, after clipping (which returned the pre-clipping norm) and before the update.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if self.diagnostics is not None and self._step_loss is not None:
            self.diagnostics.record_step(
                self._step_loss, math.nan if grad_norm is None else grad_norm, self._get_learning_rate()
            )
            self._step_loss = None
        return grad_norm

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            sampler = LengthGroupedBatches(sampler.batch_size, lengths=sampler.lengths, generator=sampler.generator)
        return sampler

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self.diagnostics is not None:
            logs = {
                **logs,
                STEP_VALUES: self.diagnostics.read_window(lambda t: nested_gather(t, self.args.parallel_mode)),
            }
        super().log(logs, start_time)

    def evaluate(self, *args, **kwargs):
        if self.ema is None:
            return super().evaluate(*args, **kwargs)
        with self.ema.swapped(self.model):
            return super().evaluate(*args, **kwargs)

    def _save_checkpoint(self, model, trial):
        if self.ema is None:
            return super()._save_checkpoint(model, trial)
        from safetensors.torch import save_file
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        if self.args.should_save:
            # Before the Trainer writes trainer_state.json, which marks the checkpoint complete.
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            os.makedirs(folder, exist_ok=True)
            raw = {name: p.detach().contiguous() for name, p in self.ema.trained(self.model).items()}
            save_file(raw, os.path.join(folder, RAW_WEIGHTS))
        with self.ema.swapped(self.model):
            super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.ema is None:
            return
        from safetensors.torch import load_file

        # The checkpoint's model is the EMA; the raw weights continue training.
        self.ema.start(self.model)
        raw = load_file(os.path.join(resume_from_checkpoint, RAW_WEIGHTS))
        with torch.no_grad():
            for name, p in self.ema.trained(self.model).items():
                p.copy_(raw[name])


def _attack(train: TrainParams, model) -> FGM | PGD | None:
    """The FGM or PGD of train.adversarial, after checking that the model's word embeddings can be reached."""
    if train.adversarial == "none":
        return None
    try:
        embeddings = model.get_input_embeddings()
    except NotImplementedError:
        embeddings = None
    if not isinstance(getattr(embeddings, "weight", None), torch.nn.Parameter) or not embeddings.weight.requires_grad:
        raise SkewtuneError(
            f"train.adversarial is {train.adversarial}, but the word embeddings of model.name's {type(model).__name__} are not a trainable "
            "input embedding matrix (get_input_embeddings) to perturb; set train.adversarial: none"
        )
    if train.adversarial == "fgm":
        return FGM(train.adversarial_epsilon)
    return PGD(
        train.adversarial_epsilon, train.pgd_alpha, train.pgd_steps, [p for p in model.parameters() if p.requires_grad]
    )


def build_trainer(
    model,
    processor,
    args,
    train_set,
    val_set,
    *,
    train: TrainParams,
    loss_fn: LossFn,
    labels: Sequence[str],
    selection: Selection,
    callbacks: Sequence = (),
    collator=None,
    augment: Callable | None = None,
):
    """A SkewtuneTrainer with the loss hook, the validation metrics, the `collator` (None: dynamic padding by the
    tokenizer `processor`), `augment` of training batches and the techniques of the `train` params: early
    stopping, EMA, adversarial training; a DeferredReweighting loss is also a callback."""
    from transformers import DataCollatorWithPadding, PrinterCallback

    ema = ExponentialMovingAverage(train.ema_decay) if train.ema_decay is not None else None
    techniques = [
        *(
            [EarlyStoppingAfter(train.early_stopping_patience, train.early_stopping_min_epochs)]
            if train.early_stopping_patience
            else []
        ),
        *([ema] if ema is not None else []),
        *([loss_fn] if isinstance(loss_fn, TrainerCallback) else []),
    ]
    trainer = SkewtuneTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        processing_class=processor,
        data_collator=collator or DataCollatorWithPadding(processor),
        compute_loss_func=loss_hook(loss_fn),
        compute_metrics=make_compute_metrics(labels, selection),
        callbacks=[*callbacks, *techniques],
        attack=_attack(train, model),
        ema=ema,
        augment=augment,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every step's log; DiagnosticsCallback prints per evaluation
    return trainer
