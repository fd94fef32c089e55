"""Seeded procedural colonoscopy-like RGB frames with polyps and exact ground truth.

The generator renders a white-light colonoscopy view from a handful of random draws, so that
segmentation and detection code (and the napari workflow around it) can be exercised offline
on data that looks plausible and whose ground truth is exact. It is *not* a model of real
anatomy and must never be used to judge clinical performance.

Scene model (every parameter is drawn from ``numpy.random.default_rng(seed)``; pixel sizes
scale with ``min(H, W) / 288``):

* **Mucosa**: a pinkish-red base colour (R 0.80-0.92, G 0.36-0.50, B 0.30-0.42 of full scale)
  mixed with a deeper red by low-frequency smoothed noise (features 70-140 px), plus a soft
  brightness mottling (+-2-5 %, 25-50 px) and a fine grain (1.2 %).
* **Lumen**: the vanishing point of the bowel, off-centre (anywhere in the central 60 % x 64 %
  of the frame). The distance ``rho`` from it, in lumen radii (0.13-0.26 of the half
  diagonal, elliptical with aspect 0.70-1.0 and a wobbly outline), sets the illumination
  ``(rho**g / (1 + rho**g)) ** 1.4`` with ``g`` in 1.6-2.6: black-red in the depth, bright
  near the camera. Deep regions turn redder (G and B fall faster than R) and are out of
  focus (gaussian blur, sigma 2.5-4.5 px, weight ``exp(-(rho / 1.4)**2)``).
* **Haustral folds**: up to 7 rings around the lumen at radii growing geometrically (first at
  1.0-1.5 lumen radii, ratio 1.35-1.8), each with a wobbly outline and covering a partial
  arc; a crisp bright crest facing the camera (gain 0.15-0.30) and a shadow on the side
  toward the lumen (gain 0.25-0.45).
* **Vessels**: 4-9 branching random-walk trees (up to 3 branching levels), darker red, 1-2.5
  px wide, strength 0.45-0.85, fainter in the depth and mostly hidden on polyps.
* **Polyps**: ``n_polyps`` (0..3 drawn from the seed when None; at most ``MAX_POLYPS``).
  Each covers 3 %-25 % of the frame area, drawn log-uniformly (with several polyps the upper
  bound is 25 % / n, at least 4 %); outline: an ellipse (aspect 1.0-1.45, any orientation)
  whose radius is perturbed by 3-6 smooth harmonics (amplitude 0.04-0.16); dome height
  ``(1 - r**2) ** p`` (``p`` 0.45-1.0, height 0.5-1.1 radii) with small bumps, Lambert-
  shaded from a light 0-19 degrees off the optical axis and lit as if nearer the camera than
  the wall; colour "redder", "paler" or "pinker" than the local mucosa, with a guaranteed
  chromaticity contrast (``|log(G/R)|`` difference to the ring 3-12 px around it of at
  least 0.14); a fine pit-like texture (2-12 px, +-2.5-8 %); a crisp border anti-aliased over
  one pixel; a contact shadow on the mucosa away from the light. Polyps lie entirely inside
  the field of view, off the lumen centre, and at least 3 px apart, so that each is exactly
  one connected component of the mask.
* **Specular highlights**: overexposed white where the dome normal meets the half vector
  (shininess 25-90, broken up by noise), and 2-6 groups of 1-3 elongated blobs (1.5-5.5 px)
  on the lit mucosa, mostly on fold crests, all with a small bloom. They never change the
  mask.
* **Optics**: a vignette (strength 0.15-0.45), gaussian blur (sigma 0.35-1.1 px), sensor
  noise (sigma 0.004-0.012), and the black field-of-view mask of endoscope frames: an octagon
  (cut corners 8-20 % of the short side) or a rounded rectangle (corner radius 10-25 %),
  half the time with black side bands (up to 6 % of the width).

Every frame records its seed and the drawn values in ``EndoscopyFrame.params``.

Outputs: ``image`` (H, W, 3) uint8, ``mask`` (H, W) uint8 with 1 exactly on polyp pixels
(highlights on a polyp included), ``boxes`` (N, 4) float ``(y0, x0, y1, x1)`` in pixel
coordinates with ``y1``/``x1`` exclusive (the ``bbox`` convention of
``skimage.measure.regionprops``), one row per polyp, and ``present`` (N > 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from scipy import ndimage

from napari_medvit.synthetic._endoscopy_fields import (
    add_blob,
    draw_vessels,
    fov_mask,
    periodic,
    sigmoid,
    smooth_noise,
    theta_index,
)
from napari_medvit.synthetic._seeds import check_seed, derived_seeds, map_cases, select_cases

__all__ = [
    "EndoscopyFrame",
    "generate_endoscopy_frame",
    "generate_endoscopy_dataset",
    "MAX_POLYPS",
    "POLYP_AREA_RANGE",
    "SAMPLE_FRAME_SEED",
    "SAMPLE_FRAME_SHAPE",
]

MAX_POLYPS = 5
#: Area of one polyp as a fraction of the frame area (single polyp; the upper bound is divided
#: by the number of polyps, with a floor of 4 %).
POLYP_AREA_RANGE = (0.03, 0.25)
#: The committed sample frame ``sample_data/endoscopy_polyp.png`` is
#: ``generate_endoscopy_frame(SAMPLE_FRAME_SEED, SAMPLE_FRAME_SHAPE, n_polyps=1)``.
SAMPLE_FRAME_SEED = 12
SAMPLE_FRAME_SHAPE = (288, 384)
_MIN_SIDE = 64
_MAX_SIDE = 4096
_VESSEL_TINT = np.array([0.30, 0.62, 0.52], np.float32)  # light absorbed by vessels, per channel


@dataclass
class EndoscopyFrame:
    """One synthetic frame and its ground truth."""

    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8, 1 on polyp pixels
    boxes: np.ndarray  # (N, 4) float64, (y0, x0, y1, x1), y1/x1 exclusive
    present: bool
    seed: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# argument checks


def _check_shape(shape: Any) -> tuple[int, int]:
    """``(height, width)`` as ints, each side in [_MIN_SIDE, _MAX_SIDE]; ValueError otherwise."""
    try:
        h, w = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair of integers (height, width), got {shape!r}") from None
    if (h, w) != tuple(shape):
        raise ValueError(f"shape must hold integers, got {shape!r}")
    if not (_MIN_SIDE <= h <= _MAX_SIDE and _MIN_SIDE <= w <= _MAX_SIDE):
        raise ValueError(f"shape sides must lie in [{_MIN_SIDE}, {_MAX_SIDE}] pixels, got {(h, w)}")
    return h, w


# --------------------------------------------------------------------------------------------
# scene parts


@dataclass
class _Polyp:
    """One placed polyp: its centre, window in the frame and outline maps on that window."""

    cy: float
    cx: float
    y0: int
    x0: int
    inside: np.ndarray  # bool, polyp pixels in the window [y0:y0+h, x0:x0+w]
    alpha: np.ndarray  # float, anti-aliased coverage
    rn: np.ndarray  # float, normalised radius (1 at the border)
    area_fraction: float


def _make_polyp(rng: np.random.Generator, h: int, w: int, area_frac: float,
                fov_core: np.ndarray, taken: np.ndarray, lumen: tuple[float, float],
                tries: int = 40) -> _Polyp | None:
    """Try to place one polyp of the given area; None if no free spot was found."""
    aspect = rng.uniform(1.0, 1.45)
    phi = rng.uniform(0.0, np.pi)
    pert = periodic(rng, int(rng.integers(3, 7)), rng.uniform(0.04, 0.16))
    # Continuous area of the star-shaped outline: a * b * 0.5 * integral of (1 + p)^2.
    mean_sq = float(np.mean((1.0 + pert.astype(np.float64)) ** 2))
    area = area_frac * h * w
    r0 = np.sqrt(area / (np.pi * mean_sq))  # geometric mean radius
    a, b = r0 * np.sqrt(aspect), r0 / np.sqrt(aspect)
    reach = a * (1.0 + float(pert.max())) + 2.0
    margin = reach + 14.0 * min(h, w) / 288.0  # window: polyp, its contact shadow and a colour ring
    ly, lx = lumen
    for _ in range(tries):
        cy = rng.uniform(reach, h - reach) if h > 2 * reach else h / 2.0
        cx = rng.uniform(reach, w - reach) if w > 2 * reach else w / 2.0
        # keep the polyp off the very centre of the lumen (it sits on the wall)
        if np.hypot(cy - ly, cx - lx) < 0.35 * r0 + 0.06 * min(h, w):
            continue
        y0, y1 = max(int(np.floor(cy - margin)), 0), min(int(np.ceil(cy + margin)) + 1, h)
        x0, x1 = max(int(np.floor(cx - margin)), 0), min(int(np.ceil(cx + margin)) + 1, w)
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        xx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        u = xx * np.cos(phi) + yy * np.sin(phi)
        v = -xx * np.sin(phi) + yy * np.cos(phi)
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        theta = np.arctan2(v / b, u / a)
        bound = 1.0 + pert[theta_index(theta)]
        rn = rho / bound  # 1 on the outline
        # signed distance in pixels (approx.): (1 - rn) times the local radius
        local_r = bound * np.sqrt((a * np.cos(theta)) ** 2 + (b * np.sin(theta)) ** 2)
        sd = (1.0 - rn) * local_r
        inside = sd > 0.0
        if not inside.any():
            continue
        win_fov = fov_core[y0:y1, x0:x1]
        if np.any(inside & ~win_fov):
            continue
        if np.any(inside & taken[y0:y1, x0:x1]):
            continue
        alpha = np.clip(sd + 0.5, 0.0, 1.0).astype(np.float32)
        return _Polyp(cy, cx, y0, x0, inside, alpha, rn.astype(np.float32), float(inside.sum()) / (h * w))
    return None


# --------------------------------------------------------------------------------------------
# render stages: each takes the frame's one generator and draws from it in a fixed order


@dataclass
class _Tube:
    """Geometry of the bowel seen from the camera: the lumen and the illumination it implies."""

    ly: float  # lumen centre (pixels)
    lx: float
    r_lumen: float  # lumen radius (pixels)
    rho: np.ndarray  # (H, W) distance from the lumen centre in (wobbly, elliptical) lumen radii
    tidx: np.ndarray  # (H, W) index of each pixel's angle around the lumen into the NTHETA angle tables
    illum: np.ndarray  # (H, W) float32 illumination in [0, 1]
    falloff: float  # light fall-off exponent g


def _draw_tube(rng: np.random.Generator, h: int, w: int) -> _Tube:
    """Lumen position, size and outline, and the illumination ``(rho**g / (1 + rho**g)) ** 1.4``."""
    half_diag = 0.5 * float(np.hypot(h, w))
    ly = h * (0.5 + rng.uniform(-0.30, 0.30))
    lx = w * (0.5 + rng.uniform(-0.32, 0.32))
    r_lumen = rng.uniform(0.13, 0.26) * half_diag
    q = rng.uniform(0.70, 1.0)
    psi = rng.uniform(0.0, np.pi)
    yy = np.arange(h, dtype=np.float32)[:, None] - np.float32(ly)
    xx = np.arange(w, dtype=np.float32)[None, :] - np.float32(lx)
    uu = xx * np.float32(np.cos(psi)) + yy * np.float32(np.sin(psi))
    vv = (-xx * np.float32(np.sin(psi)) + yy * np.float32(np.cos(psi))) / np.float32(q)
    r = np.sqrt(uu * uu + vv * vv)
    tidx = theta_index(np.arctan2(vv, uu))
    lumen_wobble = periodic(rng, 5, rng.uniform(0.10, 0.30))
    rho = r / (np.float32(r_lumen) * (1.0 + lumen_wobble[tidx]))
    g = rng.uniform(1.6, 2.6)
    rho_g = rho**g
    illum = rho_g / (1.0 + rho_g)
    illum /= max(float(np.percentile(illum, 98)), 1e-6)
    illum = np.clip(illum, 0.0, 1.0) ** np.float32(1.4)
    illum = illum.astype(np.float32)
    return _Tube(ly=ly, lx=lx, r_lumen=r_lumen, rho=rho, tidx=tidx, illum=illum, falloff=g)


def _draw_folds(rng: np.random.Generator, tube: _Tube) -> tuple[np.ndarray, np.ndarray, int]:
    """Haustral fold rings around the lumen: the shading they add (bright crests, shadows toward the
    lumen), the crest strength map (where mucosal highlights prefer to sit) and the number of folds."""
    h, w = tube.rho.shape
    rho, tidx = tube.rho, tube.tidx
    fold = np.zeros((h, w), np.float32)
    crest_map = np.zeros((h, w), np.float32)
    rho_k = rng.uniform(1.0, 1.5)
    ratio = rng.uniform(1.35, 1.8)
    ridge_gain, shadow_gain = rng.uniform(0.15, 0.30), rng.uniform(0.25, 0.45)
    rho_max = float(rho.max())
    n_folds = 0
    while rho_k < rho_max and n_folds < 7:
        wobble = periodic(rng, 4, rng.uniform(0.08, 0.22))
        arc = np.clip(0.45 + periodic(rng, 3, 1.0) * 0.9, 0.0, 1.0)
        width = 0.22 * rho_k
        u = (rho - rho_k * (1.0 + wobble[tidx])) / np.float32(width)
        crest = sigmoid(u / 0.12) * np.exp(-np.maximum(u, 0.0) / 0.45)
        shadow = sigmoid(-u / 0.12) * np.exp(np.minimum(u, 0.0) / 0.45)
        fold += arc[tidx] * (ridge_gain * crest - shadow_gain * shadow)
        crest_map = np.maximum(crest_map, arc[tidx] * crest)
        rho_k *= ratio
        n_folds += 1
    return fold, crest_map, n_folds


def _draw_mucosa(rng: np.random.Generator, h: int, w: int, s: float,
                 fold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mucosa colour (base mixed with a deeper red by smooth noise) and its brightness shading
    (mottling, grain and the folds)."""
    base = np.array([rng.uniform(0.80, 0.92), rng.uniform(0.36, 0.50), rng.uniform(0.30, 0.42)], np.float32)
    deep = base * np.array([rng.uniform(0.80, 0.92), rng.uniform(0.55, 0.72), rng.uniform(0.60, 0.78)], np.float32)
    mix = sigmoid(smooth_noise(rng, (h, w), rng.uniform(70, 140) * s) * 1.5)
    color = base[None, None, :] * (1.0 - mix[..., None]) + deep[None, None, :] * mix[..., None]
    mottle = smooth_noise(rng, (h, w), rng.uniform(25, 50) * s) * rng.uniform(0.02, 0.05)
    grain = smooth_noise(rng, (h, w), 2.5 * s) * 0.012
    shade = 1.0 + mottle + grain + fold
    return color, shade


