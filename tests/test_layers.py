"""The library's floors: each module imports only from the floors below it and from its own package, and no
import circle exists anywhere in the project. Lazy imports inside functions count as much as top-level ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from stage_deps import REPO, imported_modules, module_file

# Lowest first. A unit is a subpackage of skewtune or a top-level module; units on one floor do not import each other.
FLOORS = (
    ("core",),  # errors, paths, columns, formats, outputs, stage: nothing of skewtune below them
    ("config", "decision"),  # params schema and what each stage reads | the decision rule, scores and tuning
    ("data", "artifacts"),  # reading and preparing rows | typed readers and writers of the files between stages
    ("model_dir",),  # a model directory's skewtune.json (ModelMeta), a classifier's rule and manifest
    ("models", "evaluation"),  # text and image models, the modality seam, devices, the baseline | reports
    ("train",),  # the training recipe, the Trainer subclass and what it runs
    ("apply",),  # applying a packaged classifier to new rows
    ("cli",),  # the skewtune console script
    ("__main__",),  # python -m skewtune
)
FLOOR = {unit: level for level, units in enumerate(FLOORS) for unit in units}


def unit(path: Path) -> str:
    """The unit of a file under skewtune/: its subpackage, or its module name at the top."""
    parts = path.relative_to(REPO / "skewtune").with_suffix("").parts
    return parts[0]


def project_imports(path: Path) -> set[Path]:
    """The project files that `path` imports (the deepest module each dotted name names)."""
    found = set()
    for name in imported_modules(path):
        target = module_file(name)
        if target is not None and target != path:
            found.add(target)
    return found


def library_files() -> list[Path]:
    return sorted(
        p for p in (REPO / "skewtune").rglob("*.py") if p.name != "__init__.py" or p.parent != REPO / "skewtune"
    )


def test_every_unit_has_a_floor():
    assert {unit(p) for p in library_files()} <= set(FLOOR)


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_go_down_the_floors(path):
    mine = unit(path)
    wrong = []
    for target in project_imports(path):
        if target.is_relative_to(REPO / "stages"):
            wrong.append(f"{target.relative_to(REPO)} (a stage)")
            continue
        theirs = unit(target) if target != REPO / "skewtune" / "__init__.py" else "core"
        if theirs != mine and FLOOR[theirs] >= FLOOR[mine]:
            wrong.append(f"{target.relative_to(REPO)} (floor {FLOOR[theirs]}, this file is on floor {FLOOR[mine]})")
    assert not wrong, f"{path.relative_to(REPO)} imports upward or sideways: {wrong}"


def test_no_import_circles():
    files = [*library_files(), *sorted((REPO / "stages").glob("*.py"))]
    graph = {path: project_imports(path) for path in files}
    state: dict[Path, int] = {}  # 1: on the current path, 2: done

    def visit(path: Path, trail: list[Path]) -> list[Path] | None:
        state[path] = 1
        for target in sorted(graph.get(path, ())):
            if state.get(target) == 1:
                chain = [*trail, path]
                return [*chain[chain.index(target) :], target]
            if target not in state and (circle := visit(target, [*trail, path])):
                return circle
        state[path] = 2
        return None

    for path in files:
        if path not in state and (circle := visit(path, [])):
            pytest.fail("import circle: " + " -> ".join(str(p.relative_to(REPO)) for p in circle))


def test_stages_import_no_other_stage():
    for path in sorted((REPO / "stages").glob("*.py")):
        others = [t for t in project_imports(path) if t.is_relative_to(REPO / "stages") and t.name != "__init__.py"]
        assert not others, f"{path.relative_to(REPO)} imports {others}"
