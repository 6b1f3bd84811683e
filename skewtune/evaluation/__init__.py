"""Floor 4: what a run reports: the evaluation report, paired comparisons of runs and `skewtune compare`'s reports of
runs read from git and DVC, the model card, the relabelling queue."""
