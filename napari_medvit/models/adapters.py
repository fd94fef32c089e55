"""Model adapters: what one model family adds to the generic task code.

A registry entry names its adapter (``ModelSpec.adapter``, ``"module:Class"``); the inference runners,
the overlays and the fine-tuning tasks ask the adapter, never the family's name:

- :meth:`ModelAdapter.forward` — the model's main output and its maps for one input batch
  (TransFuse: the ``map_2`` logits and its BiFusion / attention-gate maps from ``forward_all``);
- :attr:`ModelAdapter.outputs` — the output contract: the overlay kinds (:data:`OVERLAY_KINDS`) a run of
  the family shows; a run that produced another kind is an error (tested for every family);
- :attr:`ModelAdapter.explainer` — the attention-capture class (``"module:Class"`` in
  :mod:`napari_medvit.explain`) for models whose maps are read with hooks (CrossViT), else None;
- :attr:`ModelAdapter.class_count_arg` — the factory argument holding the number of outputs, which
  fine-tuning sets when the data defines other classes; :meth:`ModelAdapter.num_outputs`;
- loss variants: :attr:`ModelAdapter.segmentation_loss` (2D: ``"structure"`` for TransFuse's deep
  supervision of the heads :meth:`ModelAdapter.supervised_heads` names, ``"dice_ce"``),
  :attr:`ModelAdapter.label_smoothing` (classification), :attr:`ModelAdapter.volume_training`
  (3D: ``"patches"``, or ``"planes"`` for TrUE-Net's plane networks),
  :meth:`ModelAdapter.check_patch_size` (a training patch the network cannot train on);
- :meth:`ModelAdapter.head_prefixes` — the class head's state-dict prefixes (``create_model(new_head=True)``).

Adding a family: see ``docs/ARCHITECTURE.md`` ("Adding a model family"). Importing this module imports no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn

MASK = "mask"  # a label map (Labels layer)
ATTENTION = "attention"  # a heat map on the image grid, per head optional (Image layer, additive)
BOXES = "boxes"  # detection boxes with class and score (Shapes layer)
PRIOR = "prior"  # SMCA's spatial priors of each query (Image layer of the chosen query)
PROBABILITIES = "class_probabilities"  # a class-probability vector (the dock's chart)
AFFINE = "affine"  # DAFT's per-channel scale and shift (the dock's chart)
OVERLAY_KINDS = (MASK, ATTENTION, BOXES, PRIOR, PROBABILITIES, AFFINE)


@dataclass
class MapOutput:
    """A map a model computed for its input batch: ``tensor`` (B, 1, h, w) on a grid covering the model
    input; shown as an attention overlay named ``name`` (visible or not by default)."""

    name: str
    tensor: torch.Tensor
    visible: bool = False
    description: str = ""


class ModelAdapter:
    """The defaults: a model whose ``forward(x)`` is its main output and that has no maps."""

    outputs: ClassVar[tuple[str, ...]] = ()
    explainer: ClassVar[str | None] = None
    class_count_arg: ClassVar[str | None] = None
    label_smoothing: ClassVar[float] = 0.0
    segmentation_loss: ClassVar[str] = "dice_ce"
    volume_training: ClassVar[str] = "patches"

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[Any, list[MapOutput]]:
        """(main output, maps) of one batch in eval mode."""
        return model(x), []

    def shown_map(self, names: list[str]) -> str | None:
        """Which of the explainer's captured maps is visible when a run's layers are added (None: none)."""
        return None

    def supervised_heads(self, out: Any) -> list[tuple[float, torch.Tensor]]:
        """(weight, logits) of each head a ``"structure"`` loss supervises, from ``model.forward_all(x)``."""
        raise NotImplementedError(f"{type(self).__name__} has no deeply supervised heads")

    def num_outputs(self, model: nn.Module) -> int | None:
        """The number of classes the model's head scores (None when it cannot be told)."""
        config = getattr(model, "config", None) or {}
        n = getattr(model, "num_classes", None) or config.get("num_classes") or config.get("out_channels")
        return int(n) if n else None

    def channels(self, model: nn.Module, in_chans: int) -> tuple[int, int]:
        """(input channels, output channels) of a segmentation network."""
        config = getattr(model, "config", None) or {}
        return int(config.get("in_channels", in_chans)), int(self.num_outputs(model) or 0)

    def check_patch_size(self, model: nn.Module, size: tuple[int, ...]) -> str | None:
        """Why the network cannot train on patches of ``size`` (None: it can)."""
        return None

    def head_prefixes(self, model: nn.Module) -> tuple[str, ...]:
        """timm's ``pretrained_cfg["classifier"]`` (CrossViT's ``head.0``, ``head.1``; ResNet's ``fc``), else the
        model's own ``head_prefixes`` (DAFT's ``fc``, SMCA-DETR's ``class_embed``); empty without a class head."""
        cfg: dict[str, Any] = getattr(model, "pretrained_cfg", None) or {}
        head: Any = cfg.get("classifier") or getattr(model, "head_prefixes", ())
        return (head,) if isinstance(head, str) else tuple(head)


