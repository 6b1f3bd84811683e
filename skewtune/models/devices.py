"""Where and in which precision the model runs: train.device and train.precision resolved against the
machine, with errors that say what to set. Kept apart from training so that predict loads no Trainer."""

from __future__ import annotations

import math

import torch

from skewtune.core.errors import SkewtuneError


def resolve_device(device: str, setting: str = "train.device") -> str:
    """auto → cuda when a CUDA GPU is visible, else cpu; cuda without a GPU is an error, never a silent CPU run.
    `setting`: what the user set the device with (a params key, or predict's --device), as errors name it."""
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise SkewtuneError(
            f"{setting} is cuda, but no CUDA GPU is visible (torch {torch.__version__} is {build}); "
            f"set {setting} to cpu (or auto), or run where a GPU and a CUDA build of torch are available"
        )
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device not in ("cpu", "cuda"):
        raise SkewtuneError(f"{setting} is {device!r}; use auto, cpu or cuda")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """auto → bf16 on a GPU that supports it, fp16 (with loss scaling) on other GPUs, fp32 on the CPU."""
    bf16_ok = device == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "auto":
        return "fp32" if device == "cpu" else ("bf16" if bf16_ok else "fp16")
    if precision in ("fp16", "bf16") and device == "cpu":
        raise SkewtuneError(
            f"train.precision is {precision}, which needs a CUDA GPU, but the device is cpu; set train.precision: fp32 or auto"
        )
    if precision == "bf16" and not bf16_ok:
        raise SkewtuneError(
            f"train.precision is bf16, but {torch.cuda.get_device_name()} does not support bf16; set train.precision: fp16 or auto"
        )
    if precision not in ("fp32", "fp16", "bf16"):
        raise SkewtuneError(f"train.precision is {precision!r}; use auto, fp32, fp16 or bf16")
    return precision


def check_processes(nproc: int, device: str, gpus: int) -> None:
    """DDP on GPUs runs one process per GPU: NCCL cannot put two ranks on one device."""
    if device == "cuda" and nproc > gpus:
        raise SkewtuneError(
            f"train.nproc is {nproc}, but {gpus} CUDA GPU{'s are' if gpus != 1 else ' is'} visible and DDP runs one process "
            f"per GPU; set train.nproc to {gpus} or less (or train.device: cpu for CPU processes)"
        )


def amp_dtype(precision: str) -> torch.dtype | None:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)


# train.batch_size: auto. On the CPU, 32 rows: the batch the defaults were chosen with, and a CPU is busy at any
# size. A GPU needs many tokens per step to be kept busy (BENCHMARKS §6: at 32 SMS rows, ~800 tokens a step, an
# H100 computes 0.2% of the time), so there the batch holds about AUTO_TOKENS_PER_STEP tokens (a power of two
# of rows, 32 to AUTO_MAX_ROWS), but no more rows than leave AUTO_MIN_STEPS optimizer steps in a run of
# train.epochs: fine-tuning needs updates as well as rows.
AUTO_CPU_ROWS = 32
AUTO_TOKENS_PER_STEP = 16384
AUTO_MAX_ROWS = 1024
AUTO_MIN_STEPS = 100


def auto_batch_size(device: str, *, rows: int, tokens_per_row: float, epochs: float | None) -> int:
    """Rows per step (and process) for train.batch_size: auto; `epochs` is None when train.max_steps fixes the
    number of steps instead."""
    if device == "cpu":
        return AUTO_CPU_ROWS
    wanted = AUTO_TOKENS_PER_STEP / max(tokens_per_row, 1.0)
    if epochs is not None:
        wanted = min(wanted, rows * epochs / AUTO_MIN_STEPS)
    return min(AUTO_MAX_ROWS, max(AUTO_CPU_ROWS, 2 ** math.floor(math.log2(max(wanted, 1.0)))))


def auto_learning_rate(lr: float, batch_size: int) -> float:
    """train.lr for an auto batch size: train.lr is the rate at AUTO_CPU_ROWS rows per step, and a larger batch
    gets it times the square root of the batch ratio (the square-root scaling rule of Adam-type optimizers,
    Malladi et al. 2022), so the CPU (32 rows) keeps train.lr as it is."""
    return lr * math.sqrt(batch_size / AUTO_CPU_ROWS)


def loader_workers(device: str, nproc: int, cpus: int | None) -> int:
    """DataLoader worker processes per training process: on a GPU, up to 4, leaving a core to each training
    process, so that batches are padded while the GPU runs the previous step; none on the CPU, where workers
    would take the cores that compute."""
    if device != "cuda":
        return 0
    return max(0, min(4, (cpus or 1) // nproc - 1))
