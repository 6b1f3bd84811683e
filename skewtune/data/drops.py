"""Why rows are dropped, and how many may be: each row's drop reason, the first that applies (a missing text or an
unusable image, a missing label, conflicting labels under data.conflicts, a repeat, test-file leakage), computed on
integer keys; the bounds data.max_dropped_share and data.max_conflict_share, which stop with the likely cause and the
rows that show it; and what a file's report records and prints of its drops. Text rows (skewtune.data.dataset) and
image rows (skewtune.data.images) share all of it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import counted
from skewtune.data.cleaning import counts_most_first
from skewtune.data.tables import Table

# Why a row was dropped, in the order the checks run (a row counts under the first that applies).
DROP_REASONS = (
    "missing_text",
    "missing_text_pair",
    "missing_label",
    "conflicting_label",
    "outvoted_label",
    "duplicate",
    "also_in_test_file",
)

# The reasons that mean the file was not read as intended (or holds gaps); data.max_dropped_share bounds them.
MISSING_REASONS = ("missing_text", "missing_text_pair", "missing_label")

# The rows whose label is thrown away because other copies of their text (image) say otherwise: every copy under
# data.conflicts: drop, and under majority_vote the copies of a tie (conflicting_label) and those that lost the vote
# (outvoted_label). data.max_conflict_share bounds them; duplicates (same text, same label) lose no label and are
# only counted.
CONFLICT_REASONS = ("conflicting_label", "outvoted_label")

# Shares above these print as WARNING lines: conflicts throw labels away (the dropped-row guard's 1%), duplicates
# only weight, which matters once a tenth of the rows are repeats (val and test then weigh a frequent text once).
WARN_CONFLICT_SHARE = 0.01
WARN_DUPLICATE_SHARE = 0.10

_PARAM_OF = {"text": "data.text_column", "text_pair": "data.text_pair_column", "label": "data.label_column"}
CONFLICT_EXAMPLES = 5
DROP_EXAMPLES = 3  # per reason, in the report
GUARD_EXAMPLES = 5  # in the error of the dropped-row guard
_EXAMPLE_CHARS = 120


def label_conflicts(
    file_key: np.ndarray, label: np.ndarray, alive: np.ndarray, conflicts: str
) -> tuple[np.ndarray, np.ndarray]:
    """Of the `alive` rows whose key (text[, pair] or image hash, and file) carries more than one label code: those
    dropped with every copy (all of them under `conflicts` drop; under majority_vote, those of a text whose top label
    count is shared) and those outvoted (majority_vote: a label other than the text's most frequent one)."""
    votes = pd.DataFrame({"key": file_key[alive], "label": label[alive]}).value_counts().rename("n").reset_index()
    conflicted = np.isin(file_key, votes["key"][votes["key"].duplicated()].unique()) & alive
    if conflicts == "drop":
        return conflicted, np.zeros_like(conflicted)
    leading = votes[votes["n"] == votes.groupby("key")["n"].transform("max")]
    winners = leading.drop_duplicates("key", keep=False)  # one leading label: it wins; several: a tie
    width = int(label.max()) + 1
    won = np.isin(file_key * width + label, winners["key"].to_numpy() * width + winners["label"].to_numpy())
    tied = conflicted & ~np.isin(file_key, winners["key"].to_numpy())
    return tied, conflicted & ~tied & ~won


def drop_reasons(
    frame: pd.DataFrame, keys: list[str], unusable: list[tuple[np.ndarray, str]], conflicts: str
) -> np.ndarray:
    """The reason each row is dropped (None: kept): first the `unusable` (mask, reason) pairs in order (a
    missing text; an unreadable image), then a missing label, then conflicting labels (by the `conflicts`
    policy, see label_conflicts), duplicates and test-file leakage of the row's `keys` (the text[, pair]; the
    image's content hash)."""
    reason = np.full(len(frame), None, dtype=object)

    def mark(mask: np.ndarray, name: str) -> np.ndarray:
        mask = mask & (reason == None)  # noqa: E711 (element-wise on an object array)
        reason[mask] = name
        return reason == None  # noqa: E711

    for mask, name in unusable:
        mark(mask, name)
    alive = mark(frame["label"].isna().to_numpy(), "missing_label")
    # Integer ids for (text[, pair]) and for (subset, text[, pair]): all later checks compare integers.
    key = frame.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    is_test = (frame["subset"] == "test").to_numpy()
    file_key = key * 2 + is_test
    tied, outvoted = label_conflicts(file_key, pd.factorize(frame["label"])[0], alive, conflicts)
    mark(tied, "conflicting_label")
    alive = mark(outvoted, "outvoted_label")
    seen_before = pd.Series(file_key).where(alive).duplicated().to_numpy()
    alive = mark(seen_before & alive, "duplicate")
    mark(~is_test & np.isin(key, key[alive & is_test]), "also_in_test_file")
    return reason


def _conflict_groups(frame: pd.DataFrame, reason: np.ndarray, keys: list[str]) -> pd.Series:
    """Each labelled row's group id among the texts (images) of a file that carry conflicting labels (-1: none of
    them): the rows dropped for a conflict and the copies a vote kept (counted as kept or as duplicates)."""
    if not np.isin(reason, CONFLICT_REASONS).any():
        return pd.Series(np.full(len(reason), -1))
    group = frame.groupby(["subset", *keys], sort=False, dropna=False).ngroup().to_numpy()
    conflicted = np.isin(group, group[np.isin(reason, CONFLICT_REASONS)])
    return pd.Series(np.where(conflicted & frame["label"].notna().to_numpy(), group, -1))


def conflict_examples(
    frame: pd.DataFrame, reason: np.ndarray, keys: list[str], shown: list[str], limit: int = CONFLICT_EXAMPLES
) -> list[dict]:
    """The `limit` conflicting texts (images) with the most rows: the `shown` columns of their first row, their
    labels with counts (most first), the label the vote kept (None: every copy dropped) and the first row ids."""
    group = _conflict_groups(frame, reason, keys)
    sizes = group[group >= 0].value_counts(sort=False).sort_values(ascending=False, kind="stable")
    examples = []
    for value in sizes.index[:limit]:
        rows = np.flatnonzero(group == value)
        kept = [i for i in rows if reason[i] not in CONFLICT_REASONS]
        examples.append(
            {
                "file": frame["subset"].iloc[rows[0]],
                **{name: str(frame[name].iloc[rows[0]])[:_EXAMPLE_CHARS] for name in shown},
                "labels": dict(
                    sorted(
                        ((label, int(n)) for label, n in frame["label"].iloc[rows].value_counts().items()),
                        key=lambda item: (-item[1], item[0]),
                    )
                ),
                "kept_label": frame["label"].iloc[kept[0]] if kept else None,
                "ids": frame["id"].iloc[rows[:5]].tolist(),
            }
        )
    return examples


def conflict_counts(frame: pd.DataFrame, reason: np.ndarray, keys: list[str], conflicts: str, max_share: float) -> dict:
    """A file's conflicts and duplicates as the report records them: the policy, the conflicting texts (images),
    how many a vote kept and how many tied, the rows dropped for them and their share (bounded by
    `max_share`), and the rows collapsed as duplicates with their share."""
    group = _conflict_groups(frame, reason, keys)
    rows = max(len(reason), 1)
    dropped = int(np.isin(reason, CONFLICT_REASONS).sum())
    voted = group[reason == "outvoted_label"].nunique()
    return {
        "conflicts": {
            "policy": conflicts,
            "conflicting": int(group[group >= 0].nunique()),
            "kept_by_vote": int(voted),
            "tied": int(group[reason == "conflicting_label"].nunique()) if conflicts == "majority_vote" else 0,
            "rows_dropped": dropped,
            "share": round(dropped / rows, 6),
            "max_share": max_share,
        },
        "duplicates": {
            "rows": int((reason == "duplicate").sum()),
            "share": round(float((reason == "duplicate").sum()) / rows, 6),
        },
    }


def check_conflict_share(
    files: list[tuple[str, np.ndarray]],
    frame: pd.DataFrame,
    reason: np.ndarray,
    keys: list[str],
    unusable: list[tuple[np.ndarray, str]],
    conflicts: str,
    max_share: float,
    *,
    shown: list[str],
    noun: str = "texts",
) -> None:
    """Stop when more than `max_share` of a file's rows (`files`: name, row mask) are dropped for conflicting
    labels, naming the counts, the texts (images: `noun`, by their `shown` columns) with the most rows and what
    the other policy would drop."""
    for name, rows in files:
        part, dropped_as = frame[rows].reset_index(drop=True), reason[rows]
        dropped = np.isin(dropped_as, CONFLICT_REASONS)
        share = dropped.mean()
        if share <= max_share:
            continue
        counts = ", ".join(
            f"{int((dropped_as == key).sum())} {key}" for key in CONFLICT_REASONS if (dropped_as == key).any()
        )
        groups = conflict_counts(part, dropped_as, keys, conflicts, max_share)["conflicts"]["conflicting"]
        worst = "; ".join(
            ", ".join(repr(example[column]) for column in shown)
            + " ("
            + ", ".join(f"{label} {n}" for label, n in example["labels"].items())
            + ")"
            for example in conflict_examples(part, dropped_as, keys, shown, GUARD_EXAMPLES)
        )
        other = "drop" if conflicts == "majority_vote" else "majority_vote"
        lost = int(np.isin(drop_reasons(frame, keys, unusable, other)[rows], CONFLICT_REASONS).sum())
        alternative = (
            f"set data.conflicts: majority_vote to keep each such {noun.removesuffix('s')} once with its most frequent label "
            f"(that drops {lost} rows here, {lost / len(dropped):.1%})"
            if conflicts == "drop"
            else f"check data.label_column (labels that contradict each other this often usually come from the wrong column; "
            f"data.conflicts: drop would drop {lost} rows)"
        )
        raise SkewtuneError(
            f"{name}: {int(dropped.sum())} of {len(dropped)} rows ({share:.1%}) are dropped for conflicting labels ({counts}; "
            f"{groups} {noun} carry more than one label, data.conflicts: {conflicts}), more than data.max_conflict_share "
            f"({max_share:g}) allows; most rows: {worst}. Fix the labels, {alternative}, or raise data.max_conflict_share "
            "to drop these rows knowingly"
        )


def _found(value) -> str | None:
    """A raw cell as the report shows it: None when the file has no value there."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)[:_EXAMPLE_CHARS]


def drop_examples(table: Table, columns: dict[str, str], reason: np.ndarray, name: str, limit: int) -> list[dict]:
    """The first `limit` rows dropped for `name`: where they start in the file and what the file holds there."""
    positions = np.flatnonzero(reason == name)[:limit]
    return [
        {
            "row": int(table.frame.index[i]),
            "at": table.place(i),
            **{source: _found(table.frame[source].iloc[i]) for source in columns.values()},
        }
        for i in positions
    ]


def drop_counts(name: str, table: Table, reason: np.ndarray, reasons: list[str]) -> dict:
    """The head of a file's report: how it was read, rows in and kept, and the drops per reason."""
    dropped = pd.Series(reason).value_counts()
    return {
        "source": name,
        "reading": table.reading,
        "rows_in": len(reason),
        "rows_kept": int((reason == None).sum()),  # noqa: E711
        "dropped": {key: int(dropped.get(key, 0)) for key in reasons},
    }


def reported_reasons(reasons: tuple[str, ...], *, conflicts: str, has_test: bool) -> list[str]:
    """The drop reasons a file's report counts: outvoted_label only under majority_vote, test-file leakage only
    with a test file."""
    return [
        name
        for name in reasons
        if (name != "outvoted_label" or conflicts == "majority_vote") and (name != "also_in_test_file" or has_test)
    ]


def _likely_causes(table: Table, frame: pd.DataFrame, columns: dict[str, str]) -> str:
    """Why a file lacks texts or labels in many rows, from what the reading and the columns show."""
    reading = table.reading
    spelled = frame.loc[frame["label"].isna(), "raw_label"].value_counts()
    # Records cut short by the reading explain their own gaps; otherwise a mostly empty column is suspect.
    causes = (
        []
        if reading.get("short_records")
        else [
            f"the wrong column: {source!r} is empty in {share:.0%} of the rows (check {_PARAM_OF[key]})"
            for key, source in columns.items()
            if (share := frame["raw_label" if key == "label" else key].isna().mean()) >= 0.5
        ]
    )
    if len(spelled):
        causes.insert(
            0,
            "labels written as a missing value ("
            + ", ".join(f"{spelling} {n}" for spelling, n in counts_most_first(spelled).items())
            + "): if one is a real class, name it in data.label_map",
        )
    if reading.get("quoting") == "none" and reading.get("short_records"):
        causes.append(
            f"quoting: the file was read without quote processing ({reading['quoting_reason']}) and "
            f"{reading['short_records']} records have fewer fields than the header; if its fields are quoted "
            "(texts spanning lines), set data.quoting: standard"
        )
    elif reading.get("short_records"):
        causes.append(
            f"the wrong separator or quoting: read as {reading['format'].upper()} with {reading['quoting']} quoting, "
            f"{reading['short_records']} records have fewer fields than the header (check data.format and data.quoting)"
        )
    elif "quoting" in reading:
        causes.append(
            f"the wrong separator or quoting (read as {reading['format'].upper()} with {reading['quoting']} quoting; "
            "check data.format and data.quoting)"
        )
    return "; or ".join(causes) or "rows that have no value in these columns"


def check_missing_share(
    name: str,
    table: Table,
    frame: pd.DataFrame,
    reason: np.ndarray,
    columns: dict[str, str],
    max_share: float,
    *,
    reasons: tuple[str, ...] = MISSING_REASONS,
    lacking: str = "a text or a label",
    cause: str | None = None,
) -> None:
    """Stop when more than `max_share` of a file's rows lack a text or a label (images: `reasons`, `lacking`):
    that many gaps usually mean the file was misread (quoting, separator) or the wrong column was named, not
    that data is missing. `cause` replaces the likely cause that the reading suggests."""
    missing = np.isin(reason, reasons)
    share = missing.mean()
    if share <= max_share:
        return
    counts = ", ".join(f"{int((reason == key).sum())} {key}" for key in reasons if (reason == key).any())
    shown = "; ".join(
        f"{table.place(i)}: "
        + ", ".join(f"{source}={_found(table.frame[source].iloc[i])!r}" for source in columns.values())
        for i in np.flatnonzero(missing)[:GUARD_EXAMPLES]
    )
    raise SkewtuneError(
        f"{name}: {int(missing.sum())} of {len(reason)} rows ({share:.1%}) lack {lacking} ({counts}), more than "
        f"data.max_dropped_share ({max_share:g}) allows; first: {shown}. Likely cause: {cause or _likely_causes(table, frame, columns)}. "
        "Fix the file or the settings, or raise data.max_dropped_share to drop these rows knowingly"
    )


def conflict_lines(report: dict, noun: str = "texts") -> list[str]:
    """The printed shares of a file's rows dropped for conflicting labels and collapsed as duplicates (`noun`:
    texts or images), as WARNING lines above WARN_CONFLICT_SHARE and WARN_DUPLICATE_SHARE."""
    source, conflicts, duplicates = report["source"], report["conflicts"], report["duplicates"]
    lines = []
    if conflicts["conflicting"]:
        loud = "WARNING: " if conflicts["share"] > WARN_CONFLICT_SHARE else ""
        dropped = report["dropped"]
        what = (
            "every copy dropped; majority_vote would keep each once with its most frequent label"
            if conflicts["policy"] == "drop"
            else f"{conflicts['kept_by_vote']} kept once with their most frequent label "
            f"({counted(dropped['outvoted_label'], 'outvoted row')} dropped), "
            f"{conflicts['tied']} tied ({counted(dropped['conflicting_label'], 'row')} dropped)"
        )
        lines.append(
            f"ingest: {source}: {loud}{counted(conflicts['rows_dropped'], 'row')} ({conflicts['share']:.1%}) dropped "
            "for conflicting labels: "
            f"{counted(conflicts['conflicting'], noun[:-1])} with more than one label (data.conflicts: {conflicts['policy']}): {what}; "
            f"bound: data.max_conflict_share {conflicts['max_share']:g}"
        )
    if duplicates["rows"]:
        loud = "WARNING: " if duplicates["share"] > WARN_DUPLICATE_SHARE else ""
        lines.append(
            f"ingest: {source}: {loud}collapsed {counted(duplicates['rows'], 'repeated row')} ({duplicates['share']:.1%}) into the first "
            f"copy of their {noun.removesuffix('s')} and label: the dataset holds each {noun.removesuffix('s')} once, so val "
            "and test weigh a frequent one once, not by how often it occurs"
        )
    return lines