class SegmentationAdapter(ModelAdapter):
    outputs: ClassVar[tuple[str, ...]] = (MASK,)


class TransFuseAdapter(SegmentationAdapter):
    """TransFuse: ``forward_all`` gives ``map_2`` (the main head) and the maps of its fusion modules: the
    BiFusion spatial attention at 1/16, 1/8, 1/4 (the finest shown) and the attention gates at 1/8, 1/4."""

    outputs = (MASK, ATTENTION)
    segmentation_loss = "structure"

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[Any, list[MapOutput]]:
        out = model.forward_all(x)
        maps = []
        bifusion = list(out.get("bifusion_attention", ()))
        finest = max(range(len(bifusion)), key=lambda i: bifusion[i].shape[-2], default=-1)
        for i, m in enumerate(bifusion):
            maps.append(MapOutput(f"BiFusion attention 1/{x.shape[-2] // m.shape[-2]}", m, visible=i == finest,
                                  description="BiFusion spatial attention on the CNN branch (sigmoid of a 7x7 conv)"))
        for m in out.get("gate_attention", ()):
            maps.append(MapOutput(f"attention gate 1/{x.shape[-2] // m.shape[-2]}", m,
                                  description="attention gate psi of the fused features (Oktay et al.)"))
        return out["map_2"], maps

    def supervised_heads(self, out: Any) -> list[tuple[float, torch.Tensor]]:
        """The official ISIC script's deep supervision: map_2, map_1 and map_x weighted 0.5 / 0.3 / 0.2."""
        return [(0.5, out["map_2"]), (0.3, out["map_1"]), (0.2, out["map_x"])]


class ClassifierAdapter(ModelAdapter):
    outputs: ClassVar[tuple[str, ...]] = (PROBABILITIES,)
    class_count_arg = "num_classes"


class CrossViTAdapter(ClassifierAdapter):
    """CrossViT: CLS attention read with hooks; label smoothing 0.1 (its DeiT recipe)."""

    outputs = (PROBABILITIES, ATTENTION)
    explainer = "napari_medvit.explain.crossvit:CrossViTAttention"
    label_smoothing = 0.1

    def shown_map(self, names: list[str]) -> str | None:
        """The last block's S-CLS→L cross-attention: where the small-patch branch's class token looks."""
        cross = [n for n in names if n.startswith("cross-attention") and "S-CLS→L" in n]
        return cross[-1] if cross else (names[-1] if names else None)


class DAFTAdapter(ClassifierAdapter):
    """DAFT and its image-only 3D ResNet: ``n_outputs`` classes; DAFT's affine (alpha, beta) is charted."""

    outputs = (PROBABILITIES, AFFINE)
    class_count_arg = "n_outputs"


class SMCADetrAdapter(ModelAdapter):
    """SMCA-DETR: ``forward_all`` gives the boxes and each decoder layer's Gaussian spatial priors."""

    outputs = (BOXES, PRIOR)
    class_count_arg = "num_classes"

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[Any, list[MapOutput]]:
        return model.forward_all(x), []


class SwinUNETRAdapter(SegmentationAdapter):
    """MONAI Swin-UNETR (and the VoSHT approximation): instance norm at the 1/32 bottleneck needs >1 voxel."""

    def check_patch_size(self, model: nn.Module, size: tuple[int, ...]) -> str | None:
        cells = 1
        for s in size:
            cells *= s // 32
        if cells < 2:
            return (f"training size {tuple(size)} leaves a single voxel at Swin-UNETR's 1/32 bottleneck, which "
                    "instance norm cannot train on; use 64 along at least one axis")
        return None


class TrUENetAdapter(SegmentationAdapter):
    """TrUE-Net: three 2D plane networks, trained on slices of their own plane."""

    volume_training = "planes"

    def channels(self, model: nn.Module, in_chans: int) -> tuple[int, int]:
        config = getattr(model, "config", None) or {}
        return int(config.get("n_channels", in_chans)), int(config.get("n_classes") or 0)

    def num_outputs(self, model: nn.Module) -> int | None:
        n = (getattr(model, "config", None) or {}).get("n_classes")
        return int(n) if n else None


_CACHE: dict[str, ModelAdapter] = {}


def load_adapter(reference: str) -> ModelAdapter:
    """The adapter a registry entry names (``"package.module:Class"``), one instance per class."""
    if reference not in _CACHE:
        module, _, name = reference.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"model adapter {reference!r} cannot be imported: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, ModelAdapter)):
            raise ValueError(f"model adapter {reference!r} is not a ModelAdapter subclass")
        _CACHE[reference] = cls()
    return _CACHE[reference]
