"""`skewtune predict` against a plain `transformers.pipeline("text-classification")` loop: rows/s and
peak RSS on the same texts (the SMS collection repeated) at the same batch size, on CPU.

    .venv/bin/python bench/predict_speed.py [--model models/classifier] [--rows 10000 20000] [--batch-size 64]
                                            [--out /tmp/skewtune_bench/predict_speed]

Each run is a fresh process measured by GNU time (wall time and peak RSS include Python start-up,
imports, loading the model, reading the input and writing the output). The plain loop reads the
same CSV with pandas and passes the list to the pipeline with the same batch_size and truncation
to the classifier's max_length; it predicts by argmax (it knows no decision rule).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, SMS_TSV, loadavg, machine, run_measured  # noqa: E402

PLAIN = """
import sys, pandas as pd, transformers
model, path, batch, max_length, out = sys.argv[1:]
texts = pd.read_csv(path, dtype=str, keep_default_na=False)["SMS"].tolist()
pipe = transformers.pipeline("text-classification", model=model, device=-1)
labels = [r["label"] for r in pipe(texts, batch_size=int(batch), truncation=True, max_length=int(max_length))]
pd.DataFrame({"label": labels}).to_csv(out, index=False)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models/classifier"))
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 20_000])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--plain-rows",
        type=int,
        default=None,
        help="rows for the plain pipeline (default: the smallest --rows; 0: skip it)",
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/skewtune_bench/predict_speed"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sms = pd.read_csv(SMS_TSV, sep="\t", quoting=3, dtype=str, keep_default_na=False)["SMS"]
    max_length = json.loads((Path(args.model) / "skewtune.json").read_text())["max_length"]
    script = Path(sys.executable).parent / "skewtune"
    print(f"machine: {machine()}; load {loadavg():.2f}; model {args.model}; batch {args.batch_size}")

    def table(rows: int) -> Path:
        path = args.out / f"sms_{rows}.csv"
        pd.DataFrame({"SMS": sms.sample(rows, replace=True, random_state=0).tolist()}).to_csv(path, index=False)
        return path

    results = []
    for rows in args.rows:
        path = table(rows)
        run = run_measured(
            [
                str(script),
                "predict",
                str(path),
                "-o",
                str(args.out / f"pred_{rows}.parquet"),
                "--model",
                args.model,
                "--text-column",
                "SMS",
                "--batch-size",
                str(args.batch_size),
                "--overwrite",
            ],
            args.out,
            args.out / "log.txt",
        )
        results.append({"runner": "skewtune predict", "rows": rows, **run, "rows_per_s": rows / run["wall_s"]})
        print(json.dumps(results[-1]), flush=True)
    if args.plain_rows == 0:
        return
    rows = args.plain_rows or min(args.rows)
    path = table(rows)
    run = run_measured(
        [
            sys.executable,
            "-c",
            PLAIN,
            args.model,
            str(path),
            str(args.batch_size),
            str(max_length),
            str(args.out / "plain.csv"),
        ],
        args.out,
        args.out / "log.txt",
    )
    results.append({"runner": "transformers.pipeline", "rows": rows, **run, "rows_per_s": rows / run["wall_s"]})
    print(json.dumps(results[-1]), flush=True)
    mine = next(r for r in results if r["runner"] == "skewtune predict" and r["rows"] == rows)
    agree = (
        pd.read_parquet(args.out / f"pred_{rows}.parquet")["predicted"] == pd.read_csv(args.out / "plain.csv")["label"]
    ).mean()
    print(
        f"speed-up at {rows} rows: {mine['rows_per_s'] / results[-1]['rows_per_s']:.2f}x; "
        f"labels equal to the plain pipeline's (argmax) on {agree:.2%} of rows"
    )


if __name__ == "__main__":
    main()
