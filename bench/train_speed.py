"""Training throughput: the train stage's Trainer setup against a plain run_glue.py-style Trainer.

    .venv/bin/python bench/train_speed.py [--seed 1] [--out /tmp/skewtune_bench/train_speed]

Same model (params.yaml model.name), the same train split of the SMS Spam Collection (ingest + split as the
stages do it, split.seed = --seed), the same batch size and learning rate (params.yaml train.*), one epoch,
fp32 on the CPU. skewtune: tokens without padding, DataCollatorWithPadding, length-grouped batches, its loss
hook and metrics (skewtune.training.build_trainer). Plain: padding="max_length" to model.max_length, the
default collator, random batches, the model's own loss, as transformers' examples/run_glue.py does with
--pad_to_max_length. Time is from the start of training to the end of the epoch (before evaluation and
checkpointing). Model FLOPs = 6 x non-embedding parameters x non-padding tokens; the share is of this
machine's measured dense fp32 matmul FLOP/s (torch's default threads).
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
from transformers import TrainerCallback, set_seed  # noqa: E402

from _common import REPO, SMS_TSV, machine  # noqa: E402
from skewtune.dataset import assemble_dataset  # noqa: E402
from skewtune.losses import build_loss  # noqa: E402
from skewtune.modeling import class_counts, encode, init_head_bias, load_classifier, load_tokenizer, resolve_model_source  # noqa: E402
from skewtune.params import load_params  # noqa: E402
from skewtune.splitting import split_dataset  # noqa: E402
from skewtune.tables import read_table  # noqa: E402
from skewtune.training import DiagnosticsCallback, build_trainer, parse_selection, training_arguments  # noqa: E402


class CountingCollator:
    """Wraps a collator to count the token positions (padding included) that the model processes."""

    def __init__(self, collate):
        self.collate, self.positions = collate, 0

    def __call__(self, rows):
        batch = self.collate(rows)
        self.positions += batch["input_ids"].numel()
        return batch


class EpochTimer(TrainerCallback):
    """Seconds and padded token positions from the start of training to the end of the first epoch
    (evaluation, which also goes through the collator, comes after)."""

    def __init__(self, counter: CountingCollator):
        self.counter = counter

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.counter.positions = time.perf_counter(), 0

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seconds, self.positions = time.perf_counter() - self.start, self.counter.positions


def matmul_flops(n: int = 2048, repeats: int = 20) -> float:
    """Dense fp32 FLOP/s of an n x n matmul with torch's default threads (best of three timings)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best


