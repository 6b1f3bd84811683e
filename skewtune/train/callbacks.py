"""The training techniques that hook into the Trainer's events: early stopping after a minimum number of epochs,
an exponential moving average (EMA) of the weights, and deferred re-weighting of the loss. Each is one
TrainerCallback; `skewtune.train.trainer.SkewtuneTrainer` adds them from the validated params."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import EarlyStoppingCallback, TrainerCallback

from skewtune.train.losses import LossFn


class EarlyStoppingAfter(EarlyStoppingCallback):
    """transformers' early stopping, except that evaluations up to epoch `min_epochs` do not count toward the
    patience (Keras' `start_from_epoch`): a model that sits at one value for its first epochs, as imbalanced
    tasks often do, is not stopped, and training stops at epoch min_epochs + patience at the earliest."""

    def __init__(self, patience: int, min_epochs: int) -> None:
        super().__init__(early_stopping_patience=patience)
        self.min_epochs = min_epochs

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        # state.epoch is fractional (e.g. 2.9999 at the end of epoch 3 of an uneven split): compare rounded.
        if round(state.epoch, 6) > self.min_epochs:
            super().on_evaluate(args, state, control, metrics, **kwargs)


class ExponentialMovingAverage(TrainerCallback):
    """An EMA of the trainable weights, updated after every optimizer step: shadow = d * shadow + (1 - d) * w, where
    d = min(decay, (1 + n) / (10 + n)) after n earlier updates (TensorFlow's ExponentialMovingAverage with
    num_updates): a decay of 0.999 averages over ~1,000 steps, so without the warm-up a run of a few hundred steps
    would evaluate and save weights that are still mostly the pretrained ones and the untrained head.

    `SkewtuneTrainer` swaps the shadow into the model (`swapped`) to evaluate and to write checkpoints, so the
    selected epoch, the restored best checkpoint and the saved model are the EMA weights; training continues from
    the raw weights, which each checkpoint keeps beside the EMA ones for resuming."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] | None = None

    @staticmethod
    def trained(model) -> dict[str, torch.nn.Parameter]:
        return {name: p for name, p in model.named_parameters() if p.requires_grad}

    def start(self, model) -> None:
        """Begin the average at the model's current weights."""
        self.shadow = {name: p.detach().clone() for name, p in self.trained(model).items()}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.shadow is None:  # a resumed run has its shadow from the checkpoint already
            self.start(model)

    def decay_at(self, updates: int) -> float:
        """The decay of the update that follows `updates` earlier ones."""
        return min(self.decay, (1 + updates) / (10 + updates))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # global_step already counts this step; a resumed run continues the count, so its warm-up does too.
        decay = self.decay_at(state.global_step - 1)
        with torch.no_grad():
            for name, p in self.trained(model).items():
                self.shadow[name].lerp_(p.detach(), 1.0 - decay)

    def on_train_end(self, args, state, control, **kwargs):
        # The model now holds the restored best (EMA) weights; later evaluations use them as they are.
        self.shadow = None

    @contextmanager
    def swapped(self, model):
        """The EMA weights in the model, the raw ones in the shadow, and back on exit (a no-op outside training)."""
        self._swap(model)
        try:
            yield
        finally:
            self._swap(model)

    def _swap(self, model) -> None:
        if self.shadow is None:
            return
        with torch.no_grad():
            for name, p in self.trained(model).items():
                raw = p.detach().clone()
                p.copy_(self.shadow[name])
                self.shadow[name].copy_(raw)


class DeferredReweighting(TrainerCallback):
    """Deferred re-weighting (Cao et al. 2019, LDAM-DRW): the plain loss in the epochs before `start_epoch`, the
    class-weighted one from it on, so that the features are learnt from the natural distribution first. It is
    also the loss the Trainer calls (`loss.reweight_from_epoch`)."""

    def __init__(self, plain: LossFn, weighted: LossFn, start_epoch: int) -> None:
        self.plain, self.weighted, self.start_epoch = plain, weighted, start_epoch
        self.reweighting = False

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch counts the epochs done (restored on resume); epochs are numbered from 1.
        self.reweighting = round(state.epoch or 0) + 1 >= self.start_epoch

    def __call__(self, logits, labels, num_items_in_batch=None):
        return (self.weighted if self.reweighting else self.plain)(logits, labels, num_items_in_batch)
