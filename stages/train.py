"""Stage train: train the classifier of train.method on the resampled train set (fine-tuning selects its best epoch
on val), save it to models/model and the training curves to reports/train. Under train.method: auto it reads how
train.cv cross-fits the split's train + val rows, which decides the method (skewtune/train/auto.py)."""

from typing import Sequence

from transformers import TrainerCallback

from skewtune.artifacts import read_cross_fit, read_examples, read_labels
from skewtune.config.load import load_params
from skewtune.core.paths import RESAMPLED, split_path
from skewtune.core.stage import run_stage
from skewtune.train.recipe import train_classifier


def main(callbacks: Sequence[TrainerCallback] = ()) -> None:
    """`callbacks`: more TrainerCallbacks for the run (tests/held_train.py adds one)."""
    p = load_params()
    labels = read_labels()
    train, val = read_examples(RESAMPLED, labels, "resample"), read_examples(split_path("val"), labels, "split")
    cross_fitting = None
    if p.train.method == "auto":
        cv = read_cross_fit(p.train.cv, p.split.seed, labels)
        cross_fitting = cv.why if cv.k else None
    train_classifier(p, labels, train, val, callbacks=callbacks, cross_fitting=cross_fitting)


if __name__ == "__main__":
    run_stage("train", main)
