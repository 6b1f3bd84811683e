"""What `skewtune compare` prints, as Markdown for a pull-request comment.

Two runs: the test predictions of two revisions paired row by row: macro-F1 of each and its paired-bootstrap
difference, the decision each applied (rule, blend weight) with its model alone's macro-F1 beside it, the candidates
a guard refused, per-class F1 and the params that differ.

Seeds: the experiments of the current commit grouped by their effective configuration (the params keys that take
effect, as check_params writes them) minus the seed keys: per group the mean ± sd of test and val macro-F1, and each
group against the first one (the group of the baseline commit, if it ran) seed by seed.
"""

from __future__ import annotations

import json

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score

from skewtune.artifacts import parse_test_predictions
from skewtune.core.errors import SkewtuneError
from skewtune.core.paths import DECISION, TEST_METRICS, TEST_PREDICTIONS_CSV
from skewtune.decision.scores import Score, score_labels
from skewtune.decision.tuning import guard_refusals
from skewtune.evaluation.compare import align_runs, comparison_markdown, paired_comparison
from skewtune.evaluation.revisions import decision_at, file_at, params_at

# The predictions a comparison pairs (the --rule of skewtune compare): a column of reports/eval/test_predictions.csv.
RULE_COLUMNS = {"chosen": "predicted", "argmax": "predicted_argmax", "model": "predicted_model"}
RULE_WORDS = {
    "chosen": "the decision each run chose on val",
    "argmax": "argmax of what each decision decides on",
    "model": "the models alone: argmax, no blend",
}


def differing(params: list[dict]) -> list[str]:
    """The keys whose values are not the same in all of `params`, in the order of the first."""
    keys = list(dict.fromkeys(key for p in params for key in p))
    return [key for key in keys if len({json.dumps(p.get(key), sort_keys=True) for p in params}) > 1]


def _value(v) -> str:
    return "—" if v is None else f"`{json.dumps(v) if not isinstance(v, str) else v}`"


def decision_words(decision: dict | None) -> str:
    """A run's decision in a table cell: the rule and the baseline's blend weight."""
    if decision is None:
        return f"not recorded (no {DECISION})"
    blend = decision.get("blend") or 0  # absent in decisions written before blending: none
    return f"`{decision.get('strategy')}`" + (f", baseline blended in at {blend:g}" if blend else ", no blend")


def decision_and_model(
    tables: list, decisions: list, names: tuple[str, str], *, resamples: int, seed: int, confidence: float
) -> list[str]:
    """Markdown lines: each run's decision, its macro-F1 and the model alone's, and how much of B − A the models
    alone account for, so that a change of the model and a change of the decision are told apart."""
    y, chosen_a, chosen_b, labels = align_runs(*tables, *names, "predicted")
    chosen = [score_labels(y, p, len(labels), Score("f1_macro")) for p in (chosen_a, chosen_b)]
    model = None
    if all(RULE_COLUMNS["model"] in t.columns for t in tables):
        y_m, model_a, model_b, labels_m = align_runs(*tables, *names, RULE_COLUMNS["model"])
        model = paired_comparison(
            y_m, model_a, model_b, len(labels_m), resamples=resamples, seed=seed, confidence=confidence
        )
    alone = [f"{model.score_a:.4f}", f"{model.score_b:.4f}"] if model else ["not recorded", "not recorded"]
    lines = [
        "**Decision and model alone:**",
        "",
        "| | decision | macro-F1 of the decision | macro-F1 of the model alone (argmax, no blend) |",
        "|---|---|---:|---:|",
    ]
    lines += [
        f"| {side} | {decision_words(d)} | {c:.4f} | {m} |" for side, d, c, m in zip("AB", decisions, chosen, alone)
    ]
    diff = chosen[1] - chosen[0]
    if model:
        lines += [
            f"| **B − A** | | {diff:+.4f} | {model.diff:+.4f} ({confidence:.0%} CI {model.ci_low:+.4f} to {model.ci_high:+.4f}) |",
            "",
            f"Of B − A {diff:+.4f}, the models alone account for {model.diff:+.4f} and the decisions (rule, blend) "
            f"for {diff - model.diff:+.4f}.",
        ]
    else:
        lines += [
            f"| **B − A** | | {diff:+.4f} | |",
            "",
            "A run evaluated before the model alone was recorded (`predicted_model`): re-run its evaluate stage to "
            "split B − A into model and decision.",
        ]
    refused = [f"- {side}: {line}" for side, d in zip("AB", decisions) if d for line in guard_refusals(d)]
    if refused:
        lines += ["", "**Refused by a guard** (scored higher on val, not applied):", "", *refused]
    return lines


