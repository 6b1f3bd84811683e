"""Training throughput: the train stage's Trainer setup against a plain run_glue.py-style Trainer.

    .venv/bin/python bench/train_speed.py [--seed 1] [--out /tmp/skewtune_bench/train_speed]
    python bench/train_speed.py --device cuda --precision bf16 --epochs 3 [--model DIR] [--bert-base]

Same model (params.yaml model.name or --model; --bert-base swaps in a BERT-base-sized model with random
weights, built from a config, with that model's tokenizer), the same train split of the SMS Spam
Collection (ingest + split as the stages do it, split.seed = --seed), the same batch size and learning rate
(params.yaml train.*), --epochs epochs (default 1), fp32 on the CPU unless --device / --precision say
otherwise. skewtune: tokens without padding, DataCollatorWithPadding, length-grouped batches, its loss
hook and metrics (skewtune.train.trainer.build_trainer). Plain: padding="max_length" to model.max_length, the
default collator, random batches, the model's own loss, as transformers' examples/run_glue.py does with
--pad_to_max_length. Time is summed over the epochs, each from its start to its end (evaluation and
checkpointing, which come between epochs, excluded); with more than one epoch the first is left out as
warm-up (CUDA kernel selection, allocator growth). Model FLOPs = 6 x non-embedding parameters x non-padding
tokens; the share is of this machine's measured dense matmul FLOP/s in the training precision (fp32 on the
CPU with torch's default threads; bf16 / fp16 / fp32 on the GPU).
"""

from __future__ import annotations

import argparse
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
from skewtune.models.text import class_counts, encode, load_classifier, load_tokenizer, resolve_model_source  # noqa: E402
from skewtune.train.arguments import resolve_batch_size, training_arguments  # noqa: E402
from skewtune.train.diagnostics import DiagnosticsCallback  # noqa: E402
from skewtune.train.losses import init_head_bias  # noqa: E402
from skewtune.train.selection import parse_selection  # noqa: E402
from skewtune.train.trainer import build_trainer, build_training_loss  # noqa: E402


class CountingCollator:
    """Wraps a collator to count the token positions (padding included) that the model processes."""

    def __init__(self, collate):
        self.collate, self.positions = collate, 0

    def __call__(self, rows):
        batch = self.collate(rows)
        self.positions += batch["input_ids"].numel()
        return batch


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class EpochTimer(TrainerCallback):
    """Seconds and padded token positions of each epoch, from its start to its end (evaluation, which
    also goes through the collator, comes between epochs and is not counted)."""

    def __init__(self, counter: CountingCollator):
        self.counter, self.epochs = counter, []

    def on_epoch_begin(self, args, state, control, **kwargs):
        synchronize()
        self.start, self.counter.positions = time.perf_counter(), 0

    def on_epoch_end(self, args, state, control, **kwargs):
        synchronize()
        self.epochs.append((time.perf_counter() - self.start, self.counter.positions))

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
    splits = split_dataset(dataset, labels, val_size=val_size, test_size=test_size, seed=seed)
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
    t, m = p.train, p.model
    set_seed(t.seed)
    tokenizer = load_tokenizer(source)
    model = load_classifier(source, tokenizer, labels, max_length=m.max_length)
    counts = class_counts(train["label_id"], len(labels))
    loss_fn = build_training_loss(p.loss, counts, labels)
    init_head_bias(model, counts, m.init_bias, labels, loss_fn)
    selection = parse_selection(t.select_metric, labels)
    rows = encode(tokenizer, train, m.max_length)
    t = resolve_batch_size(
        t.model_copy(update={"epochs": epochs, "max_steps": -1}),
        device,
        rows=len(rows),
        tokens_per_row=sum(len(r["input_ids"]) for r in rows) / len(rows),
    )
    args = training_arguments(outdir, t, precision=precision, device=device, selection=selection)
    trainer = build_trainer(
        model,
        tokenizer,
        args,
        rows,
        encode(tokenizer, val, m.max_length),
        train=t,
        loss_fn=loss_fn,
        labels=labels,
        selection=selection,
        callbacks=[DiagnosticsCallback(labels)],
    )
    trainer.data_collator = counting = CountingCollator(trainer.data_collator)
    timer = EpochTimer(counting)
    trainer.add_callback(timer)
    trainer.train()
    return {"timer": timer, "model": model}


def plain_run(p, source, train, labels, outdir: str, *, epochs: int, device: str, precision: str) -> dict:
    """transformers' run_glue.py with --pad_to_max_length: pad every row, default_data_collator, Trainer defaults."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    t, m = p.train, p.model
    set_seed(t.seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    # fp32 weights, as run_glue.py gets from an fp32 checkpoint (transformers 5 loads a half-precision one in half).
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(labels), dtype=torch.float32)
    encoded = tokenizer(train["text"].tolist(), padding="max_length", max_length=m.max_length, truncation=True)
    rows = [{**{k: encoded[k][i] for k in encoded}, "label": int(y)} for i, y in enumerate(train["label_id"])]
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
    timer = EpochTimer(CountingCollator(default_data_collator))
    Trainer(model=model, args=args, train_dataset=rows, data_collator=timer.counter, callbacks=[timer]).train()
    return {"timer": timer, "model": model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--rows", type=int, default=0, help="train on this many random train rows (0: all); for a quick check"
    )
    parser.add_argument(
        "--batch-size", type=int, default=0, help="override train.batch_size of params.yaml (both runs)"
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
        runs["plain"] = plain_run(p, source, train, labels, f"{tmp}/plain", **setup)
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
    report["speedup"] = report["skewtune"]["samples_per_s"] / report["plain"]["samples_per_s"]
    print(f"non-embedding parameters {params}; skewtune / plain throughput: {report['speedup']:.2f}x")
    name = (
        "train_speed"
        if args.device == "cpu" and not args.bert_base
        else f"train_speed_{args.device}_{args.precision}{'_bert_base' * args.bert_base}_b{p.train.batch_size}"
    )
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
