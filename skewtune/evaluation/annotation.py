"""The relabelling round trip with an annotation tool: the queue (reports/errors.csv) out as a Label Studio import
file and a spreadsheet CSV, the corrections back in as a table of id, text, label (skewtune.data.corrections).

Label Studio's formats (labelstud.io/guide/tasks, /guide/predictions, /guide/export): an import file is a JSON list
of tasks, each with `data` (the fields the labeling config shows as `$name`) and optionally `predictions`, each a
`result` list of regions; a single-choice classification region is {"from_name": <the Choices tag's name>,
"to_name": <the Text tag's name>, "type": "choices", "value": {"choices": [<label>]}}. The JSON export lists the
same tasks with `annotations`, whose `result` has the same shape; the JSON-MIN export flattens each task to its data
fields plus one field per control tag (here `label`).

Only rows of the dataset can be corrected by id: val mistakes and suspected label errors. The queue's scored rows
come from another file (data.score_path); labelling them means adding them to the data, so export leaves them out
and counts them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pandas as pd

from skewtune.artifacts import spreadsheet_safe
from skewtune.core.columns import TEXT_COLUMNS
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import counted

CONTROL = "label"  # the Choices tag's name: from_name in results, the label's field in JSON-MIN
ROW_ID = "row_id"  # the task data field of the dataset's row id (a task's own `id` is Label Studio's)
MODEL_VERSION = "skewtune"
CORRECTED = "corrected"  # the CSV's column to fill


@dataclass(frozen=True)
class Export:
    tasks: list[dict]
    config: str
    table: pd.DataFrame
    left_out: dict[str, int]  # rows of the queue not exported, by why


def _inputs(dataset: pd.DataFrame) -> list[str]:
    return [column for column in TEXT_COLUMNS if column in dataset.columns]


def labeling_config(labels: list[str], inputs: list[str]) -> str:
    """The labeling config XML to paste into the Label Studio project (Settings > Labeling Interface > Code)."""
    texts = "\n".join(f"  <Text name={quoteattr(c)} value={quoteattr('$' + c)}/>" for c in inputs)
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (
        "<View>\n"
        f"{texts}\n"
        '  <Header value="Given label: $given (queued as $source)"/>\n'
        f'  <Choices name="{CONTROL}" toName="text" choice="single" showInline="true" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def export_queue(queue: pd.DataFrame, dataset: pd.DataFrame, labels: list[str]) -> Export:
    """Label Studio tasks (the model's suggestion as a prediction), their labeling config and the spreadsheet table
    (id, source, the inputs, label, suggested, corrected: empty) of the queue's rows that are rows of `dataset`."""
    if "image" in dataset.columns:
        raise SkewtuneError(
            "skewtune relabel export: the data are images; the round trip handles text (relabel the images' files and "
            "list id, image, label in data.corrections by hand)"
        )
    inputs = _inputs(dataset)
    known = queue["id"].isin(dataset["id"])
    repeated = known & queue["id"].duplicated()
    rows = queue[known & ~repeated][["id", "source", "label", "predicted"]].merge(
        dataset[["id", *inputs]], on="id", how="left"
    )
    tasks = [
        {
            "data": {ROW_ID: row.id, **{c: getattr(row, c) for c in inputs}, "given": row.label, "source": row.source},
            "predictions": [
                {
                    "model_version": MODEL_VERSION,
                    "result": [
                        {
                            "from_name": CONTROL,
                            "to_name": "text",
                            "type": "choices",
                            "value": {"choices": [row.predicted]},
                        }
                    ],
                }
            ],
        }
        for row in rows.itertuples(index=False)
    ]
    table = rows[["id", "source", *inputs, "label"]].assign(suggested=rows["predicted"], **{CORRECTED: ""})
    left_out = {"scored rows (not in the dataset)": int((~known).sum()), "repeats of a row": int(repeated.sum())}
    return Export(tasks, labeling_config(labels, inputs), spreadsheet_safe(table), left_out)


def _answer(task: dict) -> str | None:
    """The label chosen in a task of Label Studio's JSON export (the last annotation not cancelled) or JSON-MIN."""
    if "annotations" not in task:
        value = task.get(CONTROL)
        return value if isinstance(value, str) and value else None
    for annotation in reversed(task.get("annotations") or []):
        if annotation.get("was_cancelled"):
            continue
        for region in annotation.get("result") or []:
            if region.get("from_name") == CONTROL and region.get("type") == "choices":
                choices = region.get("value", {}).get("choices") or []
                if choices:
                    return choices[0]
    return None


def _from_label_studio(path: Path) -> tuple[list[tuple[str, str | None, str]], str]:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SkewtuneError(f"{path}: not valid JSON ({exc}); export the project from Label Studio as JSON") from None
    if not isinstance(tasks, list) or not all(isinstance(task, dict) for task in tasks):
        raise SkewtuneError(f"{path}: expected a JSON list of tasks (Label Studio's JSON or JSON-MIN export)")
    answers = []
    for number, task in enumerate(tasks, start=1):
        row_id = (task.get("data") if "data" in task else task).get(ROW_ID)
        if not isinstance(row_id, str):
            raise SkewtuneError(
                f"{path}: task {number} has no data.{ROW_ID}; import into Label Studio the tasks file that "
                "`skewtune relabel export` wrote, then export that project"
            )
        answers.append((row_id, _answer(task), f"task {number}"))
    return answers, "task"


def _from_csv(path: Path) -> tuple[list[tuple[str, str | None, str]], str]:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SkewtuneError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    missing = [c for c in ("id", CORRECTED) if c not in frame.columns]
    if missing:
        raise SkewtuneError(
            f"{path}: no column(s) {', '.join(missing)}; fill the {CORRECTED!r} column of the CSV that "
            "`skewtune relabel export` wrote and keep its id column"
        )
    return [
        (row_id, answer.strip() or None, f"line {number}")
        for number, (row_id, answer) in enumerate(zip(frame["id"], frame[CORRECTED]), start=2)
    ], "row"


def read_answers(path: str | os.PathLike, dataset: pd.DataFrame, labels: list[str]) -> tuple[pd.DataFrame, dict]:
    """The corrections (id, text, label: the dataset's text of the row) that `path` holds, Label Studio's JSON
    (or JSON-MIN) export or the exported CSV with its `corrected` column filled, and counts of what it held."""
    path = Path(path)
    if not path.is_file():
        raise SkewtuneError(f"{path}: not found; give the file Label Studio exported, or the filled CSV")
    readers = {".json": _from_label_studio, ".csv": _from_csv}
    if path.suffix.lower() not in readers:
        raise SkewtuneError(
            f"{path}: expected Label Studio's JSON export (.json) or the CSV of `skewtune relabel export` (.csv)"
        )
    answers, noun = readers[path.suffix.lower()](path)
    texts = dataset.set_index("id")["text"]
    for row_id, label, where in answers:
        if label is not None and label not in labels:
            raise SkewtuneError(
                f"{path}: {where} (id {row_id}) has the label {label!r}, which is not one of {', '.join(labels)}; fix it there"
            )
        if row_id not in texts.index:
            raise SkewtuneError(
                f"{path}: {where} has id {row_id!r}, which is no row of the current dataset: the file was exported "
                "from other data; export the queue again (skewtune relabel export)"
            )
    answered = [(row_id, label) for row_id, label, _ in answers if label is not None]
    corrections = pd.DataFrame(answered, columns=["id", "label"], dtype=str).drop_duplicates("id", keep="last")
    corrections.insert(1, "text", texts.reindex(corrections["id"]).to_numpy())
    given = dataset.set_index("id")["label"].reindex(corrections["id"]).to_numpy()
    counts = {
        "unit": noun,
        "entries": len(answers),
        "corrections": len(corrections),
        "changed": int((given != corrections["label"].to_numpy()).sum()),
        "unanswered": len(answers) - len(answered),
    }
    return corrections.reset_index(drop=True), counts


def answers_line(path: str | os.PathLike, counts: dict) -> str:
    n = counts["corrections"]
    return (
        f"relabel import: {path}: {counted(counts['entries'], counts['unit'])}: {counted(n, 'correction')} ({counts['changed']} change "
        f"the label, {n - counts['changed']} confirm it), {counts['unanswered']} without an answer skipped"
    )