def _place_polyps(rng: np.random.Generator, n: int, h: int, w: int, s: float, fov_core: np.ndarray,
                  lumen: tuple[float, float], seed: int) -> tuple[np.ndarray, list[_Polyp]]:
    """Place ``n`` non-overlapping polyps inside the field of view (log-uniform areas, shrunk until
    they fit); returns the exact mask and the polyps. RuntimeError if they cannot all be placed."""
    mask = np.zeros((h, w), np.uint8)
    taken = np.zeros((h, w), bool)
    polyps: list[_Polyp] = []
    lo, hi = POLYP_AREA_RANGE
    hi_n = max(hi / max(n, 1), 0.04)
    for _ in range(n):
        frac = float(np.exp(rng.uniform(np.log(lo), np.log(hi_n))))
        placed = None
        while placed is None:
            at_min = frac <= lo * 1.0001
            placed = _make_polyp(rng, h, w, frac, fov_core, taken, lumen, tries=400 if at_min else 40)
            if placed is None:
                if at_min:
                    break
                frac = max(frac * 0.85, lo)
        if placed is None:
            raise RuntimeError(f"could not place {n} non-overlapping polyps in a {h}x{w} frame (seed {seed})")
        p = placed
        ph, pw = p.inside.shape
        win = (slice(p.y0, p.y0 + ph), slice(p.x0, p.x0 + pw))
        mask[win][p.inside] = 1
        grown = ndimage.binary_dilation(p.inside, iterations=max(int(round(4 * s)), 3))
        taken[win] |= grown
        polyps.append(p)
    return mask, polyps


