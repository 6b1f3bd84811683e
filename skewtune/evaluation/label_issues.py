"""Suspected label errors: cleanlab's confident learning (Northcutt et al. 2021) on out-of-fold probabilities.

A row is suspect when its out-of-fold probability of the given label is below the average such probability of that
class's rows (the per-class threshold of the confident joint), and cleanlab's prune-by-noise-rate keeps as many
suspects per pair of classes as the confident joint estimates are mislabelled. Suspects are ranked by their
self-confidence (the out-of-fold probability of the given label; lowest = most suspect), which is also the score
written beside them; the suggested label is the class of highest out-of-fold probability.

The probabilities must be out-of-fold: a model's probabilities on rows it trained on are confident in their labels,
right or wrong. They are the fold models' of train.cv when it cross-fits (data/predictions/folds/), otherwise the
TF-IDF baseline's cross-fitted for the purpose (skewtune.models.crossfit); `source` names which. Test rows are never
checked: correcting test labels by what a model finds would bias test towards that model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from skewtune.artifacts import Predictions
from skewtune.core.columns import input_columns
from skewtune.core.errors import SkewtuneError
from skewtune.core.paths import FOLD_PREDICTIONS_DIR, split_path


def source(model: bool, folds: int) -> str:
    """Where the out-of-fold probabilities came from, as the report and the stage's line say it: the fold models of
    train.cv (`model`), or the TF-IDF baseline cross-fitted (by the baseline stage under train.cv, else here)."""
    return (
        f"the model cross-fitted on {folds} folds (train.cv)"
        if model
        else f"the TF-IDF baseline cross-fitted on {folds} folds"
    )


@dataclass(frozen=True)
class Suspects:
    """Positions (into the checked rows) of the suspected label errors, most suspect first, with each one's
    self-confidence score and suggested class index."""

    positions: np.ndarray
    scores: np.ndarray
    suggested: np.ndarray


def fold_proba_of(
    rows: pd.DataFrame, out_of_fold: Predictions, where: str = f"{FOLD_PREDICTIONS_DIR}/<fold>.parquet"
) -> np.ndarray:
    """Out-of-fold probabilities of train + val (the fold models', skewtune.artifacts.read_fold_predictions, in fold
    order; or the cross-fitted baseline's, read from `where`) in the order of `rows` (the split's train + val rows: id,
    label_id); refused when they were made on other rows or labels than the split's now."""
    index = pd.Index(out_of_fold.ids)
    position = index.get_indexer(rows["id"].astype(str))
    y = rows["label_id"].to_numpy()
    if len(index) != len(rows) or (position < 0).any() or not np.array_equal(out_of_fold.y[position], y):
        raise SkewtuneError(
            f"{where} were made on other train + val rows or labels than {split_path('train')} and "
            f"{split_path('val')} hold; re-run the stages that made them (dvc repro)"
        )
    return out_of_fold.probs[position]


def find_suspects(y: np.ndarray, probs: np.ndarray) -> Suspects:
    """The suspected label errors among rows of given classes `y` with out-of-fold probabilities `probs`."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    # n_jobs=1: cleanlab would otherwise start a process per core for a computation of milliseconds.
    positions = find_label_issues(y, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    scores = get_label_quality_scores(y, probs, method="self_confidence")
    return Suspects(positions, scores[positions], probs[positions].argmax(axis=1))


def unreviewed(suspects: Suspects, reviewed: np.ndarray) -> tuple[Suspects, int]:
    """The suspects whose label no person has decided yet (`reviewed`: a flag per checked row, from the corrections
    ingest applied), and how many reviewed ones were left out: a label a person confirmed is not queued again."""
    keep = ~reviewed[suspects.positions]
    return Suspects(suspects.positions[keep], suspects.scores[keep], suspects.suggested[keep]), int((~keep).sum())


def suspect_table(rows: pd.DataFrame, places: pd.Series | None, labels: list[str], suspects: Suspects) -> pd.DataFrame:
    """id, line (where the row starts in its raw file; empty when unknown), the inputs (text[, text_pair]), split, the
    given label, the suggested one and the score, most suspect first. `rows` holds id, the inputs, split and label_id;
    `places` maps id to place ("line 12")."""
    names = np.asarray(labels, dtype=object)
    chosen = rows.iloc[suspects.positions].reset_index(drop=True)
    line = chosen["id"].map(places).fillna("") if places is not None else ""
    return pd.DataFrame(
        {
            "id": chosen["id"],
            "line": line,
            **{column: chosen[column] for column in input_columns(chosen)},
            "split": chosen["split"],
            "label": names[chosen["label_id"].to_numpy()],
            "suggested": names[suspects.suggested],
            "score": suspects.scores,
        }
    )


def no_suspects(inputs: list[str]) -> pd.DataFrame:
    """The table without rows, for a run that checked nothing (its header stays what readers expect)."""
    columns = ["id", "line", *inputs, "split", "label", "suggested", "score"]
    return pd.DataFrame({column: pd.Series(dtype=float if column == "score" else "str") for column in columns})


def suspect_report(
    table: pd.DataFrame, rows: pd.DataFrame, labels: list[str], *, model: bool, folds: int, reviewed: int
) -> dict:
    """reports/label_issues.json of a check: what was checked, from which out-of-fold probabilities (`model`: the fold
    models', see `source`), how many suspects each class holds, and how many suspects were left out because a person had
    already decided their label (`reviewed`)."""
    checked = rows["split"].value_counts()
    return {
        "status": "checked",
        "reason": None,
        "source": source(model, folds),
        "rows_checked": int(len(rows)),
        "rows_checked_per_split": {split: int(checked.get(split, 0)) for split in ("train", "val")},
        "folds": folds,
        "suspects": int(len(table)),
        "suspect_share": round(len(table) / len(rows), 6),
        "suspects_per_class": {label: int((table["label"] == label).sum()) for label in labels},
        "suspects_reviewed_not_listed": reviewed,
    }
