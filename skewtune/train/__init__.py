"""Floor 5: training: the recipe the train stage runs, the Trainer subclass, its arguments, losses, callbacks and diagnostics."""
