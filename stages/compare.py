"""Compare test macro-F1 of two git revisions or DVC experiments: `python -m stages.compare REV_A REV_B`.

Prints Markdown for a pull-request comment. A revision is "workspace" (the file on disk), anything
`git rev-parse` knows, or a DVC experiment name (the last component of a ref under refs/exps).
"""

import argparse
import subprocess

import pandas as pd

from skewtune.artifacts import TEST_PREDICTIONS_CSV, parse_test_predictions
from skewtune.cli import run_stage
from skewtune.errors import SkewtuneError
from skewtune.metrics import align_runs, comparison_markdown, paired_comparison


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


def read_revision(rev: str) -> pd.DataFrame:
    """metrics/test_predictions.csv at `rev`, every value a string."""
    if rev == "workspace":
        try:
            with open(TEST_PREDICTIONS_CSV, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            raise SkewtuneError(f"workspace: {TEST_PREDICTIONS_CSV} not found; run the evaluate stage (dvc repro evaluate)") from None
    else:
        shown = _git("show", f"{resolve(rev)}:{TEST_PREDICTIONS_CSV}")
        if shown.returncode != 0:
            raise SkewtuneError(f"{rev}: has no {TEST_PREDICTIONS_CSV} ({shown.stderr.strip()}); was evaluate run and its metrics committed there?")
        text = shown.stdout
    return parse_test_predictions(text, rev)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.compare", description=__doc__.splitlines()[0])
    parser.add_argument("rev_a", help="baseline: a git revision, a DVC experiment name, or 'workspace'")
    parser.add_argument("rev_b", help="candidate, compared with rev_a")
    parser.add_argument("--rule", choices=("tuned", "argmax"), default="tuned", help="decision rule of the predictions (default: tuned)")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples and permutations (default: 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args()
    if args.resamples < 100 or not 0.5 < args.confidence < 1:
        parser.error("--resamples must be at least 100 and --confidence within (0.5, 1)")
    column = "predicted" if args.rule == "tuned" else "predicted_argmax"
    y, pred_a, pred_b, labels = align_runs(read_revision(args.rev_a), read_revision(args.rev_b), args.rev_a, args.rev_b, column)
    result = paired_comparison(y, pred_a, pred_b, len(labels), resamples=args.resamples, seed=args.seed, confidence=args.confidence)
    print(comparison_markdown(result, args.rev_a, args.rev_b, args.rule))


if __name__ == "__main__":
    run_stage("compare", main)
