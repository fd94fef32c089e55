"""TrUE-Net: triplanar ensemble of 2D U-Nets for white-matter hyperintensity segmentation.

Paper: Sundaresan et al., "Triplanar ensemble U-Net model for white matter hyperintensities
segmentation on MR images", Medical Image Analysis 73, 2021. Official code: v-sundaresan/truenet
(truenet/true_net/truenet_model.py, truenet/utils/truenet_model_utils.py); module and layer names
follow it so that its weight files (``<name>_axial.pth``, ``_sagittal.pth``, ``_coronal.pth``,
possibly under ``model_state_dict`` and with DataParallel's ``module.`` prefix) load strictly.

Each plane's network: a 1x1 input conv to 3 channels, a first double conv (3x3 axial, 5x5
sagittal/coronal) with ``init_channels`` 64, three max-pool downsamplings, three transposed-conv
upsamplings with skip connections, a 1x1 output conv. The ensemble runs each network slice by
slice along its own plane and averages the three softmax probability volumes.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PLANES", "TrUENet", "TrUENetEnsemble", "checkpoint_filter_fn", "read_truenet_folder", "truenet"]

# plane -> the axis of our (z, y, x) volume that its slices are taken along
PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}


def _block(name: str, layers: list[tuple[str, nn.Module]]) -> nn.Sequential:
    return nn.Sequential(OrderedDict((name + n, m) for n, m in layers))


def _double(name: str, in_ch: int, out_ch: int, k: int) -> list[tuple[str, nn.Module]]:
    pad = (k - 1) // 2
    return [("conv1", nn.Conv2d(in_ch, out_ch, k, padding=pad)), ("bn1", nn.BatchNorm2d(out_ch)),
            ("relu1", nn.ReLU(inplace=True)), ("conv2", nn.Conv2d(out_ch, out_ch, k, padding=pad)),
            ("bn2", nn.BatchNorm2d(out_ch)), ("relu2", nn.ReLU(inplace=True))]


class DoubleConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, k: int, name: str) -> None:
        super().__init__()
        self.double_conv = _block(name, _double(name, in_ch, out_ch, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, k: int, name: str) -> None:
        super().__init__()
        self.maxpool_conv = _block(name, [("maxpool", nn.MaxPool2d(2)), *_double(name, in_ch, out_ch, k)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Transposed-conv upsampling (kernel 3, stride 2), pad/crop to the skip, concat, double conv."""

    def __init__(self, in_ch: int, out_ch: int, k: int, name: str) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, kernel_size=k, stride=2)
        self.conv = DoubleConv(in_ch, out_ch, 3, name)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x1 = self.up(x1)
        dy, dx = x2.shape[2] - x1.shape[2], x2.shape[3] - x1.shape[3]
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class OutConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, name: str) -> None:
        super().__init__()
        self.conv = _block(name, [("conv", nn.Conv2d(in_ch, out_ch, kernel_size=1))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TrUENet(nn.Module):
    """One plane's 2D U-Net (official ``TrUENet``); 8,563,211 parameters axial with 2 inputs."""

    def __init__(self, n_channels: int = 2, n_classes: int = 2, init_channels: int = 64, plane: str = "axial") -> None:
        super().__init__()
        c = init_channels
        self.inpconv = OutConv(n_channels, 3, name="inpconv_")
        self.convfirst = DoubleConv(3, c, 3 if plane == "axial" else 5, name="convfirst_")
        self.down1 = Down(c, 2 * c, 3, name="down1_")
        self.down2 = Down(2 * c, 4 * c, 3, name="down2_")
        self.down3 = Down(4 * c, 8 * c, 3, name="down3_")
        self.up3 = Up(8 * c, 4 * c, 3, "up1_")
        self.up2 = Up(4 * c, 2 * c, 3, "up2_")
        self.up1 = Up(2 * c, c, 3, "up3_")
        self.outconv = OutConv(c, n_classes, name="outconv_")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.convfirst(self.inpconv(x))
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        return self.outconv(self.up1(self.up2(self.up3(x4, x3), x2), x1))


class TrUENetEnsemble(nn.Module):
    """The three plane networks; ``model(volume)`` -> log of the mean softmax (B, K, Z, Y, X)."""

    def __init__(self, n_channels: int = 2, n_classes: int = 2, init_channels: int = 64,
                 slices_per_batch: int = 8) -> None:
        super().__init__()
        self.config: dict[str, Any] = {"n_channels": n_channels, "n_classes": n_classes,
                                       "init_channels": init_channels}
        self.slices_per_batch = slices_per_batch
        for plane in PLANES:
            self.add_module(plane, TrUENet(n_channels, n_classes, init_channels, plane))

    def plane_probabilities(self, volume: torch.Tensor, plane: str) -> torch.Tensor:
        """Softmax probabilities (B, K, Z, Y, X) of one plane's network, slice by slice."""
        net: TrUENet = getattr(self, plane)
        axis = 2 + PLANES[plane]
        moved = volume.movedim(axis, 2)  # (B, C, S, H, W)
        b, c, s, h, w = moved.shape
        slices = moved.permute(0, 2, 1, 3, 4).reshape(b * s, c, h, w)
        probs = torch.cat([torch.softmax(net(slices[i:i + self.slices_per_batch]), dim=1)
                           for i in range(0, b * s, self.slices_per_batch)])
        probs = probs.reshape(b, s, -1, h, w).permute(0, 2, 1, 3, 4)
        return probs.movedim(2, axis)

    def plane_logits(self, slices: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each plane network's logits on its own batch of 2D slices ({plane: (N, C, H, W)}): the
        training step in one call, so that DistributedDataParallel sees one forward per step."""
        return {plane: getattr(self, plane)(x) for plane, x in slices.items()}

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        mean = sum(self.plane_probabilities(volume, p) for p in PLANES) / len(PLANES)
        return torch.log(mean.clamp_min(1e-8))


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Strip DataParallel's ``module.`` (also after a plane prefix: ``axial.module.x`` -> ``axial.x``)."""
    out = {}
    for k, v in state_dict.items():
        parts = [p for p in k.split(".") if p != "module"]
        out[".".join(parts)] = v
    return out


def read_truenet_folder(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The three official weight files in a folder (``*_axial.pth`` ...) as one state_dict, or None."""
    root = Path(path)
    files = {p: sorted(root.glob(f"*_{p}.pth")) for p in PLANES}
    if not all(len(v) == 1 for v in files.values()):
        return None
    from napari_medvit.models.checkpoint import load_torch_file, unwrap_state_dict

    state: dict[str, torch.Tensor] = {}
    for plane, (file,) in files.items():
        name = f"{root.name}/{file.name}"
        plane_state, _ = unwrap_state_dict(load_torch_file(file, name), name)  # CheckpointError naming the file
        state.update({f"{plane}.{k}": v for k, v in plane_state.items()})
    return state


def truenet(**kwargs: Any) -> TrUENetEnsemble:
    """TrUE-Net with the official settings: FLAIR + T1, 2 classes, init_channels 64."""
    return TrUENetEnsemble(**kwargs)
