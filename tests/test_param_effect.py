"""Every key that skewtune/config/effective.py CONDITIONAL_KEYS marks unread under some options is, under those
options, really without effect: each stage that lists the key (STAGE_KEYS) is run for real, in-process, twice on
the same inputs, the key at its default and then at another valid value, and its outputs (its `outs` in
dvc.yaml) must be byte-identical. A wrong entry would leave a stale output: check_params would not change the
stage's effective configuration, so DVC would not re-run it.

The cases are looked up from CONDITIONAL_KEYS itself: an entry (or a stage that starts to read one) without a case
here fails. Controls (`read`) run the cheap stages under options that do read the key and show that the same change
changes an output there, so the comparison can fail. The stages run on a text and an image project that the real
stages built once (a tiny BERT; the default small ResNet on 12x12 PNGs); a stage's inputs are copied per case."""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from skewtune.config.effective import (
    CONDITIONAL_KEYS,
    FINETUNE_KEYS,
    STAGE_CONDITIONAL_KEYS,
    STAGE_KEYS,
    effective_config,
    unread_keys,
)
from skewtune.config.load import validate_params
from skewtune.config.schema import Params
from skewtune.core.errors import SkewtuneError
from skewtune.core.paths import MAX_FOLDS

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """A change of one key under `unread` (dotted overrides of the project's params) that must change nothing; under
    `read`, when given, the same change must change an output of the stage."""

    other: Any
    unread: dict = field(default_factory=dict)
    read: dict | None = None


# Options that make the train keys of TEXT_PARAMS unread: no LoRA, max_steps (not epochs), linear schedule, no early
# stopping, no adversarial training, plain ce. The base params below already are these (see TEXT_PARAMS).
TEXT = {"data.modality": "text"}
IMAGE = {"data.modality": "image"}
# The baseline's feature keys are read by the baseline and by the cross-fitted one of label_issues.
NO_BASELINE = {"baseline.enabled": False, "label_issues.enabled": False}
# Two more sets of train options, where a part of a key's condition holds: pgd_* under fgm, the weights' keys under
# focal without alpha and under weighted_ce (balanced, not effective_number).
FGM_FOCAL = {"train.adversarial": "fgm", "loss.name": "focal"}
WEIGHTED = {"loss.name": "weighted_ce"}

