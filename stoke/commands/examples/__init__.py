"""Built-in examples: a naive training script (the demo's patient) and its data."""