def _lit_wall(color: np.ndarray, shade: np.ndarray, vessels: np.ndarray, illum: np.ndarray) -> np.ndarray:
    """The shaded mucosa with its vessels, redder and darker away from the camera (no draws)."""
    image = color * shade[..., None]
    image *= 1.0 - vessels[..., None] * _VESSEL_TINT[None, None, :] * (0.35 + 0.65 * illum[..., None])
    image[..., 0] *= illum**0.75
    image[..., 1] *= illum**1.25
    image[..., 2] *= illum**1.2
    return image


def _draw_light(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Unit light direction (0-19 degrees off the optical axis) and the half vector to the camera."""
    light = np.array([rng.uniform(-0.35, 0.35), rng.uniform(-0.35, 0.35), 1.0])
    light /= np.linalg.norm(light)
    half = light + np.array([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half)
    return light, half


def _polyp_dome(rng: np.random.Generator, p: _Polyp, s: float, light: np.ndarray,
                half: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A polyp's dome height map with small bumps, its Lambert term and its normal . half vector."""
    ph, pw = p.inside.shape
    expo = rng.uniform(0.45, 1.0)
    scale_h = rng.uniform(0.5, 1.1) * np.sqrt(p.inside.sum() / np.pi)
    rn = np.minimum(p.rn, 1.0)
    bumps = smooth_noise(rng, (ph, pw), rng.uniform(5, 12) * s) * rng.uniform(0.0, 0.05)
    height = (1.0 - rn**2) ** expo + bumps * (1.0 - rn**2)
    height = height.astype(np.float32) * np.float32(scale_h)
    gy, gx = np.gradient(height)
    nz = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    nx, ny = -gx * nz, -gy * nz
    lambert = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0.0, 1.0)
    ndh = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0.0, 1.0)
    return height, lambert, ndh