CASES: dict[tuple[str, str], list[Case]] = {
    **{
        # no control of relabel, nor of score with a pair column: their text model classifies single texts
        (key, stage): [
            Case(
                other, IMAGE, None if stage == "relabel" or (stage, key) == ("score", "data.text_pair_column") else TEXT
            )
        ]
        for key, other in (("data.text_column", "note"), ("data.text_pair_column", "note"))
        for stage in ("ingest", "package", "score", "relabel")
    },
    ("data.unescape_html", "ingest"): [Case(True, IMAGE, TEXT)],
    ("data.unescape_html", "package"): [Case(True, IMAGE, TEXT)],
    **{
        ("data.image_column", stage): [Case("path", TEXT, IMAGE if stage == "package" else None)]
        for stage in ("ingest", "package", "score", "relabel")
    },
    ("data.max_image_pixels", "ingest"): [Case(100, TEXT)],
    ("data.max_image_pixels", "package"): [Case(100, TEXT, IMAGE)],
    ("model.max_length", "train"): [Case(16, IMAGE)],
    ("model.max_length", "package"): [Case(16, IMAGE, TEXT)],
    ("model.image_size", "train"): [Case(16, TEXT)],
    ("train.group_by_length", "train"): [Case(False, IMAGE)],
    **{
        (f"augment.{key}", "train"): [Case(other, TEXT)]
        for key, other in (
            ("hflip", 0.5),
            ("vflip", 0.5),
            ("rotation", 10.0),
            ("crop_scale", 0.5),
            ("brightness", 0.3),
            ("contrast", 0.3),
        )
    },
    ("data.quoting", "ingest"): [Case("none", {}, {"data.source": "sms.tsv"})],
    ("split.test_size", "split"): [Case(0.4, {"data.test_path": "test.jsonl"}, {})],
    ("resample.over_ratio", "resample"): [
        Case(0.5, {"resample.strategy": strategy}, {"resample.strategy": "random_over"})
        for strategy in ("none", "random_under")
    ],
    ("resample.under_ratio", "resample"): [
        Case(0.5, {"resample.strategy": strategy}, {"resample.strategy": "random_under"})
        for strategy in ("none", "random_over")
    ],
    ("resample.seed", "resample"): [Case(7, {"resample.strategy": "none"}, {"resample.strategy": "random_over"})],
    # the train stage reads them for smote / adasyn on the sentence embeddings (train.method embedding or setfit)
    ("resample.over_ratio", "train"): [Case(0.5, {"resample.strategy": "none"})],
    ("resample.seed", "train"): [Case(7, {"resample.strategy": "none"})],
    ("train.setfit_iterations", "train"): [Case(2), Case(2, {"train.method": "embedding"})],
    # the train stage reads train.cv only to choose auto's method; finetune trains the same model whatever it says
    ("train.cv", "train"): [Case("off", read={"train.method": "auto"})],
    ("train.setfit_max_pairs", "train"): [Case(100), Case(100, {"train.method": "embedding"})],
    **{
        (f"model.lora.{key}", "train"): [Case(other)]
        for key, other in (("r", 4), ("alpha", 8), ("dropout", 0.1), ("target_modules", ["query", "value"]))
    },
    ("train.epochs", "train"): [Case(3)],
    ("train.epochs", "package"): [Case(3, {}, {"train.max_steps": -1})],
    ("train.min_steps", "train"): [Case(50)],
    ("train.min_lr_ratio", "train"): [Case(0.5)],
    ("train.plateau_factor", "train"): [Case(0.5)],
    ("train.plateau_patience", "train"): [Case(2)],
    ("train.early_stopping_min_epochs", "train"): [Case(3)],
    ("train.adversarial_epsilon", "train"): [Case(0.5)],
    ("train.pgd_steps", "train"): [Case(2), Case(2, FGM_FOCAL)],
    ("train.pgd_alpha", "train"): [Case(0.1), Case(0.1, FGM_FOCAL)],
    ("loss.reweight_from_epoch", "train"): [Case(2), Case(2, FGM_FOCAL)],
    ("loss.class_weights", "train"): [Case("inverse_sqrt"), Case("inverse_sqrt", FGM_FOCAL)],
    ("loss.beta", "train"): [Case(0.99), Case(0.99, FGM_FOCAL), Case(0.99, WEIGHTED)],
    ("loss.alpha", "train"): [Case("balanced"), Case("balanced", WEIGHTED)],
    ("loss.gamma", "train"): [Case(1.0), Case(1.0, WEIGHTED)],
    ("loss.tau", "train"): [Case(2.0), Case(2.0, FGM_FOCAL), Case(2.0, WEIGHTED)],
    # max_rows has no control: its least value, 100, is above the 30 train rows here; nor has label_issues (its
    # suspects among these 45 rows need not change with the features)
    **{
        (f"baseline.{key}", stage): [
            Case(other, NO_BASELINE, read if stage == "baseline" else None),
            Case(other, IMAGE),
        ]
        for key, other, read in (("min_df", 3, {}), ("max_features", 100, {}), ("max_rows", 100, None))
        for stage in ("baseline", "label_issues")
    },
    ("threshold.min_precision", "tune_threshold"): [Case(0.5, {}, {"threshold.metric": "recall_at_precision"})],
}

