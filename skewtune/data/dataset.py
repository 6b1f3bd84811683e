"""Turning raw table rows of text into the labelled dataset: the texts and labels cleaned (skewtune.data.cleaning),
unusable rows, conflicting labels, duplicates and test-file leakage dropped within their bounds (skewtune.data.drops);
with a report of each file and the printed summary.

All steps are vectorised (pandas string kernels, integer group keys), so a million rows take seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from skewtune.config.schema import DataParams
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import counted
from skewtune.data.cleaning import MISSING_SPELLINGS, clean_labels, normalise_text, odd_characters, whole_numbers
from skewtune.data.corrections import apply_corrections
from skewtune.data.drops import (
    DROP_EXAMPLES,
    DROP_REASONS,
    check_conflict_share,
    check_missing_share,
    conflict_counts,
    conflict_examples,
    conflict_lines,
    drop_counts,
    drop_examples,
    drop_reasons,
    reported_reasons,
)
from skewtune.data.tables import Table

# The data params' defaults, for the keyword defaults of assemble_dataset and assemble_images.
DATA_DEFAULTS = DataParams()


def class_balance(labels: pd.Series, order: list[str]) -> dict:
    """Count per class (in `order`), majority/minority ratio and the minority's share of all rows
    (over the classes present: a test file may lack some)."""
    counts = labels.value_counts().reindex(order, fill_value=0)
    present = counts[counts > 0]
    return {
        "class_counts": {label: int(n) for label, n in counts.items()},
        "imbalance_ratio": round(float(present.max() / present.min()), 6),
        "minority_share": round(float(present.min() / counts.sum()), 6),
    }


def _standardise(table: Table, columns: dict[str, str], prefix: str, subset: str, unescape_html: bool) -> pd.DataFrame:
    raw_label = normalise_text(table.frame[columns["label"]])
    return pd.DataFrame(
        {
            "id": prefix + pd.Series(table.frame.index, dtype="int64").astype("str"),
            "place": table.unit + " " + pd.Series(table.places).astype("str"),
            **{
                name: normalise_text(table.frame[source], unescape_html=unescape_html).array
                for name, source in columns.items()
                if name != "label"
            },
            "label": whole_numbers(raw_label).array,
            "subset": subset,
            "raw_label": raw_label.array,
        }
    )


def _file_report(
    name: str,
    table: Table,
    frame: pd.DataFrame,
    reason: np.ndarray,
    reasons: list[str],
    columns: dict[str, str],
    labels: list[str],
    unescape_html: bool,
    conflicts: str,
    max_conflict_share: float,
) -> dict:
    dropped = pd.Series(reason).value_counts()
    keys = [key for key in columns if key != "label"]
    kept = frame[reason == None]  # noqa: E711
    return {
        **drop_counts(name, table, reason, reasons),
        "drop_examples": {
            key: drop_examples(table, columns, reason, key, DROP_EXAMPLES) for key in reasons if dropped.get(key, 0)
        },
        "cleaning": {
            **odd_characters(table.frame, [columns[key] for key in keys], unescape_html=unescape_html),
            "texts_spelled_missing": int(frame[keys].isin(MISSING_SPELLINGS).any(axis=1).sum()),
        },
        **conflict_counts(frame, reason, keys, conflicts, max_conflict_share),
        **class_balance(kept["label"], labels),
    }


def kept_labels(
    kept: pd.DataFrame,
    pool_name: str,
    test_name: str | None,
    *,
    has_test: bool,
    lacking: str,
    columns: str,
    fix: str,
    one_class: str,
) -> list[str]:
    """The sorted labels of the kept data-file rows, after checking that the data file keeps two classes and
    the test file (`has_test`) keeps rows, all of known labels. `lacking`, `columns`, `fix` and `one_class`
    word the errors for the modality (texts: columns; images: files)."""
    in_pool = kept["subset"] == "pool"
    if not in_pool.any():
        raise SkewtuneError(
            f"{pool_name}: no usable rows: every row lacks {lacking} or carries conflicting labels ({columns}); {fix}"
        )
    labels = sorted(kept.loc[in_pool, "label"].unique())
    if len(labels) < 2:
        raise SkewtuneError(
            f"{pool_name}: only one class ({labels[0]!r}, {int(in_pool.sum())} usable rows) {one_class}"
        )
    if has_test and in_pool.all():
        raise SkewtuneError(
            f"{test_name}: no usable test rows: every row lacks {lacking} or carries conflicting "
            f"labels ({columns}); fix the file or remove data.test_path"
        )
    unknown = sorted(set(kept.loc[~in_pool, "label"]) - set(labels))
    if unknown:
        raise SkewtuneError(
            f"{test_name}: label(s) {', '.join(map(repr, unknown))} of the test file do not occur in {pool_name} "
            f"(its labels: {', '.join(map(repr, labels))}); fix the typos in the test file or rename them with data.label_map"
        )
    return labels


def assemble_dataset(
    pool: Table,
    test: Table | None,
    *,
    text_column: str,
    pair_column: str | None,
    label_column: str,
    label_map: dict[str, str],
    pool_name: str,
    test_name: str | None = None,
    max_dropped_share: float = 0.01,
    conflicts: str = DATA_DEFAULTS.conflicts,
    max_conflict_share: float = DATA_DEFAULTS.max_conflict_share,
    unescape_html: bool = False,
    corrections: tuple[str, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, list[str], dict]:
    """Clean the rows of the data file (`pool`) and of an optional fixed test file into one dataset.

    Rows are identified by their 1-based data row number in their file ("r<row>", "t<row>"; the header does not
    count), and `place` says where that row starts in the file (Table.place: "line 13" of a CSV whose records hold
    no line breaks). `corrections` (its file's name, the table of skewtune.data.corrections) relabels rows by id
    before anything is dropped.
    Returns the dataset (id, place, text, [text_pair], label, subset; the ingest stage writes `place` apart), the
    sorted labels and a report (with `corrections`: the counts, when a table was given).
    Rows are dropped for missing text/pair/label (at most `max_dropped_share` of a file's rows, else
    SkewtuneError), for a text (pair) carrying different labels in the same file (`conflicts`: drop, all its
    rows; majority_vote, those not of its most frequent label, all on a tie; at most `max_conflict_share` of
    a file's rows, else SkewtuneError), for repeating an earlier text (pair) of the same file, and, in the data
    file only, for a text (pair) that is also in the test file, which would otherwise leak into training.
    """
    columns = {"text": text_column, **({"text_pair": pair_column} if pair_column else {}), "label": label_column}
    keys = [name for name in columns if name != "label"]
    parts = [_standardise(pool, columns, "r", "pool", unescape_html)]
    if test is not None:
        parts.append(_standardise(test, columns, "t", "test", unescape_html))
    frame = pd.concat(parts, ignore_index=True)
    label_notes = clean_labels(frame, label_map, pool_name + (f" or {test_name}" if test is not None else ""))
    corrected = apply_corrections(frame, corrections[1], "text", keys, corrections[0]) if corrections else None

    unusable = [(frame[key].isna().to_numpy(), f"missing_{key}") for key in keys]
    reason = drop_reasons(frame, keys, unusable, conflicts)
    is_test = (frame["subset"] == "test").to_numpy()
    per_file = [(pool_name, pool, ~is_test)] + ([(test_name, test, is_test)] if test is not None else [])
    for name, table, rows in per_file:
        check_missing_share(name, table, frame[rows], reason[rows], columns, max_dropped_share)
    check_conflict_share(
        [(name, rows) for name, _, rows in per_file],
        frame,
        reason,
        keys,
        unusable,
        conflicts,
        max_conflict_share,
        shown=keys,
    )
    reasons = reported_reasons(
        tuple(name for name in DROP_REASONS if name != "missing_text_pair" or pair_column),
        conflicts=conflicts,
        has_test=test is not None,
    )
    kept = frame[reason == None].drop(columns="raw_label").reset_index(drop=True)  # noqa: E711
    labels = kept_labels(
        kept,
        pool_name,
        test_name,
        has_test=test is not None,
        lacking="a text or a label",
        columns=f"columns {', '.join(map(repr, columns.values()))}",
        fix="check the data.*_column settings",
        one_class=f"in column {label_column!r}; a classifier needs at least 2: check data.label_column"
        + (" and data.label_map" if label_map else ""),
    )

    conflict_settings = (conflicts, max_conflict_share)
    report = _file_report(
        pool_name, pool, frame[~is_test], reason[~is_test], reasons, columns, labels, unescape_html, *conflict_settings
    )
    report["conflict_examples"] = conflict_examples(frame, reason, keys, keys)
    report.update(label_notes)
    if corrected is not None:
        report["corrections"] = corrected
    if test is not None:
        report["test"] = _file_report(
            test_name,
            test,
            frame[is_test],
            reason[is_test],
            [name for name in reasons if name != "also_in_test_file"],
            columns,
            labels,
            unescape_html,
            *conflict_settings,
        )
    return kept.astype("str"), labels, report


def summary_lines(report: dict) -> list[str]:
    """The printed account of one file: how it was read, what was dropped and what was cleaned."""
    reading = report["reading"]
    quoting = {"standard": "standard quoting", "none": "no quote processing"}.get(reading.get("quoting"))
    how = reading["format"].upper() + (f" with {quoting} ({reading['quoting_reason']})" if quoting else "")
    dropped = ", ".join(f"{n} {reason}" for reason, n in report["dropped"].items() if n) or "none"
    lines = [
        f"ingest: {report['source']}: read as {how}; kept {report['rows_kept']} of {counted(report['rows_in'], 'row')}; dropped: {dropped}",
        *conflict_lines(report),
    ]
    if reading.get("utf8_lines"):
        other = reading["other_non_ascii_lines"]
        lines.append(
            f"ingest: {report['source']}: WARNING: read as {reading['encoding']} (data.encoding), {reading['utf8_lines']} lines that "
            f"are UTF-8 with non-ASCII characters come out garbled ({reading['utf8_example']}); "
            + (
                f"the file mixes encodings: {other} other non-ASCII lines are not UTF-8 (lines {reading['other_lines']}): "
                "convert those to UTF-8 and set data.encoding: utf-8"
                if other
                else "the file is UTF-8: set data.encoding: utf-8"
            )
        )
    cleaning = report["cleaning"]
    if cleaning["control_characters_removed"]:
        lines.append(
            f"ingest: {report['source']}: removed {cleaning['control_characters_removed']} control characters "
            f"(NUL, U+001A, ...) from {counted(cleaning['rows_with_control_characters'], 'row')}"
        )
    if cleaning["texts_spelled_missing"]:
        lines.append(
            f"ingest: {report['source']}: {counted(cleaning['texts_spelled_missing'], 'row')} with a text that reads like a missing value "
            "(NA, null, None, ...): kept as text, since a message may say that (only labels so spelled count as missing); "
            "remove those rows if they mean no text"
        )
    if cleaning["rows_with_html_references"]:
        lines.append(
            f"ingest: {report['source']}: {counted(cleaning['rows_with_html_references'], 'row')} with HTML character references "
            "(&amp;, &#039;, ...): "
            + (
                "decoded"
                if cleaning["html_references_decoded"]
                else "kept as written; set data.unescape_html: true to decode them"
            )
        )
    return lines
