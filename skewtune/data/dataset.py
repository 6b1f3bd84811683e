"""Turning raw table rows into the labelled dataset: text and label normalisation, label renaming,
dropping unusable rows, conflicting labels, duplicates and test-file leakage; with a report of each.

All steps are vectorised (pandas string kernels, integer group keys), so a million rows take seconds.
"""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd

from skewtune.config.schema import DataParams
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import counted
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

# The data params' defaults, for the keyword defaults of assemble_dataset and assemble_images.
DATA_DEFAULTS = DataParams()
_PARAM_OF = {"text": "data.text_column", "text_pair": "data.text_pair_column", "label": "data.label_column"}
CONFLICT_EXAMPLES = 5
DROP_EXAMPLES = 3  # per reason, in the report
GUARD_EXAMPLES = 5  # in the error of the dropped-row guard
_EXAMPLE_CHARS = 120

# Control characters (Unicode Cc) that are not whitespace: NUL, U+001A (SUB) and the like are debris of
# binary exports, not text. The whitespace ones (tab, newline, U+001C-U+001F, U+0085) become spaces below.
_CONTROL = r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]"

# An HTML character reference: &amp; &#039; &#x27; (names that html.unescape does not know stay as they are).
_HTML_REFERENCE = r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"

# "1.0", "-2.00": a whole number written as a decimal, as spreadsheets and float columns print it.
_WHOLE_DECIMAL = r"^(-?[0-9]+)\.0+$"

# Characters that show nothing: zero-width space, non-joiner and joiner, the direction marks and embeddings,
# the word joiner, the isolates and the BOM (U+FEFF, also the zero-width no-break space). Inside a text they
# may mean something (a joiner in Persian or an emoji); a text (label) made only of them is empty.
_INVISIBLE = "\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff"

# Labels that mean "no label": pandas' default missing-value strings (read_csv's na_values), as pandas spells
# them, besides empty cells and real nulls. Labels come from a short list of classes, in which these are gaps
# an export wrote out, not a class to learn; data.label_map keeps one that is a real class. Texts keep them:
# "NA" or "null" is something a message can say (they are only counted, see texts_spelled_missing).
MISSING_SPELLINGS = (
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)

# Exactly the characters str.isspace() accepts, spelled out (not \s) so that pyarrow's fast regex
# engine, whose \s is ASCII-only, treats them as Python does: NBSP, ideographic space, line separators.
_WHITESPACE = "[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"


def _unescape(match) -> str:
    return html.unescape(match.group())


def normalise_text(values: pd.Series, *, unescape_html: bool = False) -> pd.Series:
    """Strings with HTML character references decoded (if `unescape_html`), control characters removed
    and whitespace runs (any Unicode space, tab, newline) collapsed to one space and stripped; missing
    values (None, NaN, pd.NA) and strings that end up empty or hold only invisible characters (zero-width,
    bidi, BOM) become NaN. Non-string values are printed with str()."""
    # Masked after the conversion: before pandas 3, astype("str") turns None into 'None' and NaN into 'nan'.
    text = values.astype("str").mask(values.isna())
    if unescape_html:  # first: &#26; or &nbsp; decode to characters that the next steps handle
        text = text.str.replace(_HTML_REFERENCE, _unescape, regex=True)
    text = text.str.replace(_CONTROL, "", regex=True)
    text = text.str.replace(_WHITESPACE, " ", regex=True).str.strip(" ")
    return text.mask(text.str.fullmatch(f"[ {_INVISIBLE}]*", na=False))


def odd_characters(table: pd.DataFrame, text_columns: list[str], *, unescape_html: bool) -> dict:
    """What normalise_text removes or could decode: control characters (in every column) and the rows
    whose texts hold HTML character references that decode to something else."""
    control = sum(table[column].astype("str").str.count(_CONTROL).fillna(0) for column in table.columns)
    with_html = np.zeros(len(table), dtype=bool)
    for column in text_columns:
        text = table[column].astype("str")
        candidates = text[text.str.contains(_HTML_REFERENCE, regex=True, na=False)]
        changed = candidates.str.replace(_HTML_REFERENCE, _unescape, regex=True) != candidates
        with_html |= text.index.isin(changed[changed].index)
    return {
        "control_characters_removed": int(control.sum()),
        "rows_with_control_characters": int((control > 0).sum()),
        "rows_with_html_references": int(with_html.sum()),
        "html_references_decoded": unescape_html,
    }


