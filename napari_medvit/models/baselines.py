"""CNN and plain-ViT baselines for the ViT-vs-CNN comparison: timm classifiers, built untrained.

``create_timm_classifier(variant, **config)`` wraps ``timm.create_model(variant, pretrained=False)``
and records the configuration for checkpoint manifests; checkpoints in timm's layout (or the
torchvision ResNet layout, which timm's ResNet shares) load through the common loader.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from napari_medvit.models.manifest import strip_module_prefix

__all__ = ["checkpoint_filter_fn", "create_timm_classifier"]


def create_timm_classifier(variant: str, **config: Any) -> nn.Module:
    import timm

    if variant not in timm.list_models(variant):
        raise ValueError(f"timm has no model {variant!r}")
    model = timm.create_model(variant, pretrained=False, **config)
    model.config = {"variant": variant, **config}
    return model


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Strip DataParallel prefixes; map DeiT's original ``head`` naming is already timm's."""
    return strip_module_prefix(state_dict)
