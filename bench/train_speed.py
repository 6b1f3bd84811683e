"""Training throughput: the train stage's Trainer setup against two plain Trainers, side by side in one run.

    .venv/bin/python bench/train_speed.py [--seed 1] [--out /tmp/skewtune_bench/train_speed]
    python bench/train_speed.py --device cuda --precision bf16 --epochs 3 [--model DIR] [--bert-base]

Same model (params.yaml model.name or --model; --bert-base swaps in a BERT-base-sized model with random
weights, built from a config, with that model's tokenizer), the same train split of the SMS Spam
Collection (ingest + split as the stages do it, split.seed = --seed), the same batch size and learning rate
(params.yaml train.*), --epochs epochs (default 1), fp32 on the CPU unless --device / --precision say
otherwise. Three runs:
- skewtune: the train stage's own recipe (skewtune.train.recipe.train_classifier, the other train params as
  params.yaml sets them, in a temporary directory): tokens without padding, DataCollatorWithPadding,
  length-grouped batches, its loss hook, metrics and diagnostics.
- plain: padding="max_length" to model.max_length, the default collator, random batches, the model's own loss,
  the Trainer's defaults, as transformers' examples/run_glue.py does with --pad_to_max_length.
- dynamic: the same plain Trainer as transformers' docs teach it today (the text-classification task guide):
  tokens without padding (truncated at model.max_length), DataCollatorWithPadding (each batch padded to its
  longest row), random batches, the model's own loss, the Trainer's defaults.
Time is summed over the epochs, each from its start to its end (evaluation and checkpointing, which come
between epochs, excluded); with more than one epoch the first is left out as warm-up (CUDA kernel selection,
allocator growth). Model FLOPs = 6 x non-embedding parameters x non-padding tokens; the share is of this
machine's measured dense matmul FLOP/s in the training precision (fp32 on the CPU with torch's default
threads; bf16 / fp16 / fp32 on the GPU). Printed and written: each run's figures and skewtune's throughput over
each plain run's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

# The benchmark helpers and the skewtune package of this checkout (not installed into the venv).
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import torch  # noqa: E402
from _common import REPO, SMS_TSV, machine  # noqa: E402
from transformers import TrainerCallback, set_seed  # noqa: E402

from skewtune.config.load import load_params  # noqa: E402
from skewtune.data.dataset import assemble_dataset  # noqa: E402
from skewtune.data.splitting import split_dataset  # noqa: E402
from skewtune.data.tables import read_table  # noqa: E402
from skewtune.models.devices import amp_dtype  # noqa: E402
from skewtune.models.text import load_tokenizer, resolve_model_source  # noqa: E402
from skewtune.train.arguments import resolve_batch_size  # noqa: E402
from skewtune.train.recipe import train_classifier  # noqa: E402


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class EpochTimer(TrainerCallback):
    """Seconds and padded token positions of each epoch, from its start to its end (evaluation comes between
    epochs and is not counted). The positions are those of the input_ids of the model's training forward passes
    (padding included), counted by a hook on the model: DataLoader workers, where the collator may run, do not
    share a count with this process."""

    def __init__(self):
        self.epochs, self.positions, self.model = [], 0, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        if module.training:
            self.positions += kwargs["input_ids"].numel()

    def on_epoch_begin(self, args, state, control, **kwargs):
        synchronize()
        self.start, self.positions = time.perf_counter(), 0

    def on_epoch_end(self, args, state, control, **kwargs):
        synchronize()
        self.epochs.append((time.perf_counter() - self.start, self.positions))

    def measured(self) -> tuple[float, int, int]:
        """(seconds, padded positions, epochs counted): all epochs but the first when there are several."""
        counted = self.epochs[1:] or self.epochs
        return sum(s for s, _ in counted), sum(p for _, p in counted), len(counted)


def matmul_flops(device: str, dtype: torch.dtype, repeats: int = 20) -> tuple[float, int]:
    """(dense FLOP/s, n) of an n x n matmul on `device` in `dtype`, best of three timings."""
    n = 2048 if device == "cpu" else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b)
        synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best, n


def non_embedding_parameters(model) -> int:
    """Parameters outside the input embeddings (word, position, token type and their LayerNorm)."""
    embeddings = {id(p) for p in model.get_input_embeddings().parameters()}
    base = getattr(model, model.base_model_prefix)
    embeddings |= {id(p) for p in base.embeddings.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


def sms_splits(seed: int, val_size: float, test_size: float):
    """(train, val, labels) of the SMS file as the ingest and split stages make them, with label_id."""
    pool = read_table(SMS_TSV, ["SMS", "Label"])
    dataset, labels, _ = assemble_dataset(
        pool, None, text_column="SMS", pair_column=None, label_column="Label", label_map={}, pool_name=str(SMS_TSV)
    )
    # the ingest stage writes `place` (where each row starts in the file) apart from the dataset
    splits = split_dataset(dataset.drop(columns="place"), labels, val_size=val_size, test_size=test_size, seed=seed)
    index = {label: i for i, label in enumerate(labels)}
    train, val = (splits[name].assign(label_id=splits[name]["label"].map(index)) for name in ("train", "val"))
    return train, val, labels


def bert_base_from_config(tokenizer_source: str, outdir: Path) -> str:
    """A BERT-base-sized classifier base (12 layers, 768 wide, 110M parameters) with random weights and the
    tokenizer of `tokenizer_source`, saved as a model directory: speed does not depend on the weights."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer))).save_pretrained(outdir)
    tokenizer.save_pretrained(outdir)
    return str(outdir)