def two_runs(rev_a: str, rev_b: str, rule: str, *, resamples: int, seed: int, confidence: float) -> str:
    """Markdown: run B against run A on their test predictions under `rule` (a key of RULE_COLUMNS); a run is a git
    revision, a DVC experiment name or 'workspace'."""
    tables = [parse_test_predictions(file_at(rev, TEST_PREDICTIONS_CSV, "evaluate"), rev) for rev in (rev_a, rev_b)]
    y, pred_a, pred_b, labels = align_runs(*tables, rev_a, rev_b, RULE_COLUMNS[rule])
    result = paired_comparison(y, pred_a, pred_b, len(labels), resamples=resamples, seed=seed, confidence=confidence)
    decisions = [decision_at(rev) for rev in (rev_a, rev_b)]
    lines = [comparison_markdown(result, rev_a, rev_b, RULE_WORDS[rule]).rstrip("\n"), ""]
    lines += decision_and_model(
        tables, decisions, (rev_a, rev_b), resamples=resamples, seed=seed, confidence=confidence
    ) + [""]
    ids = list(range(len(labels)))
    f1_a, f1_b = (f1_score(y, p, labels=ids, average=None, zero_division=0) for p in (pred_a, pred_b))
    support = np.bincount(y, minlength=len(labels))
    lines += ["| class | test rows | F1 A | F1 B | B − A |", "|---|---:|---:|---:|---:|"]
    lines += [
        f"| `{label}` | {support[k]} | {f1_a[k]:.4f} | {f1_b[k]:.4f} | {f1_b[k] - f1_a[k]:+.4f} |"
        for k, label in enumerate(labels)
    ]
    params = [params_at(rev) for rev in (rev_a, rev_b)]
    keys = differing(params)
    lines += ["", "**Params that differ:**" if keys else "**Params:** identical.", ""]
    if keys:
        lines += ["| key | A | B |", "|---|---|---|"] + [
            f"| `{key}` | {_value(params[0].get(key))} | {_value(params[1].get(key))} |" for key in keys
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- seeds


def is_seed(key: str) -> bool:
    """A params key that only draws random numbers (train.seed, split.seed, resample.seed, evaluate.seed)."""
    return key.rsplit(".", 1)[-1] == "seed"


def _mean_sd(values: list) -> str:
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return "—"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def seed_groups(runs: list[dict], confidence: float) -> str:
    """Markdown: per group (effective configuration minus seeds: params without effect do not make a group) mean ± sd
    over seeds, then each group against the first, seed by seed."""
    if not runs:
        raise SkewtuneError(
            f"no experiment with {TEST_METRICS} found by `dvc exp show`; run some first, e.g. "
            "dvc exp run --queue -S 'train.seed=1,2,3' && dvc queue start"
        )
    groups: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: r["timestamp"]):  # oldest first: the baseline commit's group leads
        config = {k: v for k, v in run["effective"].items() if not is_seed(k)}
        key = json.dumps(config, sort_keys=True)
        group = groups.setdefault(key, {"config": config, "runs": {}})
        group["runs"][json.dumps({k: v for k, v in run["params"].items() if is_seed(k)}, sort_keys=True)] = (
            run  # newest per seed
        )
    groups = list(groups.values())
    keys = differing([g["config"] for g in groups])
    lines = [
        f"### skewtune: macro-F1 over seeds ({sum(len(g['runs']) for g in groups)} runs, {len(groups)} configurations)",
        "",
    ]
    lines += [
        "| group | params | runs | test macro-F1 (mean ± sd) | val macro-F1 (mean ± sd) |",
        "|---|---|---:|---:|---:|",
    ]
    for i, g in enumerate(groups):
        described = (
            ", ".join(f"`{k}={json.dumps(g['config'][k])}`" for k in keys if k in g["config"]) or "(all the same)"
        )  # absent: no effect
        runs_in = list(g["runs"].values())
        lines.append(
            f"| {chr(65 + i) if i < 26 else i} | {described} | {len(runs_in)} | "
            f"{_mean_sd([r['test'] for r in runs_in])} | {_mean_sd([r['val'] for r in runs_in])} |"
        )
    varying = sorted(
        {k for g in groups for r in g["runs"].values() for k in r["params"] if is_seed(k)}
        & set(differing([r["params"] for g in groups for r in g["runs"].values()]))
    )
    lines += [
        "",
        f"Seed keys set apart: {', '.join(f'`{k}`' for k in varying) or 'none vary'}; a seed that changes the split "
        "changes the test rows too.",
    ]
    base = groups[0]
    for i, g in enumerate(groups[1:], start=1):
        shared = sorted(set(base["runs"]) & set(g["runs"]))
        name = chr(65 + i) if i < 26 else str(i)
        if not shared:
            lines += [
                "",
                f"**{name} − A:** no seed in common; run both with the same seeds to compare them seed by seed.",
            ]
            continue
        diffs = np.array([g["runs"][s]["test"] - base["runs"][s]["test"] for s in shared])
        wins = int((diffs > 0).sum())
        text = f"**{name} − A** (test macro-F1, same seeds, n = {len(diffs)}): mean {diffs.mean():+.4f}"
        if len(diffs) > 1:
            sd = diffs.std(ddof=1)
            half = stats.t.ppf((1 + confidence) / 2, len(diffs) - 1) * sd / np.sqrt(len(diffs))
            low, high = diffs.mean() - half, diffs.mean() + half
            verdict = (
                f"{name} is {'better' if low > 0 else 'worse'} than A"
                if low > 0 or high < 0
                else "not distinguishable from seed noise"
            )
            text += f", sd {sd:.4f}, {confidence:.0%} t-interval {low:+.4f} to {high:+.4f}: {verdict}"
        else:
            text += " (one seed: no interval)"
        lines += ["", text + f"; higher on {wins} of {len(diffs)} seeds."]
    lines += ["", "Choose on val; test is reported, not used to choose."]
    return "\n".join(lines) + "\n"
