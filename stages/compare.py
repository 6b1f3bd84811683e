"""Compare runs for a pull-request comment (Markdown on stdout).

Two runs: `python -m stages.compare REV_A REV_B` pairs the test predictions of two git revisions or DVC
experiments row by row: macro-F1 of each and its paired-bootstrap difference, the decision each applied
(rule, blend weight) with its model alone's macro-F1 beside it, the candidates a guard refused, per-class F1
and the params that differ. A revision is "workspace" (the files on disk), anything `git rev-parse` knows,
or a DVC experiment name.

Seeds: `python -m stages.compare --seeds` groups the experiments of the current commit (`dvc exp show`) by
their effective configuration (the params keys that take effect, as check_params writes them) minus the
seed keys, and reports per group the mean ± sd of test and val macro-F1, and for each group against the
first one (the group of the baseline commit, if it ran) the difference seed by seed.
"""

import argparse
import json
import subprocess

import numpy as np
import yaml
from scipy import stats
from sklearn.metrics import f1_score

from skewtune.artifacts import parse_test_predictions
from skewtune.config.effective import effective_params
from skewtune.config.load import validate_params
from skewtune.core.errors import SkewtuneError
from skewtune.core.paths import DECISION, TEST_METRICS, TEST_PREDICTIONS_CSV
from skewtune.core.stage import run_stage
from skewtune.decision.scores import Score, score_labels
from skewtune.decision.tuning import guard_refusals
from skewtune.evaluation.compare import align_runs, comparison_markdown, paired_comparison

PARAMS_FILE = "params.yaml"


