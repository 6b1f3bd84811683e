"""Where training runs: distributed relaunch under torchrun, and the checkpoint to resume from."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys


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
            print(
                f"train.resume: {path} was not completely written (the run stopped while saving it); removing it",
                file=sys.stderr,
            )
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
