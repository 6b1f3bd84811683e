"""Floor 2: params.yaml: its schema, how it is loaded and validated, and which keys each stage reads."""
