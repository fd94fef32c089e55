"""Training-time augmentation of 2D and 3D batches, seeded by a ``torch.Generator`` (reproducible runs).

``"flips"``: horizontal and vertical flips. ``"standard"``: flips, then a random rotation
(±20°) and scaling (0.85-1.15) applied to image and target with one affine grid (bilinear for
the image, nearest for masks), then brightness (±0.1) and contrast (0.85-1.15) jitter of the
image — the kind of augmentation the TransFuse and PraNet polyp scripts use (their rotation,
flips and colour jitter), done on tensors so it runs on the training device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _rand(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def flips(x: torch.Tensor, targets: list[torch.Tensor],
          gen: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Flip each sample left-right and up-down with probability 0.5 each (image and targets alike)."""
    for dim in (-1, -2):
        flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
        if flip.any():
            x = torch.where(flip.view(-1, *([1] * (x.ndim - 1))), x.flip(dim), x)
            targets = [torch.where(flip.view(-1, *([1] * (t.ndim - 1))), t.flip(dim), t) for t in targets]
    return x, targets


def affine(x: torch.Tensor, targets: list[torch.Tensor], gen: torch.Generator, max_deg: float = 20.0,
           scale: tuple[float, float] = (0.85, 1.15)) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One random rotation + isotropic scaling per sample; zeros (for masks: background) fill the border."""
    n = len(x)
    angle = _rand(n, -max_deg, max_deg, gen) * math.pi / 180
    s = _rand(n, *scale, gen)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros(n)], -1),
                         torch.stack([sin, cos, torch.zeros(n)], -1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    targets = [F.grid_sample(t.float(), grid.to(t.device), mode="nearest", padding_mode="zeros",
                             align_corners=False).to(t.dtype) for t in targets]
    return x, targets


def intensity(x: torch.Tensor, gen: torch.Generator, brightness: float = 0.1,
              contrast: tuple[float, float] = (0.85, 1.15)) -> torch.Tensor:
    """Brightness shift and contrast scaling around each sample's mean (x is already normalised)."""
    n = len(x)
    b = _rand(n, -brightness, brightness, gen).to(x).view(-1, 1, 1, 1)
    c = _rand(n, *contrast, gen).to(x).view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c + mean + b / 0.226  # brightness in 0..1 units, divided by ImageNet's mean std


def augment_2d(x: torch.Tensor, targets: list[torch.Tensor], gen: torch.Generator,
               kind: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Apply the ``kind`` of augmentation ("none", "flips", "standard") to a (B, C, H, W) batch."""
    if kind == "none":
        return x, targets
    x, targets = flips(x, targets, gen)
    if kind == "standard":
        x, targets = affine(x, targets, gen)
        x = intensity(x, gen)
    return x, targets


def augment_3d(x: torch.Tensor, gen: torch.Generator, kind: str) -> torch.Tensor:
    """Augment a (B, C, D, H, W) batch: random flips of each axis ("flips"), plus MONAI's random
    intensity scaling and shift by up to 10% ("standard"); every draw comes from ``gen``."""
    if kind == "none":
        return x
    for dim in (-1, -2, -3):
        flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
        if flip.any():
            x = torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(dim), x)
    if kind == "standard":
        from monai.transforms import RandScaleIntensity, RandShiftIntensity
        from monai.utils import convert_to_tensor

        scale, shift = RandScaleIntensity(factors=0.1, prob=1.0), RandShiftIntensity(offsets=0.1, prob=1.0)
        out = []
        for sample in x:
            seeds = torch.randint(0, 2**31 - 1, (2,), generator=gen).tolist()
            scale.set_random_state(seed=seeds[0])
            shift.set_random_state(seed=seeds[1])
            out.append(convert_to_tensor(shift(scale(sample)), track_meta=False))
        x = torch.stack(out)
    return x