def _git(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SkewtuneError("git is not installed; compare reads revisions with git") from None


def resolve(rev: str) -> str:
    """A git object name for `rev`: itself if git knows it, else the experiment ref of that name."""
    if _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode == 0:
        return rev
    listing = _git("for-each-ref", "--format=%(refname)", "refs/exps")
    if listing.returncode != 0:
        raise SkewtuneError(f"git: {listing.stderr.strip()}; run compare inside the project's git repository")
    refs = [r for r in listing.stdout.split() if r.rsplit("/", 1)[-1] == rev]
    if len(refs) == 1:
        return refs[0]
    if refs:
        raise SkewtuneError(f"{rev!r} names several experiments ({', '.join(refs)}); pass one of these refs instead")
    known = sorted({r.rsplit("/", 1)[-1] for r in listing.stdout.split()} - {"stash"})
    raise SkewtuneError(
        f"{rev!r} is neither a git revision nor a DVC experiment"
        + (f" (experiments: {', '.join(known)})" if known else " (no experiments under refs/exps)")
        + "; use a commit, branch, tag, experiment name or 'workspace'"
    )


def read_file(rev: str, path: str, producer: str) -> str:
    """The text of `path` at `rev` ('workspace': on disk)."""
    if rev == "workspace":
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            raise SkewtuneError(
                f"workspace: {path} not found; run the {producer} stage (dvc repro {producer})"
            ) from None
    shown = _git("show", f"{resolve(rev)}:{path}")
    if shown.returncode != 0:
        raise SkewtuneError(
            f"{rev}: has no {path} ({shown.stderr.strip()}); was {producer} run and its outputs committed there?"
        )
    return shown.stdout


def flat(tree: dict, prefix: str = "") -> dict:
    """{dotted key: value} of a nested mapping (params.yaml)."""
    out = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing(params: list[dict]) -> list[str]:
    """The keys whose values are not the same in all of `params`, in the order of the first."""
    keys = list(dict.fromkeys(key for p in params for key in p))
    return [key for key in keys if len({json.dumps(p.get(key), sort_keys=True) for p in params}) > 1]


def _value(v) -> str:
    return "—" if v is None else f"`{json.dumps(v) if not isinstance(v, str) else v}`"


RULE_COLUMNS = {"chosen": "predicted", "argmax": "predicted_argmax", "model": "predicted_model"}
RULE_WORDS = {
    "chosen": "the decision each run chose on val",
    "argmax": "argmax of what each decision decides on",
    "model": "the models alone: argmax, no blend",
}


def read_decision_at(rev: str) -> dict | None:
    """reports/threshold/decision.json at `rev`, or None where that revision has none (or an unreadable one)."""
    try:
        decision = json.loads(read_file(rev, DECISION, "tune_threshold"))
    except (SkewtuneError, json.JSONDecodeError):
        return None
    return decision if isinstance(decision, dict) else None


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
    tables = [parse_test_predictions(read_file(rev, TEST_PREDICTIONS_CSV, "evaluate"), rev) for rev in (rev_a, rev_b)]
    y, pred_a, pred_b, labels = align_runs(*tables, rev_a, rev_b, RULE_COLUMNS[rule])
    result = paired_comparison(y, pred_a, pred_b, len(labels), resamples=resamples, seed=seed, confidence=confidence)
    decisions = [read_decision_at(rev) for rev in (rev_a, rev_b)]
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
    params = [flat(yaml.safe_load(read_file(rev, PARAMS_FILE, "check_params"))) for rev in (rev_a, rev_b)]
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


def experiment_runs(shown: list) -> list[dict]:
    """Runs of `dvc exp show --json` with a test macro-F1: {name, timestamp, params (flat), effective (effective_params),
    test, val}. The baseline commit counts as a run; the workspace does not (it is the baseline or an unfinished change)."""
    runs = []

    def add(entry: dict, name: str) -> None:
        data = entry.get("data") or {}
        metrics = ((data.get("metrics") or {}).get(TEST_METRICS) or {}).get("data") or {}
        params = ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data")
        if isinstance(metrics.get("f1_macro"), (int, float)) and params is not None and not entry.get("error"):
            runs.append(
                {
                    "name": name,
                    "timestamp": data.get("timestamp") or "",
                    "params": flat(params),
                    "effective": effective_params(validate_params(params, f"experiment {name}: {PARAMS_FILE}")),
                    "test": float(metrics["f1_macro"]),
                    "val": metrics.get("val_f1_macro"),
                }
            )

    for commit in shown:
        if commit.get("rev") == "workspace":
            continue
        add(commit, commit.get("name") or str(commit.get("rev"))[:7])
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                add(rev, rev.get("name") or experiment.get("name") or str(rev.get("rev"))[:7])
    return runs


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "revs",
        nargs="*",
        metavar="REV",
        help="two runs: A (baseline) and B (candidate): a git revision, a DVC experiment name, or 'workspace'",
    )
    parser.add_argument(
        "--seeds",
        action="store_true",
        help="instead of two runs: group this commit's experiments by their effective configuration minus the seed keys",
    )
    parser.add_argument(
        "--rule",
        choices=tuple(RULE_COLUMNS),
        default="chosen",
        help="predictions to compare: those of the decision each run chose on val (default), argmax of what it decides "
        "on, or the model alone (argmax, no blend)",
    )
    parser.add_argument(
        "--resamples", type=int, default=10_000, help="paired bootstrap resamples of the test rows (default: 10000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap (default: 0)")
    parser.add_argument("--confidence", type=float, default=0.95, help="level of the intervals (default: 0.95)")
    args = parser.parse_args()
    if args.resamples < 100 or not 0.5 < args.confidence < 1:
        parser.error("--resamples must be at least 100 and --confidence within (0.5, 1)")
    if args.seeds:
        if args.revs:
            parser.error("--seeds reads the experiments of the current commit; give no revisions with it")
        shown = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=False)
        if shown.returncode != 0:
            raise SkewtuneError(f"dvc exp show failed: {shown.stderr.strip()[:300]}")
        print(seed_groups(experiment_runs(json.loads(shown.stdout or "[]")), args.confidence), end="")
        return
    if len(args.revs) != 2:
        parser.error("give two revisions (A B), or --seeds")
    print(two_runs(*args.revs, args.rule, resamples=args.resamples, seed=args.seed, confidence=args.confidence), end="")


if __name__ == "__main__":
    run_stage("compare", main)
