"""The linear baseline fitted beside the transformer: TF-IDF of word 1-2-grams and char_wb 2-5-grams,
LogisticRegression(class_weight="balanced") (scikit-learn).

It answers "did fine-tuning pay off here?" on every run, and the decision stage may blend its
probabilities in. Its cost is bounded for large data: features are sparse, an n-gram must occur in
`min_df` texts, each vectorizer keeps at most `max_features` n-grams, and it is fitted on a stratified
sample of at most `max_rows` train rows. Sentence pairs (a `text_pair` column) get the same features
for each of the two texts, side by side (each text its own vocabulary), so the model sees both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from skewtune.core.errors import SkewtuneError

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


# The TF-IDF vectorizers of each text column: (analyzer, n-gram range).
ANALYZERS = (("word", (1, 2)), ("char_wb", (2, 5)))


def _vectorizer(analyzer: str, ngrams: Sequence[int], *, min_df: int = 1, max_features: int | None = None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    # float32 halves the memory of the feature matrix; sublinear tf damps repeated n-grams in long texts.
    return TfidfVectorizer(
        analyzer=analyzer,
        ngram_range=tuple(ngrams),
        min_df=min_df,
        max_features=max_features,
        sublinear_tf=True,
        dtype=np.float32,
    )


@dataclass(frozen=True)
class Baseline:
    """The fitted baseline: per text column a word and a char_wb TF-IDF (`vectorizers`: (column, analyzer, n-gram range,
    fitted TfidfVectorizer)), their features side by side, and a balanced logistic regression on them."""

    vectorizers: tuple[tuple[str, str, tuple[int, int], Any], ...]
    classifier: Any  # LogisticRegression

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(column for column, *_ in self.vectorizers))

    @property
    def features(self) -> int:
        return sum(len(vectorizer.vocabulary_) for *_, vectorizer in self.vectorizers)

    def transform(self, frame: pd.DataFrame):
        """The CSR feature matrix of `frame`'s text columns."""
        from scipy import sparse

        return sparse.hstack(
            [vectorizer.transform(frame[column]) for column, _, _, vectorizer in self.vectorizers]
        ).tocsr()


