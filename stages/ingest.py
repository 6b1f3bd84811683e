"""Stage ingest: read data.source (and the optional fixed test file), clean, de-duplicate and label-check
the rows, and write the dataset every later stage starts from."""

from skewtune.artifacts import DATASET, INGEST_REPORT, LABELS, RAW_DIR
from skewtune.cli import run_stage
from skewtune.dataset import assemble_dataset
from skewtune.io import Outputs
from skewtune.params import load_params
from skewtune.tables import read_source, read_table, resolve_raw_path


def summary(report: dict) -> list[str]:
    """The printed account of one file: how it was read, what was dropped and what was cleaned."""
    reading = report["reading"]
    quoting = {"standard": "standard quoting", "none": "no quote processing"}.get(reading.get("quoting"))
    how = reading["format"].upper() + (f" with {quoting} ({reading['quoting_reason']})" if quoting else "")
    dropped = ", ".join(f"{n} {reason}" for reason, n in report["dropped"].items() if n) or "none"
    lines = [f"ingest: {report['source']}: read as {how}; kept {report['rows_kept']} of {report['rows_in']} rows; dropped: {dropped}"]
    cleaning = report["cleaning"]
    if cleaning["control_characters_removed"]:
        lines.append(f"ingest: {report['source']}: removed {cleaning['control_characters_removed']} control characters "
                     f"(NUL, U+001A, ...) from {cleaning['rows_with_control_characters']} rows")
    if cleaning["rows_with_html_references"]:
        lines.append(f"ingest: {report['source']}: {cleaning['rows_with_html_references']} rows hold HTML character references "
                     "(&amp;, &#039;, ...) " + ("that were decoded" if cleaning["html_references_decoded"]
                                                else "kept as written; set data.unescape_html: true to decode them"))
    return lines


def main() -> None:
    data = load_params().data
    columns = [data.text_column, *([data.text_pair_column] if data.text_pair_column else []), data.label_column]
    reading = {"fmt": data.format, "encoding": data.encoding, "sheet": data.sheet, "quoting": data.quoting}
    pool = read_source(data.source, columns, raw_dir=RAW_DIR, **reading)
    test = None
    if data.test_path:
        test = read_table(resolve_raw_path(data.test_path, "data.test_path", RAW_DIR), columns, **reading)
    dataset, labels, report = assemble_dataset(
        pool, test, text_column=data.text_column, pair_column=data.text_pair_column, label_column=data.label_column,
        label_map=dict(data.label_map), pool_name=data.source, test_name=data.test_path,
        max_dropped_share=data.max_dropped_share, unescape_html=data.unescape_html,
    )
    with Outputs() as out:
        out.parquet(DATASET, dataset)
        out.json(LABELS, {"labels": labels})
        out.json(INGEST_REPORT, report)
    for line in summary(report) + (summary(report["test"]) if test is not None else []):
        print(line)
    print(f"ingest: classes {report['class_counts']}")


if __name__ == "__main__":
    run_stage("ingest", main)