def canonical_labels(values: pd.Series) -> pd.Series:
    """Labels as text, the same whatever type the file gave them: 1, "1", 1.0 and "1.0" all become "1"."""
    return whole_numbers(normalise_text(values))


def whole_numbers(labels: pd.Series) -> pd.Series:
    return labels.str.replace(_WHOLE_DECIMAL, r"\1", regex=True)


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


def _standardise(
    table: pd.DataFrame, columns: dict[str, str], prefix: str, subset: str, unescape_html: bool
) -> pd.DataFrame:
    raw_label = normalise_text(table[columns["label"]])
    return pd.DataFrame(
        {
            "id": prefix + pd.Series(table.index, dtype="int64").astype("str"),
            **{
                name: normalise_text(table[source], unescape_html=unescape_html).array
                for name, source in columns.items()
                if name != "label"
            },
            "label": whole_numbers(raw_label).array,
            "subset": subset,
            "raw_label": raw_label.array,
        }
    )


def merged_spellings(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Labels whose different spellings in the files (1 and 1.0) were made one."""
    pairs = frame[["label", "raw_label"]].dropna().drop_duplicates()
    merged = pairs[pairs["label"].duplicated(keep=False)]
    return {label: sorted(group["raw_label"]) for label, group in merged.groupby("label", sort=True)}


def label_mapping(label_map: dict[str, str]) -> dict[str, str]:
    """data.label_map with its keys spelled as the files' labels are (YAML's 1.0 is the label "1")."""
    keys = canonical_labels(pd.Series(list(label_map), dtype="str")).tolist()
    mapping = dict(zip(keys, (str(value).strip() for value in label_map.values())))
    empty = [key for key, value in mapping.items() if not value]
    if empty:
        raise SkewtuneError(f"data.label_map: {empty[0]!r} maps to an empty label; give it a name or remove the entry")
    return mapping


def apply_label_map(frame: pd.DataFrame, mapping: dict[str, str], files: str) -> None:
    """Rename the labels of `frame` by `mapping` (see label_mapping); a key that matches no label is an error."""
    found = set(frame["label"].dropna().unique())
    unused = sorted(set(mapping) - found)
    if unused:
        raise SkewtuneError(
            f"data.label_map: {', '.join(map(repr, unused))} match no label in {files}; the labels found are: "
            f"{', '.join(map(repr, sorted(found)))}. Fix or remove those keys"
        )
    frame["label"] = frame["label"].map(mapping).fillna(frame["label"])


def _by_count(counts: pd.Series) -> dict[str, int]:
    """{value: count}, most first, then in sorted order."""
    return dict(sorted(((str(value), int(n)) for value, n in counts.items()), key=lambda item: (-item[1], item[0])))


def case_variants(labels: pd.Series) -> dict[str, dict[str, int]]:
    """Labels that differ only in case or invisible characters ('spam', 'Spam', 'spam\u200b'), grouped under the
    spelling most rows carry: {that spelling: {spelling: rows}}."""
    counts = labels.value_counts().rename("n").rename_axis("label").reset_index()
    counts["key"] = counts["label"].str.replace(f"[{_INVISIBLE}]", "", regex=True).str.casefold()
    shared = counts[counts["key"].duplicated(keep=False)]
    groups = [_by_count(group.set_index("label")["n"]) for _, group in shared.groupby("key")]
    return {next(iter(group)): group for group in sorted(groups, key=lambda group: next(iter(group)))}


def clean_labels(frame: pd.DataFrame, label_map: dict[str, str], files: str) -> dict:
    """Finish the labels of `frame` (the `label` column, whole numbers already one spelling) in place: a missing-value
    spelling (MISSING_SPELLINGS) becomes missing unless data.label_map names it, then the map renames. Returns what
    the report records of the labels of all `files`: the spellings taken as missing, the merged spellings of one
    number, the labels a partial map left as written (neither renamed nor a name it renames to), and labels that
    differ only in case with the map that would merge them (they stay separate classes: which spelling is right is
    the user's call)."""
    mapping = label_mapping(label_map)
    notes = {}
    spelled = frame["label"].isin(MISSING_SPELLINGS) & ~frame["label"].isin(list(mapping))
    if spelled.any():
        notes["labels_spelled_missing"] = _by_count(frame.loc[spelled, "label"].value_counts())
        frame["label"] = frame["label"].mask(spelled)
    merged = merged_spellings(frame)
    if merged:
        notes["labels_merged"] = merged
    written = set(frame["label"].dropna().unique())
    if mapping:
        apply_label_map(frame, mapping, files)
        if untouched := written - set(mapping) - set(mapping.values()):  # not renamed, nor a name the map gives
            notes["label_map_kept_as_written"] = sorted(untouched)
    variants = case_variants(frame["label"])
    if variants:
        notes["label_case_variants"] = variants
        merge = dict(mapping)
        for target, spellings in variants.items():
            for spelling in list(spellings)[1:]:
                merge.update({key: target for key, value in mapping.items() if value == spelling})
                if spelling in written - set(mapping):
                    merge[spelling] = target
        notes["label_map_to_merge"] = merge
    return notes


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


def _drop_examples(table: Table, columns: dict[str, str], reason: np.ndarray, name: str, limit: int) -> list[dict]:
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
            key: _drop_examples(table, columns, reason, key, DROP_EXAMPLES) for key in reasons if dropped.get(key, 0)
        },
        "cleaning": {
            **odd_characters(table.frame, [columns[key] for key in keys], unescape_html=unescape_html),
            "texts_spelled_missing": int(frame[keys].isin(MISSING_SPELLINGS).any(axis=1).sum()),
        },
        **conflict_counts(frame, reason, keys, conflicts, max_conflict_share),
        **class_balance(kept["label"], labels),
    }


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
            + ", ".join(f"{spelling} {n}" for spelling, n in _by_count(spelled).items())
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
) -> tuple[pd.DataFrame, list[str], dict]:
    """Clean the rows of the data file (`pool`) and of an optional fixed test file into one dataset.

    Rows are identified by their 1-based row number in their file ("r<row>", "t<row>").
    Returns the dataset (id, text, [text_pair], label, subset), the sorted labels and a report.
    Rows are dropped for missing text/pair/label (at most `max_dropped_share` of a file's rows, else
    SkewtuneError), for a text (pair) carrying different labels in the same file (`conflicts`: drop, all its
    rows; majority_vote, those not of its most frequent label, all on a tie; at most `max_conflict_share` of
    a file's rows, else SkewtuneError), for repeating an earlier text (pair) of the same file, and, in the data
    file only, for a text (pair) that is also in the test file, which would otherwise leak into training.
    """
    columns = {"text": text_column, **({"text_pair": pair_column} if pair_column else {}), "label": label_column}
    keys = [name for name in columns if name != "label"]
    parts = [_standardise(pool.frame, columns, "r", "pool", unescape_html)]
    if test is not None:
        parts.append(_standardise(test.frame, columns, "t", "test", unescape_html))
    frame = pd.concat(parts, ignore_index=True)
    label_notes = clean_labels(frame, label_map, pool_name + (f" or {test_name}" if test is not None else ""))

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


