"""Choices offered for inference (importable without torch, for the widgets)."""

PRECISIONS = ("fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
AUGMENTATIONS = ("none", "flips", "standard")  # fine-tuning augmentation (napari_medvit.transforms.augment)
