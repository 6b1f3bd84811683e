"""The training recipe, top to bottom: from the params and the train and val rows to the saved classifier
(models/model) and its training curves (reports/train). The train stage and bench/train_speed.py run it."""

from __future__ import annotations

import shutil
from typing import Sequence

import pandas as pd
import torch
from transformers import TrainerCallback, set_seed

from skewtune.config.effective import collapse_remedies
from skewtune.config.schema import SENTENCE_METHODS, Params
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import Outputs, json_text
from skewtune.core.paths import CANDIDATES, CHECKPOINTS, METHOD_FILE, MODEL, TRAIN_REPORTS
from skewtune.models.devices import amp_dtype, check_processes, resolve_device, resolve_precision
from skewtune.models.modality import for_rows, model_source
from skewtune.models.text import add_lora, class_counts
from skewtune.train.arguments import for_train_size, resolve_batch_size, training_arguments
from skewtune.train.auto import Plan, plan
from skewtune.train.diagnostics import DiagnosticsCallback
from skewtune.train.losses import init_head_bias
from skewtune.train.runtime import checkpoint_to_resume, distributed_rank, relaunch_distributed
from skewtune.train.selection import parse_selection
from skewtune.train.trainer import build_trainer, build_training_loss

# What each DDP process runs under torchrun (train.nproc > 1): the stage, which reads its inputs and calls this recipe.
STAGE_MODULE = "stages.train"


def train_classifier(
    p: Params,
    labels: list[str],
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    model_dir: str = MODEL,
    reports_dir: str = TRAIN_REPORTS,
    checkpoints_dir: str = CHECKPOINTS,
    cross_fitting: str | None = None,
) -> None:
    """Train the classifier of p.train.method on `train` (rows with label_id), using `val` to select or score it, and
    write it to `model_dir` and its reports to `reports_dir`, atomically: the one entry point of every method (auto:
    the one skewtune/train/auto.py chooses, with method.json in `reports_dir` saying why; `cross_fitting` says how
    train.cv cross-fits the train + val rows, None where it does not). The train stage writes models/model; a fold
    model of train.cv (skewtune.train.folds) its own directories."""
    where = {"model_dir": model_dir, "reports_dir": reports_dir, "checkpoints_dir": checkpoints_dir}
    if p.train.method != "auto":
        _train_method(p.train.method, p, labels, train, val, callbacks=callbacks, **where)
        return
    chosen = plan(len(train), text=p.data.modality == "text", processes=p.train.nproc, cross_fitting=cross_fitting)
    if chosen.candidates == ("finetune",) and p.train.nproc > 1:
        # each DDP process runs the train stage again (torchrun): it trains in place, without auto's scratch copies
        print(f"train (auto): finetune: {chosen.why}", flush=True)
        _train_method("finetune", p, labels, train, val, callbacks=callbacks, **where)
    else:
        _train_auto(chosen, p, labels, train, val, callbacks=callbacks, **where)


def _train_method(
    method: str,
    p: Params,
    labels: list[str],
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    callbacks: Sequence[TrainerCallback],
    model_dir: str,
    reports_dir: str,
    checkpoints_dir: str,
) -> None:
    if method in SENTENCE_METHODS:
        from skewtune.train.sentence import train_sentence_classifier

        p = p.model_copy(update={"train": p.train.model_copy(update={"method": method})})
        train_sentence_classifier(p, labels, train, val, model_dir=model_dir, reports_dir=reports_dir)
    else:
        finetune(
            p,
            labels,
            train,
            val,
            callbacks=callbacks,
            model_dir=model_dir,
            reports_dir=reports_dir,
            checkpoints_dir=checkpoints_dir,
        )


def _train_auto(
    chosen: Plan,
    p: Params,
    labels: list[str],
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    callbacks: Sequence[TrainerCallback],
    model_dir: str,
    reports_dir: str,
    checkpoints_dir: str,
) -> None:
    """Train each candidate of auto's plan `chosen` into a scratch directory, judge them on val when there are two,
    and write the one kept to `model_dir` and `reports_dir` with method.json, atomically."""
    from skewtune.models.inference import predict_proba
    from skewtune.models.modality import TEXT
    from skewtune.train.auto import choose_method, only_candidate

    device = resolve_device(p.train.device)
    # The train stage's scratch directory is models/candidates; a fold model's sits beside its model directory (a
    # temporary one), not in its checkpoints directory, which fine-tuning removes when it is done.
    scratch = CANDIDATES if model_dir == MODEL else f"{model_dir}.candidates"
    shutil.rmtree(scratch, ignore_errors=True)  # what a stopped run left
    probs = {}
    try:
        for method in chosen.candidates:
            where = {"model_dir": f"{scratch}/{method}/model", "reports_dir": f"{scratch}/{method}/reports"}
            print(f"train (auto): training {method} ({chosen.why})", flush=True)
            _train_method(method, p, labels, train, val, callbacks=callbacks, checkpoints_dir=checkpoints_dir, **where)
            if not chosen.compares:
                break
            model, tokenizer, meta = TEXT.load_trained(where["model_dir"], trust_remote_code=p.model.trust_remote_code)
            probs[method] = predict_proba(
                model,
                tokenizer,
                val,
                max_length=meta.max_length,
                text_pair=meta.text_pair,
                batch_size=p.train.eval_batch_size,
                device=device,
                amp_dtype=amp_dtype(resolve_precision(p.train.precision, device)),
            )
        method, record = (
            choose_method(val["label_id"].to_numpy(), probs, len(train), len(labels), chosen.why)
            if chosen.compares
            else only_candidate(chosen, len(train))
        )
        with Outputs() as out:
            shutil.copytree(f"{scratch}/{method}/model", out.path(model_dir, directory=True), dirs_exist_ok=True)
            reports = out.path(reports_dir, directory=True)
            shutil.copytree(f"{scratch}/{method}/reports", reports, dirs_exist_ok=True)
            (reports / METHOD_FILE).write_text(json_text(record), encoding="utf-8")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"train (auto): {method}: {record['reason']}", flush=True)


