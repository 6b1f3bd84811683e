"""Stage ingest: read data.source (and the optional fixed test file), clean, de-duplicate and label-check
the rows, and write the dataset every later stage starts from."""

from skewtune.artifacts import DATASET, INGEST_METRICS, LABELS, RAW_DIR
from skewtune.cli import run_stage
from skewtune.dataset import assemble_dataset
from skewtune.io import Outputs
from skewtune.params import load_params
from skewtune.tables import read_source, read_table, resolve_raw_path


def main() -> None:
    data = load_params().data
    columns = [data.text_column, *([data.text_pair_column] if data.text_pair_column else []), data.label_column]
    reading = {"fmt": data.format, "encoding": data.encoding, "sheet": data.sheet}
    pool = read_source(data.source, columns, raw_dir=RAW_DIR, **reading)
    test = None
    if data.test_path:
        test = read_table(resolve_raw_path(data.test_path, "data.test_path", RAW_DIR), columns, **reading)
    dataset, labels, report = assemble_dataset(
        pool, test, text_column=data.text_column, pair_column=data.text_pair_column, label_column=data.label_column,
        label_map=dict(data.label_map), pool_name=data.source, test_name=data.test_path,
    )
    with Outputs() as out:
        out.parquet(DATASET, dataset)
        out.json(LABELS, {"labels": labels})
        out.json(INGEST_METRICS, report)
    print(f"ingest: kept {report['rows_kept']} of {report['rows_in']} rows of {data.source}"
          + (f" and {report['test']['rows_kept']} test rows" if test is not None else "")
          + f"; classes {report['class_counts']}; dropped {report['dropped']}")


if __name__ == "__main__":
    run_stage("ingest", main)
