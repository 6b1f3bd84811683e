"""The files between stages, defined once: what each holds and how it is read and checked (where each lives:
`skewtune.core.paths`; the row schema: `skewtune.core.columns`).

Every stage, `evaluate`, `compare` and `skewtune predict` go through these names and readers, so a
contract (a path, a column, a check) changes in one place. A reader names the file, says what is
wrong and which stage to re-run; writing stays with `skewtune.core.outputs.Outputs` (atomic), and the writers
here only shape what is written. The files of a model directory: `skewtune.model_dir`.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from skewtune.core.columns import PROB_PREFIX, input_columns, prob_columns, string_columns
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import significant
from skewtune.core.paths import (
    DECISION,
    LABELS,
    MAX_FOLDS,
    TEST_PREDICTIONS_CSV,
    baseline_predictions_path,
    fold_predictions_path,
    predictions_path,
    split_path,
)
from skewtune.decision.folds import assign_folds, resolve_cv
from skewtune.decision.rule import ROW_SUM_TOLERANCE, DecisionRule, valid_labels

# ----------------------------------------------------------------------------------------- readers


def read_frame(path: str | os.PathLike, producer: str) -> pd.DataFrame:
    """A parquet file written by the stage `producer`, with an error that says which stage to run."""
    path = Path(path)
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise SkewtuneError(f"{path}: not found; run the {producer} stage first (dvc repro {producer})") from None
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise SkewtuneError(
            f"{path}: not a readable parquet file ({type(exc).__name__}: {exc}); re-run the {producer} stage"
        ) from None


def read_json(path: str | os.PathLike, producer: str) -> Any:
    """A JSON file written by the stage `producer`, with an error that says which stage to run."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SkewtuneError(f"{path}: not found; run the {producer} stage first (dvc repro {producer})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SkewtuneError(f"{path}: not valid JSON ({exc}); re-run the {producer} stage") from None


def read_labels(path: str | os.PathLike = LABELS) -> list[str]:
    """The label list of labels.json ({"labels": [...]}, at least two distinct strings); index = class id."""
    raw = read_json(path, "ingest")
    labels = raw.get("labels") if isinstance(raw, dict) else None
    if not valid_labels(labels):
        raise SkewtuneError(
            f'{path}: expected {{"labels": [two or more distinct strings]}}, got {raw!r:.200}; re-run the ingest stage'
        )
    return labels


def read_examples(path: str | os.PathLike, labels: Sequence[str], producer: str) -> pd.DataFrame:
    """A table of the stage `producer` (id, the inputs of its modality, label) with an added int column `label_id`, checked."""
    frame = read_frame(path, producer)
    columns = string_columns(frame)
    missing = [c for c in ("id", *columns, "label") if c not in frame.columns]
    if missing:
        raise SkewtuneError(f"{path}: missing column(s) {', '.join(missing)}; expected id, {', '.join(columns)}, label")
    if frame.empty:
        raise SkewtuneError(f"{path}: has no rows; check data.source and the split sizes")
    for column in columns + ["label"]:
        bad = frame[column].map(lambda v: not isinstance(v, str))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise SkewtuneError(
                f"{path}: row {row} (id {frame['id'].iloc[row]!r}), column {column!r}: expected a string, got {frame[column].iloc[row]!r}"
            )
    index = {label: i for i, label in enumerate(labels)}
    unknown = ~frame["label"].isin(list(index))
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise SkewtuneError(
            f"{path}: row {row} (id {frame['id'].iloc[row]!r}) has label {frame['label'].iloc[row]!r}, which is not in "
            f"labels.json ({', '.join(labels)}); re-run the pipeline from ingest"
        )
    return frame.assign(label_id=frame["label"].map(index).astype(np.int64))


def read_texts(path: str | os.PathLike, ids: np.ndarray) -> pd.DataFrame:
    """id and the inputs people read (text[, text_pair]; images: the image path) of the split file at `path`, in
    the order of `ids` (every id must be there)."""
    path = Path(path)
    frame = read_frame(path, "split")
    columns = ["id", *input_columns(frame)]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SkewtuneError(f"{path}: missing column(s) {missing}; re-run the split stage")
    table = frame[columns].assign(id=frame["id"].astype(str)).drop_duplicates("id").set_index("id")
    absent = pd.Index(ids).difference(table.index)
    if len(absent):
        raise SkewtuneError(
            f"{path}: {len(absent)} prediction id(s) are not in it (e.g. {absent[0]!r}): the predictions were made "
            "on another split; re-run the predict stage"
        )
    return table.loc[list(ids)].reset_index()


