"""Floor 4: what a run reports: the evaluation report, paired comparisons of runs, the model card, the relabelling queue."""
