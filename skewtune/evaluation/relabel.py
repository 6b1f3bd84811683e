"""The relabelling queue (reports/errors.csv): rows worth a human look, never from test.

Relabelling test rows that the model got wrong would bias test towards the model, so the queue takes
the val rows that the decision rule gets wrong (most confident mistakes first: likely label errors),
the suspected label errors of train + val that the label_issues stage found (most suspect first), and,
when the score stage scored new data, its least confident rows (uncertainty sampling: the rows whose
labels would teach the next model most). Margins are DecisionRule.margin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from skewtune.artifacts import Predictions, spreadsheet_safe
from skewtune.core.columns import prob_columns
from skewtune.decision.rule import DecisionRule

SOURCE_VAL = "val"
SOURCE_SCORED = "score"
SOURCE_LABEL_ISSUE = "label_issue"


def val_mistakes(texts: pd.DataFrame, val: Predictions, rule: DecisionRule, max_rows: int) -> pd.DataFrame:
    """Misclassified val rows, largest margin (most confident) first; `texts` holds id, text[, text_pair] aligned with `val`."""
    predicted = rule.predict(val.probs)
    margin = rule.margin(val.probs)
    names = np.asarray(rule.labels, dtype=object)
    table = texts.reset_index(drop=True).assign(
        label=names[val.y],
        predicted=names[predicted],
        margin=margin,
        **dict(zip(prob_columns(rule.labels), val.probs.T)),
    )
    wrong = np.flatnonzero(predicted != val.y)
    order = wrong[np.argsort(-margin[wrong], kind="stable")]
    return table.iloc[order[:max_rows]].assign(source=SOURCE_VAL)


def uncertain_scored(scored: pd.DataFrame, inputs: dict[str, str], labels: list[str], max_rows: int) -> pd.DataFrame:
    """Scored rows with a prediction, smallest margin (least confident) first; id = the 1-based row of the scored file.
    `inputs` maps the queue's input columns (text[, text_pair]; image) to the scored file's."""
    has_prediction = scored["predicted"].fillna("").astype(str) != ""
    table = pd.DataFrame(
        {
            "id": (np.arange(len(scored)) + 1).astype(str),
            **{name: scored[column] for name, column in inputs.items()},
            "label": "",
            "predicted": scored["predicted"],
            "margin": scored["margin"],
            **{column: scored[column] for column in prob_columns(labels)},
        }
    )[has_prediction.to_numpy()]
    return table.sort_values("margin", kind="stable").head(max_rows).assign(source=SOURCE_SCORED)


def suspected_errors(issues: pd.DataFrame, texts: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    """The first `max_rows` suspected label errors (reports/label_issues.csv, most suspect first): id, their inputs,
    label (the given one), predicted (the suggested one) and label_quality (the out-of-fold probability of the given
    label). `texts` holds id and the inputs of at least those rows."""
    top = issues.head(max_rows)
    return (
        top[["id"]]
        .merge(texts, on="id", how="left", validate="one_to_one")
        .assign(
            label=top["label"].to_numpy(),
            predicted=top["suggested"].to_numpy(),
            label_quality=top["score"].to_numpy(),
            source=SOURCE_LABEL_ISSUE,
        )
    )


def relabel_queue(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The parts one after the other, `source` first, cells that a spreadsheet would run as formulas escaped."""
    queue = pd.concat(parts, ignore_index=True)
    return spreadsheet_safe(queue[["source", *(c for c in queue.columns if c != "source")]])