def non_embedding_parameters(model) -> int:
    """Parameters outside the input embeddings (word, position, token type and their LayerNorm)."""
    embeddings = {id(p) for p in model.get_input_embeddings().parameters()}
    base = getattr(model, model.base_model_prefix)
    embeddings |= {id(p) for p in base.embeddings.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


def sms_splits(seed: int, val_size: float, test_size: float):
    """(train, val, labels) of the SMS file as the ingest and split stages make them, with label_id."""
    pool = read_table(SMS_TSV, ["SMS", "Label"])
    dataset, labels, _ = assemble_dataset(pool, None, text_column="SMS", pair_column=None, label_column="Label", label_map={}, pool_name=str(SMS_TSV))
    splits = split_dataset(dataset, labels, val_size=val_size, test_size=test_size, seed=seed)
    index = {label: i for i, label in enumerate(labels)}
    train, val = (splits[name].assign(label_id=splits[name]["label"].map(index)) for name in ("train", "val"))
    return train, val, labels


def skewtune_run(p, source, train, val, labels, outdir: str) -> dict:
    t, m = p.train, p.model
    set_seed(t.seed)
    tokenizer = load_tokenizer(source)
    model = load_classifier(source, tokenizer, labels, max_length=m.max_length)
    counts = class_counts(train["label_id"], len(labels))
    init_head_bias(model, counts, m.init_bias, labels)
    selection = parse_selection(t.select_metric, labels)
    args = training_arguments(
        outdir, epochs=1, max_steps=-1, batch_size=t.batch_size, eval_batch_size=t.eval_batch_size, grad_accum=t.grad_accum,
        lr=t.lr, weight_decay=t.weight_decay, warmup=t.warmup, scheduler=t.scheduler, max_grad_norm=t.max_grad_norm,
        seed=t.seed, precision="fp32", device="cpu", selection=selection, group_by_length=t.group_by_length,
    )
    lo = p.loss
    loss_fn = build_loss(lo.name, class_counts=counts, labels=labels, class_weights=lo.class_weights, beta=lo.beta,
                         alpha=lo.alpha, gamma=lo.gamma, tau=lo.tau, label_smoothing=lo.label_smoothing)
    trainer = build_trainer(model, tokenizer, args, encode(tokenizer, train, m.max_length), encode(tokenizer, val, m.max_length),
                            loss_fn=loss_fn, labels=labels, selection=selection, patience=t.early_stopping_patience,
                            callbacks=[DiagnosticsCallback(labels)])
    trainer.data_collator = counting = CountingCollator(trainer.data_collator)
    timer = EpochTimer(counting)
    trainer.add_callback(timer)
    trainer.train()
    return {"seconds": timer.seconds, "positions": timer.positions, "model": model}


def plain_run(p, source, train, labels, outdir: str) -> dict:
    """transformers' run_glue.py with --pad_to_max_length: pad every row, default_data_collator, Trainer defaults."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, default_data_collator

    t, m = p.train, p.model
    set_seed(t.seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(labels))
    encoded = tokenizer(train["text"].tolist(), padding="max_length", max_length=m.max_length, truncation=True)
    rows = [{**{k: encoded[k][i] for k in encoded}, "label": int(y)} for i, y in enumerate(train["label_id"])]
    args = TrainingArguments(
        output_dir=outdir, num_train_epochs=1, per_device_train_batch_size=t.batch_size, learning_rate=t.lr,
        seed=t.seed, use_cpu=True, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
    )
    timer = EpochTimer(CountingCollator(default_data_collator))
    Trainer(model=model, args=args, train_dataset=rows, data_collator=timer.counter, callbacks=[timer]).train()
    return {"seconds": timer.seconds, "positions": timer.positions, "model": model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rows", type=int, default=0, help="train on this many random train rows (0: all); for a quick check")
    parser.add_argument("--out", type=Path, default=Path("/tmp/skewtune_bench/train_speed"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    p = load_params(REPO / "params.yaml")
    train, val, labels = sms_splits(args.seed, p.split.val_size, p.split.test_size)
    if args.rows:
        train = train.sample(args.rows, random_state=args.seed)
    source = resolve_model_source(p.model.name)
    tokens = sum(len(ids) for ids in load_tokenizer(source)(train["text"].tolist(), truncation=True, max_length=p.model.max_length)["input_ids"])
    peak = matmul_flops()
    print(f"machine: {machine()}\nmatmul 2048x2048 fp32: {peak / 1e9:.1f} GFLOP/s\ntrain rows {len(train)}, non-padding tokens {tokens}", flush=True)

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs["skewtune"] = skewtune_run(p, source, train, val, labels, f"{tmp}/skewtune")
        runs["plain"] = plain_run(p, source, train, labels, f"{tmp}/plain")
    params = non_embedding_parameters(runs["skewtune"]["model"])
    report = {"machine": machine(), "matmul_gflops": peak / 1e9, "rows": len(train), "non_padding_tokens": tokens,
              "non_embedding_parameters": params, "batch_size": p.train.batch_size, "max_length": p.model.max_length}
    for name, run in runs.items():
        model_flops = 6 * params * tokens
        report[name] = {
            "seconds": run["seconds"],
            "samples_per_s": len(train) / run["seconds"],
            "tokens_per_s": tokens / run["seconds"],
            "padded_positions": run["positions"],
            "padding_share": 1 - tokens / run["positions"],
            "model_gflops_per_s": model_flops / run["seconds"] / 1e9,
            "share_of_matmul_peak": model_flops / run["seconds"] / peak,
        }
        r = report[name]
        print(f"{name}: {r['seconds']:.1f} s, {r['samples_per_s']:.1f} samples/s, {r['tokens_per_s']:.0f} tokens/s, "
              f"padding {r['padding_share']:.1%}, {r['model_gflops_per_s']:.1f} model GFLOP/s = {r['share_of_matmul_peak']:.1%} of matmul peak")
    report["speedup"] = report["plain"]["seconds"] / report["skewtune"]["seconds"]
    print(f"non-embedding parameters {params}; skewtune / plain throughput: {report['speedup']:.2f}x")
    (args.out / "train_speed.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
