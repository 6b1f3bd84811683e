"""Atomic output writing: a stage's outputs appear all together, or not at all."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import pandas as pd


def _give_normal_modes(path: Path) -> None:
    """The modes any new file or directory gets under the umask (0644/0755 with the usual 022), for `path` and
    all it holds: mkstemp, mkdtemp and safetensors make private ones (0600/0700), which would keep teammates
    on a shared machine from reading the model and reports."""
    mask = os.umask(0)  # the only way to read the umask is to set it
    os.umask(mask)
    path.chmod(0o777 & ~mask if path.is_dir() else 0o666 & ~mask)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)


# Significant digits of the floats in the JSON and CSV files stages write. They are tracked by git, so a re-run on
# another CPU, whose floats differ in the 7th digit for the same model, leaves them unchanged.
REPORT_DIGITS = 6


def significant(obj: Any, digits: int = REPORT_DIGITS) -> Any:
    """`obj` with every float (in nested dicts and lists too) rounded to `digits` significant digits."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {key: significant(value, digits) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [significant(value, digits) for value in obj]
    return obj


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun in its number, for messages: '1 row', '2 rows', '0 rows' (`plural`: when not noun + 's')."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def json_text(obj: Any) -> str:
    """How skewtune writes JSON: indented, key order kept, UTF-8 text, no NaN."""
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False) + "\n"


@contextlib.contextmanager
def _interruptions_held():
    """Hold SIGINT and SIGTERM while outputs are renamed into place or temporaries removed, then deliver
    them: an interrupted run stops after the step, never with half of its outputs moved or temporaries
    left behind. (Handlers, not a signal mask: any thread of the process may receive the signal.)"""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    caught: list[int] = []
    previous = {
        number: signal.signal(number, lambda signum, frame: caught.append(signum))
        for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])  # handled now as it would have been then


class InterruptedAfterCommit(KeyboardInterrupt):
    """A signal that arrived while the outputs were being renamed into place, delivered once all of them were."""


class Outputs:
    """Collect a stage's outputs in temporary files and move them into place only on success.

    Use as a context manager::

        with Outputs() as out:
            out.parquet("data/split/train.parquet", train)
            out.json("reports/split.json", report)

    Each file is written next to its destination (same filesystem, so the final rename is atomic)
    under a hidden temporary name. If the block raises, every temporary file and directory is
    removed and no destination is touched; otherwise they are renamed into place at the end.
    The one exception, `in_place`, is a directory a viewer follows while it is written.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []
        self._in_place: list[Path] = []
        self._writing: Path | None = None  # the destination whose temporary was handed out last

    def __enter__(self) -> "Outputs":
        return self

    def path(self, dest: str | os.PathLike, *, directory: bool = False) -> Path:
        """Return a temporary path (file or empty directory) that becomes `dest` on commit."""
        dest = self._writing = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            os.close(fd)
            tmp = Path(name)
        self._pending.append((tmp, dest))
        return tmp

    def in_place(self, dest: str | os.PathLike) -> Path:
        """`dest` as a new empty directory written where it is, for logs that a viewer (VS Code, `dvc plots`)
        follows during a long run; removed if the block raises, so a failed run leaves no half of it."""
        dest = Path(dest)
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        self._in_place.append(dest)
        return dest

    def json(self, dest: str | os.PathLike, obj: dict, *, exact: tuple[str, ...] = ()) -> None:
        """JSON with floats rounded to REPORT_DIGITS significant digits, except the top-level keys `exact`."""
        rounded = {key: value if key in exact else significant(value) for key, value in obj.items()}
        self.path(dest).write_text(json_text(rounded), encoding="utf-8")

    def text(self, dest: str | os.PathLike, text: str) -> None:
        self.path(dest).write_text(text, encoding="utf-8")

    def parquet(self, dest: str | os.PathLike, frame: pd.DataFrame) -> None:
        frame.to_parquet(self.path(dest), index=False)

    def csv(self, dest: str | os.PathLike, frame: pd.DataFrame) -> None:
        """CSV with floats rounded to REPORT_DIGITS significant digits."""
        rounded = frame.copy()
        for column in frame.select_dtypes("float").columns:
            rounded[column] = frame[column].map(significant)
        rounded.to_csv(self.path(dest), index=False)

    def commit(self) -> None:
        for tmp in [tmp for tmp, _ in self._pending] + self._in_place:
            _give_normal_modes(tmp)
        try:
            with _interruptions_held():
                for tmp, dest in self._pending:
                    # Only a directory output replaces a directory (a stage's own model directory): a file never does.
                    if tmp.is_dir() and dest.is_dir() and not dest.is_symlink():
                        shutil.rmtree(dest)
                    os.replace(tmp, dest)
                self._pending.clear()
        except KeyboardInterrupt as exc:
            if self._pending:  # outside the main thread signals are not held: this one cut the commit short
                raise
            raise InterruptedAfterCommit(*exc.args) from None

    def discard(self) -> None:
        with _interruptions_held():
            for tmp, _ in self._pending:
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)
            for directory in self._in_place:
                shutil.rmtree(directory, ignore_errors=True)
            self._pending.clear()
            self._in_place.clear()

    def _out_of_space(self, exc: OSError) -> OSError:
        """The OSError of a full disk or quota, said of the output being written: which file, how much the outputs had
        taken when the space ran out (what they need at least) and how much is free without them."""
        dest = self._writing
        taken = sum(_size(tmp) for tmp, _ in self._pending) + sum(_size(directory) for directory in self._in_place)
        self.discard()
        free = shutil.disk_usage(dest.parent).free
        had = f"; the outputs had taken {_human(taken)} when it ran out, they need more" if taken else ""
        return OSError(
            exc.errno,
            f"{os.strerror(exc.errno).lower()} while writing it ({_human(free)} free there{had}); "
            "nothing was written: free space and re-run",
            str(dest),
        )

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        elif isinstance(exc, OSError) and exc.errno in _NO_SPACE and self._writing is not None:
            raise self._out_of_space(exc) from None
        else:
            self.discard()


# A full disk, and a full quota.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _size(path: Path) -> int:
    """Bytes of a file, or of all files in a directory; 0 for one already gone."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _human(size: float) -> str:
    """A size for people: 812 bytes, 16.0 KiB, 3.2 GiB."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