def _polyp_colour(rng: np.random.Generator, p: _Polyp, local_base: np.ndarray,
                  s: float) -> tuple[str, np.ndarray]:
    """A polyp's colour kind ("redder", "paler", "pinker" than ``local_base``) and its textured
    colour before lighting."""
    ph, pw = p.inside.shape
    kind = str(rng.choice(["redder", "paler", "pinker"], p=[0.4, 0.35, 0.25]))
    if kind == "redder":
        tint = np.array([rng.uniform(1.0, 1.06), rng.uniform(0.70, 0.84), rng.uniform(0.76, 0.90)], np.float32)
        pbase = local_base * tint
    elif kind == "paler":
        pale = np.array([0.98, 0.66, 0.56], np.float32)
        m = rng.uniform(0.15, 0.35)
        pbase = local_base * (1.0 - m) + pale * m
    else:
        tint = np.array([rng.uniform(1.02, 1.06), rng.uniform(0.85, 0.92), rng.uniform(0.92, 1.02)], np.float32)
        pbase = local_base * tint
    tex_amp = rng.uniform(0.025, 0.08)
    texture = 0.7 * smooth_noise(rng, (ph, pw), rng.uniform(2.0, 4.5) * s) + \
        0.5 * smooth_noise(rng, (ph, pw), rng.uniform(6.0, 12.0) * s)
    pit = 1.0 + tex_amp * np.tanh(texture)
    return kind, np.clip(pbase, 0.0, 1.0)[None, None, :] * pit[..., None]


