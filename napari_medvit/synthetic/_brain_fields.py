"""Smooth fields and transforms of the brain generator (:mod:`napari_medvit.synthetic.brain`): cubic
B-spline fields (elastic deformation, bias), the subject's warp of the template and small helpers.

Random draws happen only where a generator is passed in (:meth:`_Spline.random`,
:func:`_random_rotation`), in a fixed order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from napari_medvit.synthetic._brain_atlas import _atlas, _fov_box

_FIT_SLACK_MM = 2.0  # least distance of the deformed brain's hull to the sides and top of the grid


def _bspline_weights(t: np.ndarray, n_ctrl: int) -> np.ndarray:
    """Dense cubic B-spline basis: ``W[i, k] = B3(t[i] - k)`` for ``k`` in ``range(n_ctrl)``."""
    u = np.abs(t[:, None] - np.arange(n_ctrl)[None, :])
    w = np.where(u < 1.0, 2.0 / 3.0 - u**2 + 0.5 * u**3, np.where(u < 2.0, (2.0 - u) ** 3 / 6.0, 0.0))
    return w


def _bspline_weights_local(t: np.ndarray) -> np.ndarray:
    """``B3(t - j)`` for ``j`` = 0..3 (``t`` measured from the first of the 4 supporting knots)."""
    u = np.abs(t[..., None] - np.arange(4))
    return np.where(u < 1.0, 2.0 / 3.0 - u**2 + 0.5 * u**3, np.where(u < 2.0, (2.0 - u) ** 3 / 6.0, 0.0))


@dataclass(frozen=True)
class _Spline:
    """A cubic B-spline field in atlas space (mm): control points every ``step`` mm from ``origin``."""

    coef: np.ndarray  # (cz, cy, cx) or (3, cz, cy, cx)
    origin: float
    step: float

    @staticmethod
    def random(rng: np.random.Generator, step: float, peak: float, components: int) -> _Spline:
        """Normal coefficients over the padded atlas, rescaled so that the largest knot value in the
        brain's box is ``peak``."""
        at = _atlas()
        origin = -4.0 * step
        n = [int(math.ceil((d + 8.0 * step) / step)) + 1 for d in at.t1.shape]
        coef = rng.standard_normal((components, *n))
        # the field's values on the knots: [1, 4, 1] / 6 along each axis; rescale so that the
        # largest of them over the brain's bounding box is ``peak``
        knots = coef
        for ax in range(1, 4):
            knots = ndimage.convolve1d(knots, np.array([1.0, 4.0, 1.0]) / 6.0, axis=ax, mode="constant")
        box = tuple(slice(int(math.floor((lo - origin) / step)), int(math.ceil((hi - origin) / step)) + 1)
                    for lo, hi in zip(at.brain_lo, at.brain_hi, strict=True))
        m = float(np.abs(knots[(slice(None),) + box]).max())
        coef *= peak / m if m > 0 else 0.0
        return _Spline(coef=coef, origin=origin, step=step)

    def _w(self, x: np.ndarray, axis: int) -> np.ndarray:
        """Dense basis weights of the positions ``x`` (mm) along ``axis``."""
        return _bspline_weights((np.asarray(x, np.float64) - self.origin) / self.step, self.coef.shape[1 + axis])

    def on_grid(self, axes: list[np.ndarray]) -> np.ndarray:
        """Values on the tensor grid ``axes`` (z, y, x): (components, Z, Y, X) float32."""
        wz, wy, wx = (self._w(a, i) for i, a in enumerate(axes))
        out = np.einsum("cabk,xk->cabx", self.coef, wx)
        out = np.einsum("cabx,yb->cayx", out, wy)
        out = np.einsum("cayx,za->czyx", out, wz)
        return out.astype(np.float32)

    def at_points(self, pts: np.ndarray) -> np.ndarray:
        """Values at scattered points (N, 3) (z, y, x mm): (N, components)."""
        t = (np.asarray(pts, np.float64) - self.origin) / self.step
        base = np.floor(t).astype(np.int64) - 1  # the 4 control points with non-zero weight
        limit = np.array(self.coef.shape[1:]) - 4
        if base.size and ((base < 0).any() or (base > limit).any()):
            raise ValueError("point outside the B-spline's control grid")
        w = _bspline_weights_local(t - base)  # (N, 3, 4)
        out = np.zeros((len(t), self.coef.shape[0]))
        for a in range(4):
            for b in range(4):
                wab = w[:, 0, a] * w[:, 1, b]
                for k in range(4):
                    c = self.coef[:, base[:, 0] + a, base[:, 1] + b, base[:, 2] + k]  # (C, N)
                    out += (c * (wab * w[:, 2, k])).T
        return out


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    """Rotation matrix (z, y, x) from three angles in degrees about the z, y and x axes."""
    a, b, c = np.deg2rad(angles_deg)
    rz = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])  # about z axis (y-x plane)
    ry = np.array([[np.cos(b), 0, -np.sin(b)], [0, 1, 0], [np.sin(b), 0, np.cos(b)]])
    rx = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class _Warp:
    """Sampling transform T(p) = c + M (p - o - c) + t + u(p - o), all in atlas mm (z, y, x).

    ``o`` (``offset``) moves the whole subject; it keeps the deformed brain inside the grid.
    """

    matrix: np.ndarray
    centre: np.ndarray
    shift: np.ndarray
    elastic: _Spline
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def points(self, pts: np.ndarray) -> np.ndarray:
        """Template positions T(p) of subject points ``pts`` (N, 3)."""
        pts = pts - self.offset
        q = (pts - self.centre) @ self.matrix.T + self.centre + self.shift
        return q + self.elastic.at_points(pts)

    def inverse(self, q: np.ndarray, iterations: int = 8) -> np.ndarray:
        """Subject positions p with ``points(p) = q`` (fixed-point iterations; |grad u| << 1)."""
        minv = np.linalg.inv(self.matrix)
        base = q - self.centre - self.shift
        p = base @ minv.T + self.centre
        for _ in range(iterations):
            p = (base - self.elastic.at_points(p)) @ minv.T + self.centre
        return p + self.offset

    def grid(self, axes: list[np.ndarray]) -> np.ndarray:
        """(3, Z, Y, X) float32 template coordinates of the grid voxels."""
        axes = [a - self.offset[i] for i, a in enumerate(axes)]
        u = self.elastic.on_grid(axes)
        d = [a - self.centre[i] for i, a in enumerate(axes)]
        for i in range(3):
            base = self.centre[i] + self.shift[i]
            u[i] += np.float32(base)
            u[i] += (self.matrix[i, 0] * d[0]).astype(np.float32)[:, None, None]
            u[i] += (self.matrix[i, 1] * d[1]).astype(np.float32)[None, :, None]
            u[i] += (self.matrix[i, 2] * d[2]).astype(np.float32)[None, None, :]
        return u


