"""Training: losses, datasets from corrections, the fine-tuning loop (see the issue tracker)."""
