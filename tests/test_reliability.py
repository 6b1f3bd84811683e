"""Reliability and security: bad inputs fail loudly or are handled as reported, every params key is
validated, an interrupted training run leaves no output and resumes to the same result, a non-finite
gradient stops training at its step, and nothing executes code hidden in a data or model file.

Bad-input cases already covered elsewhere (message AND no outputs left), so not repeated here:
broken CSV quoting, one broken JSONL line, an XLSX title row, an empty file, a header-only file, a single
class, non-UTF-8 bytes (tests/test_ingest.py::test_bad_input_fails_cleanly_without_outputs); label typos in
the test file (test_ingest.py::test_test_file_label_typos_are_listed); empty and whitespace-only texts
(test_ingest.py::test_cleaning_counts_every_reason); a 1 MB text (test_ingest.py::test_one_megabyte_text_is_kept,
test_tables.py::test_one_megabyte_text_is_kept_whole); duplicates between the data and test file
(test_ingest.py::test_fixed_test_file); labels mixing numbers and strings (test_ingest.py::
test_xlsx_source_with_typed_cells, test_numeric_labels_become_one_spelling); a UTF-8 BOM in CSV/TSV
(test_tables.py::test_format_override_encoding_and_bom).
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import typing
import zipfile
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import torch
import yaml
from pydantic import BaseModel
from safetensors.torch import load_file
from test_training import make_project

from skewtune.config.effective import CONDITIONAL_KEYS, STAGE_KEYS, check_stage_keys, effective_config, unused_settings
from skewtune.config.load import load_params, validate_params
from skewtune.config.schema import Params
from skewtune.core import paths
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import Outputs

REPO = Path(__file__).resolve().parents[1]
LABELS = ["ham", "spam"]


def _leftovers(root: Path, outputs: tuple[str, ...]) -> list[str]:
    """Outputs of a failed stage, and temporary files of any stage, left in the project."""
    return [path for path in outputs if (root / path).exists()] + [
        str(p.relative_to(root)) for p in root.rglob(".*.tmp")
    ]


# ---------------------------------------------------------------------------------------------------------
# 1. Bad input files: the cases no other test covers. Expectation: a message fragment (the stage fails and
#    writes nothing), or the handling the stage reports in reports/ingest.json (a subset of it).


def _xlsx_bytes(rows: list[tuple], rewrite: typing.Callable[[str, str], str] | None = None) -> bytes:
    """An .xlsx of `rows`; `rewrite(member, xml)` may alter the XML of the zip members (hostile files)."""
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(list(row))
    buffer = io.BytesIO()
    book.save(buffer)
    if rewrite is None:
        return buffer.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, rewrite(name, src.read(name).decode("utf-8")))
    return out.getvalue()


SHEET = "xl/worksheets/sheet1.xml"
# Three levels of a "billion laughs" entity bomb, and an external entity that would read a local file.
ENTITY_BOMB = (
    '<!DOCTYPE worksheet [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
)
EXTERNAL_ENTITY = '<!DOCTYPE worksheet [<!ENTITY leak SYSTEM "file:///etc/hostname">]>'
TEXTS = [("free prize now", "spam"), ("see you at five", "ham"), ("call me later", "ham")]
JSONL_MISSING_TEXTS = [None, math.nan, "", " \u00a0\u3000\t", "NaN", "ok", "fine"]

# Cases that drop rows on purpose raise data.max_dropped_share (default 0.01) knowingly.
CORPUS = {
    # JSON null and NaN, "" and whitespace-only (Unicode spaces too) are missing texts; the string "NaN" is a text.
    "nan_and_blank_texts_jsonl": (
        {
            "d.jsonl": "".join(
                json.dumps({"text": t, "label": "ab"[i % 2]}) + "\n" for i, t in enumerate(JSONL_MISSING_TEXTS)
            ).encode()
        },
        {"max_dropped_share": 0.6},
        {
            "rows_in": 7,
            "rows_kept": 3,
            "dropped": {
                "missing_text": 4,
                "missing_label": 0,
                "conflicting_label": 0,
                "outvoted_label": 0,
                "duplicate": 0,
            },
        },
    ),
    "nan_and_blank_texts_parquet": (
        {"d.parquet": lambda: _parquet({"text": JSONL_MISSING_TEXTS, "label": list("abababa")})},
        {"max_dropped_share": 0.6},
        {
            "rows_in": 7,
            "rows_kept": 3,
            "dropped": {
                "missing_text": 4,
                "missing_label": 0,
                "conflicting_label": 0,
                "outvoted_label": 0,
                "duplicate": 0,
            },
        },
    ),
    # In CSV only an empty (or blank) cell is missing: NaN, NA and null are texts as written.
    "nan_and_blank_texts_csv": (
        {"d.csv": 'text,label\n,a\n"  ",b\n"\u00a0\u3000",a\nNaN,b\nNA,a\nnull,b\n'.encode()},
        {"max_dropped_share": 0.6},
        {
            "rows_in": 6,
            "rows_kept": 3,
            "dropped": {
                "missing_text": 3,
                "missing_label": 0,
                "conflicting_label": 0,
                "outvoted_label": 0,
                "duplicate": 0,
            },
        },
    ),
    "float_labels_with_nan_parquet": (
        {"d.parquet": lambda: _parquet({"text": ["a", "b", "c", "d"], "label": [0.0, 1.0, 1.0, math.nan]})},
        {"max_dropped_share": 0.6},
        {
            "rows_kept": 3,
            "class_counts": {"0": 1, "1": 2},
            "dropped": {
                "missing_text": 0,
                "missing_label": 1,
                "conflicting_label": 0,
                "outvoted_label": 0,
                "duplicate": 0,
            },
        },
    ),
    "utf8_bom_jsonl": (
        {
            "d.jsonl": b"\xef\xbb\xbf"
            + "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in TEXTS).encode()
        },
        {},
        {"rows_kept": 3, "class_counts": {"ham": 2, "spam": 1}},
    ),
    # A formula is read as the value a spreadsheet program stored for it, never as its text: a DDE/formula-injection
    # payload never becomes a training text. A file openpyxl wrote stores none, so its formula cells stop ingest.
    "xlsx_formula_cells": (
        {"d.xlsx": lambda: _xlsx_bytes([("text", "label"), ("=cmd|'/C calc'!A0", "spam"), ("=1+1", "ham"), *TEXTS])},
        {"max_dropped_share": 0.6},
        r"data/raw/d\.xlsx: sheet 'Sheet': 2 cell\(s\) of column 'text' hold a formula without a stored result \(first: A2\)",
    ),
    "xlsx_entity_bomb": (
        {
            "d.xlsx": lambda: _xlsx_bytes(
                [("text", "label"), *TEXTS],
                lambda n, x: ENTITY_BOMB + x.replace("call me later", "&c;") if n == SHEET else x,
            )
        },
        {},
        r"data/raw/d\.xlsx: not a readable \.xlsx workbook \(.*EntitiesForbidden: XML entity declarations are refused for safety\)",
    ),
    "xlsx_external_entity": (
        {
            "d.xlsx": lambda: _xlsx_bytes(
                [("text", "label"), *TEXTS],
                lambda n, x: EXTERNAL_ENTITY + x.replace("call me later", "&leak;") if n == SHEET else x,
            )
        },
        {},
        r"data/raw/d\.xlsx: not a readable \.xlsx workbook \(.*XML entity declarations are refused",
    ),
    "xlsx_damaged_sheet_xml": (
        {
            "d.xlsx": lambda: _xlsx_bytes(
                [("text", "label"), *TEXTS], lambda n, x: x[: len(x) // 2] if n == SHEET else x
            )
        },
        {},
        r"data/raw/d\.xlsx: not a readable \.xlsx workbook \(unclosed token: line 1, column \d+\); open it in a spreadsheet program",
    ),
}


def _parquet(columns: dict) -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame(columns).to_parquet(buffer, index=False)
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_input_corpus(case, tmp_path, monkeypatch):
    from stages import ingest

    files, data, expected = CORPUS[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/raw").mkdir(parents=True)
    for name, content in files.items():
        (tmp_path / "data/raw" / name).write_bytes(content() if callable(content) else content)
    source = f"data/raw/{next(iter(files))}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"source": source, **data}}))
    outputs = (ingest.DATASET, ingest.LABELS, paths.INGEST_REPORT)
    if isinstance(expected, str):
        with pytest.raises(SkewtuneError, match=expected):
            ingest.main()
        assert _leftovers(tmp_path, outputs) == []
        return
    ingest.main()
    report = json.loads(Path(paths.INGEST_REPORT).read_text())
    assert {key: report[key] for key in expected} == expected
    assert all(Path(path).is_file() for path in outputs) and _leftovers(tmp_path, ()) == []


def test_openpyxl_parses_through_defusedxml():
    """The XLSX cases above rely on it: without defusedxml, openpyxl expands XML entities."""
    import openpyxl.xml

    assert openpyxl.xml.DEFUSEDXML


# ---------------------------------------------------------------------------------------------------------
# 2. Params: every leaf key of the schema rejects one invalid value with a message naming the dotted key.

# Keys whose type alone does not say what is invalid (free-form strings with a grammar, Any with a validator).
INVALID = {
    "decision.blend": 1.5,
    "model.image_size": "large",
    "data.encoding": "no-such-codec",
    "resample.over_ratio": 1.5,
    "resample.under_ratio": 0,
    "model.lora.target_modules": [],
    "train.select_metric": "accuracy",
    "train.batch_size": "big",
    "train.cv": 6,  # more folds than dvc.yaml's train_fold stages
    "loss.class_weights": [1.0, 0.0],
    "loss.alpha": "inverse",
    "threshold.metric": "accuracy",
    "model.hidden_dropout": 1.0,
    "model.classifier_dropout": -0.1,
    "train.ema_decay": 1.0,
    "loss.reweight_from_epoch": 1,
}


def _leaves(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _leaves(field.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def _invalid_value(key: str, field):
    """One value the key must refuse: the special one, a Literal outside its choices, a number beyond its
    bound, a non-boolean, or a list where a string or mapping belongs."""
    if key in INVALID:
        return INVALID[key]
    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return "no-such-choice"
    if annotation is bool:
        return "perhaps"
    if annotation in (int, float):
        for bound in field.metadata:
            if hasattr(bound, "ge"):
                return bound.ge - 1
            if hasattr(bound, "gt"):
                return bound.gt
        raise AssertionError(f"{key}: a number without a bound; add its invalid value to INVALID")
    if annotation in (str, str | None) or typing.get_origin(annotation) is dict:
        return ["a", "list"]
    raise AssertionError(f"{key}: no rule for {annotation}; add its invalid value to INVALID")


def _nested(key: str, value) -> dict:
    raw: dict = {}
    node = raw
    *sections, leaf = key.split(".")
    for section in sections:
        node = node.setdefault(section, {})
    node[leaf] = value
    return raw


LEAVES = dict(_leaves(Params))


def test_every_leaf_key_is_walked():
    assert len(LEAVES) >= 50 and set(INVALID) <= set(LEAVES)
    assert {key.split(".")[0] for key in LEAVES} == set(Params.model_fields)


@pytest.mark.parametrize("key", list(LEAVES))
def test_each_key_rejects_an_invalid_value(key):
    field = LEAVES[key]
    value = _invalid_value(key, field)
    with pytest.raises(SkewtuneError) as caught:
        validate_params(_nested(key, value))
    lines = str(caught.value).splitlines()
    assert lines[0] == "params.yaml: invalid params:" and len(lines) == 2
    assert lines[1].startswith(f"  {key}: ")
    if typing.get_origin(field.annotation) is typing.Literal:
        assert all(repr(choice) in lines[1] for choice in typing.get_args(field.annotation)), lines[1]


SECTIONS = ["", *sorted({key.rsplit(".", 1)[0] for key in LEAVES if "." in key})]


@pytest.mark.parametrize("section", SECTIONS)
def test_unknown_key_names_the_allowed_keys(section):
    key = f"{section}.gama" if section else "gama"
    allowed = (
        [k.rsplit(".", 1)[-1] for k in LEAVES if k.rsplit(".", 1)[0] == section]
        if section
        else list(Params.model_fields)
    )
    if section == "model":
        allowed.append("lora")
    with pytest.raises(SkewtuneError) as caught:
        validate_params(_nested(key, 1))
    line = str(caught.value).splitlines()[1]
    parent = section or "the top level"
    assert line.startswith(f"  {key}: unknown key; the keys allowed in {parent} are: ")
    assert sorted(line.rsplit(": ", 1)[1].split(", ")) == sorted(allowed)


# Values of the right type that a later stage would fail on with a traceback (or silently misread).
REFUSED_LATE_FAILURES = [
    ({"train": {"warmup": math.inf}}, "train.warmup", "OverflowError in the whole-steps check instead of a message"),
    (
        {"data": {"encoding": "rot13"}},
        "data.encoding",
        "not a text encoding: ingest fails with a LookupError traceback",
    ),
    ({"split": {"seed": 2**32}}, "split.seed", "sklearn/numpy seeds stop at 2**32 - 1: split fails with a traceback"),
    ({"resample": {"seed": 2**32}}, "resample.seed", "imbalanced-learn fails with a traceback"),
    ({"train": {"seed": 2**32}}, "train.seed", "transformers.set_seed fails with a ValueError traceback"),
    ({"loss": {"class_weights": [math.inf, 1.0]}}, "loss.class_weights", "an infinite weight makes the loss inf/NaN"),
    ({"loss": {"alpha": [math.inf, 1.0]}}, "loss.alpha", "an infinite weight makes the loss inf/NaN"),
    (
        {"data": {"text_column": "label", "label_column": "label"}},
        "data",
        "one column as text and label: ingest fails with an AttributeError traceback",
    ),
    ({"train": {"max_steps": 0}}, "train.max_steps", "0 silently means 'use epochs'"),
    ({"model": {"name": ""}}, "model.name", "an empty name"),
    ({"data": {"source": ""}}, "data.source", "an empty path"),
]


@pytest.mark.parametrize(("raw", "key", "why"), REFUSED_LATE_FAILURES, ids=[case[1] for case in REFUSED_LATE_FAILURES])
def test_params_refuse_values_that_would_fail_later(raw, key, why):
    with pytest.raises(SkewtuneError, match=rf"\n  {key}[.:]"):
        validate_params(raw)


# Values of another type than the key's, which pydantic's lax mode would convert: each is a slip to report.
REFUSED_TYPES = [
    ({"train": {"max_steps": "5"}}, "train.max_steps", "must be a whole number, written without quotes"),
    (
        {"train": {"max_steps": 5.0}},
        "train.max_steps",
        "must be a whole number, written without quotes or a decimal point",
    ),
    ({"train": {"epochs": True}}, "train.epochs", "must be a number, not true or false"),
    ({"model": {"hidden_dropout": "0.1"}}, "model.hidden_dropout", "must be a number, written without quotes"),
    ({"baseline": {"enabled": 1}}, "baseline.enabled", "must be true or false"),
    ({"train": {"compile": "yes"}}, "train.compile", "must be true or false"),
]


@pytest.mark.parametrize(
    ("raw", "key", "message"),
    REFUSED_TYPES,
    ids=[f"{case[1]}={next(iter(next(iter(case[0].values())).values()))!r}" for case in REFUSED_TYPES],
)
def test_params_take_values_as_yaml_typed_them(raw, key, message):
    with pytest.raises(SkewtuneError) as caught:
        validate_params(raw)
    assert str(caught.value).splitlines()[1].startswith(f"  {key}: {message} (got ")


def test_yaml_1_1_exponent_floats_and_numeric_names_are_accepted():
    """PyYAML reads `lr: 1e-4` as the string '1e-4' (YAML 1.1 floats need a dot and a signed exponent); DVC's `-S`
    writes it so. Strings keys stay strings: a column or label may be named 5."""
    params = validate_params(
        yaml.safe_load("train: {lr: 1e-4, warmup: 1.0e2}\ndata: {text_column: 5, label_map: {0: neg, 1: pos}}")
    )
    assert (params.train.lr, params.train.warmup) == (1e-4, 100.0)
    assert (params.data.text_column, params.data.label_map) == ("5", {"0": "neg", "1": "pos"})


IMAGES = {"modality": "image", "source": "data/raw/images"}  # image data, for the keys only the other modality reads


# Per key that only some choices read: params where it is set but unread, and params where it is read.
def _under_embedding(raw: dict) -> dict:
    return {**raw, "train": {**raw.get("train", {}), "method": "embedding"}}


UNREAD_AND_READ = {
    "data.quoting": (
        {"data": {"quoting": "none", "source": "data/raw/x.jsonl"}},
        {"data": {"quoting": "none", "source": "data/raw/x.jsonl", "test_path": "data/raw/t.tsv"}},
    ),
    "split.test_size": (
        {"split": {"test_size": 0.2}, "data": {"test_path": "data/raw/test.csv"}},
        {"split": {"test_size": 0.2}},
    ),
    "resample.over_ratio": (
        {"resample": {"over_ratio": 0.5}},
        {"resample": {"over_ratio": 0.5, "strategy": "random_over"}},
    ),
    "resample.under_ratio": (
        {"resample": {"under_ratio": 0.5, "strategy": "random_over"}},
        {"resample": {"under_ratio": 0.5, "strategy": "over_under"}},
    ),
    "resample.seed": ({"resample": {"seed": 1}}, {"resample": {"seed": 1, "strategy": "random_under"}}),
    "model.lora.r": ({"model": {"lora": {"r": 16}}}, {"model": {"lora": {"r": 16, "enabled": True}}}),
    "model.lora.alpha": ({"model": {"lora": {"alpha": 32}}}, {"model": {"lora": {"alpha": 32, "enabled": True}}}),
    "model.lora.dropout": (
        {"model": {"lora": {"dropout": 0.1}}},
        {"model": {"lora": {"dropout": 0.1, "enabled": True}}},
    ),
    "model.lora.target_modules": (
        {"model": {"lora": {"target_modules": ["query"]}}},
        {"model": {"lora": {"target_modules": ["query"], "enabled": True}}},
    ),
    "train.epochs": ({"train": {"epochs": 3, "max_steps": 10}}, {"train": {"epochs": 3}}),
    "train.min_steps": ({"train": {"min_steps": 50, "max_steps": 10}}, {"train": {"min_steps": 50}}),
    **{
        # read by the baseline and by label_issues' cross-fitted one: unread only with both off
        f"baseline.{key}": (
            {"baseline": {key: value, "enabled": False}, "label_issues": {"enabled": False}},
            {"baseline": {key: value, "enabled": False}},
        )
        for key, value in (("min_df", 3), ("max_features", 5000), ("max_rows", 1000))
    },
    # the modality's keys (set on the other modality: no effect)
    **{
        f"data.{key}": ({"data": {key: value, **IMAGES}}, {"data": {key: value}})
        for key, value in (("text_column", "body"), ("text_pair_column", "second"), ("unescape_html", True))
    },
    "data.image_column": ({"data": {"image_column": "file"}}, {"data": {"image_column": "file", **IMAGES}}),
    "data.max_image_pixels": ({"data": {"max_image_pixels": 1000}}, {"data": {"max_image_pixels": 1000, **IMAGES}}),
    "model.image_size": ({"model": {"image_size": 64}}, {"model": {"image_size": 64}, "data": IMAGES}),
    "model.max_length": ({"model": {"max_length": 64}, "data": IMAGES}, {"model": {"max_length": 64}}),
    "train.group_by_length": (
        {"train": {"group_by_length": False}, "data": IMAGES},
        {"train": {"group_by_length": False}},
    ),
    **{
        f"augment.{key}": ({"augment": {key: 0.5}}, {"augment": {key: 0.5}, "data": IMAGES})
        for key in ("hflip", "vflip", "rotation", "crop_scale", "brightness", "contrast")
    },
    "loss.class_weights": (
        {"loss": {"class_weights": "inverse_sqrt"}},
        {"loss": {"class_weights": "inverse_sqrt", "name": "weighted_ce"}},
    ),
    "loss.beta": (
        {"loss": {"beta": 0.99, "name": "weighted_ce"}},
        {"loss": {"beta": 0.99, "name": "weighted_ce", "class_weights": "effective_number"}},
    ),
    "loss.alpha": (
        {"loss": {"alpha": "balanced", "name": "weighted_ce"}},
        {"loss": {"alpha": "balanced", "name": "focal"}},
    ),
    "loss.gamma": ({"loss": {"gamma": 3.0}}, {"loss": {"gamma": 3.0, "name": "focal"}}),
    "loss.tau": ({"loss": {"tau": 2.0, "name": "focal"}}, {"loss": {"tau": 2.0, "name": "logit_adjusted"}}),
    "train.min_lr_ratio": ({"train": {"min_lr_ratio": 0.1}}, {"train": {"min_lr_ratio": 0.1, "scheduler": "cosine"}}),
    "train.plateau_factor": (
        {"train": {"plateau_factor": 0.5}},
        {"train": {"plateau_factor": 0.5, "scheduler": "reduce_on_plateau"}},
    ),
    "train.plateau_patience": (
        {"train": {"plateau_patience": 2}},
        {"train": {"plateau_patience": 2, "scheduler": "reduce_on_plateau"}},
    ),
    "train.early_stopping_min_epochs": (
        {"train": {"early_stopping_min_epochs": 3, "early_stopping_patience": 0}},
        {"train": {"early_stopping_min_epochs": 3}},
    ),
    "train.adversarial_epsilon": (
        {"train": {"adversarial_epsilon": 0.5}},
        {"train": {"adversarial_epsilon": 0.5, "adversarial": "fgm"}},
    ),
    "train.pgd_steps": (
        {"train": {"pgd_steps": 2, "adversarial": "fgm"}},
        {"train": {"pgd_steps": 2, "adversarial": "pgd"}},
    ),
    "train.pgd_alpha": ({"train": {"pgd_alpha": 0.1}}, {"train": {"pgd_alpha": 0.1, "adversarial": "pgd"}}),
    "train.setfit_iterations": (
        {"train": {"setfit_iterations": 2, "method": "embedding"}},
        {"train": {"setfit_iterations": 2, "method": "setfit"}},
    ),
    "train.setfit_max_pairs": (
        {"train": {"setfit_max_pairs": 100}},
        {"train": {"setfit_max_pairs": 100, "method": "setfit"}},
    ),
    "loss.reweight_from_epoch": (
        {"loss": {"reweight_from_epoch": 2, "name": "focal"}},
        {"loss": {"reweight_from_epoch": 2, "name": "focal", "alpha": 0.25}},
    ),
    "threshold.min_precision": (
        {"threshold": {"min_precision": 0.8}},
        {"threshold": {"min_precision": 0.8, "metric": "recall_at_precision"}},
    ),
    # the keys that only fine-tuning reads, set under train.method embedding (the others of them are above)
    **{
        f"{section}.{key}": (_under_embedding({section: {key: value}}), {section: {key: value}})
        for section, key, value in (
            ("model", "hidden_dropout", 0.2),
            ("model", "classifier_dropout", 0.2),
            ("train", "max_steps", 10),
            ("train", "batch_size", 16),
            ("train", "grad_accum", 2),
            ("train", "lr", 5e-4),
            ("train", "weight_decay", 0.1),
            ("train", "warmup", 0.2),
            ("train", "scheduler", "cosine"),
            ("train", "max_grad_norm", 0.5),
            ("train", "early_stopping_patience", 0),
            ("train", "ema_decay", 0.99),
            ("train", "adversarial", "fgm"),
            ("train", "select_metric", "loss"),
            ("train", "nproc", 2),
            ("train", "compile", True),
            ("train", "resume", True),
            ("loss", "label_smoothing", 0.1),
        )
    },
    "model.lora.enabled": (
        {"model": {"lora": {"enabled": True}}, "train": {"method": "setfit"}},
        {"model": {"lora": {"enabled": True}}},
    ),
}


def test_unread_settings_cover_every_conditional_key():
    assert set(UNREAD_AND_READ) == {key for key, _, _ in CONDITIONAL_KEYS}


@pytest.mark.parametrize("key", UNREAD_AND_READ)
def test_a_set_but_unread_key_is_named_and_a_read_one_is_not(key):
    unread, read = UNREAD_AND_READ[key]
    lines = unused_settings(validate_params(unread))
    assert len(lines) == 1 and lines[0].startswith(f"{key} is ") and "has no effect" in lines[0], lines
    assert unused_settings(validate_params(read)) == []


@pytest.mark.parametrize(
    "raw, keys",
    [
        (
            {"train": {"ema_decay": 0.999}, "model": {"lora": {"enabled": True}}},
            ("train.ema_decay", "model.lora.enabled"),
        ),
        (
            {"train": {"adversarial": "fgm"}, "model": {"lora": {"enabled": True}}},
            ("train.adversarial", "model.lora.enabled"),
        ),
        (
            {"loss": {"name": "weighted_ce", "reweight_from_epoch": 4}, "train": {"epochs": 3}},
            ("loss.reweight_from_epoch", "train.epochs"),
        ),
    ],
)
def test_techniques_refuse_options_they_cannot_work_with(raw, keys):
    """Refused when params.yaml is read (check_params, the first stage), in one line naming both keys."""
    with pytest.raises(SkewtuneError) as caught:
        validate_params(raw)
    line = str(caught.value).splitlines()[1]
    assert all(key in line for key in keys), line


def test_a_key_unread_for_two_reasons_is_named_once_with_both():
    lines = unused_settings(validate_params({"loss": {"gamma": 3.0}, "train": {"method": "embedding", "lr": 5e-4}}))
    assert lines == [
        "train.lr is 0.0005, but only train.method: finetune or auto reads it: it has no effect here (its default is "
        "0.0001)",
        "loss.gamma is 3.0, but only train.method: finetune or auto with loss.name: focal reads it: it has no effect "
        "here (its default is 2.0)",
    ]


def test_defaults_and_the_project_params_warn_of_nothing():
    assert unused_settings(validate_params({})) == [] and unused_settings(load_params(REPO / "params.yaml")) == []


def test_check_params_cli_lists_every_problem(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "loss:\n  gama: 2\ntrain:\n  lr: 5\n  scheduler: steep\nmodel:\n  lora:\n    r: 0\n", encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "stages.check_params"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "skewtune check_params: error: params.yaml: invalid params:"
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == [
        "loss.gama",
        "model.lora.r",
        "train.lr",
        "train.scheduler",
    ]


def test_check_params_cli_bounds_the_message_of_an_alias_bomb(tmp_path):
    """params.yaml is trusted, yet a value that YAML aliases expand to 9**9 items gets a short message, quickly."""
    levels = ["a0: &a0 [" + ", ".join(['"lol"'] * 9) + "]"] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)
    ]
    problems = "\n".join(f"  {key}: *a8" for key in ("lr", "epochs", "eval_batch_size", "seed", "warmup"))
    (tmp_path / "params.yaml").write_text(
        "bombs:\n"
        + "\n".join("  " + line for line in levels)
        + f"\ntrain:\n{problems}\n"
        + "".join(f"t{i}: 1\n" for i in range(30)),
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "stages.check_params"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stdout == "" and not (tmp_path / "reports").exists()
    lines = done.stderr.splitlines()
    assert lines[0] == "skewtune check_params: error: params.yaml: invalid params:"
    assert len(lines) == 22 and lines[-1] == "  ... and 16 more problems; fix these first"
    assert any(line.startswith("  train.lr: Input should be a valid number (got [[[") for line in lines)
    assert max(map(len, lines)) < 400


def test_check_params_cli_warns_of_an_unread_setting_and_passes(tmp_path):
    (tmp_path / "params.yaml").write_text("loss:\n  name: ce\n  gamma: 3.0\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "stages.check_params"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout == "params.yaml: valid\n"
    assert done.stderr == (
        "params.yaml: warning: loss.gamma is 3.0, but only loss.name: focal reads it: it has no effect here (its default is 2.0)\n"
    )
    # the stages' effective configurations: the ce loss's train.json is the defaults' (gamma is not in it)
    effective = json.loads((tmp_path / "reports/effective/train.json").read_text())
    assert "loss.gamma" not in effective and effective["loss.name"] == "ce" and effective["train.lr"] == 1e-4
    assert sorted(p.stem for p in (tmp_path / "reports/effective").iterdir()) == sorted(STAGE_KEYS)


def test_effective_config_keeps_the_keys_that_take_effect():
    focal = validate_params({"loss": {"name": "focal", "gamma": 3.0}})
    assert effective_config(focal, STAGE_KEYS["train"])["loss.gamma"] == 3.0
    ce = [effective_config(validate_params({"loss": {"gamma": gamma}}), STAGE_KEYS["train"]) for gamma in (2.0, 3.0)]
    assert ce[0] == ce[1]  # what makes DVC skip train: its dep does not change
    assert (
        effective_config(validate_params({"model": {"lora": {"enabled": True}}}), STAGE_KEYS["train"])[
            "model.lora.target_modules"
        ]
        == "all-linear"
    )


def test_every_params_key_is_read_by_a_listed_stage():
    check_stage_keys()
    with pytest.raises(
        SkewtuneError, match=r"unknown key\(s\) \['loss.gama'\]; key\(s\) no stage lists \['loss.gamma'\]"
    ):
        check_stage_keys(
            {**STAGE_KEYS, "train": tuple(k for k in STAGE_KEYS["train"] if k != "loss.gamma") + ("loss.gama",)}
        )


# ---------------------------------------------------------------------------------------------------------
# 3. Interruption and resume of the real train stage (a subprocess, as `dvc repro` runs it).

TRAIN_OUTPUTS = ("models/model", "reports/train")
# val loss is the selection metric so that the kept model is the last epoch's: equal weights then show that
# the resumed epochs trained exactly as the uninterrupted ones did.
TRAIN_SECTIONS = {"train": {"epochs": 3, "select_metric": "loss", "early_stopping_patience": 0}}


@pytest.fixture(scope="module")
def sms(sms_path) -> pd.DataFrame:
    frame = pd.read_csv(sms_path, sep="\t")
    frame.columns = ["label", "text"]
    return frame.assign(id=[f"sms{i}" for i in range(len(frame))])


def _start_train(root: Path, hold: str) -> subprocess.Popen:
    """The train stage in `root` (tests/held_train.py: `python -m stages.train` with a hold), its output in
    `root`/train.log (not one of the stage's outputs); it stops at the event `hold`, writes root/held and waits
    there for a signal."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with (root / "train.log").open("w") as log:
        # SIGINT's default action restored: a shell starts background jobs (`make test &`) with SIGINT ignored,
        # and the run would inherit that and wait out its hold.
        return subprocess.Popen(
            [sys.executable, str(REPO / "tests/held_train.py"), hold, str(root / "held")],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def _signal_when_held(run: subprocess.Popen, root: Path, signum: int) -> int:
    """Send `signum` once the run waits at its hold point; its exit status. The deadline only turns a run
    that never gets there into a failure, not a hang: the run waits, so nothing races the signal."""
    deadline = time.monotonic() + 240
    while not (root / "held").exists():
        assert run.poll() is None and time.monotonic() < deadline, (
            f"the run ended (status {run.returncode}) or took 240 s without reaching its hold point:\n"
            + (root / "train.log").read_text()[-3000:]
        )
        time.sleep(0.02)
    run.send_signal(signum)
    return run.wait(timeout=60)


def _train_in_process(root: Path, monkeypatch) -> None:
    import stages.train

    with monkeypatch.context() as inside:
        inside.chdir(root)
        stages.train.main()


@pytest.fixture
def one_thread():
    """Train in this process with one thread, as the subprocesses (OMP_NUM_THREADS=1) do, so that both compute
    bit for bit the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _complete_checkpoint(root: Path) -> bool:
    return any((path / "trainer_state.json").is_file() for path in (root / "models/checkpoints").glob("checkpoint-*"))


def _checkpointed_epochs(root: Path) -> float:
    """The epochs completed by the newest checkpoint."""
    states = [
        json.loads(path.read_text()) for path in (root / "models/checkpoints").glob("checkpoint-*/trainer_state.json")
    ]
    return max(state["epoch"] for state in states)


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return load_file(root / "models/model/model.safetensors")


def test_interrupted_training_leaves_no_outputs_and_resumes_to_the_same_result(
    sms, tiny_bert_dir, tmp_path, monkeypatch, capsys, one_thread
):
    """SIGTERM (as `dvc` or a scheduler stops a job) once the first epoch's checkpoint is written, and SIGINT
    (Ctrl-C) during the final save (training done, the model not yet written): exit status 130, no
    models/model, no reports/train, no temporaries, the checkpoints kept; then train.resume: true completes
    with the metrics and weights of an uninterrupted run."""
    roots = {
        name: make_project(tmp_path / name, sms, tiny_bert_dir, train_rows=(72, 24), **TRAIN_SECTIONS)
        for name in ("uninterrupted", "SIGTERM", "SIGINT")
    }
    holds = {"SIGTERM": "checkpoint", "SIGINT": "save"}
    runs = {name: _start_train(roots[name], hold) for name, hold in holds.items()}
    for name, run in runs.items():
        root = roots[name]
        status = _signal_when_held(run, root, getattr(signal, name))
        log = (root / "train.log").read_text()
        assert status == 130 and log.rstrip().endswith("skewtune train: interrupted; its outputs were not written"), (
            log[-3000:]
        )
        assert _leftovers(root, TRAIN_OUTPUTS) == []
        assert _complete_checkpoint(root)  # the finished epochs are kept for train.resume
    assert _checkpointed_epochs(roots["SIGTERM"]) == 1.0
    assert _checkpointed_epochs(roots["SIGINT"]) == TRAIN_SECTIONS["train"]["epochs"]

    _train_in_process(roots["uninterrupted"], monkeypatch)
    # A checkpoint cut short while being written (no trainer_state.json yet) must be skipped, not resumed from.
    partial = roots["SIGINT"] / "models/checkpoints/checkpoint-999"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half a file")
    expected_metrics = json.loads((roots["uninterrupted"] / "reports/train/metrics.json").read_text())
    expected_weights = _weights(roots["uninterrupted"])
    assert expected_metrics["best"]["epoch"] == 3.0  # the kept model is the one trained after the interruption
    for name in ("SIGTERM", "SIGINT"):
        root = roots[name]
        (root / "params.yaml").write_text(
            (root / "params.yaml").read_text().replace("train:", "train:\n  resume: true")
        )
        capsys.readouterr()
        _train_in_process(root, monkeypatch)
        assert ("checkpoint-999 was not completely written" in capsys.readouterr().err) == (name == "SIGINT")
        assert json.loads((root / "reports/train/metrics.json").read_text()) == expected_metrics
        weights = _weights(root)
        assert weights.keys() == expected_weights.keys() and all(
            torch.equal(weights[k], expected_weights[k]) for k in weights
        )
        assert not (root / "models/checkpoints").exists() and _leftovers(root, ()) == []


def test_resume_from_the_final_checkpoint_keeps_the_training_history(
    sms, tiny_bert_dir, tmp_path, monkeypatch, one_thread
):
    """Stopped after the last epoch's checkpoint, while the model is being saved: the resumed run has no epoch
    left to train, and still writes the whole history and the best epoch to reports/train."""
    import stages.train
    from skewtune.models.modality import TextModality

    root = make_project(tmp_path, sms, tiny_bert_dir, train={"epochs": 1})
    monkeypatch.chdir(root)
    with monkeypatch.context() as patch:

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt("signal 15")

        patch.setattr(TextModality, "save", interrupted)
        with pytest.raises(KeyboardInterrupt):
            stages.train.main()
    assert _leftovers(root, TRAIN_OUTPUTS) == [] and _complete_checkpoint(root)
    (root / "params.yaml").write_text((root / "params.yaml").read_text().replace("train:", "train:\n  resume: true"))
    stages.train.main()
    summary = json.loads((root / "reports/train/metrics.json").read_text())
    assert summary["step"] == 0 and summary["epoch"] == 1.0 and summary["best"]["epoch"] == 1.0
    assert len(pd.read_csv(root / "reports/train/plots/metrics/val/loss.tsv", sep="\t")) == 1


def test_an_interruption_while_committing_outputs_waits_for_the_commit(tmp_path, monkeypatch, capsys):
    """SIGTERM (turned into KeyboardInterrupt as skewtune.core.stage does) arriving between two renames of a commit:
    all outputs are committed, no temporary is left, and the interruption is raised afterwards; the stage
    exits 130 saying that its outputs were written."""
    from skewtune.core.stage import run_stage

    real_replace, calls = os.replace, []

    def replace_then_signal(src, dst):
        real_replace(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs at the next bytecode boundary, long before this ends

    def stage():
        with Outputs() as out:
            out.json(tmp_path / "a.json", {"a": 1})
            out.path(tmp_path / "model", directory=True).joinpath("weights").write_text("w")
            out.json(tmp_path / "b.json", {"b": 2})

    monkeypatch.setattr(os, "replace", replace_then_signal)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exit_:
            run_stage("evaluate", stage)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exit_.value.code == 130 and len(calls) == 3
    assert capsys.readouterr().err == (
        "skewtune evaluate: interrupted once its outputs were completely written; `dvc commit` records them as they are\n"
    )
    assert json.loads((tmp_path / "b.json").read_text()) == {"b": 2} and (tmp_path / "model/weights").is_file()
    assert _leftovers(tmp_path, ()) == []


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_get_the_modes_of_the_umask(umask, file_mode, dir_mode, tmp_path, tiny_bert_dir):
    """Temporaries are private (mkstemp, mkdtemp) and safetensors writes 0600; committed outputs, and all
    a committed directory holds, get the modes that the umask gives any new file."""
    from transformers import AutoModel

    previous = os.umask(umask)
    try:
        with Outputs() as out:
            out.json(tmp_path / "metrics.json", {"a": 1})
            model_dir = out.path(tmp_path / "model", directory=True)
            AutoModel.from_pretrained(tiny_bert_dir).save_pretrained(model_dir / "nested")
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    assert modes["model/nested/model.safetensors"] == file_mode and modes["metrics.json"] == file_mode
    assert modes["model"] == dir_mode and modes["model/nested"] == dir_mode
    assert set(modes.values()) == {file_mode, dir_mode}


# ---------------------------------------------------------------------------------------------------------
# 4. Numerical faults: a non-finite gradient with a finite loss (fp32; CPU has no fp16 loss scaling).


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.0])
def test_non_finite_gradient_stops_training_at_its_step(max_grad_norm, tiny_bert_dir, tmp_path):
    from skewtune.config.schema import LossParams, TrainParams
    from skewtune.models.text import encode, load_classifier, load_tokenizer
    from skewtune.train.arguments import training_arguments
    from skewtune.train.diagnostics import DiagnosticsCallback
    from skewtune.train.losses import build_loss
    from skewtune.train.selection import parse_selection
    from skewtune.train.trainer import build_trainer

    tokenizer = load_tokenizer(str(tiny_bert_dir))
    torch.manual_seed(0)
    model = load_classifier(str(tiny_bert_dir), tokenizer, LABELS, max_length=16)
    backward_passes = []

    def infinite_on_third_step(grad):
        backward_passes.append(1)
        return torch.full_like(grad, math.inf) if len(backward_passes) == 3 else grad

    model.classifier.weight.register_hook(infinite_on_third_step)
    frame = pd.DataFrame({"text": [f"message number {i}" for i in range(16)], "label_id": [0, 1] * 8})
    rows = encode(tokenizer, frame, 16)
    selection = parse_selection("f1_macro", LABELS)
    train = TrainParams(
        epochs=1,
        max_steps=4,
        batch_size=4,
        eval_batch_size=8,
        lr=1e-3,
        weight_decay=0.0,
        warmup=0,
        scheduler="constant",
        max_grad_norm=max_grad_norm,
        seed=0,
        early_stopping_patience=0,
        group_by_length=False,
    )
    args = training_arguments(str(tmp_path / "checkpoints"), train, precision="fp32", device="cpu", selection=selection)
    trainer = build_trainer(
        model,
        tokenizer,
        args,
        rows,
        rows[:8],
        train=train,
        loss_fn=build_loss(LossParams(), class_counts=[8, 8], labels=LABELS),
        labels=LABELS,
        selection=selection,
        callbacks=[DiagnosticsCallback(LABELS)],
    )
    # The diagnostics of steps 1-4 are read together at the end of the epoch: step 4 ran on the NaN weights of
    # step 3, and the message names step 3 and the window.
    with pytest.raises(
        SkewtuneError,
        match=r"^the gradient norm is inf \(the loss \d\.\d+ is finite\) at optimizer step 3 "
        r"\(epoch 0\.75, learning rate 0\.001; read with steps 1-4\)",
    ):
        trainer.train()
    assert len(backward_passes) == 4


# ---------------------------------------------------------------------------------------------------------
# 5. Untrusted model files: pickles are never loaded, remote code runs only with model.trust_remote_code.


class _Payload:
    """Unpickling this creates `marker`: the proof that a pickle was loaded (and could have run anything)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _predict_project(root: Path, model_dir: Path, params: dict | None = None) -> None:
    (root / "data/split").mkdir(parents=True)
    for name in ("val", "test"):
        pd.DataFrame({"id": ["a", "b"], "text": ["hello there", "win a prize"], "label": LABELS}).to_parquet(
            root / f"data/split/{name}.parquet"
        )
    (root / "data/interim").mkdir(parents=True)
    (root / "data/interim/labels.json").write_text(json.dumps({"labels": LABELS}))
    (root / "params.yaml").write_text(yaml.safe_dump(params or {}))
    shutil.copytree(model_dir, root / "models/model")


def test_pickled_weights_are_never_loaded(tiny_bert_dir, tmp_path, monkeypatch):
    """Only pytorch_model.bin (a pickle that runs code when loaded): refused by train's model loading and
    by the predict stage, and the pickle is never opened."""
    from skewtune.models.text import load_classifier, load_tokenizer
    from stages import predict

    marker = tmp_path / "pickle-was-loaded"
    base = tmp_path / "base"
    shutil.copytree(tiny_bert_dir, base)
    (base / "model.safetensors").unlink()
    (base / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    tokenizer = load_tokenizer(str(base))
    with pytest.raises(
        SkewtuneError, match=rf"model\.name: {base} has no \.safetensors weights, only pytorch_model\.bin \(a pickle"
    ):
        load_classifier(str(base), tokenizer, LABELS, max_length=16)

    (base / "skewtune.json").write_text(json.dumps({"labels": LABELS, "max_length": 16, "text_pair": False}))
    _predict_project(tmp_path / "project", base)
    monkeypatch.chdir(tmp_path / "project")
    with pytest.raises(SkewtuneError, match=r"models/model: cannot load the trained model"):
        predict.main()
    assert _leftovers(tmp_path / "project", ("data/predictions",)) == []
    assert not marker.exists()


REMOTE_CONFIG = """
from pathlib import Path
from transformers import BertConfig

Path({marker!r}).touch()  # runs when the module is imported


class CustomConfig(BertConfig):
    model_type = "skewtune_custom"
"""
REMOTE_MODEL = """
from transformers import BertForSequenceClassification

from .configuration_custom import CustomConfig


class CustomForSequenceClassification(BertForSequenceClassification):
    config_class = CustomConfig
"""


def test_remote_code_runs_only_when_trusted(tiny_bert_dir, tmp_path, monkeypatch):
    """A model dir whose config.json has an auto_map (its own Python code): refused by train's model loading
    and by the predict stage unless model.trust_remote_code is true; with it, the code runs."""
    import transformers.dynamic_module_utils as dynamic

    from skewtune.models.text import load_classifier, load_tokenizer
    from stages import predict

    marker = tmp_path / "remote-code-ran"
    base = tmp_path / "custom"
    shutil.copytree(tiny_bert_dir, base)
    config = json.loads((base / "config.json").read_text())
    config.update(
        model_type="skewtune_custom",
        architectures=["CustomForSequenceClassification"],
        auto_map={
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModelForSequenceClassification": "modeling_custom.CustomForSequenceClassification",
        },
    )
    (base / "config.json").write_text(json.dumps(config))
    (base / "configuration_custom.py").write_text(REMOTE_CONFIG.format(marker=str(marker)))
    (base / "modeling_custom.py").write_text(REMOTE_MODEL)
    (base / "skewtune.json").write_text(json.dumps({"labels": LABELS, "max_length": 16, "text_pair": False}))

    refused = r"ships its own model code, which runs only with model\.trust_remote_code: true"
    tokenizer = load_tokenizer(str(base))
    with pytest.raises(SkewtuneError, match=rf"model\.name: '{base}' {refused}"):
        load_classifier(str(base), tokenizer, LABELS, max_length=16)
    _predict_project(tmp_path / "project", base)
    with monkeypatch.context() as inside:
        inside.chdir(tmp_path / "project")
        with pytest.raises(SkewtuneError, match=refused):
            predict.main()
        assert _leftovers(tmp_path / "project", ("data/predictions",)) == []
    assert not marker.exists()

    # Trusted: transformers copies the code into its modules cache and imports it (kept inside tmp_path here).
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    model = load_classifier(str(base), tokenizer, LABELS, max_length=16, trust_remote_code=True)
    assert marker.exists() and type(model).__name__ == "CustomForSequenceClassification"
