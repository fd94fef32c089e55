"""The one input pipeline: the only code that turns an image into a model tensor.

Inference (:mod:`napari_medvit.inference`) and every fine-tuning task (:mod:`napari_medvit.training`)
call these functions with the model's :class:`~napari_medvit.transforms.preprocessing.Preprocessing`,
so a model sees in training exactly what it sees when it runs (no train/inference skew).

2D frames (segmentation, classification, detection):

1. :func:`unit_frames` — the alpha channel dropped, then ``scale_to_unit``: 8-bit and RGB integer
   frames divided by their type's maximum, anything else scaled robustly (0.5/99.5 percentiles of
   the whole array, so the slices of one volume share one scaling);
2. :func:`prepare_frames` — (N, H, W[, C]) 0..1 frames to an (N, C, h, w) tensor: grey replicated
   to RGB when ``color`` is "rgb", the channel count checked against the model's, normalised with
   ``mean`` / ``std``, then resized bilinearly (antialiased) to ``size`` or, without a size,
   reflect-padded to ``size_multiple``. With ``is_training`` the batch (and its targets) is also
   augmented (:func:`~napari_medvit.transforms.augment.augment_2d`); training tasks prepare their
   cases once and augment each batch with that same function;
3. :func:`restore_frames` — the inverse for outputs: maps over the model input back onto the frames' grid.

3D volumes: :func:`prepare_volume` (segmentation: reoriented / resampled to ``axcodes`` /
``pixdim`` when the model asks, each channel scaled by the fixed ``intensity`` window or robustly,
then ``(x - mean) / std``; labels follow with nearest neighbour) with :func:`restore_volume`, and
:func:`prepare_volume_classifier` (a whole volume scaled to 0..1 and resampled trilinearly to
``resize3d``: DAFT and its 3D ResNet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_medvit.transforms.augment import augment_2d
from napari_medvit.transforms.intensity import scale_intensity_range, scale_to_unit
from napari_medvit.transforms.preprocessing import IntensityWindow, Preprocessing
from napari_medvit.transforms.spatial import from_model_grid, to_model_grid


def unit_frames(image: np.ndarray, rgb: bool) -> np.ndarray:
    """A frame or a stack of frames as float32 0..1 (alpha dropped); see the module docstring."""
    image = np.asarray(image)
    if rgb and image.shape[-1] == 4:
        image = image[..., :3]
    return scale_to_unit(image, rgb=rgb)


@dataclass(frozen=True)
class FrameGrid:
    """How a batch of (H, W) frames was fitted to the model: resized to, or padded up to, ``input_size``."""

    image_size: tuple[int, int]
    input_size: tuple[int, int]
    resized: bool


@dataclass
class Frames:
    """A prepared batch: ``x`` (N, C, h, w) on the requested device, its grid, augmented targets."""

    x: torch.Tensor
    grid: FrameGrid
    targets: list[torch.Tensor] = field(default_factory=list)


def prepare_frames(unit: np.ndarray, pre: Preprocessing, in_chans: int, *, rgb: bool,
                   size: tuple[int, int] | None = None, device: torch.device | str | None = None,
                   is_training: bool = False, augment: str = "none", gen: torch.Generator | None = None,
                   targets: list[torch.Tensor] | None = None) -> Frames:
    """(N, H, W) or (N, H, W, C) 0..1 frames (:func:`unit_frames`) -> the model's input batch.

    ``size``: (h, w) to resize to; None pads to ``pre.size_multiple`` instead. Raises ValueError
    when the frames' channels are not the model's ``in_chans``."""
    x = torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32))
    x = x.permute(0, 3, 1, 2) if rgb else x[:, None]
    if pre.color == "rgb" and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[1] != in_chans:
        raise ValueError(f"the model expects {in_chans} channel(s), the image gives {x.shape[1]}")
    mean, std = pre.channel_stats(x.shape[1])
    x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    if device is not None:
        x = x.to(device)
    h, w = (int(n) for n in x.shape[-2:])
    if size:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    else:
        multiple = int(pre.size_multiple)
        pad_h, pad_w = (-h) % multiple, (-w) % multiple
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(h, w) > max(pad_h, pad_w) else "constant")
    grid = FrameGrid((h, w), (int(x.shape[-2]), int(x.shape[-1])), bool(size))
    prepared = list(targets or [])
    if is_training:
        if gen is None:
            raise ValueError("is_training needs the batch's torch.Generator (gen=...)")
        x, prepared = augment_2d(x, prepared, gen, augment)
    return Frames(x, grid, prepared)


def prepare_frame(image: np.ndarray, rgb: bool, pre: Preprocessing, in_chans: int, size: tuple[int, int],
                  *, what: str = "the image") -> torch.Tensor:
    """One 2D frame, as read from a file, -> its (C, h, w) model input at ``size`` (training's cases).
    ValueError naming ``what`` when it is not a 2D frame or has the wrong number of channels."""
    image = np.asarray(image)
    spatial = image.shape[:-1] if rgb else image.shape
    if len(spatial) != 2:
        raise ValueError(f"{what}: a 2D model needs a 2D image; got an array of shape {image.shape}")
    try:
        return prepare_frames(unit_frames(image, rgb)[None], pre, in_chans, rgb=rgb, size=size).x[0]
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def restore_frames(t: torch.Tensor, grid: FrameGrid) -> np.ndarray:
    """(B, C, h, w) maps over the model input (any resolution) -> float32 (B, C, H, W) on the frames' grid."""
    t = t.float()
    if grid.resized:
        t = F.interpolate(t, size=grid.image_size, mode="bilinear", align_corners=False)
    else:
        t = F.interpolate(t, size=grid.input_size, mode="bilinear", align_corners=False)
        t = t[..., : grid.image_size[0], : grid.image_size[1]]
    return t.cpu().numpy()


@dataclass
class PreparedVolume:
    """A 3D segmentation input (C, z, y, x) float32 on the model's grid; ``undo`` maps results back."""

    x: np.ndarray
    labels: np.ndarray | None = None
    undo: dict[str, Any] | None = None


def prepare_volume(volumes: np.ndarray, pre: Preprocessing, affine: np.ndarray | None = None,
                   labels: np.ndarray | None = None) -> PreparedVolume:
    """(C, z, y, x) co-registered volumes (and optional (1, z, y, x) labels) -> the model's input.

    With ``axcodes`` / ``pixdim`` (and the image's ``affine``) the volumes are reoriented and
    resampled linearly, labels by nearest neighbour; then each channel is scaled by the fixed
    ``intensity`` window, or robustly to 0..1 on its own distribution; then ``(x - mean) / std``
    (the first entries: one value for all channels)."""
    undo = None
    if affine is not None and (pre.axcodes or pre.pixdim):
        volumes, undo = to_model_grid(volumes, affine, pre.axcodes, pre.pixdim)
        if labels is not None:
            labels, _ = to_model_grid(labels, affine, pre.axcodes, pre.pixdim, order=0)
    window = pre.intensity
    if isinstance(window, IntensityWindow):
        unit = np.stack([scale_intensity_range(v, *window.window, *window.range, clip=window.clip) for v in volumes])
    else:
        unit = np.stack([scale_to_unit(v) for v in volumes])
    mean, std = pre.channel_stats(1)
    x = ((unit - mean[0]) / std[0]).astype(np.float32, copy=False)
    return PreparedVolume(x, labels, undo)


def restore_volume(result: np.ndarray, prepared: PreparedVolume, order: int = 0) -> np.ndarray:
    """A (z', y', x') result on the model's grid back onto the volume's own grid (``order`` 0: labels)."""
    return result if prepared.undo is None else from_model_grid(result, prepared.undo, order=order)


def prepare_volume_classifier(volume: np.ndarray, pre: Preprocessing, *,
                              device: torch.device | str | None = None) -> torch.Tensor:
    """A (z, y, x) volume -> (1, 1, *resize3d): robustly scaled to 0..1, resampled trilinearly
    (its own shape without ``resize3d``)."""
    size = tuple(pre.resize3d or volume.shape)
    x = torch.from_numpy(np.ascontiguousarray(scale_to_unit(volume)))[None, None]
    if device is not None:
        x = x.to(device)
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)
