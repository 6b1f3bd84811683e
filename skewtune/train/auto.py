"""train.method: auto: which method trains the classifier, and why.

Above AUTO_MAX_ROWS train rows: finetune, without trying anything else (fine-tuning has the rows it needs there, and
a second candidate would only add cost; the embedded SMS data, 3,628 train rows, is trained as with finetune). At or
below it: finetune and `embedding` (frozen sentence embeddings + a balanced logistic regression, seconds) are both
trained, and `embedding` replaces finetune only if it beats it on val macro-F1 in at least AUTO_MIN_CONFIDENCE of
paired bootstrap resamples of val, the guard that keeps a tuned decision rule (decision/scores.win_rate,
threshold.min_confidence's default). finetune is kept on ties and on doubt. setfit is not a candidate: its cost
(minutes per thousand pairs on a CPU, BENCHMARKS §16) is not bounded by the row bound alone.

`choose_method` takes the probabilities of whichever rows judge the candidates: val's here; cross-fitting
(train.cv) can pass every train row's out-of-fold probabilities instead, which the guard then judges on many more rows.
"""

from __future__ import annotations

import numpy as np

from skewtune.config.schema import ThresholdParams
from skewtune.decision.scores import GUARD_RESAMPLES, GUARD_SEED, Score, score_labels, share_text, win_rate

# Train rows at or below which auto tries `embedding` beside finetune: the size where the issue-26 measurements (600-row
# samples of three sets) saw fine-tuning lose to linear models, with room to spare; far below the embedded data.
AUTO_MAX_ROWS = 2000
# The confidence a challenger needs to replace finetune: the decision rule's default guard (threshold.min_confidence),
# fixed here so that changing that key re-runs only tune_threshold, never training.
AUTO_MIN_CONFIDENCE = ThresholdParams.model_fields["min_confidence"].default
MACRO_F1 = Score("f1_macro")


def candidates(rows: int) -> tuple[str, ...]:
    """The methods auto trains for `rows` train rows, the default (finetune) first."""
    return ("finetune",) if rows > AUTO_MAX_ROWS else ("finetune", "embedding")


def choose_method(y: np.ndarray, probs: dict[str, np.ndarray], rows: int, n_classes: int) -> tuple[str, dict]:
    """(method, record) of auto: `probs` maps each candidate to its probabilities on the judging rows (labels `y`),
    finetune first. The record (reports/train/method.json) says what was compared and why the method won."""
    preds = {name: p.argmax(axis=1) for name, p in probs.items()}
    scores = {name: score_labels(y, pred, n_classes, MACRO_F1) for name, pred in preds.items()}
    record = {
        "setting": "auto",
        "rows": rows,
        "row_bound": AUTO_MAX_ROWS,
        "min_confidence": AUTO_MIN_CONFIDENCE,
        "val_f1_macro": scores,
    }
    if len(probs) == 1:
        reason = f"{rows} train rows, above the bound of {AUTO_MAX_ROWS} up to which auto also tries embedding"
        return "finetune", {**record, "method": "finetune", "win_rate": None, "reason": reason}
    default, challenger = list(probs)
    wins = win_rate(
        y, preds[default], preds[challenger], n_classes, MACRO_F1, resamples=GUARD_RESAMPLES, seed=GUARD_SEED
    )
    chosen = challenger if wins >= AUTO_MIN_CONFIDENCE else default
    verdict = (
        f"{challenger} kept: it beat {default} in {share_text(wins)} of paired val bootstrap resamples"
        if chosen == challenger
        else f"{default} kept: {challenger} beat it in only {share_text(wins)} of paired val bootstrap resamples "
        f"(needs {share_text(AUTO_MIN_CONFIDENCE)})"
    )
    shown = ", ".join(f"{name} {score:.4f}" for name, score in scores.items())
    reason = f"{rows} train rows (bound {AUTO_MAX_ROWS}); val macro-F1 at argmax: {shown}; {verdict}"
    return chosen, {**record, "method": chosen, "win_rate": wins, "reason": reason}