def _cast_shadow(image: np.ndarray, p: _Polyp, win: tuple[slice, slice], light: np.ndarray,
                 s: float) -> np.ndarray:
    """Darken the mucosa just outside the polyp, away from the light (in place, no draws); returns
    the distance (pixels) of the window's pixels to the polyp."""
    ph, pw = p.inside.shape
    dist = ndimage.distance_transform_edt(~p.inside).astype(np.float32)
    yy_p = np.arange(ph, dtype=np.float32)[:, None] + p.y0 - p.cy
    xx_p = np.arange(pw, dtype=np.float32)[None, :] + p.x0 - p.cx
    away = 0.5 + 0.5 * (-(xx_p * light[0] + yy_p * light[1]) / (np.sqrt(xx_p**2 + yy_p**2) + 1e-3))
    cast = np.exp(-dist / (2.5 * s)) * (0.08 + 0.30 * away) * (~p.inside)
    image[win] *= (1.0 - cast)[..., None]
    return dist


def _ensure_contrast(rng: np.random.Generator, prgb: np.ndarray, ring_rgb: np.ndarray, inside: np.ndarray,
                     kind: str) -> None:
    """Raise the ``|log(G/R)|`` chromaticity difference between the polyp and the mucosa ring around
    it to a drawn minimum (in place)."""
    pm, rm = prgb[inside].mean(axis=0), ring_rgb.mean(axis=0)
    diff = float(np.log((pm[1] + 1e-3) / (pm[0] + 1e-3)) - np.log((rm[1] + 1e-3) / (rm[0] + 1e-3)))
    sign = 1.0 if kind == "paler" else -1.0
    want = rng.uniform(0.14, 0.22) if kind == "paler" else rng.uniform(0.15, 0.30)
    if sign * diff < want:
        gain = float(np.exp(sign * (want - sign * diff)))
        prgb[..., 1] *= gain
        prgb[..., 2] *= gain ** (0.6 if kind == "paler" else 0.8)


