"""Explanations: attention maps read from the models with hooks.

``explainer_for(spec)`` gives the capture context a model family's adapter names
(``ModelAdapter.explainer``), or None when the model returns its maps itself, as TransFuse does;
pass it to ``Predictor(..., explainer=...)``. Importing this package imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from napari_medvit.models.adapters import ModelAdapter, load_adapter


def explainer_for(spec: Any) -> Any:
    """The attention-capture class for a registry entry (``ModelSpec``) or a resolved configuration, or None."""
    adapter = getattr(spec, "adapter", None)
    if isinstance(adapter, str):
        adapter = load_adapter(adapter)
    if not isinstance(adapter, ModelAdapter) or adapter.explainer is None:
        return None
    module, _, name = adapter.explainer.partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["explainer_for"]
