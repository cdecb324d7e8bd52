"""Dataset readers and in-memory data pipelines."""