def _render_polyp(rng: np.random.Generator, p: _Polyp, image: np.ndarray, specular: np.ndarray, *,
                  color: np.ndarray, illum: np.ndarray, vessels: np.ndarray, fov_core: np.ndarray,
                  mask: np.ndarray, light: np.ndarray, half: np.ndarray, s: float) -> dict[str, Any]:
    """Composite one polyp into ``image`` and its dome highlight into ``specular`` (both in place):
    dome shading, colour, contact shadow, guaranteed contrast, anti-aliased border. Returns its
    ``params["polyps"]`` entry."""
    ph, pw = p.inside.shape
    win = (slice(p.y0, p.y0 + ph), slice(p.x0, p.x0 + pw))
    height, lambert, ndh = _polyp_dome(rng, p, s, light, half)
    kind, pcol = _polyp_colour(rng, p, color[win][p.inside].mean(axis=0), s)
    # raised, hence nearer the light than the wall around it
    near = np.maximum(illum[win], 0.72 + 0.28 * (height / max(float(height.max()), 1e-6)))
    diffuse = 0.50 + 0.60 * lambert
    prgb = pcol * (diffuse * near)[..., None]
    prgb[..., 1] *= near ** 0.25  # keep depth tint consistent
    prgb[..., 2] *= near ** 0.20
    prgb *= 1.0 - 0.25 * vessels[win][..., None] * _VESSEL_TINT

    dist = _cast_shadow(image, p, win, light, s)
    ring = (dist > 3.0 * s) & (dist <= 12.0 * s) & fov_core[win] & (mask[win] == 0)
    if ring.any():
        _ensure_contrast(rng, prgb, image[win][ring], p.inside, kind)

    a = p.alpha[..., None]
    image[win] = image[win] * (1.0 - a) + prgb * a

    shin = rng.uniform(25, 90)
    spec = ndh**shin
    breakup = 0.65 + 0.7 * sigmoid(smooth_noise(rng, (ph, pw), rng.uniform(3, 7) * s) * 2.0)
    hl = np.clip((spec * breakup - 0.45) / 0.25, 0.0, 1.0) * p.alpha
    specular[win] = np.maximum(specular[win], hl)
    return {"area_fraction": p.area_fraction, "kind": kind, "center": (p.cy, p.cx)}


