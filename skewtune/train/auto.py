"""train.method: auto (the default): which method trains the classifier, and why.

- Text whose train + val rows train.cv cross-fits (at most 2,000 under train.cv: auto): `embedding` (frozen sentence
  embeddings + a balanced logistic regression), nothing else trained. There the decision (calibration, blend, rule and
  its guard) is tuned on the fold models' out-of-fold probabilities, and it transfers to the shipped model only if
  the fold models are near it: the logistic regressions on the same frozen embeddings are (the size-band study,
  BENCHMARKS §18: out-of-sample 0.392 and test 0.395 on bird-strike samples), five fine-tunings on 400 rows are not
  (0.457 out of sample, 0.304 on test); over 6 runs of 600-row samples embedding + cross-fitting scored 0.676 out of
  sample against 0.621 for fine-tuning decided on val, in under half its time.
- Images, or several training processes (train.nproc > 1) without cross-fitting: finetune (sentence embeddings read
  text; a comparison of candidates runs in one process).
- Otherwise above AUTO_MAX_ROWS train rows: finetune, without trying anything else (fine-tuning has the rows it needs
  there, and a second candidate would only add cost; the embedded SMS data, 3,628 train rows, is trained as with
  finetune).
- Otherwise (cross-fitting turned off on small data): finetune and `embedding` are both trained, and `embedding`
  replaces finetune only if it beats it on val macro-F1 in at least AUTO_MIN_CONFIDENCE of paired bootstrap resamples
  of val, the guard that keeps a tuned decision rule (decision/scores.win_rate, threshold.min_confidence's default).
  finetune is kept on ties and on doubt.

setfit is never chosen: its cost (minutes per thousand pairs on a CPU, BENCHMARKS §16) is not bounded by the row
bound alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skewtune.config.schema import ThresholdParams
from skewtune.decision.scores import GUARD_RESAMPLES, GUARD_SEED, Score, score_labels, share_text, win_rate

# Train rows at or below which auto tries `embedding` beside finetune when nothing cross-fits: the size where the
# issue-26 measurements (600-row samples of three sets) saw fine-tuning lose to linear models, with room to spare; far
# below the embedded data.
AUTO_MAX_ROWS = 2000
# The confidence a challenger needs to replace finetune: the decision rule's default guard (threshold.min_confidence),
# fixed here so that changing that key re-runs only tune_threshold, never training.
AUTO_MIN_CONFIDENCE = ThresholdParams.model_fields["min_confidence"].default
MACRO_F1 = Score("f1_macro")


@dataclass(frozen=True)
class Plan:
    """What auto trains: the candidate methods, finetune first where it is one, and why these."""

    candidates: tuple[str, ...]
    why: str

    @property
    def compares(self) -> bool:
        return len(self.candidates) > 1


def plan(rows: int, *, text: bool, processes: int, cross_fitting: str | None) -> Plan:
    """auto's candidates for `rows` train rows of text (or images), trained in `processes` processes, where
    `cross_fitting` says how train.cv cross-fits the train + val rows (None: it does not). See the module doc."""
    if not text:
        return Plan(("finetune",), "images: finetune (sentence embeddings read text)")
    if cross_fitting:
        return Plan(
            ("embedding",),
            f"{cross_fitting}: the decision is tuned on out-of-fold probabilities, which transfer to a head on frozen "
            "sentence embeddings and not to a model fine-tuned on a few hundred rows (BENCHMARKS §18)",
        )
    if processes > 1:
        return Plan(("finetune",), f"train.nproc is {processes}: finetune in {processes} processes")
    if rows > AUTO_MAX_ROWS:
        return Plan(
            ("finetune",),
            f"{rows} train rows, above the bound of {AUTO_MAX_ROWS} up to which auto also tries embedding",
        )
    return Plan(("finetune", "embedding"), f"{rows} train rows (bound {AUTO_MAX_ROWS})")


def choose_method(y: np.ndarray, probs: dict[str, np.ndarray], rows: int, n_classes: int, why: str) -> tuple[str, dict]:
    """(method, record) of auto between two candidates of a Plan (`why`): `probs` maps each to its probabilities on the
    judging rows (labels `y`), finetune first. The record (reports/train/method.json) says what was compared and why
    the method won."""
    preds = {name: p.argmax(axis=1) for name, p in probs.items()}
    scores = {name: score_labels(y, pred, n_classes, MACRO_F1) for name, pred in preds.items()}
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
    reason = f"{why}; val macro-F1 at argmax: {shown}; {verdict}"
    return chosen, {**_record(rows, chosen, reason), "val_f1_macro": scores, "win_rate": wins}


def only_candidate(p: Plan, rows: int) -> tuple[str, dict]:
    """(method, record) of a Plan with one candidate: nothing is compared."""
    (method,) = p.candidates
    return method, {**_record(rows, method, p.why), "val_f1_macro": None, "win_rate": None}


def _record(rows: int, method: str, reason: str) -> dict:
    return {
        "setting": "auto",
        "rows": rows,
        "row_bound": AUTO_MAX_ROWS,
        "min_confidence": AUTO_MIN_CONFIDENCE,
        "method": method,
        "reason": reason,
    }