def skewtune_run(p, source, train, val, labels, outdir: str, *, epochs: int, device: str, precision: str) -> dict:
    """The train stage's recipe (skewtune.train.recipe) on `train` and `val` with `p` and the model `source`, for
    `epochs` epochs (train.min_steps 0: the small-data rule leaves them as they are) in one process, in `outdir`
    (its checkpoints, model and curves)."""
    name = str(Path(source).resolve()) if Path(source).is_dir() else source  # read from within `outdir`
    setup = {"epochs": epochs, "max_steps": -1, "min_steps": 0, "nproc": 1, "device": device, "precision": precision}
    p = p.model_copy(
        update={"model": p.model.model_copy(update={"name": name}), "train": p.train.model_copy(update=setup)}
    )
    timer = EpochTimer()
    Path(outdir).mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(outdir):
        train_classifier(p, labels, train, val, callbacks=[timer])
    return {"timer": timer, "model": timer.model}


def plain_run(
    p, source, train, labels, outdir: str, *, dynamic: bool, epochs: int, device: str, precision: str
) -> dict:
    """A plain Trainer: the Trainer's defaults, random batches, the model's own loss. Without `dynamic`,
    transformers' run_glue.py with --pad_to_max_length (every row padded to model.max_length,
    default_data_collator); with it, the docs' way (tokens without padding, DataCollatorWithPadding)."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    t, m = p.train, p.model
    set_seed(t.seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    # fp32 weights, as run_glue.py gets from an fp32 checkpoint (transformers 5 loads a half-precision one in half).
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(labels), dtype=torch.float32)
    padding = False if dynamic else "max_length"
    encoded = tokenizer(train["text"].tolist(), padding=padding, max_length=m.max_length, truncation=True)
    rows = [{**{k: encoded[k][i] for k in encoded}, "label": int(y)} for i, y in enumerate(train["label_id"])]
    collator = DataCollatorWithPadding(tokenizer) if dynamic else default_data_collator
    args = TrainingArguments(
        output_dir=outdir,
        num_train_epochs=epochs,
        per_device_train_batch_size=t.batch_size,
        learning_rate=t.lr,
        seed=t.seed,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    timer = EpochTimer()
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[timer]).train()
    return {"timer": timer, "model": model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--rows", type=int, default=0, help="train on this many random train rows (0: all); for a quick check"
    )
    parser.add_argument(
        "--batch-size", type=int, default=0, help="override train.batch_size of params.yaml (every run)"
    )
    parser.add_argument("--epochs", type=int, default=1, help="with more than one, the first is left out as warm-up")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--model", default=None, help="a model directory or name; default: params.yaml model.name")
    parser.add_argument(
        "--bert-base",
        action="store_true",
        help="a BERT-base-sized model from a config (random weights) with --model's tokenizer",
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/skewtune_bench/train_speed"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    p = load_params(REPO / "params.yaml")
    if args.batch_size:
        p = p.model_copy(update={"train": p.train.model_copy(update={"batch_size": args.batch_size})})
    train, val, labels = sms_splits(args.seed, p.split.val_size, p.split.test_size)
    if args.rows:
        train = train.sample(args.rows, random_state=args.seed)
    peak, n = matmul_flops(args.device, amp_dtype(args.precision) or torch.float32)
    where = f"{torch.cuda.get_device_name()}, " if args.device == "cuda" else ""

    runs = {}
    setup = {"epochs": args.epochs, "device": args.device, "precision": args.precision}
    with tempfile.TemporaryDirectory() as tmp:
        source = resolve_model_source(args.model or p.model.name)
        if args.bert_base:
            source = bert_base_from_config(source, Path(tmp) / "bert-base")
        tokens = sum(
            len(ids)
            for ids in load_tokenizer(source)(train["text"].tolist(), truncation=True, max_length=p.model.max_length)[
                "input_ids"
            ]
        )
        p = p.model_copy(
            update={
                "train": resolve_batch_size(p.train, args.device, rows=len(train), tokens_per_row=tokens / len(train))
            }
        )
        print(
            f"machine: {where}{machine()}\nmatmul {n}x{n} {args.precision} on {args.device}: {peak / 1e9:.1f} GFLOP/s\n"
            f"train rows {len(train)}, non-padding tokens {tokens} per epoch",
            flush=True,
        )
        runs["skewtune"] = skewtune_run(p, source, train, val, labels, f"{tmp}/skewtune", **setup)
        for name, dynamic in (("plain", False), ("dynamic", True)):
            runs[name] = plain_run(p, source, train, labels, f"{tmp}/{name}", dynamic=dynamic, **setup)
    params = non_embedding_parameters(runs["skewtune"]["model"])
    report = {
        "machine": where + machine(),
        "model": "bert-base from a config" if args.bert_base else args.model or p.model.name,
        **setup,
        "matmul_gflops": peak / 1e9,
        "matmul_n": n,
        "rows": len(train),
        "non_padding_tokens": tokens,
        "non_embedding_parameters": params,
        "batch_size": p.train.batch_size,
        "max_length": p.model.max_length,
    }
    for name, run in runs.items():
        seconds, positions, epochs = run["timer"].measured()
        samples, epoch_tokens = len(train) * epochs, tokens * epochs
        model_flops = 6 * params * epoch_tokens
        report[name] = {
            "epochs_timed": epochs,
            "seconds": seconds,
            "samples_per_s": samples / seconds,
            "tokens_per_s": epoch_tokens / seconds,
            "padded_positions": positions,
            "padding_share": 1 - epoch_tokens / positions,
            "model_gflops_per_s": model_flops / seconds / 1e9,
            "share_of_matmul_peak": model_flops / seconds / peak,
        }
        r = report[name]
        print(
            f"{name}: {r['seconds']:.1f} s, {r['samples_per_s']:.1f} samples/s, {r['tokens_per_s']:.0f} tokens/s, "
            f"padding {r['padding_share']:.1%}, {r['model_gflops_per_s']:.1f} model GFLOP/s = "
            f"{r['share_of_matmul_peak']:.1%} of matmul peak"
        )
    # skewtune's throughput over each plain run's.
    report["speedup"] = {
        name: report["skewtune"]["samples_per_s"] / report[name]["samples_per_s"] for name in ("plain", "dynamic")
    }
    ratios = ", ".join(f"skewtune / {name} {ratio:.2f}x" for name, ratio in report["speedup"].items())
    print(f"non-embedding parameters {params}; throughput {ratios}")
    name = (
        "train_speed"
        if args.device == "cpu" and not args.bert_base
        else f"train_speed_{args.device}_{args.precision}{'_bert_base' * args.bert_base}_b{p.train.batch_size}"
    )
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
