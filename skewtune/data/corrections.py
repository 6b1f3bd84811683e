"""Labels corrected by hand (data.corrections, by default data/raw/corrections.csv), applied by ingest by row id.

The file holds id, the row's input as the dataset holds it (`text`, or `image` for images: its path) and the corrected
label; `skewtune relabel import` writes it (merged: a later correction of an id replaces an earlier one) and people may
edit it. A row id is the row's number in its file (r12: the 12th data row of data.source, t3: of data.test_path), so it
moves when rows are inserted above it: ingest applies a correction only while the input at its id is still the one
corrected, and counts the others as unknown (a WARNING names them) instead of relabelling some other row.

A correction is applied before repeats and conflicting labels are resolved, to the row and to every repeat of its
input in the same file: the dataset keeps a text once, so correcting one copy and letting the vote restore the old
label from the others would lose the correction.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import counted
from skewtune.data.tables import resolve_raw_path

UNKNOWN_SHOWN = 10  # unknown ids listed in the report and the warning


def correction_columns(input_column: str) -> list[str]:
    return ["id", input_column, "label"]


def read_corrections(path: str | os.PathLike, input_column: str) -> pd.DataFrame | None:
    """The corrections at `path` (every value a string, one row per id: the last one wins), or None when there is no
    such file."""
    path = Path(path)
    if not path.exists():
        return None
    columns = correction_columns(input_column)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SkewtuneError(
            f"{path}: not a readable CSV of corrections ({type(exc).__name__}: {exc}); fix or delete it"
        ) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SkewtuneError(
            f"{path}: missing column(s) {', '.join(missing)}; a corrections file holds {', '.join(columns)} "
            "(skewtune relabel import writes it)"
        )
    for column in ("id", "label"):
        empty = frame[column].str.strip() == ""
        if empty.any():
            line = int(empty.to_numpy().argmax()) + 2  # the header is line 1
            raise SkewtuneError(f"{path}: line {line} has no {column}; fill it in or delete the line")
    return frame[columns].drop_duplicates("id", keep="last").reset_index(drop=True)


def data_corrections(
    value: str | None, input_column: str, raw_dir: str | os.PathLike
) -> tuple[str, pd.DataFrame] | None:
    """(data.corrections, its table) for ingest, or None when the key is null or no such file exists."""
    if value is None or not os.path.lexists(value):
        return None
    frame = read_corrections(resolve_raw_path(value, "data.corrections", raw_dir), input_column)
    return (value, frame) if frame is not None else None


def merge_corrections(earlier: pd.DataFrame | None, later: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """`earlier` with `later` added (a later correction of an id replaces the earlier one), and how many it replaced."""
    if earlier is None:
        return later.reset_index(drop=True), 0
    replaced = int(earlier["id"].isin(later["id"]).sum())
    merged = pd.concat([earlier[~earlier["id"].isin(later["id"])], later], ignore_index=True)
    return merged, replaced


def apply_corrections(
    frame: pd.DataFrame, corrections: pd.DataFrame, input_column: str, keys: list[str], where: str
) -> dict:
    """Set frame["label"] from `corrections` (in place) on the rows whose id and input match, and on every repeat of
    their input (the `keys` columns) in the same file (subset), and mark those rows frame["reviewed"] (a person has
    decided their label, changed or confirmed: the label_issues stage lists them no more). Returns the counts for
    reports/ingest.json.
    A corrected label that is not one of the file's labels stops with one line: it would add a class."""
    known = set(frame["label"].dropna())
    new = sorted(set(corrections["label"]) - known)
    if new:
        raise SkewtuneError(
            f"{where}: label(s) {', '.join(map(repr, new))} are not among the labels of the data "
            f"({', '.join(map(repr, sorted(known)))}); fix them in {where}, or add the class to the data first"
        )
    position = pd.Index(frame["id"]).get_indexer(corrections["id"])  # -1: no such id
    found = position >= 0
    found[found] = frame[input_column].to_numpy()[position[found]] == corrections[input_column].to_numpy()[found]
    rows, labels = position[found], corrections["label"].to_numpy()[found]
    change = frame["label"].to_numpy()[rows] != labels
    group = frame.groupby(["subset", *keys], sort=False, dropna=False).ngroup().to_numpy()
    label_of = dict(zip(group[rows[change]], labels[change]))
    relabel = np.isin(group, list(label_of))
    before = frame["label"].to_numpy().copy()
    frame.loc[relabel, "label"] = [label_of[g] for g in group[relabel]]
    frame["reviewed"] = np.isin(group, group[rows])
    unknown = corrections.loc[~found, "id"].tolist()
    return {
        "file": where,
        "corrections": int(len(corrections)),
        "applied": int(change.sum()),
        "unchanged": int((~change).sum()),
        "unknown": len(unknown),
        "unknown_ids": unknown[:UNKNOWN_SHOWN],
        "rows_relabelled": int((pd.Series(before).fillna("") != frame["label"].fillna("").to_numpy()).sum()),
    }


def correction_lines(report: dict) -> list[str]:
    """The printed account of the corrections ingest applied (none when there was no file)."""
    if not report:
        return []
    lines = [
        f"ingest: {report['file']}: {counted(report['corrections'], 'correction')}: {report['applied']} applied "
        f"({counted(report['rows_relabelled'], 'row')} relabelled, repeats included), {report['unchanged']} already "
        f"the label, {report['unknown']} unknown"
    ]
    if report["unknown"]:
        lines.append(
            f"ingest: {report['file']}: WARNING: {counted(report['unknown'], 'correction')} not applied: no row has that "
            f"id with the text corrected (e.g. {', '.join(report['unknown_ids'])}), so the data file changed since the "
            "export; delete those lines, or export the queue again and redo them"
        )
    return lines
