"""The pipeline's stages, one module each, run by dvc.yaml as `python -m stages.<name>`."""

import importlib.metadata
import re
import sys


def _missing_requirements() -> list[str]:
    """skewtune's required distributions (pyproject.toml, extras aside) that this interpreter lacks."""
    try:
        requirements = importlib.metadata.requires("skewtune") or []
    except importlib.metadata.PackageNotFoundError:
        return ["skewtune"]
    missing = []
    for requirement in requirements:
        if "extra ==" in requirement:
            continue
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


# DVC runs the first `python` on PATH. When that is not the project's (a plain shell, the venv not activated),
# every stage would die on its first third-party import with a traceback that does not say why.
if missing := _missing_requirements():
    sys.exit(
        f"skewtune: {sys.executable} lacks {', '.join(missing[:3])}{' and more' if len(missing) > 3 else ''}: "
        "it is not the project's Python (dvc runs the first `python` on PATH); "
        "run `make repro`, or `. .venv/bin/activate` before calling dvc"
    )