# ------------------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Predictions:
    """A prediction file: ids (str), true class indices and probabilities (n, n_classes) in label order."""

    ids: np.ndarray
    y: np.ndarray
    probs: np.ndarray


def prediction_table(frame: pd.DataFrame, probs: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """What the predict stage writes: id, the true label, then `prob:<label>` per class in labels.json order."""
    table = pd.DataFrame({"id": frame["id"].to_numpy(), "label": frame["label"].to_numpy()})
    for i, column in enumerate(prob_columns(labels)):
        table[column] = probs[:, i].astype(np.float64)
    return table


def _row(frame: pd.DataFrame, i: int) -> str:
    return f"data row {i + 1} (id {frame['id'].iloc[i]!r})"


def read_predictions(path: str | os.PathLike, labels: list[str], producer: str = "predict") -> Predictions:
    """Read and check data/predictions/<split>.parquet (or the baseline's): id, label, one prob:<label> column per label."""
    path = Path(path)
    frame = read_frame(path, producer)
    missing = [c for c in ("id", "label") if c not in frame.columns]
    if missing:
        raise SkewtuneError(
            f"{path}: missing column(s) {missing}; the {producer} stage writes id, label and prob:<label> columns"
        )
    expected = prob_columns(labels)
    found = [c for c in frame.columns if str(c).startswith(PROB_PREFIX)]
    if set(found) != set(expected):
        raise SkewtuneError(
            f"{path}: its probability columns {found} do not match the labels of labels.json {labels} "
            f"(missing {sorted(set(expected) - set(found))}, unexpected {sorted(set(found) - set(expected))}); "
            f"re-run the {producer} stage with the current labels"
        )
    if frame.empty:
        raise SkewtuneError(f"{path}: has no rows; re-run the split and {producer} stages")
    if frame["id"].isna().any():
        raise SkewtuneError(f"{path}: data row {int(np.flatnonzero(frame['id'].isna())[0]) + 1} has no id")
    duplicated = frame["id"].duplicated()
    if duplicated.any():
        raise SkewtuneError(f"{path}: id {frame['id'][duplicated].iloc[0]!r} occurs more than once; ids must be unique")
    unknown = ~frame["label"].isin(labels)
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise SkewtuneError(
            f"{path}: {_row(frame, i)} has label {frame['label'].iloc[i]!r}, which is not in labels.json {labels}"
        )
    try:
        probs = frame[expected].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SkewtuneError(f"{path}: prob: columns must be numbers ({exc})") from None
    bad = ~np.isfinite(probs)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise SkewtuneError(
            f"{path}: {_row(frame, i)} has {probs[i, j]} in column {expected[j]!r}; probabilities must be finite numbers"
        )
    bad = (probs < 0) | (probs > 1 + ROW_SUM_TOLERANCE)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise SkewtuneError(
            f"{path}: {_row(frame, i)} has probability {probs[i, j]} in column {expected[j]!r}, outside [0, 1]"
        )
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1) > ROW_SUM_TOLERANCE
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise SkewtuneError(
            f"{path}: the probabilities of {_row(frame, i)} sum to {sums[i]:.6g}, not 1 "
            f"({int(off.sum())} such rows); the {producer} stage must write probabilities"
        )
    return Predictions(
        frame["id"].astype(str).to_numpy(dtype=object),
        frame["label"].map({label: k for k, label in enumerate(labels)}).to_numpy(dtype=np.int64),
        probs,
    )


def write_no_table(out, path: str) -> None:
    """What a stage writes in place of a table it has nothing for (declared outputs must exist): a parquet table
    without rows or columns. Not a 0-byte file: DVC warns "'<path>' is empty" at every run of the stage."""
    out.parquet(path, pd.DataFrame())


