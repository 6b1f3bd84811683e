"""Stage train: fine-tune the classifier on the resampled train set, select the best epoch on val,
save it to models/model and the training curves to reports/train."""

import shutil

import torch
from transformers import set_seed

from skewtune.artifacts import CHECKPOINTS, MODEL, RESAMPLED, TRAIN_REPORTS, read_examples, read_labels, split_path
from skewtune.cli import run_stage
from skewtune.devices import check_processes, resolve_device, resolve_precision
from skewtune.errors import SkewtuneError
from skewtune.io import Outputs
from skewtune.modeling import (
    add_lora,
    check_coverage,
    class_counts,
    encode,
    init_head_bias,
    load_classifier,
    load_tokenizer,
    resolve_model_source,
    save_classifier,
    token_coverage,
)
from skewtune.params import load_params
from skewtune.training import (
    DiagnosticsCallback,
    build_trainer,
    build_training_loss,
    checkpoint_to_resume,
    distributed_rank,
    for_train_size,
    hold_for_signal_from_environment,
    parse_selection,
    relaunch_distributed,
    training_arguments,
)


def main() -> None:
    p = load_params()
    m, lo = p.model, p.loss
    labels = read_labels()
    train, val = read_examples(RESAMPLED, labels, "resample"), read_examples(split_path("val"), labels, "split")
    t, adapted = for_train_size(p.train, len(train))
    device = resolve_device(t.device)
    precision = resolve_precision(t.precision, device)
    check_processes(t.nproc, device, torch.cuda.device_count())
    selection = parse_selection(t.select_metric, labels)
    counts = class_counts(train["label_id"], len(labels))
    loss_fn = build_training_loss(lo, counts, labels)
    source = resolve_model_source(m.name, trust_remote_code=m.trust_remote_code)
    tokenizer = load_tokenizer(source, trust_remote_code=m.trust_remote_code)
    coverage = token_coverage(tokenizer, train, m.max_length)
    if distributed_rank() is None:  # not yet in a DDP process: say it once
        warning = check_coverage(coverage, tokenizer, source)
        if warning:
            print(warning, flush=True)
    # The inputs are checked above, once; then each DDP process runs this stage under torchrun.
    if t.nproc > 1 and distributed_rank() is None:
        status = relaunch_distributed(t.nproc, "stages.train")
        if status:
            raise SkewtuneError(f"training in {t.nproc} processes (train.nproc) failed with exit status {status}; the messages above say why")
        return
    is_main = distributed_rank() in (None, 0)
    if is_main and adapted:
        print(adapted, flush=True)

    set_seed(t.seed)  # before the model exists: the new head's weights and LoRA's are drawn from it
    model = load_classifier(
        source, tokenizer, labels, max_length=m.max_length, trust_remote_code=m.trust_remote_code,
        hidden_dropout=m.hidden_dropout, classifier_dropout=m.classifier_dropout,
    )
    init_head_bias(model, counts, m.init_bias, labels, loss_fn)
    if m.lora.enabled:
        lora = m.lora
        model = add_lora(model, len(labels), r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=lora.target_modules)
    args = training_arguments(CHECKPOINTS, t, precision=precision, device=device, selection=selection)
    resume_from = checkpoint_to_resume(CHECKPOINTS, t.resume, is_main=is_main)
    if is_main:
        share = ", ".join(f"{label} {n}" for label, n in zip(labels, counts))
        print(f"train: {source} on {len(train)} rows ({share}), val {len(val)} rows; {device}, {precision}", flush=True)
        print(f"train: tokens of {coverage['rows']} train texts: {coverage['unknown_share']:.1%} unknown; "
              f"{coverage['truncated_share']:.1%} of the texts are longer than model.max_length ({m.max_length}) and get cut off", flush=True)

    with Outputs() as out:
        live = None
        if is_main:
            from dvclive import Live

            live = Live(str(out.path(TRAIN_REPORTS, directory=True)), dvcyaml=False, save_dvc_exp=False)
            for name in ("unknown_share", "truncated_share"):  # summary values, not per-step plots
                live.log_metric(f"tokens/{name}", round(coverage[name], 6), plot=False)
        diagnostics = DiagnosticsCallback(labels, live, fp16=precision == "fp16")
        trainer = build_trainer(
            model, tokenizer, args, encode(tokenizer, train, m.max_length), encode(tokenizer, val, m.max_length),
            train=t, loss_fn=loss_fn, labels=labels, selection=selection, callbacks=[diagnostics, *hold_for_signal_from_environment()],
        )
        result = trainer.train(resume_from_checkpoint=resume_from)
        if is_main:
            best = diagnostics.best(trainer.state.best_global_step)
            for name, value in best.items():
                live.log_metric(f"best/{name}", value, plot=False)
            live.make_summary()
            save_classifier(
                trainer.model, tokenizer, out.path(MODEL, directory=True),
                labels=labels, max_length=m.max_length, text_pair="text_pair" in train.columns,
            )
            seconds, speed = result.metrics["train_runtime"], result.metrics["train_samples_per_second"]
            print(
                f"train: {seconds:.0f} s ({speed:.1f} training rows/s); kept epoch {best.get('epoch', 0):g}, "
                f"the best by {selection.expression} on val; saved {MODEL}",
                flush=True,
            )
    if is_main:
        shutil.rmtree(CHECKPOINTS, ignore_errors=True)


if __name__ == "__main__":
    run_stage("train", main)