# Every key that only fine-tuning reads (FINETUNE_KEYS) changed under train.method embedding and setfit (one contrastive
# step of 16 pairs), all at once in one run of each where that gives the same bytes: setfit's run leaves out
# ema_decay and adversarial, which LoRA refuses, embedding's lora.enabled, so that each run is a valid combination.
EMBEDDING = {"train.method": "embedding"}
SETFIT = {"train.method": "setfit", "train.setfit_max_pairs": 16}
FINETUNE_OTHER = {
    "model.hidden_dropout": 0.2,
    "model.classifier_dropout": 0.2,
    "model.lora.enabled": True,
    "model.lora.r": 4,
    "model.lora.alpha": 8,
    "model.lora.dropout": 0.1,
    "model.lora.target_modules": ["query", "value"],
    "train.epochs": 3,
    "train.max_steps": 10,
    "train.min_steps": 50,
    "train.batch_size": 4,
    "train.grad_accum": 2,
    "train.lr": 5e-4,
    "train.weight_decay": 0.1,
    "train.warmup": 0.2,
    "train.scheduler": "cosine",
    "train.min_lr_ratio": 0.5,
    "train.plateau_factor": 0.5,
    "train.plateau_patience": 2,
    "train.max_grad_norm": 0.5,
    "train.early_stopping_patience": 1,
    "train.early_stopping_min_epochs": 3,
    "train.ema_decay": 0.99,
    "train.adversarial": "fgm",
    "train.adversarial_epsilon": 0.5,
    "train.pgd_steps": 2,
    "train.pgd_alpha": 0.1,
    "train.select_metric": "loss",
    "train.group_by_length": False,
    "train.nproc": 2,
    "train.compile": True,
    "train.resume": True,
    "loss.class_weights": "inverse_sqrt",
    "loss.beta": 0.99,
    "loss.alpha": "balanced",
    "loss.gamma": 1.0,
    "loss.tau": 2.0,
    "loss.label_smoothing": 0.1,
    "loss.reweight_from_epoch": 2,
}
SENTENCE_RUNS = ((EMBEDDING, {"model.lora.enabled"}), (SETFIT, {"train.ema_decay", "train.adversarial"}))
# the model card lists train.epochs, train.lr and train.batch_size where they take effect (control: under finetune)
SENTENCE_CASES = {
    **{
        (key, "train"): [
            Case(FINETUNE_OTHER[key], options) for options, left_out in SENTENCE_RUNS if key not in left_out
        ]
        for key in FINETUNE_KEYS
    },
    ("train.epochs", "package"): [Case(3, EMBEDDING)],
    ("train.lr", "package"): [Case(5e-4, EMBEDDING, {})],
    ("train.batch_size", "package"): [Case(4, EMBEDDING, {})],
}
CASES = {key: CASES.get(key, []) + SENTENCE_CASES.get(key, []) for key in CASES.keys() | SENTENCE_CASES.keys()}

# The stages a case re-runs first, once, under its params (key at its default): those whose outputs the options
# of a case change and the stage reads (split reads ingest's fixed test file, tune_threshold the baseline's tables).
PRELUDE = {
    "split": ("ingest",),
    "tune_threshold": ("baseline",),
    "package": ("baseline", "tune_threshold", "evaluate"),
    "relabel": ("baseline", "tune_threshold"),
}
PIPELINE = tuple(STAGE_KEYS)  # in dvc.yaml's order, check_params aside
# The stages whose controls run here; a control of train would train twice more per key.
CHEAP = {"ingest", "split", "resample", "baseline", "tune_threshold", "package", "score"}

# Small and quick, and every conditional train key unread: no LoRA, max_steps rather than epochs, a linear schedule,
# no early stopping, no adversarial training, ce.
COMMON = {
    "train.method": "finetune",  # the method whose keys the cases are about (auto would cross-fit these rows: embedding)
    "split.val_size": 0.25,
    "split.test_size": 0.25,
    "train.max_steps": 4,
    "train.batch_size": 8,
    "train.eval_batch_size": 32,
    "train.lr": 3.0e-3,
    "train.warmup": 0.0,
    "train.early_stopping_patience": 0,
    "baseline.min_df": 1,
    "threshold.min_confidence": 0.6,
}
TEXT_PARAMS = {**COMMON, "data.source": "sms.jsonl", "data.score_path": "new.jsonl", "model.max_length": 32}
IMAGE_PARAMS = {**COMMON, "data.modality": "image", "data.source": "shapes", "data.score_path": "new"}
SIDE = 12


def nested(dotted: dict) -> dict:
    """{"a.b": 1} -> {"a": {"b": 1}}, with data/raw/ put before the data.* paths."""
    out: dict = {}
    for key, value in dotted.items():
        if key in ("data.source", "data.score_path", "data.test_path") and value is not None:
            value = f"data/raw/{value}"
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def params_of(dotted: dict) -> Params:
    return validate_params(nested(dotted))


def write_text_data(raw: Path, sms: pd.DataFrame) -> None:
    """60 labelled rows (45 ham, 15 spam) with a second text column, some HTML references and double quotes;
    a fixed test file; 6 rows to score."""
    ham, spam = sms[sms.label == "ham"], sms[sms.label == "spam"]
    rows = pd.concat([ham.iloc[:45], spam.iloc[:15]]).sample(frac=1, random_state=0).reset_index(drop=True)
    rows["text"] = [f'{text} &amp; "q{i}"' if i % 4 == 0 else text for i, text in enumerate(rows["text"])]
    rows["note"] = [f"note {i} {label}" for i, label in enumerate(rows["label"])]
    rows[["text", "note", "label"]].to_json(raw / "sms.jsonl", orient="records", lines=True)
    rows[["text", "note", "label"]].to_csv(raw / "sms.tsv", sep="\t", index=False)
    test = pd.concat([ham.iloc[100:112], spam.iloc[100:104]])
    test.assign(note="n")[["text", "note", "label"]].to_json(raw / "test.jsonl", orient="records", lines=True)
    ham.iloc[200:206][["text"]].assign(note="x").to_json(raw / "new.jsonl", orient="records", lines=True)