def is_no_table(path: str | os.PathLike) -> bool:
    """Whether `path` is what write_no_table writes."""
    import pyarrow.parquet as pq

    return Path(path).is_file() and not pq.read_schema(path).names


def read_baseline_predictions(split: str, labels: list[str]) -> Predictions | None:
    """The baseline's predictions of `split`, or None when it was disabled or not fitted (write_no_table)."""
    path = baseline_predictions_path(split)
    return None if is_no_table(path) else read_predictions(path, labels, "baseline")


def read_rule_inputs(
    split: str, labels: list[str], rule: "DecisionRule", model: Predictions | None = None
) -> Predictions:
    """The probabilities that `rule` decides on for `split`: predict's (`model`, when already read) through the rule's
    calibrator, blended with the baseline's (through its own) when the rule blends."""
    model = read_predictions(predictions_path(split), labels) if model is None else model
    if not rule.blend:
        return Predictions(model.ids, model.y, rule.combine(model.probs, None))
    baseline = read_baseline_predictions(split, labels)
    if baseline is None:
        raise SkewtuneError(
            f"{DECISION}: the decision rule blends the baseline in (weight {rule.blend:g}), but {baseline_predictions_path(split)} "
            "holds no baseline predictions; re-run the baseline and tune_threshold stages"
        )
    return Predictions(model.ids, model.y, rule.combine(model.probs, aligned(model, baseline, split).probs))


def aligned(model: Predictions, baseline: Predictions, split: str, model_path: str | None = None) -> Predictions:
    """The baseline's predictions in the row order of predict's (or of the file `model_path`), refused when they were
    made on other rows."""
    index = pd.Index(baseline.ids)
    position = index.get_indexer(model.ids)
    if len(index) != len(model.ids) or (position < 0).any() or not np.array_equal(baseline.y[position], model.y):
        raise SkewtuneError(
            f"{baseline_predictions_path(split)} and {model_path or predictions_path(split)} were made on different rows "
            f"of the {split} split; re-run the baseline and {'train_fold' if model_path else 'predict'} stages"
        )
    return Predictions(model.ids, model.y, baseline.probs[position])


# ---------------------------------------------------------------------------------- cross-fitting

BASELINE_OOF = "oof"  # baseline_predictions_path(BASELINE_OOF): the baseline's out-of-fold train + val probabilities
CV_SPLITS = ("train", "val")  # the rows cross-fitted (test never)


@dataclass(frozen=True)
class CrossFit:
    """The train + val rows of train.cv (train's rows first, then val's, as in the split files), each row's fold, the
    number of folds K (0: no cross-fitting), why, and val's share of the rows."""

    rows: pd.DataFrame
    folds: np.ndarray | None
    k: int
    why: str
    val_share: float


def read_cross_fit(setting: str | int, seed: int, labels: list[str]) -> CrossFit:
    """The split's train + val rows and their folds under train.cv `setting` (skewtune.decision.folds.resolve_cv),
    seeded with split.seed: what the fold stages and the cross-fitted baseline share."""
    parts = [read_examples(split_path(s), labels, "split") for s in CV_SPLITS]
    rows = pd.concat(parts, ignore_index=True)
    y = rows["label_id"].to_numpy()
    k, why = resolve_cv(setting, np.bincount(y, minlength=len(labels)), labels)
    return CrossFit(rows, assign_folds(y, k, seed) if k else None, k, why, len(parts[-1]) / len(rows))


def read_fold_predictions(labels: list[str]) -> tuple[Predictions, np.ndarray] | None:
    """The fold models' out-of-fold predictions of train + val, concatenated over the folds, with each row's fold; None
    when there is no cross-fitting: every fold file is a table without columns, or absent (a project whose stages ran
    by hand, without train_fold; `dvc repro` always runs it first)."""
    trained = [
        f
        for f in range(MAX_FOLDS)
        if Path(fold_predictions_path(f)).exists() and not is_no_table(fold_predictions_path(f))
    ]
    if not trained:
        return None
    if trained != list(range(len(trained))):
        raise SkewtuneError(
            f"the fold predictions {', '.join(fold_predictions_path(f) for f in trained)} are not folds 0 to "
            f"{len(trained) - 1}: they come from different runs; re-run the train_fold stages (dvc repro)"
        )
    parts = [read_predictions(fold_predictions_path(f), labels, "train_fold") for f in trained]
    ids = np.concatenate([part.ids for part in parts])
    if len(set(ids)) != len(ids):
        raise SkewtuneError(
            f"{fold_predictions_path(0)} ...: a row is in two folds: the fold files come from different runs; "
            "re-run the train_fold stages (dvc repro)"
        )
    folds = np.concatenate([np.full(len(part.ids), f) for f, part in zip(trained, parts)])
    return Predictions(ids, np.concatenate([p.y for p in parts]), np.concatenate([p.probs for p in parts])), folds


