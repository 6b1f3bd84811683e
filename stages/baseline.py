"""Stage baseline: fit the TF-IDF + logistic regression baseline (skewtune.baseline) on the resampled train
split and write its val and test probabilities as predict writes the model's; under train.cv also its out-of-fold
probabilities of train + val, cross-fitted on the fold models' folds (each fold's training part resampled alike).
Disabled (baseline.enabled: false, or on images) or unable to fit (a warning says why), it writes tables without columns as its predictions
(skewtune.artifacts.write_no_table) and a model file without tensors, and the pipeline goes on without it."""

import sys
import time

from skewtune.artifacts import (
    BASELINE_OOF,
    prediction_table,
    read_cross_fit,
    read_examples,
    read_labels,
    write_no_table,
)
from skewtune.config.load import load_params
from skewtune.core.outputs import Outputs
from skewtune.core.paths import BASELINE_MODEL, BASELINE_REPORT, RESAMPLED, baseline_predictions_path, split_path
from skewtune.core.stage import run_stage
from skewtune.data.resampling import resample_by
from skewtune.models.baseline import BaselineNotFitted, baseline_proba, fit_baseline, save_baseline
from skewtune.models.crossfit import out_of_fold_proba

SPLITS = ("val", "test")


def _not_fitted(out: Outputs, report: dict) -> None:
    save_baseline(None, out.path(BASELINE_MODEL))
    for split in (*SPLITS, BASELINE_OOF):
        write_no_table(out, baseline_predictions_path(split))
    out.json(BASELINE_REPORT, report)


def main() -> None:
    params = load_params()
    p = params.baseline
    labels = read_labels()
    if not p.enabled or params.data.modality != "text":
        reason = (
            "baseline.enabled is false"
            if not p.enabled
            else f"data.modality is {params.data.modality}: the TF-IDF baseline reads text"
        )
        with Outputs() as out:
            _not_fitted(out, {"status": "disabled", "reason": reason})
        print(f"baseline: {reason}; not fitted")
        return
    train = read_examples(RESAMPLED, labels, "resample")
    start = time.perf_counter()
    try:
        model, fit = fit_baseline(train, labels, min_df=p.min_df, max_features=p.max_features, max_rows=p.max_rows)
    except BaselineNotFitted as exc:
        with Outputs() as out:
            _not_fitted(out, {"status": "skipped", "reason": str(exc)})
        print(
            f"baseline: warning: skipped: {exc}; the pipeline goes on without it (no blend, no baseline metrics)",
            file=sys.stderr,
        )
        return
    fit_seconds = time.perf_counter() - start
    oof, cv = None, read_cross_fit(params.train.cv, params.split.seed, labels)
    if cv.k:  # train.cv: the same folds as the fold models, each training part resampled as the train split was
        try:
            oof = out_of_fold_proba(
                cv.rows,
                labels,
                cv.folds,
                min_df=p.min_df,
                max_features=p.max_features,
                max_rows=p.max_rows,
                resample=lambda rows: resample_by(rows, params.resample),
            )
        except BaselineNotFitted as exc:
            print(
                f"baseline: warning: not cross-fitted ({exc}); the decision on the out-of-fold rows does not blend it in",
                file=sys.stderr,
            )
    with Outputs() as out:
        save_baseline(model, out.path(BASELINE_MODEL))
        for split in SPLITS:
            rows = read_examples(split_path(split), labels, "split")
            out.parquet(
                baseline_predictions_path(split),
                prediction_table(rows, baseline_proba(model, rows, len(labels)), labels),
            )
        if oof is None:
            write_no_table(out, baseline_predictions_path(BASELINE_OOF))
        else:
            out.parquet(baseline_predictions_path(BASELINE_OOF), prediction_table(cv.rows, oof, labels))
        # No timing in the report: a forced re-run must leave the git-tracked report byte-identical.
        out.json(
            BASELINE_REPORT,
            {
                "status": "fitted",
                "reason": None,
                "train_rows": fit.train_rows,
                "fit_rows": fit.fit_rows,
                "features": fit.features,
                "cross_fitted_folds": cv.k if oof is not None else 0,
            },
        )
    sampled = (
        f" (a stratified sample of {fit.fit_rows:,} of {fit.train_rows:,} rows: baseline.max_rows)"
        if fit.fit_rows < fit.train_rows
        else ""
    )
    print(
        f"baseline: TF-IDF + logistic regression fitted on {fit.fit_rows:,} train rows{sampled}, {fit.features:,} features, "
        f"{fit_seconds:.1f} s; val and test probabilities -> {baseline_predictions_path('<split>')}"
    )
    if oof is not None:
        print(
            f"baseline: cross-fitted on {cv.why}: out-of-fold probabilities -> {baseline_predictions_path(BASELINE_OOF)}"
        )


if __name__ == "__main__":
    run_stage("baseline", main)
