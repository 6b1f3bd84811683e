"""params -> TrainingArguments: batch size, schedule, device and precision, evaluation cadence."""

from __future__ import annotations

import math
import os
import sys

from skewtune.config.schema import TrainParams
from skewtune.core.outputs import counted
from skewtune.models.devices import auto_batch_size, auto_learning_rate, loader_workers
from skewtune.train.diagnostics import DIAGNOSTICS_STEPS
from skewtune.train.runtime import distributed_rank
from skewtune.train.selection import Selection

# transformers' name of each train.scheduler (skewtune.config.schema.SCHEDULERS).
HF_SCHEDULERS = {
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant_with_warmup",  # constant after the warmup (none when train.warmup is 0)
    "reduce_on_plateau": "reduce_lr_on_plateau",
}


def _scheduler(train: TrainParams, greater: bool) -> tuple[str, dict]:
    """transformers' lr_scheduler_type and lr_scheduler_kwargs for train.scheduler."""
    if train.scheduler == "reduce_on_plateau":
        if train.warmup:
            print("train.warmup is not used by the reduce_on_plateau scheduler", file=sys.stderr)
        # Lower the lr when the selection metric stops improving, in its direction.
        return HF_SCHEDULERS["reduce_on_plateau"], {
            "mode": "max" if greater else "min",
            "factor": train.plateau_factor,
            "patience": train.plateau_patience,
        }
    if train.scheduler == "cosine" and train.min_lr_ratio > 0:
        return "cosine_with_min_lr", {"min_lr_rate": train.min_lr_ratio}
    return HF_SCHEDULERS[train.scheduler], {}


def resolve_batch_size(train: TrainParams, device: str, *, rows: int, tokens_per_row: float) -> TrainParams:
    """`train` with batch_size auto replaced by auto_batch_size's rows and lr by auto_learning_rate's; a
    batch_size given as a number keeps both as they are."""
    if train.batch_size != "auto":
        return train
    size = auto_batch_size(
        device, rows=rows, tokens_per_row=tokens_per_row, epochs=train.epochs if train.max_steps == -1 else None
    )
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
    return adapted, (
        f"train: {rows} rows are {counted(per_epoch, 'optimizer step')} per epoch: train.epochs {train.epochs:g} would be "
        f"{counted(planned, 'step')}, fewer than train.min_steps {train.min_steps}; training {counted(epochs, 'epoch')} "
        f"({epochs * per_epoch} steps){stopping}"
    )


def training_arguments(
    output_dir: str, train: TrainParams, *, precision: str, device: str, selection: Selection, by_length: bool = True
):
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
        **device_arguments(
            device,
            nproc=train.nproc,
            compile=train.compile,
            tf32=device == "cuda" and is_torch_tf32_available(),
            cpus=os.cpu_count(),
        ),
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
