"""Stage train: fine-tune the classifier on the resampled train set, select the best epoch on val,
save it to models/model and the training curves to reports/train."""

from typing import Sequence

from transformers import TrainerCallback

from skewtune.artifacts import read_examples, read_labels
from skewtune.config.load import load_params
from skewtune.core.paths import RESAMPLED, split_path
from skewtune.core.stage import run_stage
from skewtune.train.recipe import train_classifier


def main(callbacks: Sequence[TrainerCallback] = ()) -> None:
    """`callbacks`: more TrainerCallbacks for the run (tests/held_train.py adds one)."""
    p = load_params()
    labels = read_labels()
    train, val = read_examples(RESAMPLED, labels, "resample"), read_examples(split_path("val"), labels, "split")
    train_classifier(p, labels, train, val, callbacks=callbacks)


if __name__ == "__main__":
    run_stage("train", main)
