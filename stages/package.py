"""Stage package: models/classifier, the self-contained classifier a user applies: the trained model and
tokenizer, its labels and preprocessing (skewtune.json), the decision rule chosen on val (decision.json),
the TF-IDF baseline when the rule blends it in (baseline.safetensors), a model card (README.md) and manifest.json, the
SHA-256 of each of those files, which `skewtune predict` verifies. Copying that directory is all `skewtune predict` needs."""

import shutil
from dataclasses import replace

from skewtune.artifacts import read_decision, read_json, read_labels
from skewtune.config.effective import effective_config
from skewtune.config.load import load_params
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import Outputs, json_text
from skewtune.core.paths import (
    BASELINE_FILE,
    BASELINE_MODEL,
    CARD_FILE,
    CLASSIFIER,
    DECISION,
    INGEST_REPORT,
    MODEL,
    RULE_FILE,
    SPLIT_REPORT,
    TEST_REPORT,
)
from skewtune.core.stage import run_stage
from skewtune.evaluation.card import model_card
from skewtune.model_dir import read_model_meta, write_manifest, write_model_meta
from skewtune.models.modality import for_meta

# The params keys the model card reports (each in STAGE_KEYS["package"]); those the chosen options do not read are left out.
CARD_PARAMS = (
    "model.name",
    "model.max_length",
    "train.method",
    "train.epochs",
    "train.lr",
    "train.batch_size",
    "train.seed",
    "loss.name",
    "resample.strategy",
    "threshold.strategy",
    "threshold.metric",
    "decision.blend",
    "calibration.method",
)


def main() -> None:
    p = load_params()
    labels = read_labels()
    rule = read_decision(DECISION, labels)
    meta = read_model_meta(MODEL)
    if list(meta.labels) != labels:
        raise SkewtuneError(
            f"{MODEL} was trained on the labels {list(meta.labels)}, but labels.json lists {labels}; re-run the train stage"
        )
    meta = replace(meta, preprocessing=for_meta(meta).preprocessing(p.data))
    card = model_card(
        rule=rule,
        decision=read_json(DECISION, "tune_threshold"),
        meta=meta,
        params=effective_config(p, CARD_PARAMS),
        ingest=read_json(INGEST_REPORT, "ingest"),
        split=read_json(SPLIT_REPORT, "split"),
        test=read_json(TEST_REPORT, "evaluate"),
    )
    with Outputs() as out:
        target = out.path(CLASSIFIER, directory=True)
        shutil.copytree(MODEL, target, dirs_exist_ok=True)
        write_model_meta(target, meta)
        (target / RULE_FILE).write_text(json_text(rule.to_dict()), encoding="utf-8")
        if rule.blend:
            shutil.copy2(BASELINE_MODEL, target / BASELINE_FILE)
        (target / CARD_FILE).write_text(card, encoding="utf-8")
        write_manifest(target)  # last: the SHA-256 of every file above, verified by `skewtune predict`
    print(f"package: {CLASSIFIER} (decision rule: {rule.describe()})")


if __name__ == "__main__":
    run_stage("package", main)
