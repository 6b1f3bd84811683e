"""The linear baseline fitted beside the transformer: TF-IDF of word 1-2-grams and char_wb 2-5-grams,
LogisticRegression(class_weight="balanced") (scikit-learn).

It answers "did fine-tuning pay off here?" on every run, and the decision stage may blend its
probabilities in. Its cost is bounded for large data: features are sparse, an n-gram must occur in
`min_df` texts, each vectorizer keeps at most `max_features` n-grams, and it is fitted on a stratified
sample of at most `max_rows` train rows. Sentence pairs (a `text_pair` column) get the same features
for each of the two texts, side by side (each text its own vocabulary), so the model sees both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from skewtune.errors import SkewtuneError

# At most this many iterations of lbfgs: enough for TF-IDF features (it usually converges in < 200).
MAX_ITER = 1000
SAMPLE_SEED = 0


class BaselineNotFitted(SkewtuneError):
    """The training rows cannot fit the baseline (a class without two rows, no n-gram frequent enough);
    the pipeline goes on without it."""


@dataclass(frozen=True)
class FitReport:
    train_rows: int
    fit_rows: int
    features: int


def text_columns(frame: pd.DataFrame) -> list[str]:
    return ["text", "text_pair"] if "text_pair" in frame.columns else ["text"]


def build_baseline(columns: list[str], *, min_df: int, max_features: int):
    """The unfitted pipeline: per text column a word and a char_wb TF-IDF, then a balanced logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    def vectorizer(analyzer: str, ngrams: tuple[int, int]) -> TfidfVectorizer:
        # float32 halves the memory of the feature matrix; sublinear tf damps repeated n-grams in long texts.
        return TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, min_df=min_df, max_features=max_features,
                               sublinear_tf=True, dtype=np.float32)

    features = ColumnTransformer(
        [(f"{column}_{name}", vectorizer(analyzer, ngrams), column)
         for column in columns for name, analyzer, ngrams in (("word", "word", (1, 2)), ("char", "char_wb", (2, 5)))]
    )
    return make_pipeline(features, LogisticRegression(class_weight="balanced", max_iter=MAX_ITER))


def _sample(train: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    """A stratified sample of at most `max_rows` rows (every class keeps its share, and at least 2 rows)."""
    if len(train) <= max_rows:
        return train
    from sklearn.model_selection import train_test_split

    sample, _ = train_test_split(train, train_size=max_rows, stratify=train["label_id"], random_state=SAMPLE_SEED)
    return sample


def fit_baseline(train: pd.DataFrame, labels: list[str], *, min_df: int, max_features: int, max_rows: int):
    """The fitted pipeline and a FitReport; BaselineNotFitted when the training rows cannot fit it."""
    counts = np.bincount(train["label_id"], minlength=len(labels))
    thin = [f"{label!r} ({n})" for label, n in zip(labels, counts) if n < 2]
    if thin:
        raise BaselineNotFitted(f"the training split has fewer than 2 rows of class(es) {', '.join(thin)}, too few to fit the baseline")
    rows = _sample(train, max_rows)
    columns = text_columns(rows)
    model = build_baseline(columns, min_df=min(min_df, len(rows)), max_features=max_features)
    try:
        model.fit(rows[columns], rows["label_id"].to_numpy())
    except ValueError as exc:  # the vectorizers: no n-gram in min_df texts ("empty vocabulary")
        raise BaselineNotFitted(f"the baseline cannot be fitted on the {len(rows)} training rows: {exc}; lower baseline.min_df") from None
    return model, FitReport(len(train), len(rows), int(model[0].transform(rows[columns].head(1)).shape[1]))


def baseline_proba(model, frame: pd.DataFrame, n_classes: int) -> np.ndarray:
    """Class probabilities (n, n_classes) in labels.json order for rows with text[, text_pair]."""
    columns = text_columns(frame)
    expected = model[0].feature_names_in_.tolist()
    if columns != expected:
        raise SkewtuneError(f"the baseline was fitted on the column(s) {expected}, but the rows have {columns}; re-run the baseline stage")
    probs = np.zeros((len(frame), n_classes))
    probs[:, model.classes_] = model.predict_proba(frame[columns])
    return probs


def save_baseline(model, path) -> None:
    import joblib

    joblib.dump(model, path, compress=3)


def load_baseline(path):
    """A fitted baseline written by save_baseline, or None where the stage fitted none (a pickle: load only files of
    your own pipeline)."""
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # unpickling raises many types for a damaged file
        raise SkewtuneError(f"{path}: not a readable baseline ({type(exc).__name__}: {exc}); re-run the baseline stage") from None
