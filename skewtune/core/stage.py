"""Entry-point glue shared by the stage modules."""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable

from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import InterruptedAfterCommit

# Nothing may reach for the Hugging Face hub unless the user opts out explicitly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def os_error_line(exc: OSError) -> str:
    """An OSError as one line: the file(s) it concerns and what the system said."""
    files = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    said = exc.strerror or str(exc)
    return f"{files}: {said}" if files else said


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's `main` (or `skewtune predict`), turning SkewtuneError into one line on stderr and exit status 2, and
    an OSError (a full disk, a permission: the system refused, skewtune.core.outputs.Outputs names the output) into one line and
    exit status 1.

    SIGTERM is turned into an exception so that pending outputs are discarded, not left half-written.
    """
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        main()
    except SkewtuneError as exc:
        print(f"skewtune {name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"skewtune {name}: error: {os_error_line(exc)}", file=sys.stderr)
        sys.exit(1)
    except InterruptedAfterCommit:
        print(
            f"skewtune {name}: interrupted once its outputs were completely written; `dvc commit` records them as they are",
            file=sys.stderr,
        )
        sys.exit(130)
    except KeyboardInterrupt:
        print(f"skewtune {name}: interrupted; its outputs were not written", file=sys.stderr)
        sys.exit(130)
