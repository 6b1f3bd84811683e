"""skewtune: fine-tune transformer classifiers on imbalanced text or images, tuned for macro-F1.

The library is layered: see the README's Layout section and tests/test_layers.py, which enforces it.
"""
