"""params.yaml is the one home of each key's documentation: every key of the schema has a comment there, and
params.yaml holds no key the schema does not know."""

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from skewtune.config.effective import all_keys
from skewtune.config.schema import Params

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"


def _has_text(comment: str) -> bool:
    return comment.startswith("#") and bool(comment.lstrip("#").strip())


def _commented(lines: list[str], key: yaml.Node, value: yaml.Node) -> bool:
    """A comment after the key's value on its line, or full-line comments directly above the key that start at the
    key's own column (deeper ones continue the comment of the key above)."""
    row, column = key.start_mark.line, key.start_mark.column
    if value.end_mark.line == row and _has_text(lines[row][value.end_mark.column :].strip()):
        return True
    above = lines[row - 1] if row > 0 else ""
    return above[:column].strip() == "" and above[column:].startswith("#") and _has_text(above[column:])


def _yaml_keys(node: yaml.MappingNode, sections: set[str], prefix: str = "") -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """{dotted key: (key node, value node)} of every key in the YAML mapping `node`, descending into `sections`."""
    keys = {}
    for key, value in node.value:
        dotted = prefix + key.value
        if dotted in sections and isinstance(value, yaml.MappingNode):
            keys.update(_yaml_keys(value, sections, dotted + "."))
        else:
            keys[dotted] = (key, value)
    return keys


def doc_problems(text: str, model: type[BaseModel] = Params) -> list[str]:
    """One line per schema key that `text` (params.yaml) leaves out or leaves without a comment, and per key of
    `text` that the schema does not know."""
    lines = text.splitlines()
    schema = all_keys(model)
    sections = {key.rsplit(".", depth)[0] for key in schema for depth in range(1, key.count(".") + 1)}
    written = _yaml_keys(yaml.compose(text), sections)
    problems = [f"{key}: not a key of the schema" for key in written if key not in schema]
    for key in schema:
        if key not in written:
            problems.append(f"{key}: missing from params.yaml")
        elif not _commented(lines, *written[key]):
            problems.append(f"{key}: no comment in params.yaml")
    return problems


def test_every_key_is_documented_in_params_yaml():
    problems = doc_problems(PARAMS_YAML.read_text(encoding="utf-8"))
    assert not problems, "params.yaml must comment every schema key and hold no other:\n" + "\n".join(problems)


class _Inner(BaseModel):
    depth: int = 1


class _Outer(BaseModel):
    size: int = 1
    inner: _Inner = _Inner()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("size: 1  # rows\ninner:\n  depth: 1  # levels\n", []),
        ("# rows\nsize: 1\ninner:\n  # levels\n  depth: 1\n", []),
        ("size: 1\ninner:\n  depth: 1  # levels\n", ["size: no comment in params.yaml"]),
        ("size: 1  #\ninner:\n  depth: 1  # levels\n", ["size: no comment in params.yaml"]),
        # a comment continued below the key above is that key's, not the next one's
        ("size: 1  # rows,\n        # many\ninner:\n  depth: 1\n", ["inner.depth: no comment in params.yaml"]),
        ("size: '# not a comment'\ninner:\n  depth: 1  # levels\n", ["size: no comment in params.yaml"]),
        (
            "size: 1  # rows\ninner:\n  depth: 1  # levels\n  width: 2  # cells\n",
            ["inner.width: not a key of the schema"],
        ),
        ("size: 1  # rows\ninner:\n  depth: 1  # levels\nextra: 0  # what\n", ["extra: not a key of the schema"]),
        ("size: 1  # rows\ninner: {}\n", ["inner.depth: missing from params.yaml"]),
        ("size: 1  # rows\n", ["inner.depth: missing from params.yaml"]),
    ],
)
def test_doc_problems_finds_each_gap(text, expected):
    assert doc_problems(text, _Outer) == expected
