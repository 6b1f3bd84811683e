"""Stage train_fold <f>: under train.cv, fold f's model (skewtune.train.folds) trained with the train stage's recipe on
the other folds of train + val, and its out-of-fold probabilities of fold f's rows (predict's columns). A fold that is
not trained (cross-fitting off, or f at or above the K folds the data allow) writes a table without columns and a
report saying why, in about 2 seconds: it imports no model code then."""

import sys

from skewtune.artifacts import prediction_table, read_cross_fit, read_labels, write_no_table
from skewtune.config.load import load_params
from skewtune.core.outputs import Outputs, counted, json_text
from skewtune.core.paths import MAX_FOLDS, fold_checkpoints_dir, fold_predictions_path, fold_reports_dir
from skewtune.core.stage import run_stage

REPORT_FILE = "fold.json"  # in the fold's report directory, beside the training curves


def main(fold: int) -> None:
    p = load_params()
    labels = read_labels()
    cv = read_cross_fit(p.train.cv, p.split.seed, labels)
    report = {"fold": fold, "folds": cv.k, "cv": p.train.cv, "why": cv.why}
    predictions, reports = fold_predictions_path(fold), fold_reports_dir(fold)
    if fold >= cv.k:
        with Outputs() as out:
            write_no_table(out, predictions)
            directory = out.path(reports, directory=True)
            (directory / REPORT_FILE).write_text(json_text({**report, "trained": False}), encoding="utf-8")
        print(f"train_fold {fold}: not trained ({cv.why})")
        return
    from skewtune.train.folds import train_fold

    held_out = cv.folds == fold
    probs, trained = train_fold(
        p,
        labels,
        cv.rows,
        cv.folds,
        fold,
        selection_share=cv.val_share,
        cross_fitting=cv.why,
        reports_dir=reports,
        checkpoints_dir=fold_checkpoints_dir(fold),
    )
    with Outputs() as out:
        out.parquet(predictions, prediction_table(cv.rows[held_out], probs, labels))
        out.json(f"{reports}/{REPORT_FILE}", {**report, "trained": True, **trained})
    print(
        f"train_fold {fold}: {cv.why}; trained on {counted(trained['fit_rows'], 'row')} (best epoch chosen on "
        f"{trained['selection_rows']} more), predicted the {counted(trained['held_out_rows'], 'held-out row')} -> {predictions}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit() or int(sys.argv[1]) >= MAX_FOLDS:
        sys.exit(f"usage: python -m stages.train_fold <fold, 0 to {MAX_FOLDS - 1}>")
    run_stage(f"train_fold {sys.argv[1]}", lambda: main(int(sys.argv[1])))