def parse_test_predictions(text: str, where: str) -> pd.DataFrame:
    """reports/eval/test_predictions.csv (as text, e.g. from `git show`), every value a string."""
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SkewtuneError(
            f"{where}: {TEST_PREDICTIONS_CSV} is not a readable CSV ({exc}); re-run the evaluate stage there"
        ) from None


def read_decision(path: str | os.PathLike, labels: list[str]) -> DecisionRule:
    """The rule of reports/threshold/decision.json, checked against the labels it is applied with."""
    decision = read_json(path, "tune_threshold")
    if not isinstance(decision, dict) or decision.get("labels") != labels:
        got = decision.get("labels") if isinstance(decision, dict) else decision
        raise SkewtuneError(
            f"{path}: made for labels {got!r}, but labels.json has {labels}; re-run the tune_threshold stage"
        )
    return DecisionRule.from_dict(decision, str(path))


# ------------------------------------------------------------------------------ prediction outputs


def read_scored(path: str | os.PathLike, labels: list[str]) -> pd.DataFrame | None:
    """The score stage's output: the scored table, or None for its table without columns (data.score_path unset)."""
    path = Path(path)
    if is_no_table(path):
        return None
    frame = read_frame(path, "score")
    missing = [c for c in ("predicted", *prob_columns(labels), "margin") if c not in frame.columns]
    if missing:
        raise SkewtuneError(f"{path}: missing column(s) {missing} for the labels {labels}; re-run the score stage")
    return frame


def read_label_issues(path: str | os.PathLike) -> pd.DataFrame:
    """reports/label_issues.csv (the label_issues stage): id, split, label, suggested and score of each suspect, most
    suspect first (the texts are read from the split files, not from this formula-escaped copy)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise SkewtuneError(f"{path}: not found; run the label_issues stage first (dvc repro label_issues)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SkewtuneError(f"{path}: not a readable CSV ({exc}); re-run the label_issues stage") from None
    missing = [c for c in ("id", "split", "label", "suggested", "score") if c not in frame.columns]
    if missing:
        raise SkewtuneError(f"{path}: missing column(s) {', '.join(missing)}; re-run the label_issues stage")
    return frame[["id", "split", "label", "suggested"]].assign(score=pd.to_numeric(frame["score"], errors="coerce"))


def write_frame(frame: pd.DataFrame, path: str | os.PathLike, fmt: str, rounded: Sequence[str] = ()) -> None:
    """Write `frame` to `path` (a temporary file of Outputs) as csv (text cells escaped for spreadsheets), jsonl or
    parquet. The text formats write the float columns `rounded` (what skewtune computed, not the input's own columns)
    with REPORT_DIGITS significant digits."""
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
        return
    frame = frame.assign(**{column: frame[column].map(significant) for column in rounded})
    if fmt == "csv":
        spreadsheet_safe(frame).to_csv(path, index=False)
    else:
        # pandas escapes every "/" as "\/" (legal JSON, but unlike any other writer); in its output each "\/" is that escape.
        text = frame.to_json(orient="records", lines=True, force_ascii=False, double_precision=15)
        Path(path).write_text(text.replace("\\/", "/"), encoding="utf-8")


# Spreadsheet programs run a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would read as a formula, prefixed with ' (shown as text, not run)."""
    safe = frame.copy()
    for column in safe.columns:
        values = safe[column]
        if not pd.api.types.is_numeric_dtype(values):
            risky = values.map(lambda v: isinstance(v, str) and v.startswith(_FORMULA_START)).astype(bool)
            safe[column] = values.astype(object).mask(risky, "'" + values.astype(str))
    return safe
