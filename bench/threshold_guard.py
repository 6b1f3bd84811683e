"""Does a decision rule tuned on val beat a simpler one on new rows? Checked on val alone, from the runs of quality.py.

    .venv/bin/python bench/threshold_guard.py --quality /tmp/skewtune_bench/quality [--splits 100]
    .venv/bin/python bench/threshold_guard.py --blend --quality /tmp/skewtune_bench/v3/sms --configs a [--splits 30]

For each run's saved val predictions: split val into two stratified halves (--splits random splits), choose
the decision rule on one half with skewtune's own tuning, score macro-F1 on the other half, against argmax on
that half. Without --blend, two rules: the tuned threshold always (threshold.min_confidence 0) and the guarded
one (the default 0.95: kept only if it beats argmax in 95% of paired bootstrap resamples of the tuning half).
With --blend, three settings of decision.blend, each with the threshold's default guard unless said: off,
auto (the default: the baseline blended in only when it beats the model's own rule in 95% of resamples), and
auto with no guard on the blend or the rule (min_confidence 0). Then, on each run's whole val, what the
default decided.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.model_selection import StratifiedShuffleSplit  # noqa: E402

from skewtune.artifacts import aligned, read_labels, read_predictions  # noqa: E402
from skewtune.core.paths import LABELS, baseline_predictions_path  # noqa: E402
from skewtune.decision.rule import DecisionRule  # noqa: E402
from skewtune.decision.tuning import tune_blended_decision  # noqa: E402

GUARD = 0.95  # threshold.min_confidence's default
THRESHOLD_RULES = {"tuned always": ("off", 0.0), "guarded (0.95)": ("off", GUARD)}
BLEND_RULES = {
    "blend off": ("off", GUARD),
    "blend auto (default)": ("auto", GUARD),
    "blend auto, no guard": ("auto", 0.0),
}


def decide(y, probs, baseline_probs, labels, blend, min_confidence: float) -> dict:
    return tune_blended_decision(
        y,
        probs,
        baseline_probs,
        labels,
        blend=blend,
        strategy="tune",
        metric="f1_macro",
        min_precision=0.9,
        positive_label=None,
        min_confidence=min_confidence,
    )[0]


def macro_f1(y, pred, k: int) -> float:
    return f1_score(y, pred, labels=list(range(k)), average="macro", zero_division=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality", type=Path, default=Path("/tmp/skewtune_bench/quality"))
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument(
        "--blend", action="store_true", help="compare decision.blend settings instead of threshold guards"
    )
    parser.add_argument("--configs", nargs="+", help="only the runs of these quality.py configs (e.g. a)")
    args = parser.parse_args()
    rules = BLEND_RULES if args.blend else THRESHOLD_RULES
    runs = sorted(
        d
        for d in args.quality.iterdir()
        if (d / "data/predictions/val.parquet").is_file()
        and (not args.configs or d.name.rsplit("_seed", 1)[0] in args.configs)
    )
    whole_columns = "blend weight | its win rate" if args.blend else "tuned threshold | win rate"
    print(
        f"| run | held-out gain over argmax: {' | '.join(rules)} | whole val: {whole_columns} | kept |\n|{'---|' * (len(rules) + 4)}"
    )
    for run in runs:
        labels = read_labels(run / LABELS)
        val = read_predictions(run / "data/predictions/val.parquet", labels)
        y, probs, k = val.y, val.probs, len(labels)
        baseline = (
            aligned(val, read_predictions(run / baseline_predictions_path("val"), labels, "baseline"), "val").probs
            if args.blend
            else None
        )
        gains = {name: [] for name in rules}
        for tune_rows, held_out in StratifiedShuffleSplit(n_splits=args.splits, test_size=0.5, random_state=0).split(
            probs, y
        ):
            argmax = macro_f1(y[held_out], probs[held_out].argmax(1), k)
            tune_baseline, held_baseline = (
                (None, None) if baseline is None else (baseline[tune_rows], baseline[held_out])
            )
            for name, (blend, min_confidence) in rules.items():
                rule = DecisionRule.from_dict(
                    decide(y[tune_rows], probs[tune_rows], tune_baseline, labels, blend, min_confidence)
                )
                gains[name].append(
                    macro_f1(y[held_out], rule.predict(rule.combine(probs[held_out], held_baseline)), k) - argmax
                )
        whole = decide(y, probs, baseline, labels, "auto" if args.blend else "off", GUARD)
        if args.blend:
            kept = f"blend {whole['blend']:.1f}" if whole["blend"] else "model alone"
            facts = f"{whole['blend_weight_tried']:.1f} | {whole['blend_win_rate']:.3f} | {kept}, {whole['strategy']}"
        else:
            rule = "threshold" if whole["strategy"] == "threshold" else "argmax"
            facts = f"{whole['tuned_threshold']:.3f} | {whole['win_rate']:.3f} | {rule}"
        print(f"| {run.name} | {' | '.join(f'{np.mean(g):+.4f}' for g in gains.values())} | {facts} |", flush=True)


if __name__ == "__main__":
    main()
