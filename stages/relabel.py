"""Stage relabel: reports/errors.csv, the queue of rows to relabel: val mistakes (most confident first), the suspected
label errors of train + val (most suspect first; the label_issues stage) and, when the score stage ran, the least
confident scored rows; at most evaluate.error_rows of each. Test rows are never in it."""

import pandas as pd

from skewtune.artifacts import read_decision, read_label_issues, read_labels, read_rule_inputs, read_scored, read_texts
from skewtune.config.load import load_params
from skewtune.core.outputs import Outputs, counted
from skewtune.core.paths import DECISION, ERRORS, LABEL_ISSUES, SCORED, split_path
from skewtune.core.stage import run_stage
from skewtune.evaluation.relabel import (
    SOURCE_LABEL_ISSUE,
    SOURCE_SCORED,
    SOURCE_VAL,
    relabel_queue,
    suspected_errors,
    uncertain_scored,
    val_mistakes,
)
from skewtune.models.modality import MODALITIES


def main() -> None:
    p = load_params()
    rows = p.evaluate.error_rows
    labels = read_labels()
    rule = read_decision(DECISION, labels)
    val = read_rule_inputs("val", labels, rule)
    parts = [val_mistakes(read_texts(split_path("val"), val.ids), val, rule, rows)]
    issues = read_label_issues(LABEL_ISSUES).head(rows)
    if len(issues):
        texts = pd.concat(
            [read_texts(split_path(split), ids["id"].to_numpy()) for split, ids in issues.groupby("split", sort=False)],
            ignore_index=True,
        )
        parts.append(suspected_errors(issues, texts, rows))
    scored = read_scored(SCORED, labels)
    if scored is not None:
        parts.append(uncertain_scored(scored, MODALITIES[p.data.modality].raw_columns(p.data), labels, rows))
    queue = relabel_queue(parts)
    with Outputs() as out:
        out.csv(ERRORS, queue)
    counts = queue["source"].value_counts()
    print(
        f"relabel: {ERRORS}: {counted(counts.get(SOURCE_VAL, 0), 'val mistake')}, "
        f"{counted(counts.get(SOURCE_LABEL_ISSUE, 0), 'suspected label error')}"
        + (
            f", {counted(counts.get(SOURCE_SCORED, 0), 'least confident scored row')}"
            if scored is not None
            else " (no scored data)"
        )
    )


if __name__ == "__main__":
    run_stage("relabel", main)
