"""The project files each dvc.yaml stage runs: the import closure of its `python -m stages.X`, read from the code.

Every `import` statement counts, lazy ones inside functions included, and so does each package `__init__.py`
that an import runs. `python tests/stage_deps.py` rewrites the code deps (the `.py` lines) of every stage in
dvc.yaml to match; tests/test_stage_deps.py fails while they differ.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("skewtune", "stages")


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name, or None for a module outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the project modules (and of what `from package import name` may name) that `path` imports."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def closure(entry: Path) -> set[str]:
    """Repo-relative paths of every project file that running `entry` imports, itself and package __init__s included."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                found = module_file(".".join(parts[:depth]))
                if found is not None:
                    todo.append(found)
    return {str(p.relative_to(REPO)) for p in seen}


def stage_code(dvc_yaml: Path = REPO / "dvc.yaml") -> dict[str, tuple[set[str], set[str]]]:
    """{stage: (the .py files it lists as deps, the .py files it runs)}."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    result = {}
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # a foreach stage: its template
        module = stage["cmd"].removeprefix("python -m ").split()[0]
        listed = {dep for dep in stage.get("deps", []) if dep.endswith(".py")}
        result[name] = listed, closure(module_file(module))
    return result


def rewrite(dvc_yaml: Path = REPO / "dvc.yaml") -> None:
    """Replace each stage's `.py` deps lines by its closure (stages/ first, then skewtune/), where the first stood."""
    code = stage_code(dvc_yaml)
    out, stage, inserted = [], None, False
    for line in dvc_yaml.read_text().splitlines(keepends=True):
        if match := re.match(r"^  (\w+):$", line):
            stage, inserted = match.group(1), False
        if stage in code and re.match(r"^ +- \S+\.py$", line):
            if not inserted:
                indent = line[: line.index("- ")]
                out += [
                    f"{indent}- {path}\n"
                    for path in sorted(code[stage][1], key=lambda p: (not p.startswith("stages/"), p))
                ]
                inserted = True
            continue
        out.append(line)
    dvc_yaml.write_text("".join(out))


if __name__ == "__main__":
    rewrite(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "dvc.yaml")
