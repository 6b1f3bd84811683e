"""transformers Trainer, customised for imbalanced classification.

What is ours: the device/precision rules, the mapping of the `train` params onto TrainingArguments,
the loss hook (a `skewtune.losses` loss as `compute_loss_func`), the validation metrics and the
selection metric (early stopping and the restored best checkpoint), a diagnostics callback that
logs each evaluation with dvclive, warns when the model collapses onto one class and stops on a
non-finite loss or gradient norm, and `SkewtuneTrainer`, the one Trainer subclass: each training
technique of the params is a callback (`skewtune.callbacks`) or one of its overridden steps.
Everything else (AMP and loss scaling, gradient accumulation, clipping after unscaling, schedulers,
length-grouped batches, with larger megabatches at large batch sizes, DDP, checkpoints) is the Trainer's own.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from sklearn.metrics import f1_score
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices, nested_gather

from skewtune.adversarial import FGM, PGD
from skewtune.callbacks import DeferredReweighting, EarlyStoppingAfter, ExponentialMovingAverage
from skewtune.devices import auto_batch_size, auto_learning_rate, loader_workers
from skewtune.errors import SkewtuneError
from skewtune.io import counted
from skewtune.losses import LossFn, build_loss, unweighted
from skewtune.metrics import COLLAPSE_SHARE
from skewtune.params import LossParams, Params, TrainParams, collapse_remedies, parse_metric_expression

log = logging.getLogger(__name__)

# transformers' name of each train.scheduler (skewtune.params.SCHEDULERS).
HF_SCHEDULERS = {
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant_with_warmup",  # constant after the warmup (none when train.warmup is 0)
    "reduce_on_plateau": "reduce_lr_on_plateau",
}
# Points of the training-loss curve per run: one every max_steps / CURVE_POINTS optimizer steps (their mean loss).
CURVE_POINTS = 100
# The plot files of reports/train/plots/custom (dvc.yaml `plots:`): name → the y field. Each row has step, epoch,
# the y value and `series` (train / val; macro / a class), the long form that .dvc/plots/series.json draws.
CURVES = {"loss": "loss", "val_f1": "f1", "val_share": "share"}
# Seconds between progress lines during training: often enough to see a long run move, rare enough for a log.
PROGRESS_SECONDS = 10.0
# Optimizer steps whose loss and pre-clipping gradient norm stay on the device before the host reads them
# (together, in one transfer; also at the end of each epoch). Reading a value makes the host wait for the
# GPU to finish the step, so reading every step leaves a fast GPU idle; a divergence is then noticed at most
# this many steps late, and those steps' weights are discarded with the failed run anyway.
DIAGNOSTICS_STEPS = 50
# The key of a Trainer log entry (and of state.log_history) that holds the window's per-step values.
STEP_VALUES = "skewtune_steps"
# Length-grouped batches: the fewest batches per megabatch (a random share of the rows, sorted by length and
# cut into batches). A batch pads to its longest row, and in a megabatch of M batches each batch spans about 1/M
# of the length distribution. transformers' own rule keeps 4 megabatches per epoch, which at large batches
# leaves few batches in each: 4 at batch 256 on 4,128 rows, 48% of the SMS positions padding (16: 19%).
MIN_MEGABATCH_BATCHES = 16


@dataclass(frozen=True)
class Selection:
    """The parsed train.select_metric: weighted per-class or macro F1 terms, or the val loss."""

    expression: str
    terms: tuple[tuple[float, int | None], ...]  # (weight, class index); None is macro-F1
    is_loss: bool

    @property
    def metric_for_best_model(self) -> str:
        return "loss" if self.is_loss else "selection"


def parse_selection(expression: str, labels: Sequence[str]) -> Selection:
    try:
        terms = parse_metric_expression(expression)
    except ValueError as exc:
        raise SkewtuneError(f"train.select_metric: {exc}") from None
    if terms == [(1.0, "loss")]:
        return Selection(expression, (), True)
    parsed = []
    for weight, name in terms:
        if name.startswith("f1:"):
            label = name[3:]
            if label not in labels:
                raise SkewtuneError(f"train.select_metric: {name!r} names the class {label!r}, which is not a label; the labels are {', '.join(labels)}")
            parsed.append((weight, list(labels).index(label)))
        elif name == "f1_macro":
            parsed.append((weight, None))
        else:
            raise SkewtuneError(f"train.select_metric: {name!r} cannot be used in a weighted sum; use f1_macro and f1:<label> terms")
    return Selection(expression, tuple(parsed), False)


def metric_key(label: str) -> str:
    """A label as part of a metric name (a dvclive file name): path separators and blanks replaced."""
    return re.sub(r'[\\/:*?"<>|\s]', "_", label)


def make_compute_metrics(labels: Sequence[str], selection: Selection) -> Callable:
    """Validation metrics: macro-F1, F1 per class, the share of predictions per class and the selection score."""
    n = len(labels)

    def compute_metrics(prediction) -> dict[str, float]:
        y_pred = np.asarray(prediction.predictions).argmax(axis=-1)
        y_true = np.asarray(prediction.label_ids)
        per_class = f1_score(y_true, y_pred, labels=list(range(n)), average=None, zero_division=0)
        share = np.bincount(y_pred, minlength=n) / max(len(y_pred), 1)
        metrics = {"f1_macro": float(per_class.mean())}
        metrics.update({f"f1:{metric_key(label)}": float(per_class[i]) for i, label in enumerate(labels)})
        metrics.update({f"share:{metric_key(label)}": float(share[i]) for i, label in enumerate(labels)})
        if not selection.is_loss:
            metrics["selection"] = float(sum(w * (metrics["f1_macro"] if c is None else per_class[c]) for w, c in selection.terms))
        return metrics

    return compute_metrics


def loss_hook(loss_fn: Callable) -> Callable:
    """Adapt a skewtune.losses function (logits, labels, num_items_in_batch) to the Trainer's
    compute_loss_func, which receives the model outputs."""

    def compute_loss(outputs, labels, num_items_in_batch=None):
        return loss_fn(outputs.logits.float(), labels, num_items_in_batch)

    return compute_loss


def build_training_loss(settings: LossParams, class_counts: Sequence[int], labels: Sequence[str]) -> LossFn:
    """The loss of the `loss` params; with loss.reweight_from_epoch, the DeferredReweighting callback that is that loss."""
    weighted = build_loss(settings, class_counts=class_counts, labels=labels)
    if settings.reweight_from_epoch is None:
        return weighted
    return DeferredReweighting(build_loss(unweighted(settings), class_counts=class_counts, labels=labels), weighted, settings.reweight_from_epoch)


def _scheduler(train: TrainParams, greater: bool) -> tuple[str, dict]:
    """transformers' lr_scheduler_type and lr_scheduler_kwargs for train.scheduler."""
    if train.scheduler == "reduce_on_plateau":
        if train.warmup:
            print("train.warmup is not used by the reduce_on_plateau scheduler", file=sys.stderr)
        # Lower the lr when the selection metric stops improving, in its direction.
        return HF_SCHEDULERS["reduce_on_plateau"], {"mode": "max" if greater else "min", "factor": train.plateau_factor, "patience": train.plateau_patience}
    if train.scheduler == "cosine" and train.min_lr_ratio > 0:
        return "cosine_with_min_lr", {"min_lr_rate": train.min_lr_ratio}
    return HF_SCHEDULERS[train.scheduler], {}