def finetune(
    p: Params,
    labels: list[str],
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    model_dir: str = MODEL,
    reports_dir: str = TRAIN_REPORTS,
    checkpoints_dir: str = CHECKPOINTS,
) -> None:
    """Fine-tune p.model.name on `train` (rows with label_id), select the best epoch on `val`, and write the model
    to `model_dir` and the curves to `reports_dir`, atomically (nothing on failure; the checkpoints in
    `checkpoints_dir` stay for train.resume). `callbacks` run after the DiagnosticsCallback, in every process of the
    run."""
    m, t, lo = p.model, p.train, p.loss
    device = resolve_device(t.device)
    precision = resolve_precision(t.precision, device)
    check_processes(t.nproc, device, torch.cuda.device_count())
    selection = parse_selection(t.select_metric, labels)
    counts = class_counts(train["label_id"], len(labels))
    loss_fn = build_training_loss(lo, counts, labels)
    modality = for_rows(train)
    source = model_source(m.name, modality, trust_remote_code=m.trust_remote_code)
    if distributed_rank() is None:  # not yet in a DDP process: say it once
        warning = modality.check(source, m, train)
        if warning:
            print(warning, flush=True)
    # The inputs are checked above, once; then each DDP process runs the stage under torchrun.
    if t.nproc > 1 and distributed_rank() is None:
        status = relaunch_distributed(t.nproc, STAGE_MODULE)
        if status:
            raise SkewtuneError(
                f"training in {t.nproc} processes (train.nproc) failed with exit status {status}; the messages above say why"
            )
        return
    is_main = distributed_rank() in (None, 0)

    set_seed(t.seed)  # before the model exists: the new head's weights and LoRA's are drawn from it
    prepared = modality.prepare(source, m, train, val, labels, p.augment)
    model = prepared.model
    init_head_bias(model, counts, m.init_bias, labels, loss_fn)
    if m.lora.enabled:
        lora = m.lora
        model = add_lora(
            model, len(labels), r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=lora.target_modules
        )
    t = resolve_batch_size(t, device, rows=len(train), tokens_per_row=prepared.tokens_per_row)
    t, adapted = for_train_size(t, len(train))  # after the batch size is known: it sets the steps per epoch
    args = training_arguments(
        checkpoints_dir, t, precision=precision, device=device, selection=selection, by_length=modality.by_length
    )
    resume_from = checkpoint_to_resume(checkpoints_dir, t.resume, is_main=is_main)
    if is_main:
        share = ", ".join(f"{label} {n}" for label, n in zip(labels, counts))
        auto = f" (auto), lr {t.lr:.3g}" if p.train.batch_size == "auto" else ""
        print(
            f"train: {source or m.name} on {len(train)} rows ({share}), val {len(val)} rows; {device}, {precision}, "
            f"batch {t.batch_size}{auto}",
            flush=True,
        )
        for line in prepared.lines + ([adapted] if adapted else []):
            print(line, flush=True)

    with Outputs() as out:
        live = None
        if is_main:
            from dvclive import Live

            # Written in place, so that VS Code and `dvc plots show` follow the curves while training runs.
            live = Live(str(out.in_place(reports_dir)), dvcyaml=False, save_dvc_exp=False)
            for name, value in prepared.metrics.items():  # summary values, not per-step plots
                live.log_metric(name, value, plot=False)
        diagnostics = DiagnosticsCallback(labels, live, fp16=precision == "fp16", remedies=collapse_remedies(p))
        trainer = build_trainer(
            model,
            prepared.processor,
            args,
            prepared.train_set,
            prepared.val_set,
            collator=prepared.collator,
            augment=prepared.augment,
            train=t,
            loss_fn=loss_fn,
            labels=labels,
            selection=selection,
            callbacks=[diagnostics, *callbacks],
        )
        result = trainer.train(resume_from_checkpoint=resume_from)
        if is_main:
            best = diagnostics.best(trainer.state.best_global_step)
            for name, value in best.items():
                live.log_metric(f"best/{name}", value, plot=False)
            live.end()  # the summary; inside `dvc exp run`, dvclive's check that reports/train is a tracked output
            modality.save(
                trainer.model, prepared.processor, out.path(model_dir, directory=True), labels=labels, m=m, train=train
            )
            seconds, speed = result.metrics["train_runtime"], result.metrics["train_samples_per_second"]
            print(
                f"train: {seconds:.0f} s ({speed:.1f} training rows/s); kept epoch {best.get('epoch', 0):g}, "
                f"the best by {selection.expression} on val; saved {model_dir}",
                flush=True,
            )
    if is_main:
        shutil.rmtree(checkpoints_dir, ignore_errors=True)
