"""The plot files of tune_threshold (dvc.yaml `plots:`): the binary score-vs-threshold curve and its markers, the
multiclass offset search."""

from __future__ import annotations

import numpy as np
import pandas as pd

from skewtune.decision.scores import share_text
from skewtune.decision.tuning import rows_name

# Columns of the three plot files of tune_threshold (dvc.yaml `plots:`). Each is written every time, without
# rows where it does not apply (a binary task has no offset search), so that `dvc plots show` draws nothing
# there instead of failing on a missing field.
VAL_CURVE_COLUMNS = ["threshold", "score", "precision", "recall", "series"]
OFFSET_SEARCH_COLUMNS = ["step", "sweep", "class", "offset", "score", "series"]
MARKER_COLUMNS = ["threshold", "score", "series"]


def plot_tables(decision: dict, curve: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(val curve, offset search, markers) of a decision and the curve tune_decision returned: the binary
    score-vs-threshold curve, or the multiclass coordinate-ascent steps; the markers put the rule applied on
    the binary curve and, apart from it, a tuned threshold that the guard did not keep."""
    metric = f"{rows_name(decision)} {decision['metric']}"
    binary = len(decision["labels"]) == 2
    empty = {
        name: pd.DataFrame(columns=columns)
        for name, columns in (
            ("curve", VAL_CURVE_COLUMNS),
            ("search", OFFSET_SEARCH_COLUMNS),
            ("markers", MARKER_COLUMNS),
        )
    }
    if not binary:
        search = curve.assign(step=np.arange(len(curve)), series=metric)[OFFSET_SEARCH_COLUMNS]
        return empty["curve"], search, empty["markers"]
    applied = decision["threshold"] if decision["threshold"] is not None else 0.5  # binary argmax: p >= 0.5
    markers = [
        {
            "threshold": applied,
            "score": decision["val_score"],
            "series": f"applied: {decision['strategy']} (p >= {applied:.4g})",
        }
    ]
    if decision["tuned_threshold"] is not None and decision["strategy"] == "argmax":
        markers.append(
            {
                "threshold": decision["tuned_threshold"],
                "score": decision["tuned_val_score"],
                "series": f"tuned, not kept: won {share_text(decision['win_rate'])} of resamples out of sample "
                f"(p >= {decision['tuned_threshold']:.4g})",
            }
        )
    return (
        curve.assign(series=metric)[VAL_CURVE_COLUMNS],
        empty["search"],
        pd.DataFrame(markers, columns=MARKER_COLUMNS),
    )
