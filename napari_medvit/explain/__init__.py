"""Explanations: attention maps read from the models with hooks (no torch at import time)."""