def _fit_in_grid(warp: _Warp) -> tuple[_Warp, np.ndarray, np.ndarray]:
    """Shrink (rarely) and shift the deformed brain so that it keeps ``_FIT_SLACK_MM`` from the
    sides and top of the box that every grid covers. Returns the warp, the subject's scale
    factor per axis (1 = untouched) and its shift (mm)."""
    at = _atlas()
    box_lo, box_hi = _fov_box()
    lo_b, hi_b = box_lo + _FIT_SLACK_MM, box_hi - _FIT_SLACK_MM
    factor = np.ones(3)
    for _ in range(3):
        hull = warp.inverse(at.hull)
        ext = hull.max(axis=0) - hull.min(axis=0)
        ratio = np.where(np.isfinite(hi_b - lo_b), (hi_b - lo_b) / ext, np.inf)
        if (ratio >= 1.0).all():
            break
        shrink = np.where(ratio < 1.0, ratio * 0.998, 1.0)
        factor *= shrink
        # p -> c + f (p - c) along the shrunk axes: the template is sampled at T(c + (p - c) / f)
        warp = _Warp(matrix=warp.matrix / shrink[None, :], centre=warp.centre, shift=warp.shift,
                     elastic=warp.elastic)
    hull = warp.inverse(at.hull)
    shift = np.zeros(3)
    for ax in range(3):
        lo_a, hi_a = hull[:, ax].min(), hull[:, ax].max()
        if lo_a < lo_b[ax]:
            shift[ax] = lo_b[ax] - lo_a
        elif hi_a > hi_b[ax]:
            shift[ax] = hi_b[ax] - hi_a
    warp = _Warp(matrix=warp.matrix, centre=warp.centre, shift=warp.shift, elastic=warp.elastic, offset=shift)
    return warp, factor, shift


def _sample(field_: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Trilinear samples of an atlas field at template coordinates q (N, 3)."""
    return ndimage.map_coordinates(field_, q.T, order=1, mode="nearest")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, its argument clipped to +-30 (no overflow)."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


def _ramp(x: np.ndarray) -> np.ndarray:
    """``smoothstep((x - 0.3) / 0.4)``: 0 below 0.3, 0.5 at 0.5, 1 above 0.7."""
    t = np.clip((x - 0.3) / 0.4, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random orthogonal matrix (QR of a normal matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))[None, :]
    return q
