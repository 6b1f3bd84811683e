"""Floor 4: the classifiers: text and image models, the modality seam between them, devices, and the TF-IDF baseline."""