def label_lines(report: dict) -> list[str]:
    """The printed notes on the labels of all files (see clean_labels): missing-value spellings, a partial
    data.label_map, and labels that differ only in case, as a WARNING with the map that would merge them."""
    lines = []
    if spelled := report.get("labels_spelled_missing"):
        first = next(iter(spelled))
        lines.append(
            f"ingest: labels: {counted(sum(spelled.values()), 'label')} written as a missing value ("
            + ", ".join(f"{spelling} {n}" for spelling, n in spelled.items())
            + "), counted as missing_label; "
            f"if one is a real class, name it in data.label_map (e.g. {json.dumps({first: first})})"
        )
    if kept := report.get("label_map_kept_as_written"):
        lines.append(
            f"ingest: labels: WARNING: data.label_map does not rename {', '.join(map(repr, kept))}: classes under the names "
            "the files give them; add them to the map if they need a new name"
        )
    if variants := report.get("label_case_variants"):
        groups = "; ".join(
            ", ".join(f"{spelling!r} {n}" for spelling, n in group.items()) + " rows" for group in variants.values()
        )
        lines.append(
            f"ingest: labels: WARNING: labels that differ only in case or invisible characters are separate classes: {groups}; "
            f"if they are one class, set data.label_map: {json.dumps(report['label_map_to_merge'])}"
        )
    return lines


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