def _polyp_box(p: _Polyp) -> tuple[float, float, float, float]:
    """``(y0, x0, y1, x1)`` of the polyp's pixels in the frame, ``y1``/``x1`` exclusive."""
    ys, xs = np.nonzero(p.inside)
    return (float(ys.min() + p.y0), float(xs.min() + p.x0), float(ys.max() + p.y0 + 1),
            float(xs.max() + p.x0 + 1))


def _add_mucosal_highlights(rng: np.random.Generator, specular: np.ndarray, tube: _Tube, fov_core: np.ndarray,
                            crest_map: np.ndarray, s: float) -> None:
    """2-6 groups of 1-3 small elongated highlights on the lit mucosa, mostly on fold crests (in place)."""
    h, w = specular.shape
    lit = (tube.illum > 0.45) & fov_core
    on_crest = np.flatnonzero((lit & (crest_map > 0.5)).ravel())
    anywhere = np.flatnonzero(lit.ravel())
    n_groups = int(rng.integers(2, 7))
    for _ in range(n_groups):
        pool = on_crest if (on_crest.size and rng.random() < 0.7) else anywhere
        if not pool.size:
            break
        gy, gx = divmod(int(rng.choice(pool)), w)
        for _ in range(int(rng.integers(1, 4))):
            cy = int(np.clip(gy + rng.normal(0, 4 * s), 0, h - 1))
            cx = int(np.clip(gx + rng.normal(0, 6 * s), 0, w - 1))
            major = rng.uniform(1.5, 5.5) * s
            minor = rng.uniform(0.8, 2.0) * s
            ang = float(np.arctan2(cy - tube.ly, cx - tube.lx)) + np.pi / 2 + rng.normal(0, 0.3)
            add_blob(specular, cy, cx, major, minor, ang)


def _depth_and_vignette(rng: np.random.Generator, image: np.ndarray, rho: np.ndarray,
                        s: float) -> tuple[np.ndarray, float]:
    """The far lumen out of focus (depth of field), then a vignette; returns the image and the
    vignette strength."""
    h, w = rho.shape
    dof_sigma = rng.uniform(2.5, 4.5) * s
    far = np.exp(-(rho / 1.4) ** 2)[..., None]
    blurred = ndimage.gaussian_filter(image, (dof_sigma, dof_sigma, 0))
    image = image * (1.0 - far) + blurred * far
    vig = rng.uniform(0.15, 0.45)
    cy0, cx0 = (h - 1) / 2.0, (w - 1) / 2.0
    rv = ((np.arange(h, dtype=np.float32)[:, None] - cy0) / (h / 2.0)) ** 2 * (h / w) + \
        ((np.arange(w, dtype=np.float32)[None, :] - cx0) / (w / 2.0)) ** 2
    image *= (1.0 - vig * np.clip(rv / 1.6, 0.0, 1.0) ** 1.3)[..., None]
    return image, vig


def _expose(rng: np.random.Generator, image: np.ndarray, specular: np.ndarray, fov: np.ndarray,
            s: float) -> tuple[np.ndarray, dict[str, float]]:
    """Overexposed highlights with a bloom, optical blur, sensor noise and the field-of-view mask;
    returns the uint8 frame and the drawn optics parameters."""
    bloom = ndimage.gaussian_filter(specular, 2.5 * s) * 0.35
    white = np.float32(1.35)
    image = image * (1.0 - specular[..., None]) + white * specular[..., None] + bloom[..., None]
    blur = rng.uniform(0.35, 1.1) * s
    image = ndimage.gaussian_filter(image, (blur, blur, 0))
    noise_sigma = rng.uniform(0.004, 0.012)
    image += rng.standard_normal(image.shape).astype(np.float32) * np.float32(noise_sigma)
    image *= fov[..., None]
    image = np.clip(image, 0.0, 1.0)
    return np.round(image * 255.0).astype(np.uint8), {"blur_sigma": float(blur), "noise_sigma": float(noise_sigma)}


