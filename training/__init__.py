"""Training module: datasets, leakage audit and splits, training, evaluation, export, benchmarks."""