def _image(kind: int, variant: int) -> Image.Image:
    """Class `kind`: a bright bar, horizontal or vertical, on noise drawn from `variant`."""
    pixels = np.random.default_rng(variant).integers(0, 60, size=(SIDE, SIDE, 3), dtype=np.uint8)
    if kind:
        pixels[:, SIDE // 2 - 2 : SIDE // 2 + 2] = 230
    else:
        pixels[SIDE // 2 - 2 : SIDE // 2 + 2, :] = 230
    return Image.fromarray(pixels, mode="RGB")


def write_image_data(raw: Path) -> None:
    """A folder-per-class tree of 40 PNGs (30 bar, 10 post) and a folder of 4 to score."""
    for kind, (label, n) in enumerate({"bar": 30, "post": 10}.items()):
        (raw / "shapes" / label).mkdir(parents=True)
        for i in range(n):
            _image(kind, 1000 * kind + i).save(raw / "shapes" / label / f"{i:03d}.png")
    (raw / "new").mkdir()
    for i in range(4):
        _image(i % 2, 5000 + i).save(raw / "new" / f"{i}.png")


def write_params(root: Path, dotted: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(nested(dotted)), encoding="utf-8")


def run_stage_in(root: Path, stage: str, monkeypatch) -> None:
    monkeypatch.chdir(root)
    main = importlib.import_module(f"stages.{stage}").main
    for fold in range(MAX_FOLDS) if stage == "train_fold" else (None,):  # dvc.yaml's foreach: one run per fold
        main() if fold is None else main(fold)


def stage_outputs(stage: str) -> list[str]:
    """The stage's outs in dvc.yaml."""
    outs = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["outs"]
    return [out if isinstance(out, str) else next(iter(out)) for out in outs]


def snapshot(root: Path, stage: str) -> dict[str, bytes]:
    """{path: bytes} of every file of the stage's outputs."""
    files = {}
    for out in stage_outputs(stage):
        path = root / out
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                files[str(file.relative_to(root))] = file.read_bytes()
    assert files, f"{stage} wrote none of {stage_outputs(stage)}"
    return files


def differences(a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    return sorted(path for path in a.keys() | b.keys() if a.get(path) != b.get(path))


@pytest.fixture(scope="module")
def sms(sms_path) -> pd.DataFrame:
    frame = pd.read_csv(sms_path, sep="\t", quoting=3)
    frame.columns = ["label", "text"]
    return frame


@pytest.fixture(scope="module")
def projects(sms, tiny_bert_dir, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """{modality: (a project where every stage ran once, its params)}."""
    built = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for modality, dotted in (("text", {**TEXT_PARAMS, "model.name": str(tiny_bert_dir)}), ("image", IMAGE_PARAMS)):
            root = tmp_path_factory.mktemp(f"project_{modality}")
            raw = root / "data" / "raw"
            raw.mkdir(parents=True)
            write_text_data(raw, sms) if modality == "text" else write_image_data(raw)
            write_params(root, dotted)
            for stage in PIPELINE:
                run_stage_in(root, stage, monkeypatch)
            built[modality] = (root, dotted)
    return built


# Outputs of a stage under params seen before (the train runs of most cases share one reference). The runs are
# deterministic (test_training checks it): the same params on the same inputs give the same bytes.
_RUNS: dict[tuple[str, str], dict[str, bytes]] = {}


def outputs_under(root: Path, stage: str, dotted: dict, monkeypatch) -> dict[str, bytes]:
    seen = (stage, params_of(dotted).model_dump_json())
    if seen not in _RUNS:
        write_params(root, dotted)
        run_stage_in(root, stage, monkeypatch)
        _RUNS[seen] = snapshot(root, stage)
    return _RUNS[seen]


def compare(projects, tmp_path, monkeypatch, stage: str, changes: dict, options: dict) -> list[str]:
    """The outputs of `stage` that differ when the keys of `changes` go from their defaults to its values under
    `options`."""
    modality = options.get("data.modality", "text")
    source, base = projects[modality]
    root = tmp_path / "project"
    shutil.copytree(source, root, symlinks=True)
    defaults = {**base, **options, **{key: _default(key) for key in changes}}
    for prelude in PRELUDE.get(stage, ()):
        write_params(root, defaults)
        run_stage_in(root, prelude, monkeypatch)
    before = outputs_under(root, stage, defaults, monkeypatch)
    after = outputs_under(root, stage, {**defaults, **changes}, monkeypatch)
    return differences(before, after)


def joint_change(stage: str, options: dict) -> dict:
    """{key: other} of every case of `stage` under the same `options`: one run changes them all (a valid
    combination), so that the stage runs once for all of them unless one of them changes an output."""
    changes = {
        key: case.other for (key, s), cases in CASES.items() if s == stage for case in cases if case.unread == options
    }
    try:
        params_of({**_base(options), **changes})
    except SkewtuneError:
        return {}
    return changes


def _default(key: str) -> Any:
    value = Params()
    for part in key.split("."):
        value = getattr(value, part)
    return value.model_dump() if hasattr(value, "model_dump") else value


def _readers() -> list[tuple[str, str]]:
    """(key, stage) for every key of CONDITIONAL_KEYS (once, however many entries it has) and every stage that lists
    it, and every entry of STAGE_CONDITIONAL_KEYS."""
    conditional = dict.fromkeys(key for key, _, _ in CONDITIONAL_KEYS)
    everywhere = [(key, stage) for key in conditional for stage, keys in STAGE_KEYS.items() if key in keys]
    return everywhere + [(key, stage) for stage, entries in STAGE_CONDITIONAL_KEYS.items() for key, _, _ in entries]


def _cases_of(key: str, stage: str) -> list[Case]:
    cases = CASES.get((key, stage))
    if not cases:
        pytest.fail(
            f"CONDITIONAL_KEYS marks {key} unread under some options and STAGE_KEYS lists it for {stage}, but "
            f"tests/test_param_effect.py CASES has no case for ({key!r}, {stage!r}): add one"
        )
    return cases


def _base(case_options: dict) -> dict:
    return {**(IMAGE_PARAMS if case_options.get("data.modality") == "image" else TEXT_PARAMS), **case_options}


def test_every_case_is_a_conditional_key_of_a_stage_that_lists_it():
    assert sorted(set(CASES) - set(_readers())) == []


@pytest.mark.parametrize(("key", "stage"), _readers(), ids=lambda v: v)
def test_each_case_is_unread_where_it_says_and_read_in_its_control(key, stage):
    """The case's options make check_params leave the key out of the stage's effective configuration; its control's
    options keep it in, and the change shows there."""
    for case in _cases_of(key, stage):
        unread = _base(case.unread)
        assert key in unread_keys(params_of(unread), stage), (key, case)
        assert _default(key) != case.other
        assert params_of({**unread, key: case.other})  # a valid value
        same = [
            effective_config(params_of({**unread, key: v}), STAGE_KEYS[stage], stage)
            for v in (_default(key), case.other)
        ]
        assert same[0] == same[1]
        if case.read is not None:
            read = _base(case.read)
            assert key not in unread_keys(params_of(read), stage), (key, case)
            assert effective_config(params_of({**read, key: case.other}), STAGE_KEYS[stage], stage) != effective_config(
                params_of({**read, key: _default(key)}), STAGE_KEYS[stage], stage
            )


@pytest.mark.slow
@pytest.mark.parametrize(("key", "stage"), _readers(), ids=lambda v: v)
def test_a_key_marked_unread_leaves_the_stage_outputs_byte_identical(key, stage, projects, tmp_path, monkeypatch):
    for i, case in enumerate(_cases_of(key, stage)):
        joint = joint_change(stage, case.unread)
        if len(joint) < 2 or compare(projects, tmp_path / f"joint{i}", monkeypatch, stage, joint, case.unread):
            changed = compare(projects, tmp_path / f"unread{i}", monkeypatch, stage, {key: case.other}, case.unread)
            assert changed == [], (
                f"{key} changed from {_default(key)!r} to {case.other!r} changed {changed} of the {stage} stage "
                f"under {case.unread or 'the base options'}, where CONDITIONAL_KEYS says it is not read: a stale output"
            )
        if case.read is not None and stage in CHEAP:
            changed = compare(projects, tmp_path / f"read{i}", monkeypatch, stage, {key: case.other}, case.read)
            assert changed, f"control: {key} -> {case.other!r} changed nothing of {stage} under {case.read}"
