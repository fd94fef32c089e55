"""Spatial transforms on numpy arrays (no torch)."""

from __future__ import annotations

import numpy as np


def pad_to_multiple(image: np.ndarray, multiple: int, axes: tuple[int, ...]) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """Zero-pad ``axes`` at their end up to a multiple of ``multiple``; returns (padded, pad widths)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    pads = [(0, 0)] * image.ndim
    for ax in axes:
        n = image.shape[ax]
        pads[ax] = (0, (-n) % multiple)
    return np.pad(image, pads, mode="constant"), tuple(pads)


def crop_padding(array: np.ndarray, pads: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Undo :func:`pad_to_multiple` on an array of the padded shape."""
    return array[tuple(slice(lo, array.shape[i] - hi) for i, (lo, hi) in enumerate(pads))]


def resize_map(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resample a low-resolution map (e.g. a stride-32 feature grid) onto an image grid, linearly,
    with cell centres on pixel centres (no corner alignment); float32."""
    from skimage.transform import resize

    return resize(np.asarray(values, dtype=np.float32), shape, order=1, mode="edge", anti_aliasing=False,
                  preserve_range=True).astype(np.float32)
