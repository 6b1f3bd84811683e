"""Reading params.yaml: validated against the schema, every problem reported at once in one line each."""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from skewtune.config.schema import Params
from skewtune.core.errors import SkewtuneError
from skewtune.core.paths import PARAMS_FILE


def _section_model(loc: tuple) -> type[BaseModel] | None:
    """The schema class that holds the key at `loc` (a pydantic error location)."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None if field is None else model
        model = annotation
    return model


# An error line echoes at most this much of a value (a YAML alias bomb expands to gigabytes), and the
# message lists at most this many problems.
_ECHO_CHARS = 200
_MAX_PROBLEMS = 20
_ECHO = reprlib.Repr()  # keyword arguments need Python 3.12
_ECHO.maxlevel, _ECHO.maxstring, _ECHO.maxother, _ECHO.maxlong = 2, _ECHO_CHARS, _ECHO_CHARS, _ECHO_CHARS


def _echo(text: str) -> str:
    """`text` cut to _ECHO_CHARS characters, saying how much was left out."""
    return text if len(text) <= _ECHO_CHARS else f"{text[:_ECHO_CHARS]}... ({len(text) - _ECHO_CHARS} more characters)"


def _describe(error: dict) -> str:
    loc = tuple(
        part for part in error["loc"] if not (isinstance(part, str) and ("[" in part or part.startswith("function-")))
    )
    key = ".".join(str(part) for part in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        section = _section_model(loc)
        allowed = ", ".join(section.model_fields) if section else ""
        parent = ".".join(str(p) for p in loc[:-1]) or "the top level"
        return f"{key}: unknown key; the keys allowed in {parent} are: {allowed}"
    message = _echo(error["msg"].removeprefix("Value error, "))
    got = error.get("input")
    # reprlib visits only the first items of each level, so a nested value costs little to describe.
    return f"{key}: {message}" + ("" if isinstance(got, dict) else f" (got {_echo(_ECHO.repr(got))})")


def validate_params(raw: Any, source: str = PARAMS_FILE) -> Params:
    """Validate a params mapping; raise SkewtuneError naming every bad key and what is allowed."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SkewtuneError(f"{source}: expected a mapping of sections (data, split, ...), got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        lines = [_describe(error) for error in errors[:_MAX_PROBLEMS]]
        if len(errors) > _MAX_PROBLEMS:
            lines.append(f"... and {len(errors) - _MAX_PROBLEMS} more problems; fix these first")
        raise SkewtuneError(f"{source}: invalid params:\n  " + "\n  ".join(lines)) from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SkewtuneError(
            f"{path}: not found; run the stage from the project root, where params.yaml lives"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SkewtuneError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return validate_params(raw, str(path))
