"""Floor 1: what every other module may use and nothing of skewtune's own below it: errors, paths, the row
schema, table formats, atomic outputs, and how a stage runs."""
