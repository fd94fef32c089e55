"""DAFT: Dynamic Affine Feature Map Transform for a 3D image and tabular data.

Paper: Pölsterl, Wolf, Wachinger. "Combining 3D Image and Tabular Data via the Dynamic Affine
Feature Map Transform", MICCAI 2021. Official code: ai-med/DAFT (daft/networks/vol_blocks.py,
vol_networks.py); module names and state_dict keys follow it.

A small 3D ResNet (``n_basefilters`` 4 on a 1x64^3 volume): ConvBnReLU -> MaxPool -> ResBlock(4)
-> ResBlock(8, /2) -> ResBlock(16, /2) -> DAFTBlock(32, /2) -> global average pool -> FC. In the
DAFT block (the last residual block) the feature map after ``conv1`` + ``bn1`` (non-affine BN)
is modulated per channel, before the first ReLU (location 3 of the official code):
``alpha, beta = split(aux(cat(GAP(F), tabular)))`` with ``aux = Linear(C + n_tab -> b, no bias)
-> ReLU -> Linear(b -> 2C, no bias)``, ``b = int((4 * n_basefilters + n_tab) / 7)``, and
``F' = alpha * F + beta`` (linear scale activation).

``model(image, tabular)`` returns the class logits. Because everything before the DAFT block
depends on the image only, ``image_features(image)`` can be computed once and
``forward_from_features(features, tabular)`` re-run cheaply when a tabular value changes.

:class:`ResNet3D` is the paper's image-only baseline (the official code's ``resnet``,
``HeterogeneousResNet``): the same network with an ordinary ResBlock(16 -> 32, /2) as the last
block, no tabular input; ``model(image)`` returns the class logits. Its last block is named
``blockX`` as DAFT's, so that every other state_dict key is shared with DAFT; the official
checkpoints' ``block4.*`` keys are renamed on loading (:func:`checkpoint_filter_fn`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from napari_medvit.models._registry import ADNI_FEATURES
from napari_medvit.models.manifest import strip_module_prefix

__all__ = ["ADNI_FEATURES", "DAFT", "ResNet3D", "checkpoint_filter_fn", "daft", "resnet3d"]

def _conv3d(in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_ch, out_ch, kernel_size, stride=stride, padding=1 if kernel_size != 1 else 0, bias=False)


class ConvBnReLU(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, bn_momentum: float = 0.05) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(out_ch, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, bn_momentum: float = 0.05, stride: int = 1,
                 bn1_affine: bool = True) -> None:
        super().__init__()
        self.conv1 = _conv3d(in_ch, out_ch, stride=stride)
        self.bn1 = nn.BatchNorm3d(out_ch, momentum=bn_momentum, affine=bn1_affine)
        self.conv2 = _conv3d(out_ch, out_ch)
        self.bn2 = nn.BatchNorm3d(out_ch, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(_conv3d(in_ch, out_ch, kernel_size=1, stride=stride),
                                            nn.BatchNorm3d(out_ch, momentum=bn_momentum))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + residual)


class DAFTBlock(ResBlock):
    """The last residual block with the dynamic affine transform after conv1 + non-affine bn1."""

    def __init__(self, in_ch: int, out_ch: int, n_tabular: int, bottleneck_dim: int, bn_momentum: float = 0.1,
                 stride: int = 2) -> None:
        super().__init__(in_ch, out_ch, bn_momentum=bn_momentum, stride=stride, bn1_affine=False)
        self.global_pool = nn.AdaptiveAvgPool3d(1)
        self.split_size = out_ch
        self.aux = nn.Sequential()
        self.aux.add_module("aux_base", nn.Linear(out_ch + n_tabular, bottleneck_dim, bias=False))
        self.aux.add_module("aux_relu", nn.ReLU())
        self.aux.add_module("aux_out", nn.Linear(bottleneck_dim, 2 * out_ch, bias=False))

    def forward_with_affine(self, x: torch.Tensor,
                            tabular: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(output, alpha (B, C), beta (B, C))."""
        out = self.bn1(self.conv1(x))
        squeeze = torch.cat([self.global_pool(out).flatten(1), tabular], dim=1)
        alpha, beta = torch.split(self.aux(squeeze), self.split_size, dim=1)
        out = alpha[..., None, None, None] * out + beta[..., None, None, None]
        out = self.bn2(self.conv2(self.relu(out)))
        residual = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + residual), alpha, beta

    def forward(self, x: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.forward_with_affine(x, tabular)[0]


class _Trunk3D(nn.Module):
    """conv1, pool1 and blocks 1-3 of DAFT's 3D ResNet: the image-only part that DAFT and its
    image-only baseline share (same modules, same state_dict keys)."""

    def __init__(self, in_channels: int, n_basefilters: int, bn_momentum: float) -> None:
        super().__init__()
        f = n_basefilters
        self.conv1 = ConvBnReLU(in_channels, f, bn_momentum=bn_momentum)
        self.pool1 = nn.MaxPool3d(2, stride=2)
        self.block1 = ResBlock(f, f, bn_momentum=bn_momentum)
        self.block2 = ResBlock(f, 2 * f, bn_momentum=bn_momentum, stride=2)
        self.block3 = ResBlock(2 * f, 4 * f, bn_momentum=bn_momentum, stride=2)

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """Everything before the last block: depends on the image only."""
        return self.block3(self.block2(self.block1(self.pool1(self.conv1(image)))))


class DAFT(_Trunk3D):
    def __init__(self, in_channels: int = 1, n_outputs: int = 3, n_tabular: int = 14, n_basefilters: int = 4,
                 bn_momentum: float = 0.1, bottleneck_factor: float = 7.0) -> None:
        bottleneck = int((4 * n_basefilters + n_tabular) / bottleneck_factor)
        if bottleneck < 1:
            raise ValueError(f"DAFT: bottleneck dimension {bottleneck} < 1 (n_tabular {n_tabular}, "
                             f"n_basefilters {n_basefilters}, factor {bottleneck_factor})")
        super().__init__(in_channels, n_basefilters, bn_momentum)
        self.config: dict[str, Any] = {"in_channels": in_channels, "n_outputs": n_outputs, "n_tabular": n_tabular,
                                       "n_basefilters": n_basefilters, "bn_momentum": bn_momentum,
                                       "bottleneck_factor": bottleneck_factor}
        self.n_tabular = n_tabular
        self.num_classes = n_outputs
        self.head_prefixes = ("fc",)  # the class head (create_model(new_head=True) re-initialises it)
        f = n_basefilters
        self.blockX = DAFTBlock(4 * f, 8 * f, n_tabular, bottleneck, bn_momentum=bn_momentum)
        self.global_pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(8 * f, n_outputs)

    def forward_from_features(self, features: torch.Tensor, tabular: torch.Tensor) -> dict[str, torch.Tensor]:
        if tabular.ndim != 2 or tabular.shape[1] != self.n_tabular:
            raise ValueError(f"DAFT expects tabular data of shape (B, {self.n_tabular}), got {tuple(tabular.shape)}")
        out, alpha, beta = self.blockX.forward_with_affine(features, tabular.to(features.dtype))
        return {"logits": self.fc(self.global_pool(out).flatten(1)), "alpha": alpha, "beta": beta}

    def forward_all(self, image: torch.Tensor, tabular: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_from_features(self.image_features(image), tabular)

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        return self.forward_all(image, tabular)["logits"]


class ResNet3D(_Trunk3D):
    """DAFT's image-only baseline: DAFT's 3D ResNet with an ordinary ResBlock in place of the DAFT block."""

    def __init__(self, in_channels: int = 1, n_outputs: int = 3, n_basefilters: int = 4,
                 bn_momentum: float = 0.1) -> None:
        if n_basefilters < 1 or n_outputs < 1 or in_channels < 1:
            raise ValueError(f"ResNet3D: in_channels ({in_channels}), n_outputs ({n_outputs}) and n_basefilters "
                             f"({n_basefilters}) must be >= 1")
        super().__init__(in_channels, n_basefilters, bn_momentum)
        self.config: dict[str, Any] = {"in_channels": in_channels, "n_outputs": n_outputs,
                                       "n_basefilters": n_basefilters, "bn_momentum": bn_momentum}
        self.num_classes = n_outputs
        self.head_prefixes = ("fc",)  # the class head (create_model(new_head=True) re-initialises it)
        f = n_basefilters
        self.blockX = ResBlock(4 * f, 8 * f, bn_momentum=bn_momentum, stride=2)
        self.global_pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(8 * f, n_outputs)

    def forward_all(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(self.global_pool(self.blockX(self.image_features(image))).flatten(1))}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_all(image)["logits"]


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """ai-med/DAFT saves plain state_dicts; strip DataParallel ``module.`` prefixes. For
    :class:`ResNet3D`, the official ``HeterogeneousResNet``'s ``block4.*`` keys become ``blockX.*``."""
    state_dict = strip_module_prefix(state_dict)
    if isinstance(model, ResNet3D):
        state_dict = {"blockX." + k[len("block4."):] if k.startswith("block4.") else k: v
                      for k, v in state_dict.items()}
    return state_dict


def daft(**kwargs: Any) -> DAFT:
    """DAFT as in the paper's ADNI experiments: 14 tabular features, 3 classes, 56,911 parameters."""
    return DAFT(**kwargs)


def resnet3d(**kwargs: Any) -> ResNet3D:
    """DAFT's image-only 3D ResNet baseline: 4 base filters, 3 classes, 56,535 parameters."""
    return ResNet3D(**kwargs)
