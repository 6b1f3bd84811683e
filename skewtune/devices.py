"""Where and in which precision the model runs: train.device and train.precision resolved against the
machine, with errors that say what to set. Kept apart from training so that predict loads no Trainer."""

from __future__ import annotations

import torch

from skewtune.errors import SkewtuneError


def resolve_device(device: str) -> str:
    """auto → cuda when a CUDA GPU is visible, else cpu; cuda without a GPU is an error, never a silent CPU run."""
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise SkewtuneError(
            f"train.device is cuda, but no CUDA GPU is visible (torch {torch.__version__} is {build}); "
            "set train.device: cpu (or auto), or run where a GPU and a CUDA build of torch are available"
        )
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device not in ("cpu", "cuda"):
        raise SkewtuneError(f"train.device is {device!r}; use auto, cpu or cuda")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """auto → bf16 on a GPU that supports it, fp16 (with loss scaling) on other GPUs, fp32 on the CPU."""
    bf16_ok = device == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "auto":
        return "fp32" if device == "cpu" else ("bf16" if bf16_ok else "fp16")
    if precision in ("fp16", "bf16") and device == "cpu":
        raise SkewtuneError(f"train.precision is {precision}, which needs a CUDA GPU, but the device is cpu; set train.precision: fp32 or auto")
    if precision == "bf16" and not bf16_ok:
        raise SkewtuneError(f"train.precision is bf16, but {torch.cuda.get_device_name()} does not support bf16; set train.precision: fp16 or auto")
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
