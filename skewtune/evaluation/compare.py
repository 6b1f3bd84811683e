"""Paired comparison of runs on the same test rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from skewtune.core.errors import SkewtuneError
from skewtune.decision.scores import Score, _resampled_scores, score_labels


@dataclass(frozen=True)
class Comparison:
    score_a: float
    score_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    confidence: float
    resamples: int
    seed: int


def paired_comparison(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    n_classes: int,
    *,
    resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> Comparison:
    """Macro-F1 of B minus A on the same rows, with a paired bootstrap (rows resampled jointly for A and B).

    The CI is the percentile interval of the resampled differences; the two-sided p-value is the
    same bootstrap's, 2 * min(P(diff* <= 0), P(diff* >= 0)) (capped at 1), so p < 1 - confidence
    exactly when the CI leaves out 0 and the verdict never contradicts the interval.
    """
    score = Score("f1_macro")
    a, b = score_labels(y_true, pred_a, n_classes, score), score_labels(y_true, pred_b, n_classes, score)
    boot = _resampled_scores(y_true, [pred_a, pred_b], n_classes, score, resamples, np.random.default_rng(seed))
    diffs = boot[:, 1] - boot[:, 0]
    alpha = 1 - confidence
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
    return Comparison(a, b, b - a, float(low), float(high), float(p), len(y_true), confidence, resamples, seed)


def comparison_markdown(c: Comparison, rev_a: str, rev_b: str, rule: str) -> str:
    """A pull-request comment: both scores, the difference with its CI and p-value, and a verdict."""
    pct = f"{c.confidence:.0%}"
    if c.ci_low > 0 or c.ci_high < 0:
        verdict = f"B is {'better' if c.diff > 0 else 'worse'} than A at {pct} (p = {c.p_value:.3g})."
    else:
        verdict = f"Not distinguishable from noise at {pct} (p = {c.p_value:.3g})."
    return "\n".join(
        [
            f"### skewtune: test macro-F1, `{rev_a}` vs `{rev_b}` ({rule})",
            "",
            "| | revision | macro-F1 |",
            "|---|---|---:|",
            f"| A | `{rev_a}` | {c.score_a:.4f} |",
            f"| B | `{rev_b}` | {c.score_b:.4f} |",
            f"| **B − A** | | **{c.diff:+.4f}** ({pct} CI {c.ci_low:+.4f} to {c.ci_high:+.4f}) |",
            "",
            f"n_test = {c.n}. Paired bootstrap over test rows ({c.resamples:,} resamples, seed {c.seed}): "
            f"percentile CI; two-sided p = 2·min(P(Δ* ≤ 0), P(Δ* ≥ 0)).",
            "",
            f"**Verdict:** {verdict}",
            "",
        ]
    )


def align_runs(
    a: pd.DataFrame, b: pd.DataFrame, name_a: str, name_b: str, column: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Pair two reports/eval/test_predictions.csv tables by id: (y_true, pred_a, pred_b, labels).

    Both must hold the same ids with the same true labels. Labels are those seen in either table,
    sorted (labels.json order); a label with no test row that neither run predicts is not seen, and
    would only add a 0 to every macro-F1 of reports/eval/test.json, so scores may differ there.
    """
    for name, table in ((name_a, a), (name_b, b)):
        missing = [c for c in ("id", "actual", column) if c not in table.columns]
        if missing:
            raise SkewtuneError(
                f"{name}: reports/eval/test_predictions.csv lacks column(s) {missing}; re-run the evaluate stage there"
            )
        if table["id"].duplicated().any():
            raise SkewtuneError(
                f"{name}: reports/eval/test_predictions.csv repeats id {table['id'][table['id'].duplicated()].iloc[0]!r}"
            )
    a, b = (t.assign(id=t["id"].astype(str)).set_index("id") for t in (a, b))
    only_a, only_b = a.index.difference(b.index), b.index.difference(a.index)
    if len(only_a) or len(only_b):
        example = only_a[0] if len(only_a) else only_b[0]
        raise SkewtuneError(
            f"{name_a} and {name_b} were evaluated on different test sets: {len(only_a)} id(s) only in {name_a}, "
            f"{len(only_b)} only in {name_b} (e.g. {example!r}); compare runs that share the test split"
        )
    b = b.loc[a.index]
    differ = a["actual"].astype(str).to_numpy() != b["actual"].astype(str).to_numpy()
    if differ.any():
        raise SkewtuneError(
            f"{name_a} and {name_b} were evaluated on different test sets: {int(differ.sum())} id(s) have different true labels "
            f"(e.g. id {a.index[differ][0]!r}: {a['actual'][differ].iloc[0]!r} vs {b['actual'][differ].iloc[0]!r})"
        )
    columns = [a["actual"], a[column], b[column]]
    labels = sorted(set().union(*(c.astype(str) for c in columns)))
    index = {label: k for k, label in enumerate(labels)}
    y, pa, pb = (c.astype(str).map(index).to_numpy(dtype=np.int64) for c in columns)
    return y, pa, pb, labels
