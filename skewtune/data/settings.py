"""What the user sets to read a table (Settings; DATA_PARAMS: the pipeline's params keys) and the one check
every format's header goes through, `require_columns`: each column the settings name is there, once. Its messages
name the settings to change, so that a file read by the pipeline and one read by `skewtune predict` point at the
params key or the flag the user wrote."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from pathlib import Path

from skewtune.core.errors import SkewtuneError


@dataclass(frozen=True)
class Settings:
    """What the user sets to choose how a table is read (and, to predict it, where the model runs), as messages
    name it: params keys in the pipeline (DATA_PARAMS), the flags of `skewtune predict` there
    (skewtune.cli.PREDICT_FLAGS); None: nothing sets it there. `read`: the fields of the columns being read,
    which a message about a missing column names."""

    text_column: str | None
    text_pair_column: str | None
    label_column: str | None
    image_column: str | None
    format: str
    encoding: str
    sheet: str
    quoting: str | None
    device: str
    image_root: str | None  # the folder image paths are relative to
    read: tuple[str, ...] = ("text_column", "text_pair_column", "label_column")

    def reading(self, *fields: str) -> "Settings":
        """These settings for reading the columns of `fields` (e.g. "image_column", "label_column")."""
        return replace(self, read=fields)

    @property
    def columns(self) -> str:
        """The settings of the columns being read, e.g. 'data.text_column / data.label_column'."""
        return " / ".join(getattr(self, name) for name in self.read)


DATA_PARAMS = Settings(
    "data.text_column",
    "data.text_pair_column",
    "data.label_column",
    "data.image_column",
    "data.format",
    "data.encoding",
    "data.sheet",
    "data.quoting",
    "train.device",
    None,
)  # image paths: under data/raw


def require_columns(path: Path, names: list, columns: list[str], fmt: str, settings: Settings) -> None:
    """Stop unless each of `columns` is among a file's column `names`, once; a missing one is named with the names
    found, the closest of them, and the `settings` that chose it."""
    found = [str(name) for name in names]
    missing = [name for name in columns if name not in found]
    # Which of two columns of one name holds the texts (or labels) is anyone's guess.
    twice = next((name for name in columns if found.count(name) > 1), None)
    if twice is not None:
        raise SkewtuneError(
            f"{path}: the header names the column {twice!r} {found.count(twice)} times; rename the copies "
            f"so that only the one to use is called {twice!r}"
        )
    if not missing:
        return
    close = {name: difflib.get_close_matches(name, found, n=1, cutoff=0.6) for name in missing}
    hints = "; ".join(f"did you mean {close[name][0]!r} for {name!r}?" for name in missing if close[name])
    raise SkewtuneError(
        f"{path}: no column {', '.join(map(repr, missing))}; the {fmt.upper()} columns are: "
        f"{', '.join(map(repr, found)) or 'none'}. Set {settings.columns} "
        f"to the right names{'; ' + hints if hints else ''}"
    )