def resolve_batch_size(train: TrainParams, device: str, *, rows: int, tokens_per_row: float) -> TrainParams:
    """`train` with batch_size auto replaced by auto_batch_size's rows and lr by auto_learning_rate's; a
    batch_size given as a number keeps both as they are."""
    if train.batch_size != "auto":
        return train
    size = auto_batch_size(device, rows=rows, tokens_per_row=tokens_per_row, epochs=train.epochs if train.max_steps == -1 else None)
    return train.model_copy(update={"batch_size": size, "lr": auto_learning_rate(train.lr, size)})


def device_arguments(device: str, *, nproc: int, compile: bool, tf32: bool, cpus: int | None) -> dict:
    """The TrainingArguments that depend on the device. Fused AdamW everywhere (transformers' default with torch
    2.8 or later; named so that it stays). On CUDA: pinned memory and DataLoader workers (loader_workers), and
    TF32 matmuls for the fp32 parts (the master weights' updates, and everything under train.precision: fp32)
    where the GPU has TF32 (`tf32`: Ampere or later). torch.compile when train.compile. Attention is the
    model's default, SDPA wherever transformers has it for the model."""
    workers = loader_workers(device, nproc, cpus)
    return {
        "optim": "adamw_torch_fused",
        "use_cpu": device == "cpu",
        "ddp_backend": "gloo" if device == "cpu" and distributed_rank() is not None else None,
        "dataloader_pin_memory": device == "cuda",
        "dataloader_num_workers": workers,
        "dataloader_persistent_workers": workers > 0,
        "tf32": True if device == "cuda" and tf32 else None,
        "torch_compile": compile,
    }


