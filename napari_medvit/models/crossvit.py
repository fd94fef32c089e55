"""CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image Classification.

Paper: Chen, Fan, Panda, ICCV 2021. Official code: IBM/CrossViT (models/crossvit.py); the
canonical implementation used here is timm's ``timm/models/crossvit.py`` (same modules, same
parameter counts), built with ``timm.create_model(variant, pretrained=False)``: nothing is
downloaded, weights come from a checkpoint file.

Two branches: S (patch 12 on the 240x240 input -> 20x20 tokens + CLS) and L (input resized
bicubically to 224, patch 16 -> 14x14 tokens + CLS), K multi-scale blocks each ending in a
cross-attention fusion where one branch's CLS token attends over the other branch's patch
tokens. The head averages the two branches' logits.

Attention maps for the viewer (see :mod:`napari_medvit.explain.crossvit`) are read with hooks
on ``blocks[k].fusion[i].attn.attn_drop``: fusion[0] is the S-branch CLS over the L patches
(B, H, 1, 197), fusion[1] the L-branch CLS over the S patches (B, H, 1, 401).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["VARIANTS", "checkpoint_filter_fn", "create_crossvit"]

# timm variant -> input size (the model's fixed image size)
VARIANTS: dict[str, int] = {
    "crossvit_tiny_240": 240,
    "crossvit_small_240": 240,
    "crossvit_base_240": 240,
    "crossvit_9_240": 240,
    "crossvit_15_240": 240,
    "crossvit_18_240": 240,
    "crossvit_9_dagger_240": 240,
    "crossvit_15_dagger_240": 240,
    "crossvit_18_dagger_240": 240,
    "crossvit_15_dagger_408": 408,
    "crossvit_18_dagger_408": 408,
}

def create_crossvit(variant: str, **config: Any) -> nn.Module:
    """Build a timm CrossViT variant (untrained); ``config`` overrides timm's arguments.

    ``model.config`` records the variant and the overrides, so a manifest rebuilds the same model.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown CrossViT variant {variant!r}; choose one of {sorted(VARIANTS)}")
    import timm

    model = timm.create_model(variant, pretrained=False, **config)
    model.config = {"variant": variant, **config}
    return model


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Accept IBM's layout (``pos_embed.0``, ``cls_token.1``) as well as timm's (``pos_embed_0``).

    Pure: returns a new dict; also strips DataParallel ``module.`` prefixes.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith(("pos_embed.", "cls_token.")):
            key = key.replace(".", "_", 1)
        out[key] = value
    return out