def _sample(train: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    """A stratified sample of at most `max_rows` rows (every class keeps its share, and at least 2 rows)."""
    if len(train) <= max_rows:
        return train
    from sklearn.model_selection import train_test_split

    sample, _ = train_test_split(train, train_size=max_rows, stratify=train["label_id"], random_state=SAMPLE_SEED)
    return sample


def fit_baseline(
    train: pd.DataFrame, labels: list[str], *, min_df: int, max_features: int, max_rows: int
) -> tuple[Baseline, FitReport]:
    """The fitted Baseline and a FitReport; BaselineNotFitted when the training rows cannot fit it."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    counts = np.bincount(train["label_id"], minlength=len(labels))
    thin = [f"{label!r} ({n})" for label, n in zip(labels, counts) if n < 2]
    if thin:
        raise BaselineNotFitted(
            f"the training split has fewer than 2 rows of class(es) {', '.join(thin)}, too few to fit the baseline"
        )
    rows = _sample(train, max_rows)
    min_df = min(min_df, len(rows))
    vectorizers = tuple(
        (column, analyzer, ngrams, _vectorizer(analyzer, ngrams, min_df=min_df, max_features=max_features))
        for column in text_columns(rows)
        for analyzer, ngrams in ANALYZERS
    )
    try:
        features = sparse.hstack(
            [vectorizer.fit_transform(rows[column]) for column, _, _, vectorizer in vectorizers]
        ).tocsr()
    except ValueError as exc:  # the vectorizers: no n-gram in min_df texts ("empty vocabulary")
        raise BaselineNotFitted(
            f"the baseline cannot be fitted on the {len(rows)} training rows: {exc}; lower baseline.min_df"
        ) from None
    classifier = LogisticRegression(class_weight="balanced", max_iter=MAX_ITER).fit(
        features, rows["label_id"].to_numpy()
    )
    baseline = Baseline(vectorizers, classifier)
    return baseline, FitReport(len(train), len(rows), baseline.features)


def baseline_proba(baseline: Baseline, frame: pd.DataFrame, n_classes: int) -> np.ndarray:
    """Class probabilities (n, n_classes) in labels.json order for rows with text[, text_pair]."""
    columns = text_columns(frame)
    if columns != baseline.columns:
        raise SkewtuneError(
            f"the baseline was fitted on the column(s) {baseline.columns}, but the rows have {columns}; re-run the baseline stage"
        )
    probs = np.zeros((len(frame), n_classes))
    probs[:, baseline.classifier.classes_] = baseline.classifier.predict_proba(baseline.transform(frame))
    return probs


# The stored baseline (safetensors, no pickle: loading runs no code): a JSON spec (as UTF-8 bytes) of the columns,
# analyzers, n-gram ranges and vocabularies (terms in feature order), and the arrays of the fitted numbers. A file
# without tensors stands for no baseline (disabled or not fitted).
_SPEC = "spec"
_FORMAT = 1


def save_baseline(baseline: Baseline | None, path: str | os.PathLike) -> None:
    """Write `baseline` (None: none fitted) to `path` as safetensors."""
    from safetensors.numpy import save_file

    tensors = {}
    if baseline is not None:
        spec = {
            "format": _FORMAT,
            "vectorizers": [
                {
                    "column": column,
                    "analyzer": analyzer,
                    "ngram_range": list(ngrams),
                    "vocabulary": sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__),
                }
                for column, analyzer, ngrams, vectorizer in baseline.vectorizers
            ],
        }
        tensors = {
            _SPEC: np.frombuffer(json.dumps(spec, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
            **{f"idf.{i}": vectorizer.idf_ for i, (*_, vectorizer) in enumerate(baseline.vectorizers)},
            "coef": baseline.classifier.coef_,
            "intercept": baseline.classifier.intercept_,
            "classes": baseline.classifier.classes_,
        }
    # C order: safetensors writes an array's buffer as it lies, and the fitted coefficients are in Fortran order.
    save_file({name: np.ascontiguousarray(array) for name, array in tensors.items()}, str(path))


def load_baseline(path: str | os.PathLike) -> Baseline | None:
    """The Baseline written by save_baseline (None where none was fitted), rebuilt into the fitted scikit-learn objects."""
    from safetensors.numpy import load_file
    from sklearn.linear_model import LogisticRegression

    try:
        tensors = load_file(str(path))
        if not tensors:
            return None
        spec = json.loads(tensors[_SPEC].tobytes().decode("utf-8"))
        if spec.get("format") != _FORMAT:
            raise ValueError(f"format {spec.get('format')!r}, not {_FORMAT}")
        vectorizers = []
        for i, entry in enumerate(spec["vectorizers"]):
            vectorizer = _vectorizer(entry["analyzer"], entry["ngram_range"])
            vectorizer.vocabulary_ = {term: k for k, term in enumerate(entry["vocabulary"])}
            vectorizer.idf_ = tensors[f"idf.{i}"]  # checked against the vocabulary's length
            vectorizers.append((entry["column"], entry["analyzer"], tuple(entry["ngram_range"]), vectorizer))
        classifier = LogisticRegression(class_weight="balanced", max_iter=MAX_ITER)
        classifier.coef_, classifier.intercept_, classifier.classes_ = (
            tensors["coef"],
            tensors["intercept"],
            tensors["classes"],
        )
        classifier.n_features_in_ = classifier.coef_.shape[1]
        baseline = Baseline(tuple(vectorizers), classifier)
        if baseline.features != classifier.n_features_in_:
            raise ValueError(f"{baseline.features} TF-IDF features, but coefficients for {classifier.n_features_in_}")
    except (
        Exception
    ) as exc:  # safetensors, JSON and a missing key or entry each raise their own type for a damaged file
        raise SkewtuneError(
            f"{path}: not a readable baseline ({type(exc).__name__}: {exc}); re-run the baseline stage"
        ) from None
    return baseline
