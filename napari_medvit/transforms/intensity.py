"""Intensity transforms on numpy arrays (no torch)."""

from __future__ import annotations

import numpy as np


def scale_to_unit(image: np.ndarray, *, rgb: bool = False,
                  percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Map an image to float32 in [0, 1].

    8-bit images (and RGB of any integer type) are divided by their type's maximum, so a frame
    looks to the model as it did in training; other images (CT in HU, MRI) are scaled robustly
    between the given percentiles of the whole array and clipped.
    """
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError("cannot scale an empty image")
    if image.dtype == np.uint8 or (rgb and np.issubdtype(image.dtype, np.integer)):
        return image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    if image.dtype == bool:
        return image.astype(np.float32)
    data = image.astype(np.float32)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        raise ValueError("image has no finite values")
    lo, hi = (float(v) for v in np.percentile(finite, percentiles))
    if hi <= lo:
        hi = lo + 1.0
    out = (np.nan_to_num(data, nan=lo) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def window(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to a window [low, high] (e.g. a CT window in HU) and map it to [0, 1] as float32."""
    if high <= low:
        raise ValueError(f"window high ({high}) must exceed low ({low})")
    out = (np.asarray(image, dtype=np.float32) - low) / (high - low)
    return np.clip(out, 0.0, 1.0, out=out)


def scale_intensity_range(image: np.ndarray, a_min: float, a_max: float, b_min: float = 0.0, b_max: float = 1.0,
                          clip: bool = False) -> np.ndarray:
    """Map [a_min, a_max] linearly onto [b_min, b_max] (MONAI's ScaleIntensityRange), float32."""
    if a_max == a_min:
        raise ValueError(f"intensity range is empty: a_min = a_max = {a_min}")
    out = (np.asarray(image, dtype=np.float32) - a_min) / (a_max - a_min)
    out = out * (b_max - b_min) + b_min
    if clip:
        np.clip(out, min(b_min, b_max), max(b_min, b_max), out=out)
    return out.astype(np.float32, copy=False)
