"""A throwaway model family for tests/test_new_family.py: the one model module a new family needs.

It holds what docs/ARCHITECTURE.md ("Adding a model family") asks for: the network with its factory
and checkpoint filter, the family's adapter, and the registry entry (:data:`SPEC`), registered by the
test with ``napari_medvit.models.register_model``. No other file knows about it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from napari_medvit.models import ModelSpec
from napari_medvit.models.adapters import ATTENTION, MASK, MapOutput, SegmentationAdapter
from napari_medvit.models.manifest import strip_module_prefix


class ToyNet(nn.Module):
    """Two convolutions and a 1x1 head: binary segmentation logits (B, 1, H, W) and a saliency map."""

    def __init__(self, in_chans: int = 3, width: int = 8) -> None:
        super().__init__()
        self.config: dict[str, Any] = {"in_chans": in_chans, "width": width}
        self.num_classes = 1
        self.body = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Conv2d(width, 1, 1)

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)
        logits = nn.functional.interpolate(self.head(features), size=x.shape[-2:], mode="bilinear",
                                           align_corners=False)
        return {"logits": logits, "saliency": torch.sigmoid(features.mean(dim=1, keepdim=True))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)["logits"]


def toy_net(**config: Any) -> ToyNet:
    return ToyNet(**config)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    return strip_module_prefix(state_dict)


class ToyAdapter(SegmentationAdapter):
    """The family's outputs: the mask and one saliency map at half resolution (shown)."""

    outputs = (MASK, ATTENTION)

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[Any, list[MapOutput]]:
        out = model.forward_all(x)
        return out["logits"], [MapOutput("saliency 1/2", out["saliency"], visible=True, description="mean activation")]


SPEC = ModelSpec(
    name="toy_seg", module="toy_family", factory="toy_net", family="toy", task="segment", dims=2, in_chans=3,
    class_names=("background", "lesion"),
    preprocessing={"resize": (32, 32), "size_multiple": 8, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
                   "color": "rgb", "threshold": 0.5},
    adapter="toy_family:ToyAdapter", display_name="Toy segmenter", description="a throwaway test family",
    short_name="Toy", tags=("test",),
)
