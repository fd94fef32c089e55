"""Inference: device/precision selection, the Predictor and its numpy Prediction.

Exports resolve lazily so that ``napari_medvit.inference.options`` (used by the widgets to fill
their menus) can be imported without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from napari_medvit.inference.options import DEVICES, PRECISIONS

if TYPE_CHECKING:  # the lazy names, for type checkers
    from napari_medvit.inference.predictor import (
        Cancelled,
        Overlay,
        Prediction,
        Predictor,
        Progress,
        autocast_dtype,
        resolve_device,
    )

__all__ = ["DEVICES", "PRECISIONS", "Cancelled", "Overlay", "Prediction", "Predictor", "Progress", "autocast_dtype",
           "resolve_device"]
_LAZY = dict.fromkeys(__all__[2:], "napari_medvit.inference.predictor")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
