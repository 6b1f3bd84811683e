"""Stage relabel: reports/errors.csv, the queue of rows to relabel: val mistakes (most confident first)
and, when the score stage ran, the least confident scored rows. Test rows are never in it."""

from skewtune.artifacts import read_decision, read_labels, read_rule_inputs, read_scored, read_texts
from skewtune.config.load import load_params
from skewtune.core.outputs import Outputs, counted
from skewtune.core.paths import DECISION, ERRORS, SCORED, split_path
from skewtune.core.stage import run_stage
from skewtune.evaluation.relabel import relabel_queue, uncertain_scored, val_mistakes
from skewtune.models.modality import MODALITIES


def main() -> None:
    p = load_params()
    rows = p.evaluate.error_rows
    labels = read_labels()
    rule = read_decision(DECISION, labels)
    val = read_rule_inputs("val", labels, rule)
    parts = [val_mistakes(read_texts(split_path("val"), val.ids), val, rule, rows)]
    scored = read_scored(SCORED, labels)
    if scored is not None:
        parts.append(uncertain_scored(scored, MODALITIES[p.data.modality].raw_columns(p.data), labels, rows))
    queue = relabel_queue(parts)
    with Outputs() as out:
        out.csv(ERRORS, queue)
    counts = queue["source"].value_counts()
    print(
        f"relabel: {ERRORS}: {counted(counts.get('val', 0), 'val mistake')}"
        + (
            f", {counted(counts.get('score', 0), 'least confident scored row')}"
            if scored is not None
            else " (no scored data)"
        )
    )


if __name__ == "__main__":
    run_stage("relabel", main)