# --------------------------------------------------------------------------------------------
# public API


def _check_n_polyps(n_polyps: Any) -> None:
    """ValueError unless ``n_polyps`` is None or an integer in 0..MAX_POLYPS."""
    if n_polyps is not None:
        if isinstance(n_polyps, bool) or not isinstance(n_polyps, (int, np.integer)):
            raise ValueError(f"n_polyps must be None or an integer in 0..{MAX_POLYPS}, got {n_polyps!r}")
        if not 0 <= n_polyps <= MAX_POLYPS:
            raise ValueError(f"n_polyps must lie in 0..{MAX_POLYPS}, got {n_polyps}")


def generate_endoscopy_frame(seed: int, shape: tuple[int, int] = (288, 384),
                             n_polyps: int | None = None) -> EndoscopyFrame:
    """Render one colonoscopy-like frame; deterministic for a given ``seed``, ``shape``, ``n_polyps``.

    ``n_polyps=None`` draws the count from 0..3 with the seed. See the module docstring for the
    scene model and the ranges of its parameters. The stages below share one generator and draw
    from it in a fixed order, which is what makes a seed's frame reproducible.
    """
    seed = check_seed(seed)
    h, w = _check_shape(shape)
    _check_n_polyps(n_polyps)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 4)) if n_polyps is None else int(n_polyps)
    s = min(h, w) / 288.0
    params: dict[str, Any] = {"n_polyps": n}

    tube = _draw_tube(rng, h, w)
    params.update(lumen_center=(float(tube.ly), float(tube.lx)), lumen_radius_px=float(tube.r_lumen),
                  light_falloff=float(tube.falloff))
    fold, crest_map, n_folds = _draw_folds(rng, tube)
    params["n_folds"] = n_folds
    color, shade = _draw_mucosa(rng, h, w, s, fold)
    vessels = draw_vessels(rng, h, w, s) * np.float32(rng.uniform(0.45, 0.85))
    fov, fov_info = fov_mask(rng, h, w)
    params.update(fov_info)
    fov_core = ndimage.binary_erosion(fov > 0.999, iterations=max(int(round(3 * s)), 2))
    mask, polyps = _place_polyps(rng, n, h, w, s, fov_core, (tube.ly, tube.lx), seed)

    image = _lit_wall(color, shade, vessels, tube.illum)
    specular = np.zeros((h, w), np.float32)
    light, half = _draw_light(rng)
    params["polyps"] = [_render_polyp(rng, p, image, specular, color=color, illum=tube.illum, vessels=vessels,
                                      fov_core=fov_core, mask=mask, light=light, half=half, s=s) for p in polyps]
    boxes = [_polyp_box(p) for p in polyps]
    _add_mucosal_highlights(rng, specular, tube, fov_core, crest_map, s)

    image, vig = _depth_and_vignette(rng, image, tube.rho, s)
    out, optics = _expose(rng, image, specular, fov, s)
    params.update(blur_sigma=optics["blur_sigma"], vignette=float(vig), noise_sigma=optics["noise_sigma"])

    box_arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return EndoscopyFrame(image=out, mask=mask, boxes=box_arr, present=bool(n > 0), seed=seed, params=params)


def generate_endoscopy_dataset(n: int, seed: int = 0, shape: tuple[int, int] = (288, 384),
                               workers: int = 1, cases: Any = None) -> list[EndoscopyFrame]:
    """``n`` frames with distinct seeds derived from ``seed`` (each frame records its own seed)."""
    seeds = select_cases(derived_seeds(n, seed), cases)  # cases: only these indices of the dataset
    return map_cases(partial(generate_endoscopy_frame, shape=_check_shape(shape)), seeds, workers)
