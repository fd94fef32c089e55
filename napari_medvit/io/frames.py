"""Ordinary image frames (endoscopy, dermoscopy, ...): PNG, JPEG, TIFF and BMP."""

from __future__ import annotations

import os

import numpy as np
import skimage.io

from ._atomic import atomic_write
from .errors import MedVitReadError
from .meta import ImageMeta

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def is_frame_path(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).lower().endswith(FRAME_SUFFIXES)


def read_frame(path: str | os.PathLike[str]) -> tuple[np.ndarray, ImageMeta]:
    """Read an image frame with unit spacing and identity geometry.

    RGB stays RGB (channel last, ``meta.rgb``), RGBA loses its alpha channel, grey+alpha
    becomes grey. A multi-page TIFF becomes a ``(z, y, x)`` stack.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MedVitReadError(f"{path}: no such image file")
    try:
        image = np.asarray(skimage.io.imread(path))
    except Exception as exc:  # imageio/Pillow/tifffile raise many types for corrupt files
        raise MedVitReadError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc

    rgb = False
    if image.ndim >= 3 and image.shape[-1] in (3, 4):
        image, rgb = image[..., :3], True
    elif image.ndim >= 3 and image.shape[-1] == 2:  # grey + alpha
        image = image[..., 0]
    spatial = image.ndim - (1 if rgb else 0)
    if spatial not in (2, 3) or 0 in image.shape:
        raise MedVitReadError(f"{path}: unsupported image shape {image.shape}")
    meta = ImageMeta.identity(spatial, rgb=rgb, source_path=os.path.abspath(path))
    meta.extra["spatial_shape"] = [int(s) for s in image.shape[:spatial]]
    return np.ascontiguousarray(image), meta


def write_png_labels(path: str | os.PathLike[str], labels: np.ndarray) -> str:
    """Write a 2D label image as PNG with its exact values (uint8 if they fit, else uint16).

    Raises ValueError for non-2D, negative, non-integer or too large (> 65535) labels.
    The file is replaced atomically. Returns the written path.
    """
    path = os.fspath(path)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{path}: PNG labels must be 2D (y, x), got shape {labels.shape}")
    if labels.dtype != bool and labels.dtype.kind not in "iuf":
        raise ValueError(f"{path}: labels must be numeric, got dtype {labels.dtype}")
    if labels.size and labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        raise ValueError(f"{path}: labels of dtype {labels.dtype} contain non-integer values")
    lo = labels.min() if labels.size else 0
    hi = labels.max() if labels.size else 0
    if lo < 0:
        raise ValueError(f"{path}: PNG labels cannot be negative, found {lo}")
    if hi > np.iinfo(np.uint16).max:
        raise ValueError(f"{path}: label value {hi} exceeds the PNG maximum 65535")
    out = labels.astype(np.uint8 if hi < 256 else np.uint16)
    atomic_write(path, lambda tmp: skimage.io.imsave(tmp, out, check_contrast=False))
    return path


__all__ = ["FRAME_SUFFIXES", "is_frame_path", "read_frame", "write_png_labels"]
