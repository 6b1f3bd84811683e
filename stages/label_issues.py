"""Stage label_issues: suspected label errors in the split's train + val rows (never test), from cleanlab's confident
learning on out-of-fold probabilities (skewtune.evaluation.label_issues). On text, the TF-IDF baseline's: the baseline
stage's out-of-fold ones when train.cv cross-fits (cleanlab alone is then left to do), else cross-fitted here on those
rows (skewtune.models.crossfit). It finds planted flips better than the frozen-embedding head that train.method auto
cross-fits on small text (BENCHMARKS §15: precision at k 0.902 against 0.816 on SMS, 0.341 against 0.172 on the bird
strikes). On images, the fold models' of train.cv (the train_fold stages' data/predictions/folds/): the only
cross-fitted model there. Writes reports/label_issues.csv (most suspect first, formula-escaped; rows whose label a
person already decided through data.corrections are left out, and counted) and reports/label_issues.json (its
`source` says which probabilities). Disabled, on images without cross-fitting, or when the rows cannot be
cross-fitted, it writes the table without rows and a report that says why, and says so in one line."""

import sys
import time

import numpy as np
import pandas as pd

from skewtune.artifacts import (
    BASELINE_OOF,
    is_no_table,
    read_baseline_predictions,
    read_examples,
    read_fold_predictions,
    read_frame,
    read_labels,
    spreadsheet_safe,
)
from skewtune.config.load import load_params
from skewtune.core.columns import input_columns
from skewtune.core.outputs import Outputs, counted
from skewtune.core.paths import LABEL_ISSUES, LABEL_ISSUES_REPORT, PLACES, baseline_predictions_path, split_path
from skewtune.core.stage import run_stage
from skewtune.evaluation.label_issues import (
    find_suspects,
    fold_proba_of,
    no_suspects,
    suspect_report,
    suspect_table,
    unreviewed,
)
from skewtune.models.baseline import BaselineNotFitted
from skewtune.models.crossfit import label_issue_folds, out_of_fold_proba
from skewtune.models.modality import MODALITIES

SPLITS = ("train", "val")


def _none(inputs: list[str], status: str, reason: str) -> None:
    with Outputs() as out:
        out.csv(LABEL_ISSUES, no_suspects(inputs))
        out.json(LABEL_ISSUES_REPORT, {"status": status, "reason": reason})


def main() -> None:
    params = load_params()
    p, b, modality = params.label_issues, params.baseline, params.data.modality
    raw_columns = list(MODALITIES[modality].raw_columns(params.data))
    if not p.enabled:
        _none(raw_columns, "disabled", "label_issues.enabled is false")
        print("label_issues: label_issues.enabled is false; no rows checked")
        return
    labels = read_labels()
    out_of_fold = read_fold_predictions(labels)
    if out_of_fold is None and modality != "text":
        reason = (
            f"data.modality is {modality} and train.cv does not cross-fit: the TF-IDF baseline cross-fitted "
            "otherwise reads text"
        )
        _none(raw_columns, "disabled", reason)
        print(f"label_issues: {reason}; no rows checked")
        return
    rows = pd.concat(
        [read_examples(split_path(split), labels, "split").assign(split=split) for split in SPLITS], ignore_index=True
    )
    inputs = input_columns(rows)
    start = time.perf_counter()
    # cleanlab alone where a stage has already paid for the probabilities: the baseline stage's on text, the fold
    # models' on images
    baseline_oof = read_baseline_predictions(BASELINE_OOF, labels) if modality == "text" and out_of_fold else None
    from_model = out_of_fold is not None and modality != "text"
    if baseline_oof is not None:
        probs = fold_proba_of(rows, baseline_oof, baseline_predictions_path(BASELINE_OOF))
        folds = int(out_of_fold[1].max()) + 1
    elif from_model:
        predictions, fold_of_row = out_of_fold
        probs, folds = fold_proba_of(rows, predictions), int(fold_of_row.max()) + 1
    else:
        try:
            assignment = label_issue_folds(rows["label_id"].to_numpy(), labels, p.folds)
            probs = out_of_fold_proba(
                rows, labels, assignment, min_df=b.min_df, max_features=b.max_features, max_rows=b.max_rows
            )
        except BaselineNotFitted as exc:
            _none(inputs, "skipped", str(exc))
            print(f"label_issues: warning: skipped: {exc}; no rows checked", file=sys.stderr)
            return
        folds = int(assignment.max()) + 1
    places = None if is_no_table(PLACES) else read_frame(PLACES, "ingest").set_index("id")
    reviewed = (
        rows["id"].map(places["reviewed"]).fillna(False).to_numpy(bool)
        if places is not None
        else np.zeros(len(rows), bool)
    )
    suspects, skipped = unreviewed(find_suspects(rows["label_id"].to_numpy(), probs), reviewed)
    table = suspect_table(rows, None if places is None else places["place"], labels, suspects)
    report = suspect_report(table, rows, labels, model=from_model, folds=folds, reviewed=skipped)
    with Outputs() as out:
        out.csv(LABEL_ISSUES, spreadsheet_safe(table))
        out.json(LABEL_ISSUES_REPORT, report)
    per_class = ", ".join(f"{label} {n}" for label, n in report["suspects_per_class"].items())
    print(
        f"label_issues: {counted(len(table), 'suspected label error')} in {len(rows):,} train + val rows ({per_class}), "
        f"from {report['source']}, {time.perf_counter() - start:.1f} s -> {LABEL_ISSUES}"
        + (
            f"; {counted(skipped, 'more')} left out: a person already decided the label (data.corrections)"
            if skipped
            else ""
        )
    )


if __name__ == "__main__":
    run_stage("label_issues", main)
