"""Explanations: attention maps read from the models with hooks.

``explainer_for(spec)`` gives the capture context for a model family (or None when the model
returns its maps itself, as TransFuse does); pass it to ``Predictor(..., explainer=...)``.
Importing this package imports no torch.
"""

from __future__ import annotations

from typing import Any


def explainer_for(spec: Any) -> Any:
    """The attention-capture class for a registry entry (``ModelSpec``), or None."""
    if getattr(spec, "family", None) == "crossvit":
        from napari_medvit.explain.crossvit import CrossViTAttention

        return CrossViTAttention
    return None


__all__ = ["explainer_for"]
