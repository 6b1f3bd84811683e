"""Where each inter-stage file lives: the one list of paths in the repository that stages read and write."""

from __future__ import annotations

PIPELINE_FILE = "dvc.yaml"
EFFECTIVE_DIR = (
    "reports/effective"  # <stage>.json: the values of the params keys that take effect in the stage (check_params)
)
RAW_DIR = "data/raw"
DATASET = "data/interim/dataset.parquet"  # id, text, [text_pair], label, subset; images: id, image, label, subset, hash, image_bytes
LABELS = "data/interim/labels.json"  # {"labels": [...]}, index = class id
# id, place: where each kept row of a table starts in its file ("line 12", "row 3", "record 4"; Table.place), for the
# people who fix labels in that file; images: write_no_table's table (a row is its file: the image column says where)
PLACES = "data/interim/places.parquet"
CORRECTIONS = "data/raw/corrections.csv"  # data.corrections' default: id, text, label (skewtune.data.corrections)
INGEST_REPORT = "reports/ingest.json"  # rows read, kept and dropped (with examples), cleaning, class counts
SPLIT_DIR = "data/split"  # <name>.parquet: the dataset's columns without subset
SPLIT_REPORT = "reports/split.json"
RESAMPLED = "data/resampled/train.parquet"
RESAMPLE_REPORT = "reports/resample.json"
MODEL = "models/model"  # save_pretrained (safetensors), tokenizer, skewtune.json
CHECKPOINTS = "models/checkpoints"  # scratch for resuming; removed after a successful run
CANDIDATES = "models/candidates"  # scratch of train.method auto: each candidate's model and reports; removed after it
TRAIN_REPORTS = "reports/train"
METHOD_FILE = "method.json"  # in TRAIN_REPORTS under train.method auto: the method chosen and why
PREDICTIONS_DIR = "data/predictions"  # <split>.parquet: id, label, prob:<label> per class

# Cross-fitting (train.cv): dvc.yaml's train_fold stage runs once per fold 0 .. MAX_FOLDS - 1 (its foreach list), so
# train.cv has at most MAX_FOLDS folds. Fold f writes the out-of-fold probabilities of its held-out train + val rows
# (predict's columns; a table without columns when fold f is not trained) and its training report directory.
MAX_FOLDS = 5
FOLD_PREDICTIONS_DIR = "data/predictions/folds"
FOLD_REPORTS = "reports/train_fold"  # <f>/: fold.json (what the fold trained on, or why not) and its training curves
FOLD_CHECKPOINTS = "models/checkpoints_fold"  # <f>/: scratch of a fold's training, removed after it

# The linear baseline: its predictions (baseline/<split>.parquet, as predict's), its fitted model and a report;
# when baseline.enabled is false or it could not be fitted, the predictions are tables without columns (write_no_table)
# and the model file holds no tensors.
BASELINE_PREDICTIONS_DIR = "data/predictions/baseline"
BASELINE_MODEL = (
    "models/baseline.safetensors"  # the fitted baseline (skewtune.models.baseline.save_baseline: no pickle)
)
# oof.parquet: under train.cv, the baseline's out-of-fold probabilities of train + val on the fold models' folds
BASELINE_REPORT = "reports/baseline.json"  # status (fitted | disabled | skipped), why, rows and features
DECISION = "reports/threshold/decision.json"  # the rule (DecisionRule.to_dict keys) and how it was chosen
VAL_CURVE = "reports/threshold/val_curve.csv"  # binary: val score by threshold (skewtune.decision.plots.plot_tables)
OFFSET_SEARCH = "reports/threshold/offset_search.csv"  # multiclass: val score by step of the offset search
THRESHOLD_MARKERS = "reports/threshold/markers.csv"  # binary: the applied threshold and a tuned one not kept
TEST_METRICS = "metrics/test.json"  # the review metrics: the only metrics file (`dvc exp show`, `dvc metrics diff`)
TEST_REPORT = "reports/eval/test.json"  # every test metric, per class, confusion matrices

# id, actual, predicted (the chosen rule), predicted_argmax (argmax of what the rule decides on), predicted_model (the
# model alone: argmax of its own probabilities, no blend), rule
TEST_PREDICTIONS_CSV = "reports/eval/test_predictions.csv"
PR_CURVE = "reports/eval/pr_curve.csv"
ROC_CURVE = "reports/eval/roc_curve.csv"
# the reliability diagram of test: confidence, frequency, rows, series (skewtune.decision.calibration.reliability_table)
RELIABILITY = "reports/eval/reliability.csv"
CLASSIFIER = "models/classifier"  # the self-contained model a user applies (`skewtune predict`)
SCORED = "data/predictions/score.parquet"  # the score stage: scored data.score_path, or write_no_table's table
ERRORS = "reports/errors.csv"  # the relabelling queue
LABEL_ISSUES = "reports/label_issues.csv"  # suspected label errors of train + val, most suspect first
LABEL_ISSUES_REPORT = "reports/label_issues.json"  # rows checked, folds, suspects per class, source (or why none)
RELABEL_EXPORT_DIR = "reports/relabel"  # `skewtune relabel export`'s default folder (not a pipeline output)

# Files of a model directory beside the transformers ones.
# {"labels", "max_length", "text_pair"}; images {"labels", "modality": "image"} (+ "preprocessing" in a classifier)
META_FILE = "skewtune.json"
HEAD_FILE = "head.safetensors"  # a sentence-embedding model's linear head: weight [classes, dim] and bias [classes]
RULE_FILE = "decision.json"  # DecisionRule.to_dict() (classifier only)
BASELINE_FILE = "baseline.safetensors"  # the baseline the rule blends in (classifier only, when its blend is above 0)
CARD_FILE = "README.md"  # the Hugging Face model card (classifier only)
MANIFEST_FILE = "manifest.json"  # {"sha256": {path: digest}} of every other file (classifier only; write_manifest)


def effective_path(stage: str) -> str:
    return f"{EFFECTIVE_DIR}/{stage}.json"


def split_path(name: str) -> str:
    return f"{SPLIT_DIR}/{name}.parquet"


def predictions_path(split: str) -> str:
    return f"{PREDICTIONS_DIR}/{split}.parquet"


def baseline_predictions_path(split: str) -> str:
    return f"{BASELINE_PREDICTIONS_DIR}/{split}.parquet"


def fold_predictions_path(fold: int) -> str:
    return f"{FOLD_PREDICTIONS_DIR}/{fold}.parquet"


def fold_reports_dir(fold: int) -> str:
    return f"{FOLD_REPORTS}/{fold}"


def fold_checkpoints_dir(fold: int) -> str:
    return f"{FOLD_CHECKPOINTS}/{fold}"


PARAMS_FILE = "params.yaml"
