"""What a training run shows while it runs: progress lines, dvclive curves, and the collapse and divergence guard."""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Sequence

import numpy as np
import torch
from transformers import TrainerCallback

from skewtune.config.effective import collapse_remedies
from skewtune.config.schema import Params
from skewtune.core.errors import SkewtuneError
from skewtune.decision.scores import COLLAPSE_SHARE
from skewtune.train.selection import metric_key

log = logging.getLogger(__name__)

# Points of the training-loss curve per run: one every max_steps / CURVE_POINTS optimizer steps (their mean loss).
CURVE_POINTS = 100

# The plot files of reports/train/plots/custom (dvc.yaml `plots:`): name → the y field. Each row has step, epoch,
# the y value and `series` (train / val; macro / a class), the long form that .dvc/plots/series.json draws.
CURVES = {"loss": "loss", "val_f1": "f1", "val_share": "share"}


def curve_path(reports_dir: str, curve: str) -> str:
    """Where a curve of CURVES lies in a run's reports directory: where dvclive's log_plot writes it, and what dvc.yaml
    `plots:` names for the train stage."""
    return f"{reports_dir}/plots/custom/{curve}.json"


def curve_points(curve: str, step: int, epoch: float, values: Sequence[tuple[str, float]]) -> list[dict]:
    """The rows of `curve` at one step: one per (series, value)."""
    field = CURVES[curve]
    return [
        {"step": int(step), "epoch": float(epoch), field: float(value), "series": series} for series, value in values
    ]


# Seconds between progress lines during training: often enough to see a long run move, rare enough for a log.
PROGRESS_SECONDS = 10.0

# Optimizer steps whose loss and pre-clipping gradient norm stay on the device before the host reads them
# (together, in one transfer; also at the end of each epoch). Reading a value makes the host wait for the
# GPU to finish the step, so reading every step leaves a fast GPU idle; a divergence is then noticed at most
# this many steps late, and those steps' weights are discarded with the failed run anyway.
DIAGNOSTICS_STEPS = 50

# The key of a Trainer log entry (and of state.log_history) that holds the window's per-step values.
STEP_VALUES = "skewtune_steps"


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
        self.remedies = (
            collapse_remedies(Params()) if remedies is None else remedies
        )  # collapse_remedies of the run's params
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
        self._pending.append(
            (
                loss.detach().float().reshape(()),
                torch.as_tensor(grad_norm, dtype=torch.float32, device=loss.device).reshape(()),
                lr,
            )
        )

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
                earlier, first = (
                    self._unshown[0] if self._unshown else [],
                    self._unshown[1] if self._unshown else window[0]["step"],
                )
                self._unshown = (earlier + losses, first, window[-1]["step"])
        elif "eval_loss" in entry:
            self._evaluation(entry, total_epochs, is_main, replay)

    def _train_step(self, entry: dict, window: list[dict]) -> None:
        loss, grad_norm, lr = entry["loss"], entry.get("grad_norm", math.nan), entry.get("learning_rate", math.nan)
        # The Trainer logs the gradient norm of every step (before clipping). A non-finite one with a finite
        # loss has already been applied: clipping turns inf into NaN weights, and the next loss would be NaN.
        bad_grad = "grad_norm" in entry and not math.isfinite(grad_norm)
        if (not math.isfinite(loss) or bad_grad) and not self.fp16:
            what = (
                f"the training loss is {loss}"
                if not math.isfinite(loss)
                else f"the gradient norm is {grad_norm} (the loss {loss:.4g} is finite)"
            )
            read = f"; read with steps {window[0]['step']}-{window[-1]['step']}" if len(window) > 1 else ""
            # Raised, not control.should_training_stop: after that flag the Trainer still ends the epoch (its
            # on_epoch_end asks for an evaluation and a checkpoint: of the diverged weights, which train.resume would
            # then continue from) and finalizes the run, restoring the best checkpoint and, with save_total_limit 1,
            # deleting every other one, the newest complete checkpoint that train.resume continues from among them.
            # The exception leaves training where it diverged and the checkpoints as the last one saved left them.
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
        self.curves[curve] += curve_points(curve, entry["step"], entry["epoch"], values)

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
        self._add_points(
            "val_f1",
            entry,
            [("macro average", values["val/f1_macro"])]
            + [(label, values[f"val/f1/{key}"]) for label, key in zip(self.labels, keys)],
        )
        self._add_points(
            "val_share", entry, [(label, values[f"val/share/{key}"]) for label, key in zip(self.labels, keys)]
        )
        if not is_main:
            return
        self._write_curves(list(CURVES))
        shares = [values[f"val/share/{key}"] for key in keys]
        top = int(np.argmax(shares))
        if shares[top] >= COLLAPSE_SHARE and not replay:
            log.warning(
                "model predicts %r for %.0f%% of val rows at epoch %g: collapsed to one class; see reports/train. Remedies: %s",
                self.labels[top],
                100 * shares[top],
                round(values["epoch"], 2),
                self.remedies,
            )
        if self.live is not None:
            for name, value in values.items():
                self.live.log_metric(name, value)
            self.live.next_step()
        if not replay:
            per_class = "  ".join(
                f"{label} {values[f'val/f1/{key}']:.3f}/{values[f'val/share/{key}']:.0%}"
                for label, key in zip(self.labels, keys)
            )
            print(
                f"epoch {values['epoch']:.2f}/{total_epochs:g}: train loss {values['train/loss']:.4f}, val loss {values['val/loss']:.4f}, "
                f"val macro-F1 {values['val/f1_macro']:.4f} (F1/predicted share: {per_class}), "
                f"grad norm {values['train/grad_norm']:.3g} (max {values['train/grad_norm_max']:.3g}), lr {values['train/lr']:.3g}",
                flush=True,
            )

    def best(self, best_step: int | None) -> dict[str, float]:
        """The logged values of the evaluation whose checkpoint was restored."""
        return self.evaluations.get(best_step, {}) if best_step is not None else {}