def steps_per_epoch(train: TrainParams, rows: int) -> int:
    """Optimizer steps in one epoch of `rows` training rows, as the Trainer counts them."""
    batches = math.ceil(rows / (train.batch_size * train.nproc))
    return max(1, math.ceil(batches / train.grad_accum))


def for_train_size(train: TrainParams, rows: int) -> tuple[TrainParams, str | None]:
    """The train params (batch_size a number: see resolve_batch_size) adapted to `rows` training rows, and a
    line saying how (None: unchanged).

    With few rows an epoch is a handful of optimizer steps: 2 epochs of 480 rows are 30 steps at batch 32,
    and the model is left predicting the majority class. So when train.epochs gives fewer than
    train.min_steps steps (and train.max_steps is -1), training runs for the fewest whole epochs that
    reach min_steps, and early stopping counts only from half of them on (a small model sits at the
    majority class for several epochs before it moves; patience counted from the start stops it there).
    The default 200 is below the 228 steps of 2 epochs of the embedded data, which are known to train
    well: larger data keeps train.epochs and early stopping as set. Warmup as a share scales with the length.
    """
    per_epoch = steps_per_epoch(train, rows)
    planned = math.ceil(train.epochs * per_epoch)
    if train.max_steps != -1 or planned >= train.min_steps:
        return train, None
    epochs = math.ceil(train.min_steps / per_epoch)
    start = max(train.early_stopping_min_epochs, epochs // 2)
    adapted = train.model_copy(update={"epochs": float(epochs), "early_stopping_min_epochs": start})
    stopping = f", early stopping from epoch {start}" if train.early_stopping_patience else ""
    return adapted, (f"train: {rows} rows are {counted(per_epoch, 'optimizer step')} per epoch: train.epochs {train.epochs:g} would be "
                     f"{counted(planned, 'step')}, fewer than train.min_steps {train.min_steps}; training {counted(epochs, 'epoch')} "
                     f"({epochs * per_epoch} steps){stopping}")


def training_arguments(output_dir: str, train: TrainParams, *, precision: str, device: str, selection: Selection, by_length: bool = True):
    """TrainingArguments for one evaluation and one checkpoint per epoch, the best one restored at the end;
    train.batch_size is a number of rows here (resolve_batch_size); `by_length`: whether rows have a length
    to group batches by (train.group_by_length; texts, not images)."""
    from transformers import TrainingArguments
    from transformers.utils import is_torch_tf32_available

    greater = not selection.is_loss
    scheduler, scheduler_kwargs = _scheduler(train, greater)
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        gradient_accumulation_steps=train.grad_accum,
        learning_rate=train.lr,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup,  # transformers 5: below 1 a share of all steps, else a number of steps
        lr_scheduler_type=scheduler,
        lr_scheduler_kwargs=scheduler_kwargs,
        max_grad_norm=train.max_grad_norm,
        seed=train.seed,
        data_seed=train.seed,
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        **device_arguments(device, nproc=train.nproc, compile=train.compile, tf32=device == "cuda" and is_torch_tf32_available(), cpus=os.cpu_count()),
        train_sampling_strategy="group_by_length" if train.group_by_length and by_length else "random",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,  # with load_best_model_at_end the best checkpoint is kept as well
        load_best_model_at_end=True,
        metric_for_best_model=selection.metric_for_best_model,
        greater_is_better=greater,
        # The Trainer logs (and reads its running loss) once per window; the per-step values come with each
        # window (SkewtuneTrainer.log) and the window ends early at each epoch's end (DiagnosticsCallback).
        logging_strategy="steps",
        logging_steps=DIAGNOSTICS_STEPS,
        logging_nan_inf_filter=False,
        label_names=["labels"],
        report_to="none",
        disable_tqdm=True,
    )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class DiagnosticsCallback(TrainerCallback):
    """Per evaluation: train loss, gradient norm before clipping (mean and max over the steps since the
    last evaluation), learning rate, val loss, macro-F1, F1 and predicted share per class; logged to
    `live` (a dvclive Live, on the main process only) and printed as one line. Between evaluations, a
    progress line every PROGRESS_SECONDS. The curves of CURVES are written as they grow (the training loss
    every few steps), so that a viewer can follow a run. Warns when the val predictions collapse onto one
    class; stops on a non-finite loss or gradient norm, except for steps that fp16 loss scaling skipped.

    The per-step values are kept on the device (`record_step`, called by SkewtuneTrainer at each optimizer
    step) and read every DIAGNOSTICS_STEPS steps and at each epoch's end (`read_window`), so training does not
    wait on the host each step; a divergence is reported with its own step and the window it was read in."""

    def __init__(self, labels: Sequence[str], live=None, *, fp16: bool = False, remedies: str | None = None) -> None:
        self.labels = list(labels)
        self.remedies = collapse_remedies(Params()) if remedies is None else remedies  # collapse_remedies of the run's params
        self.live = live
        self.fp16 = fp16
        self.evaluations: dict[int, dict[str, float]] = {}  # global step → logged values
        self._steps: list[tuple[float, float, float]] = []  # (loss, grad_norm, lr) read since the last evaluation
        self._pending: list[tuple[torch.Tensor, torch.Tensor, float]] = []  # (loss, grad_norm, lr) not yet read
        self._pending_at: list[tuple[int, float]] = []  # (global step, epoch) of each pending step
        # The finite losses of the steps read since the last progress line, and the first and last of those steps: the
        # Trainer also reads at its own log steps and each epoch's end, and the next line must count those steps too.
        self._unshown: tuple[list[float], int, int] | None = None
        self._progress_due = False  # a progress line waits for the read it asked for (on_step_end)
        self.curves: dict[str, list[dict]] = {name: [] for name in CURVES}
        self._window: list[float] = []  # training losses since the last point of the loss curve
        self.curve_every = 1

    def record_step(self, loss: torch.Tensor, grad_norm: torch.Tensor | float, lr: float) -> None:
        """One optimizer step's summed micro-batch loss and pre-clipping gradient norm, left on their device."""
        self._pending.append((loss.detach().float().reshape(()), torch.as_tensor(grad_norm, dtype=torch.float32, device=loss.device).reshape(()), lr))

    def on_step_end(self, args, state, control, **kwargs):
        if len(self._pending_at) < len(self._pending):
            self._pending_at.append((state.global_step, float(state.epoch)))
        if not state.is_world_process_zero or time.monotonic() - self._last_progress < PROGRESS_SECONDS:
            return
        if args.world_size == 1:
            # Read the steps so far (one transfer per progress line), so that the line shows their loss: on_log prints it.
            control.should_log, self._progress_due = True, True
        else:
            # Under DDP a read is collective, and only this rank keeps the time: the line shows the last window read.
            self._progress(args, state)

    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_log = True  # the last window of the epoch is read before its evaluation

    def read_window(self, gather: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> list[dict[str, float]]:
        """The pending steps as JSON-able dicts (step, epoch, loss, grad_norm, learning_rate), in one transfer
        to the host. `gather` concatenates a tensor across DDP ranks (collective: every rank calls this); the
        loss is the mean over the ranks, as the Trainer logs it, and the gradient norm, the same on every rank
        after the all-reduce, too."""
        if not self._pending:
            return []
        values = torch.stack([torch.stack(pair) for *pair, _ in self._pending])  # (steps, 2)
        gathered = gather(values)
        values = gathered.reshape(-1, *values.shape).mean(dim=0).tolist()
        window = [
            {"step": step, "epoch": epoch, "loss": loss, "grad_norm": grad_norm, "learning_rate": lr}
            for (step, epoch), (loss, grad_norm), (*_, lr) in zip(self._pending_at, values, self._pending, strict=True)
        ]
        self._pending, self._pending_at = [], []
        return window

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run has the history of the interrupted one: log it again into the fresh dvclive dir. Here,
        # not at the first epoch: a run resumed from its final checkpoint has no epoch left to begin.
        self.curve_every = max(1, state.max_steps // CURVE_POINTS)
        for entry in state.log_history:
            self._consume(entry, state.num_train_epochs, is_main=state.is_world_process_zero, replay=True)
        self._started = self._last_progress = time.monotonic()
        self._first_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        entry = {**(logs or {}), "step": state.global_step}  # as the Trainer records it in state.log_history
        self._consume(entry, state.num_train_epochs, is_main=state.is_world_process_zero, replay=False)
        if self._progress_due and "loss" in entry:
            self._progress(args, state)

    def _progress(self, args, state) -> None:
        """One line: step/total, training rows per second, ETA, and the mean loss of the steps read since the
        previous line (in one process, all the steps since then; under DDP those of the windows of DIAGNOSTICS_STEPS
        steps read since then, none before the first), so each step read counts in exactly one line."""
        now = self._last_progress = time.monotonic()
        self._progress_due = False
        steps_per_second = (state.global_step - self._first_step) / max(now - self._started, 1e-9)
        rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        left = (state.max_steps - state.global_step) / steps_per_second if steps_per_second else math.inf
        loss = ""
        if self._unshown is not None:
            losses, first, last = self._unshown
            loss, self._unshown = f", train loss {np.mean(losses):.4f} (steps {first}-{last})", None
        print(
            f"train: step {state.global_step}/{state.max_steps} (epoch {state.epoch:.2f}), "
            f"{steps_per_second * rows_per_step:.1f} rows/s, ETA {_duration(left)}{loss}",
            flush=True,
        )

    def _consume(self, entry: dict, total_epochs: float, *, is_main: bool, replay: bool) -> None:
        if "loss" in entry:
            # A window's steps; an entry without them (a plain Trainer's log) counts as one step.
            window = entry.get(STEP_VALUES, [entry])
            for step in window:
                self._train_step(step, window)
            self._write_curves(("loss",))
            losses = [step["loss"] for step in window if math.isfinite(step["loss"])]
            if losses and not replay:  # a resumed run's history was shown by the run it resumes
                earlier, first = self._unshown[0] if self._unshown else [], self._unshown[1] if self._unshown else window[0]["step"]
                self._unshown = (earlier + losses, first, window[-1]["step"])
        elif "eval_loss" in entry:
            self._evaluation(entry, total_epochs, is_main, replay)

    def _train_step(self, entry: dict, window: list[dict]) -> None:
        loss, grad_norm, lr = entry["loss"], entry.get("grad_norm", math.nan), entry.get("learning_rate", math.nan)
        # The Trainer logs the gradient norm of every step (before clipping). A non-finite one with a finite
        # loss has already been applied: clipping turns inf into NaN weights, and the next loss would be NaN.
        bad_grad = "grad_norm" in entry and not math.isfinite(grad_norm)
        if (not math.isfinite(loss) or bad_grad) and not self.fp16:
            what = f"the training loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {grad_norm} (the loss {loss:.4g} is finite)"
            read = f"; read with steps {window[0]['step']}-{window[-1]['step']}" if len(window) > 1 else ""
            raise SkewtuneError(
                f"{what} at optimizer step {entry['step']} (epoch {entry['epoch']:.2f}, "
                f"learning rate {lr:.3g}{read}): training diverged. Lower train.lr, keep train.max_grad_norm above 0, "
                "or check the training texts; with fp16, bf16 or fp32 precision is safer"
            )
        if not math.isfinite(loss):
            # The loss scaler saw non-finite gradients and skipped this optimizer step.
            log.warning("optimizer step %s: the loss is %s; fp16 loss scaling skipped the step", entry["step"], loss)
            return
        self._steps.append((loss, grad_norm, lr))  # fp16: an infinite norm is a step the loss scaler skipped
        self._window.append(loss)
        if entry["step"] % self.curve_every == 0:
            self._add_points("loss", entry, [("train", float(np.mean(self._window)))])
            self._window = []

    def _add_points(self, curve: str, entry: dict, values: list[tuple[str, float]]) -> None:
        field = CURVES[curve]
        self.curves[curve] += [{"step": int(entry["step"]), "epoch": float(entry["epoch"]), field: value, "series": series} for series, value in values]

    def _write_curves(self, names: Sequence[str]) -> None:
        if self.live is not None:
            for name in names:
                self.live.log_plot(name, self.curves[name], x="step", y=CURVES[name], template=None)

    def _evaluation(self, entry: dict, total_epochs: float, is_main: bool, replay: bool) -> None:
        steps = np.array(self._steps or [(math.nan,) * 3], dtype=np.float64)
        self._steps = []
        grad_norms = steps[:, 1][np.isfinite(steps[:, 1])]  # fp16 overflow steps report an infinite norm
        keys = [metric_key(label) for label in self.labels]
        values = {
            "epoch": float(entry["epoch"]),
            "train/loss": float(steps[:, 0].mean()),
            "train/grad_norm": float(grad_norms.mean()) if grad_norms.size else math.nan,
            "train/grad_norm_max": float(grad_norms.max()) if grad_norms.size else math.nan,
            "train/lr": float(steps[-1, 2]),
            "val/loss": float(entry["eval_loss"]),
            "val/f1_macro": float(entry["eval_f1_macro"]),
        }
        values.update({f"val/f1/{key}": float(entry[f"eval_f1:{key}"]) for key in keys})
        values.update({f"val/share/{key}": float(entry[f"eval_share:{key}"]) for key in keys})
        if "eval_selection" in entry:
            values["val/selection"] = float(entry["eval_selection"])
        self.evaluations[int(entry["step"])] = values
        self._add_points("loss", entry, [("val", values["val/loss"])])
        self._add_points("val_f1", entry, [("macro average", values["val/f1_macro"])] + [(label, values[f"val/f1/{key}"]) for label, key in zip(self.labels, keys)])
        self._add_points("val_share", entry, [(label, values[f"val/share/{key}"]) for label, key in zip(self.labels, keys)])
        if not is_main:
            return
        self._write_curves(list(CURVES))
        shares = [values[f"val/share/{key}"] for key in keys]
        top = int(np.argmax(shares))
        if shares[top] >= COLLAPSE_SHARE and not replay:
            log.warning(
                "model predicts %r for %.0f%% of val rows at epoch %g: collapsed to one class; see reports/train. Remedies: %s",
                self.labels[top], 100 * shares[top], round(values["epoch"], 2), self.remedies,
            )
        if self.live is not None:
            for name, value in values.items():
                self.live.log_metric(name, value)
            self.live.next_step()
        if not replay:
            per_class = "  ".join(f"{label} {values[f'val/f1/{key}']:.3f}/{values[f'val/share/{key}']:.0%}" for label, key in zip(self.labels, keys))
            print(
                f"epoch {values['epoch']:.2f}/{total_epochs:g}: train loss {values['train/loss']:.4f}, val loss {values['val/loss']:.4f}, "
                f"val macro-F1 {values['val/f1_macro']:.4f} (F1/predicted share: {per_class}), "
                f"grad norm {values['train/grad_norm']:.3g} (max {values['train/grad_norm_max']:.3g}), lr {values['train/lr']:.3g}",
                flush=True,
            )

    def best(self, best_step: int | None) -> dict[str, float]:
        """The logged values of the evaluation whose checkpoint was restored."""
        return self.evaluations.get(best_step, {}) if best_step is not None else {}


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
        indices = get_length_grouped_indices(self.lengths, size, mega_batch_mult=min(MIN_MEGABATCH_BATCHES, batches), generator=self.generator)
        full = rows // size
        order = [0, *(torch.randperm(full - 1, generator=self.generator) + 1).tolist(), *range(full, batches)] if full > 1 else range(batches)
        return iter([i for batch in order for i in indices[batch * size : (batch + 1) * size]])


# Test-only: `SKEWTUNE_TEST_HOLD=<event>:<marker>` makes the train stage stop at `event`, write `marker` and wait
# there for a signal, so that an interruption test knows where training is when its signal arrives instead of
# racing a run that may finish first. Events: "checkpoint" (the first checkpoint is complete) and "save" (training
# is done and the model is about to be written to its output directory).
HOLD_ENV = "SKEWTUNE_TEST_HOLD"
HOLD_EVENTS = ("checkpoint", "save")
HOLD_SECONDS = 300  # a test that never signals fails with an error instead of hanging


class HoldForSignal(TrainerCallback):
    def __init__(self, event: str, marker: str) -> None:
        if event not in HOLD_EVENTS:
            raise SkewtuneError(f"{HOLD_ENV}: unknown event {event!r}; expected <event>:<marker file> with event one of {HOLD_EVENTS}")
        self.event, self.marker, self.held = event, marker, False

    def _hold(self) -> None:
        self.held = True
        with open(self.marker, "w") as marker:
            marker.write(str(os.getpid()))
        deadline = time.monotonic() + HOLD_SECONDS
        # Short sleeps: a signal that the kernel delivers to another thread does not cut the main thread's
        # sleep short, but its Python handler runs (and raises here) as soon as this thread wakes.
        while time.monotonic() < deadline:
            time.sleep(0.05)
        raise SkewtuneError(f"{HOLD_ENV}: held at {self.event} for {HOLD_SECONDS} s and no signal came")

    def on_save(self, args, state, control, **kwargs):
        if self.event == "checkpoint" and not self.held:
            self._hold()

    def on_train_end(self, args, state, control, **kwargs):
        if self.event == "save":
            self._hold()


def hold_for_signal_from_environment() -> list[HoldForSignal]:
    """The HoldForSignal callback that SKEWTUNE_TEST_HOLD asks for, if any (it is set by tests only)."""
    value = os.environ.get(HOLD_ENV)
    if not value:
        return []
    event, _, marker = value.partition(":")
    return [HoldForSignal(event, marker)]


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

    def __init__(self, *args, attack: FGM | PGD | None = None, ema: ExponentialMovingAverage | None = None,
                 augment: Callable | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attack, self.ema, self.augment = attack, ema, augment
        self.diagnostics = next((c for c in self.callback_handler.callbacks if isinstance(c, DiagnosticsCallback)), None)
        self._step_loss: torch.Tensor | None = None  # the clean loss of the optimizer step under way, on the device

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.augment is not None:  # training batches only: evaluation and prediction see the images as they are
            inputs = {**inputs, "pixel_values": self.augment(inputs["pixel_values"])}
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.attack is not None:
            # One more forward/backward at the perturbed embeddings; the logged loss stays the clean one.
            self.attack(self.model.get_input_embeddings(), lambda: super(SkewtuneTrainer, self).training_step(model, inputs, num_items_in_batch))
        if self.diagnostics is not None:
            # Summed over the micro-batches of gradient accumulation, as the Trainer's own running loss is.
            self._step_loss = loss if self._step_loss is None else self._step_loss + loss
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        # Called once per optimizer step, after clipping (which returned the pre-clipping norm) and before the update.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if self.diagnostics is not None and self._step_loss is not None:
            self.diagnostics.record_step(self._step_loss, math.nan if grad_norm is None else grad_norm, self._get_learning_rate())
            self._step_loss = None
        return grad_norm

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            sampler = LengthGroupedBatches(sampler.batch_size, lengths=sampler.lengths, generator=sampler.generator)
        return sampler

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self.diagnostics is not None:
            logs = {**logs, STEP_VALUES: self.diagnostics.read_window(lambda t: nested_gather(t, self.args.parallel_mode))}
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
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
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
    return PGD(train.adversarial_epsilon, train.pgd_alpha, train.pgd_steps, [p for p in model.parameters() if p.requires_grad])


def build_trainer(model, processor, args, train_set, val_set, *, train: TrainParams, loss_fn: LossFn, labels: Sequence[str], selection: Selection,
                  callbacks: Sequence = (), collator=None, augment: Callable | None = None):
    """A SkewtuneTrainer with the loss hook, the validation metrics, the `collator` (None: dynamic padding by the
    tokenizer `processor`), `augment` of training batches and the techniques of the `train` params: early
    stopping, EMA, adversarial training; a DeferredReweighting loss is also a callback."""
    from transformers import DataCollatorWithPadding, PrinterCallback

    ema = ExponentialMovingAverage(train.ema_decay) if train.ema_decay is not None else None
    techniques = [
        *([EarlyStoppingAfter(train.early_stopping_patience, train.early_stopping_min_epochs)] if train.early_stopping_patience else []),
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


def distributed_rank() -> int | None:
    """This process's rank under torchrun, or None outside it."""
    return int(os.environ["RANK"]) if "LOCAL_RANK" in os.environ and "RANK" in os.environ else None


def relaunch_distributed(nproc: int, module: str) -> int:
    """Run `python -m module` in `nproc` DDP processes, as `python -m torch.distributed.run --standalone
    --nproc_per_node nproc -m module` does; return the exit status of the first process that failed, or 0.

    torchrun is driven in-process so that a failed rank, which has printed its own message, ends in
    that exit status instead of torchrun's traceback.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(["--standalone", "--nproc_per_node", str(nproc), "-m", module]))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


def checkpoint_to_resume(directory: str, resume: bool, *, is_main: bool) -> str | None:
    """The last complete Trainer checkpoint in `directory` when resuming; otherwise the directory is cleared,
    so that checkpoints of an older run never mix with this one.

    The Trainer writes a checkpoint in place and its trainer_state.json last, so a run stopped while saving
    leaves a checkpoint without a readable trainer_state.json; it is skipped (and removed) instead of failing
    the resume or, worse, resuming from half-written weights.
    """
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not resume:
        if is_main:
            shutil.rmtree(directory, ignore_errors=True)
        return None
    complete: dict[int, str] = {}
    pattern = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        match, path = pattern.fullmatch(name), os.path.join(directory, name)
        if not (match and os.path.isdir(path)):
            continue
        if _readable_state(os.path.join(path, "trainer_state.json")):
            complete[int(match.group(1))] = path
        elif is_main:
            print(f"train.resume: {path} was not completely written (the run stopped while saving it); removing it", file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
    if not complete:
        if is_main:
            print(f"train.resume: no complete checkpoint in {directory}; training from the start", file=sys.stderr)
        return None
    return complete[max(complete)]


def _readable_state(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            return isinstance(json.load(handle), dict)
    except (OSError, ValueError):
        return False
