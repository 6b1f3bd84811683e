"""Cleaning the values of raw rows: texts normalised (whitespace runs, control characters, HTML character
references, invisible characters), labels made one spelling (1, "1", 1.0 and "1.0" are one label; pandas' missing-value
spellings are no label) and renamed by data.label_map, with what the report records and prints of the labels
(merged spellings, a partial map, labels that differ only in case). Vectorised with pandas string kernels."""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd

from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import counted

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


def counts_most_first(counts: pd.Series) -> dict[str, int]:
    """{value: count}, most first, then in sorted order."""
    return dict(sorted(((str(value), int(n)) for value, n in counts.items()), key=lambda item: (-item[1], item[0])))


def case_variants(labels: pd.Series) -> dict[str, dict[str, int]]:
    """Labels that differ only in case or invisible characters ('spam', 'Spam', 'spam\u200b'), grouped under the
    spelling most rows carry: {that spelling: {spelling: rows}}."""
    counts = labels.value_counts().rename("n").rename_axis("label").reset_index()
    counts["key"] = counts["label"].str.replace(f"[{_INVISIBLE}]", "", regex=True).str.casefold()
    shared = counts[counts["key"].duplicated(keep=False)]
    groups = [counts_most_first(group.set_index("label")["n"]) for _, group in shared.groupby("key")]
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
        notes["labels_spelled_missing"] = counts_most_first(frame.loc[spelled, "label"].value_counts())
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
