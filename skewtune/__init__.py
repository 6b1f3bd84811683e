"""skewtune: fine-tune transformer classifiers on imbalanced text, tuned for macro-F1."""

from skewtune.errors import SkewtuneError

__all__ = ["SkewtuneError"]
