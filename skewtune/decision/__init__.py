"""Floor 2: from class probabilities to labels: scores and their intervals, the decision rule, and its tuning on val."""
