"""One fold model of cross-fitting (train.cv): trained with the train stage's recipe on the rows of the other folds,
it predicts its held-out fold, so that every train + val row gets a probability from a model that never saw it.

The held-out fold chooses nothing. The recipe selects its best epoch (and stops early) on a `val` set; a fold model
gets a stratified slice of its own training part for that, as large a share of it as val is of train + val, so the
fold trains like the train stage (the same recipe, early stopping and epoch selection included) on rows of about the
same number, and its held-out fold stays out of sample. The fitting part is resampled as the resample stage
resamples the train split (resample.*); the selection slice is not, as val is not. Only the held-out fold's
probabilities are kept: the fold model is discarded (the shipped model is the train stage's, README "Small data").
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from skewtune.config.schema import Params
from skewtune.data.resampling import resample_by


def selection_slice(part: pd.DataFrame, share: float, seed: int) -> np.ndarray:
    """Whether each row of a fold's training part is in its selection slice: a stratified `share` of the rows (at
    least one row per class and one row per class left to fit on; the fold count keeps 2 of every class)."""
    from sklearn.model_selection import train_test_split

    y = part["label_id"].to_numpy()
    classes = len(np.unique(y))
    size = min(max(classes, round(share * len(part))), len(part) - classes)
    _, chosen = train_test_split(np.arange(len(part)), test_size=size, stratify=y, random_state=seed)
    mask = np.zeros(len(part), dtype=bool)
    mask[chosen] = True
    return mask


def train_fold(
    p: Params,
    labels: list[str],
    rows: pd.DataFrame,
    folds: np.ndarray,
    fold: int,
    *,
    selection_share: float,
    reports_dir: str,
    checkpoints_dir: str,
    cross_fitting: str,
) -> tuple[np.ndarray, dict]:
    """(the probabilities of fold `fold`'s rows, in their order in `rows`; what it trained on) of a model trained by
    skewtune.train.recipe.train_classifier on the other folds' rows (see the module doc); its curves go to
    `reports_dir`. One process (train.nproc is the train stage's): a fold is one of K small runs."""
    from skewtune.models.devices import amp_dtype, resolve_device, resolve_precision
    from skewtune.models.modality import for_rows
    from skewtune.train.recipe import train_classifier

    held_out = folds == fold
    part = rows[~held_out].reset_index(drop=True)
    seed = p.split.seed
    selecting = selection_slice(part, selection_share, seed)
    fit, select = resample_by(part[~selecting], p.resample), part[selecting].reset_index(drop=True)
    one_process = p.model_copy(update={"train": p.train.model_copy(update={"nproc": 1})})
    with tempfile.TemporaryDirectory(prefix="skewtune-fold-") as scratch:
        model_dir = str(Path(scratch) / "model")
        train_classifier(
            one_process,
            labels,
            fit,
            select,
            model_dir=model_dir,
            reports_dir=reports_dir,
            checkpoints_dir=checkpoints_dir,
            cross_fitting=cross_fitting,
        )
        modality = for_rows(rows)
        device = resolve_device(p.train.device)
        model, processor, meta = modality.load_trained(model_dir, trust_remote_code=p.model.trust_remote_code)
        probs = modality.predict_proba(
            model,
            processor,
            rows[held_out],
            meta,
            batch_size=p.train.eval_batch_size,
            device=device,
            amp_dtype=amp_dtype(resolve_precision(p.train.precision, device)),
        )
    report = {
        "fit_rows": len(fit),
        "selection_rows": len(select),
        "held_out_rows": int(held_out.sum()),
        "held_out_per_class": dict(
            zip(labels, np.bincount(rows["label_id"].to_numpy()[held_out], minlength=len(labels)).tolist())
        ),
    }
    return probs, report
