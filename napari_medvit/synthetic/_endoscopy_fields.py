"""Random fields and shapes of the endoscopy generator (:mod:`napari_medvit.synthetic.endoscopy`):
smooth noise, periodic outlines, the endoscope's field of view, highlight blobs and vessel trees.

Every function draws from the generator it is given, in a fixed order; none keeps state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["NTHETA", "add_blob", "draw_vessels", "fov_mask", "periodic", "sigmoid", "smooth_noise", "theta_index"]

NTHETA = 1024  # samples of the periodic angular functions (lookup tables)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean, unit-std noise with features about ``cell`` pixels across (cubic upsampling)."""
    h, w = shape
    cell = max(float(cell), 1.0)
    gh, gw = int(np.ceil(h / cell)) + 4, int(np.ceil(w / cell)) + 4
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    # Sample the coarse grid at fractional positions (offset so the border is never used).
    ys = (np.arange(h, dtype=np.float32) / cell + 1.5)
    xs = (np.arange(w, dtype=np.float32) / cell + 1.5)
    # Cubic interpolation in two passes: along y (to the coarse x grid), then along x.
    tmp = ndimage.map_coordinates(
        coarse, np.meshgrid(ys, np.arange(gw, dtype=np.float32), indexing="ij"), order=3, mode="mirror"
    )
    out = ndimage.map_coordinates(
        tmp, np.meshgrid(np.arange(h, dtype=np.float32), xs, indexing="ij"), order=3, mode="mirror"
    )
    out -= out.mean()
    std = float(out.std())
    return (out / std if std > 0 else out).astype(np.float32)


def periodic(rng: np.random.Generator, n_harmonics: int, amplitude: float) -> np.ndarray:
    """A smooth random 2*pi-periodic function sampled on ``NTHETA`` angles, max |f| = amplitude."""
    t = np.linspace(0.0, 2.0 * np.pi, NTHETA, endpoint=False)
    f = np.zeros(NTHETA)
    for k in range(1, n_harmonics + 1):
        f += rng.normal(0.0, 1.0 / k) * np.cos(k * t + rng.uniform(0.0, 2.0 * np.pi))
    peak = np.abs(f).max()
    if peak > 0:
        f *= amplitude / peak
    return f.astype(np.float32)


def theta_index(theta: np.ndarray) -> np.ndarray:
    """Index into the ``NTHETA``-sample tables of :func:`periodic` for angles in [-pi, pi]."""
    idx = ((theta + np.pi) * (NTHETA / (2.0 * np.pi))).astype(np.int32)
    return np.clip(idx, 0, NTHETA - 1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, its argument clipped to +-30 (no overflow)."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


def fov_mask(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Soft (anti-aliased) field-of-view mask of the endoscope and its description."""
    yy = np.abs(np.arange(h, dtype=np.float32) - (h - 1) / 2.0)[:, None]
    xx = np.abs(np.arange(w, dtype=np.float32) - (w - 1) / 2.0)[None, :]
    band = rng.uniform(0.0, 0.06) * w if rng.random() < 0.5 else 0.0
    hy, hx = h / 2.0, w / 2.0 - band
    short = min(h, w)
    if rng.random() < 0.55:
        kind = "octagon"
        cut = rng.uniform(0.08, 0.20) * short
        # signed distance (positive inside) to the octagon: box and cut corners
        d = np.minimum(hy - yy, hx - xx)
        d = np.minimum(d, (hy + hx - cut - yy - xx) / np.sqrt(2.0))
        extent = cut
    else:
        kind = "rounded"
        rad = rng.uniform(0.10, 0.25) * short
        qy = np.maximum(yy - (hy - rad), 0.0)
        qx = np.maximum(xx - (hx - rad), 0.0)
        outside = np.sqrt(qy**2 + qx**2)
        inner = np.minimum(np.minimum(hy - yy, hx - xx), rad)
        d = np.where((qy > 0) & (qx > 0), rad - outside, inner)
        d = np.minimum(d, np.minimum(hy - yy, hx - xx))
        extent = rad
    soft = np.clip(d + 0.5, 0.0, 1.0).astype(np.float32)
    return soft, {"fov": kind, "fov_corner_px": float(extent), "fov_side_band_px": float(band)}


def add_blob(canvas: np.ndarray, cy: int, cx: int, major: float, minor: float, angle: float) -> None:
    """Max-composite a saturated elliptical highlight (core 1, soft edge) into ``canvas``."""
    h, w = canvas.shape
    rad = int(np.ceil(major * 2.5)) + 1
    y0, y1 = max(cy - rad, 0), min(cy + rad + 1, h)
    x0, x1 = max(cx - rad, 0), min(cx + rad + 1, w)
    by = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
    bx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
    bu = bx * np.float32(np.cos(angle)) + by * np.float32(np.sin(angle))
    bv = -bx * np.float32(np.sin(angle)) + by * np.float32(np.cos(angle))
    blob = np.clip(1.6 * np.exp(-((bu / major) ** 2 + (bv / minor) ** 2)), 0.0, 1.0)
    canvas[y0:y1, x0:x1] = np.maximum(canvas[y0:y1, x0:x1], blob)


def draw_vessels(rng: np.random.Generator, h: int, w: int, s: float) -> np.ndarray:
    """Branching random-walk vessel trees, intensity in [0, 1]."""
    thin = np.zeros((h, w), np.float32)
    thick = np.zeros((h, w), np.float32)
    step = 1.0
    for _ in range(int(rng.integers(4, 10))):
        stack = [(rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, 2 * np.pi),
                  rng.uniform(60, 180) * s, rng.uniform(0.6, 1.0), 0)]
        while stack:
            y0, x0, a0, length, strength, depth = stack.pop()
            n = max(int(length / step), 2)
            angles = a0 + np.cumsum(rng.normal(0.0, 0.10, n))
            ys = y0 + np.cumsum(np.sin(angles)) * step
            xs = x0 + np.cumsum(np.cos(angles)) * step
            yi = np.round(ys).astype(np.int64)
            xi = np.round(xs).astype(np.int64)
            ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
            target = thick if depth == 0 and strength > 0.75 else thin
            np.maximum.at(target, (yi[ok], xi[ok]), strength)
            if depth < 3:
                for _ in range(int(rng.integers(0, 4 - depth))):
                    j = int(rng.integers(n // 5, n))
                    side = rng.choice([-1.0, 1.0])
                    stack.append((float(ys[j]), float(xs[j]), float(angles[j] + side * rng.uniform(0.4, 1.1)),
                                  length * rng.uniform(0.35, 0.7), strength * rng.uniform(0.6, 0.85), depth + 1))
    v = ndimage.gaussian_filter(thin, 0.7 * s) * 2.2 + ndimage.gaussian_filter(thick, 1.2 * s) * 4.5
    return np.clip(v, 0.0, 1.0)
