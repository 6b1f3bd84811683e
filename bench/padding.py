"""Padding of length-grouped batches: transformers' sampler against skewtune's, on the SMS texts.

    .venv/bin/python bench/padding.py [--seed 1] [--epochs 5] [--batch-sizes 32 256]

The train split of the SMS Spam Collection (ingest + split as the stages make them, split.seed = --seed),
tokenized with params.yaml's model.name and model.max_length as the train stage does (no padding). For each
batch size, each sampler's index order of --epochs epochs (torch generator seeded per epoch) is cut into
batches as the DataLoader does; a batch is padded to its longest row (DataCollatorWithPadding). Printed: the
useful share, non-padding tokens / padded token positions (1 - the padding share), averaged over the
epochs, for random batches, transformers' LengthGroupedSampler (train.group_by_length before this change),
skewtune.train.trainer.LengthGroupedBatches (now) and the whole epoch sorted as one megabatch (the least padding
fixed-size batches can have). No model is run: the figures depend on lengths only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import REPO, machine  # noqa: E402
from train_speed import sms_splits  # noqa: E402
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices  # noqa: E402

from skewtune.config.load import load_params  # noqa: E402
from skewtune.models.text import encode, load_tokenizer, resolve_model_source  # noqa: E402
from skewtune.train.trainer import LengthGroupedBatches  # noqa: E402


class RandomOrder(LengthGroupedSampler):
    def __iter__(self):
        return iter(torch.randperm(len(self.lengths), generator=self.generator).tolist())


class WholeEpochSorted(LengthGroupedSampler):
    """The bound of length grouping with fixed-size batches: one megabatch, the whole epoch sorted by length."""

    def __iter__(self):
        batches = -(-len(self.lengths) // self.batch_size)
        return iter(
            get_length_grouped_indices(self.lengths, self.batch_size, mega_batch_mult=batches, generator=self.generator)
        )


def useful_share(order: list[int], lengths: np.ndarray, batch_size: int) -> float:
    batches = [lengths[order[i : i + batch_size]] for i in range(0, len(order), batch_size)]
    return sum(b.sum() for b in batches) / sum(len(b) * b.max() for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    args = parser.parse_args()
    p = load_params(REPO / "params.yaml")
    train, _, _ = sms_splits(args.seed, p.split.val_size, p.split.test_size)
    tokenizer = load_tokenizer(resolve_model_source(p.model.name))
    lengths = np.array([len(row["input_ids"]) for row in encode(tokenizer, train, p.model.max_length)])
    print(
        f"machine: {machine()}\ntrain rows {len(lengths)}, tokens per row: mean {lengths.mean():.1f}, "
        f"median {np.median(lengths):.0f}, max {lengths.max()} (model.max_length {p.model.max_length})"
    )
    samplers = {
        "random": RandomOrder,
        "transformers group_by_length": LengthGroupedSampler,
        "skewtune LengthGroupedBatches": LengthGroupedBatches,
        "whole epoch sorted (bound)": WholeEpochSorted,
    }
    print(f"{'batch':>5}  " + "  ".join(f"{name:>30}" for name in samplers))
    for batch_size in args.batch_sizes:
        shares = []
        for sampler in samplers.values():
            epochs = [
                useful_share(
                    list(sampler(batch_size, lengths=lengths.tolist(), generator=torch.Generator().manual_seed(epoch))),
                    lengths,
                    batch_size,
                )
                for epoch in range(args.epochs)
            ]
            shares.append(f"{np.mean(epochs):.1%} useful ({1 - np.mean(epochs):.1%} padding)")
        print(f"{batch_size:>5}  " + "  ".join(f"{share:>30}" for share in shares))


if __name__ == "__main__":
    main()
