"""Batched inference of a text classifier: class probabilities of any number of rows in bounded memory, with
progress lines for long inputs."""

from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from skewtune.core.errors import SkewtuneError
from skewtune.models.text import encode

# Rows tokenised at once by predict_proba: bounds its memory whatever the input size.
CHUNK_ROWS = 4096


def progress_printer(total: int, what: str = "", stream=None, chunk_rows: int = CHUNK_ROWS):
    """A progress line (to stderr, one line each) per chunk of predict_proba, for inputs longer than one chunk."""
    if total <= chunk_rows:
        return None
    start = time.perf_counter()

    def report(done: int) -> None:
        rate = done / max(time.perf_counter() - start, 1e-9)
        print(f"predict: {what}{done}/{total} rows ({rate:.0f} rows/s)", file=stream or sys.stderr, flush=True)

    return report


def batched_outputs(
    forward: Callable[[dict], torch.Tensor],
    width: int,
    tokenizer,
    frame: pd.DataFrame,
    *,
    max_length: int,
    batch_size: int,
    device: str,
    amp_dtype: torch.dtype | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """`forward`(a padded batch of tokens on `device`) -> [batch, width], for every row of the frame, as float64 in
    the frame's row order.

    Rows are tokenised `chunk_rows` at a time (memory does not grow with the input) and, within a
    chunk, batched in order of token length so that padding is minimal; results go back to their
    rows. `progress` is called with the number of rows done after each chunk.
    """
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    out = np.empty((len(frame), width), dtype=np.float64)
    with (
        torch.inference_mode(),
        torch.autocast(device_type=device, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None),
    ):
        for first in range(0, len(frame), chunk_rows):
            rows = encode(tokenizer, frame.iloc[first : first + chunk_rows], max_length, with_labels=False)
            order = np.argsort([len(row["input_ids"]) for row in rows], kind="stable")
            for start in range(0, len(rows), batch_size):
                index = order[start : start + batch_size]
                batch = {key: value.to(device) for key, value in collate([rows[i] for i in index]).items()}
                out[first + index] = forward(batch).double().cpu().numpy()
            if progress is not None:
                progress(first + len(rows))
    return out


def predict_proba(
    model: nn.Module,
    tokenizer,
    frame: pd.DataFrame,
    *,
    max_length: int,
    text_pair: bool,
    batch_size: int,
    device: str,
    amp_dtype: torch.dtype | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Softmax class probabilities [rows, classes] as float64, in the frame's row order (`batched_outputs`). `model`
    is a fine-tuned sequence classifier or a sentence-embedding one (skewtune.models.sentence): both give logits."""
    if text_pair != ("text_pair" in frame.columns):
        raise SkewtuneError(
            "the model was trained on "
            + ("sentence pairs" if text_pair else "single texts")
            + ", but the rows to predict "
            + ("have no text_pair column" if text_pair else "have a text_pair column")
            + "; re-run the pipeline from ingest"
        )
    model.to(device).eval()
    return batched_outputs(
        lambda batch: torch.softmax(model(**batch).logits.double(), dim=-1),
        model.config.num_labels,
        tokenizer,
        frame,
        max_length=max_length,
        batch_size=batch_size,
        device=device,
        amp_dtype=amp_dtype,
        chunk_rows=chunk_rows,
        progress=progress,
    )
