"""The run folder's lifecycle: checkpoints, results.json, metrics/TensorBoard/progress, DDP ranks."""
