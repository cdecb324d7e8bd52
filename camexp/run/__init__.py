"""The run folder's lifecycle: checkpoints, results.json, metrics, TensorBoard, DDP ranks."""
