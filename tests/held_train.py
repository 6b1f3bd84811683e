"""The train stage, held at a point of the run for a test that interrupts it.

    python tests/held_train.py EVENT MARKER     (in the project directory, instead of `python -m stages.train`)

runs the stage as `python -m stages.train` does, with a HoldForSignal callback added through the stage's
`callbacks`: at EVENT the run writes MARKER (its process id) and waits there for a signal, so that the test knows
where training is when its signal arrives instead of racing a run that may finish first. Events: "checkpoint"
(the first checkpoint is complete) and "save" (training is done and the model is about to be written to its
output directory).
"""

from __future__ import annotations

import functools
import os
import sys
import time

from transformers import TrainerCallback

import stages.train
from skewtune.core.errors import SkewtuneError
from skewtune.core.stage import run_stage

EVENTS = ("checkpoint", "save")
HOLD_SECONDS = 300  # a test that never signals fails with an error instead of hanging


class HoldForSignal(TrainerCallback):
    def __init__(self, event: str, marker: str) -> None:
        if event not in EVENTS:
            raise SystemExit(f"held_train.py: unknown event {event!r}; expected one of {EVENTS}")
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
        raise SkewtuneError(f"held_train.py: held at {self.event} for {HOLD_SECONDS} s and no signal came")

    def on_save(self, args, state, control, **kwargs):
        if self.event == "checkpoint" and not self.held:
            self._hold()

    def on_train_end(self, args, state, control, **kwargs):
        if self.event == "save":
            self._hold()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: python tests/held_train.py EVENT MARKER, with EVENT one of {EVENTS}")
    run_stage("train", functools.partial(stages.train.main, callbacks=[HoldForSignal(*sys.argv[1:])]))
