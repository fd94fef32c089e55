"""White-matter-hyperintensity-like lesions of the brain generator (:mod:`napari_medvit.synthetic.brain`):
drawing them (load, kinds, shapes, contrasts), placing them in white matter and rendering their
soft membership on an output grid. The module docstring of ``brain`` describes the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_medvit.synthetic._brain_atlas import _atlas, _Grid
from napari_medvit.synthetic._brain_fields import _random_rotation, _sample, _sigmoid, _Warp

_LOAD_MEDIAN_ML = 4.0
_LOAD_SIGMA = 0.9
_LOAD_CLIP_ML = (1.0, 40.0)
_PV_INFLATE = 1.35
_MIDLINE_MM = 7.0  # lesions fade out closer than this to the mid-sagittal plane
_WM_FRACTION = {"periventricular": 0.7, "deep": 0.9}  # of a lesion's ellipsoid, wanted at placement


@dataclass
class _Lesion:
    """One drawn and placed lesion: its ellipsoid, outline perturbation and contrasts."""

    kind: str
    centre: np.ndarray  # atlas mm, subject space
    axes: np.ndarray  # (3, 3) rows: unit axes
    semi: np.ndarray  # (3,) mm
    waves: np.ndarray  # (5, 3) wave vectors (rad / mm)
    phases: np.ndarray  # (5,)
    amps: np.ndarray  # (5,)
    volume_ml: float
    flair_gain: float
    t1_factor: float


def _lesion_axes(warp: _Warp, kind: str, centre: np.ndarray, spin: np.ndarray) -> np.ndarray:
    """Unit axes (rows) of a lesion: periventricular ones put their first (short) axis along the
    gradient of the distance to the ventricles; deep ones take the random rotation ``spin``."""
    if kind != "periventricular":
        return spin.T
    at = _atlas()
    offs = np.vstack([np.eye(3), -np.eye(3)]) + centre
    vd = _sample(at.vent_dist, warp.points(offs))
    grad = vd[:3] - vd[3:]
    norm = float(np.linalg.norm(grad))
    nrm = grad / norm if norm > 1e-6 else spin[0]
    tmp = spin[1] - nrm * float(spin[1] @ nrm)
    if np.linalg.norm(tmp) < 1e-6:
        tmp = spin[2] - nrm * float(spin[2] @ nrm)
    tan = tmp / np.linalg.norm(tmp)
    return np.vstack([nrm, tan, np.cross(nrm, tan)])


def _place(rng: np.random.Generator, warp: _Warp, kind: str, semi: np.ndarray, radius: float,
           spin: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Centre (atlas mm, subject space), axes and white-matter fraction of a lesion.

    Rejection sampling of the centre (conditions in the module docstring); each accepted centre
    is scored by the fraction of 64 random points of the lesion's ellipsoid that fall in white
    matter off the midline, and the first one reaching ``_WM_FRACTION[kind]`` (else the best of
    up to 30 x 8 candidates) wins. None if no centre qualifies.
    """
    at = _atlas()
    if kind == "periventricular":
        lo, hi = at.vent_lo - 12.0, at.vent_hi + 12.0
    else:
        lo, hi = at.brain_lo, at.brain_hi
    need_depth = min(2.0 + radius / 2.0, 5.0)
    ball = rng.standard_normal((64, 3))
    ball *= (rng.random((64, 1)) ** (1.0 / 3.0)) / np.linalg.norm(ball, axis=1, keepdims=True)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(30):
        pts = lo + rng.random((512, 3)) * (hi - lo)
        q = warp.points(pts)
        t1 = _sample(at.t1, q)
        vd = _sample(at.vent_dist, q)
        ras = q @ at.affine[:3, :3].T + at.affine[:3, 3]
        ok = (t1 > at.t_wm) & (np.abs(ras[:, 0]) > _MIDLINE_MM + 2.0)
        if kind == "periventricular":
            ok &= (vd >= 1.5) & (vd <= 2.0 + semi[0])
        else:
            depth = _sample(at.wm_depth, q)
            ok &= (vd > 8.0) & (depth >= need_depth) & (ras[:, 2] >= 0.0) & (ras[:, 2] <= 60.0)
        for i in np.flatnonzero(ok)[:8]:
            axes = _lesion_axes(warp, kind, pts[i], spin)
            inner = warp.points(pts[i] + (ball * semi) @ axes)
            x = inner @ at.affine[0, :3] + at.affine[0, 3]
            frac = float(np.mean((_sample(at.t1, inner) > at.t_wm) & (np.abs(x) > _MIDLINE_MM)))
            if best is None or frac > best[2]:
                best = (pts[i], axes, frac)
            if frac >= _WM_FRACTION[kind]:
                return best
    return best


def _draw_lesions(rng: np.random.Generator, warp: _Warp, n: int) -> tuple[list[_Lesion], float]:
    """``n`` lesions (load, kinds, shapes, contrasts, placement) and the subject's lesion load (mL);
    a lesion that finds no place is left out."""
    if n == 0:
        return [], 0.0
    load = float(np.exp(np.log(_LOAD_MEDIAN_ML) + 0.4 * np.log(n / 6.0) + _LOAD_SIGMA * rng.standard_normal()))
    load = float(np.clip(load, *_LOAD_CLIP_ML))
    kinds = ["periventricular" if rng.random() < (0.8 if i == 0 else 0.5) else "deep" for i in range(n)]
    w = rng.random(n) ** (-1.0 / 1.1)
    w *= np.where(np.array(kinds) == "periventricular", 3.0, 1.0)
    vols = load * w / w.sum()
    flair_c = rng.uniform(1.3, 1.8)
    t1_k = rng.uniform(0.6, 0.85)
    lesions: list[_Lesion] = []
    for i in range(n):
        kind = kinds[i]
        vol = float(np.clip(vols[i], 0.01, 8.0 if kind == "periventricular" else 2.0))
        # periventricular ellipsoids are made larger: the part in the ventricles is cut off
        r = (3.0 * vol * 1000.0 * (_PV_INFLATE if kind == "periventricular" else 1.0)
             / (4.0 * np.pi)) ** (1.0 / 3.0)  # mm
        if kind == "periventricular":
            e, t = rng.uniform(1.3, 2.5), rng.uniform(0.8, 1.25)
            semi = np.array([r / e, r * np.sqrt(e) * t, r * np.sqrt(e) / t])  # normal, tangent, tangent
        else:
            e1, e2 = rng.uniform(1.0, 1.6), rng.uniform(0.8, 1.2)
            semi = np.array([r * e1, r * e2, r / (e1 * e2)])
        spin = _random_rotation(rng)
        waves = rng.standard_normal((5, 3))
        waves /= np.linalg.norm(waves, axis=1, keepdims=True)
        waves *= (2.0 * np.pi / (rng.uniform(1.0, 2.0, 5) * r))[:, None]
        phases = rng.uniform(0.0, 2.0 * np.pi, 5)
        amps = rng.random(5)
        amps *= rng.uniform(0.10, 0.30) / amps.sum()
        gain = float(np.clip(flair_c + rng.uniform(-0.1, 0.1), 1.25, 1.9))
        fac = float(np.clip(t1_k + rng.uniform(-0.05, 0.05), 0.55, 0.9))
        placed = _place(rng, warp, kind, semi, r, spin)
        if placed is None and kind == "periventricular":
            kind = "deep"
            placed = _place(rng, warp, kind, semi, r, spin)
        if placed is None:
            continue
        centre, axes, _ = placed
        lesions.append(_Lesion(kind=kind, centre=centre, axes=axes, semi=semi, waves=waves, phases=phases,
                               amps=amps, volume_ml=vol, flair_gain=gain, t1_factor=fac))
    return lesions, load


def _render_lesion(les: _Lesion, g: _Grid, axes: list[np.ndarray]) -> tuple[tuple[slice, ...], np.ndarray]:
    """The lesion's membership ``f`` on the part of the grid around it."""
    edge = 0.5 + 0.15 * g.spacing
    reach = float(les.semi.max()) * (1.0 + float(les.amps.sum())) + 4.0 * edge + g.spacing
    sl = []
    for i in range(3):
        i0 = int(math.floor((les.centre[i] - reach - g.origin[i]) / g.spacing))
        i1 = int(math.ceil((les.centre[i] + reach - g.origin[i]) / g.spacing)) + 1
        sl.append(slice(max(i0, 0), min(max(i1, 0), g.shape[i])))
    d = [(axes[i][sl[i]] - les.centre[i]).astype(np.float32) for i in range(3)]
    dz, dy, dx = d[0][:, None, None], d[1][None, :, None], d[2][None, None, :]
    rho2 = np.zeros((len(d[0]), len(d[1]), len(d[2])), np.float32)
    for k in range(3):
        a = les.axes[k]
        proj = a[0] * dz + a[1] * dy + a[2] * dx
        rho2 = rho2 + (proj / np.float32(les.semi[k])) ** 2
    rho = np.sqrt(rho2)
    pert = np.zeros_like(rho)
    for wv, ph, am in zip(les.waves, les.phases, les.amps, strict=True):
        pert += np.float32(am) * np.cos(wv[0] * dz + wv[1] * dy + wv[2] * dx + np.float32(ph))
    r_geo = float(np.prod(les.semi) ** (1.0 / 3.0))
    sd = (1.0 - rho / (1.0 + pert)) * np.float32(r_geo)
    return tuple(sl), _sigmoid(sd / np.float32(edge)).astype(np.float32)


def _one_component(lf: np.ndarray) -> np.ndarray | None:
    """Keep one lesion a single face-connected blob: its largest part above 0.5 and the soft
    edge nearest to it; smaller parts (cut off by grey matter, say) and their edges are removed.
    None when nothing reaches 0.5."""
    above = lf >= 0.5
    lab, n = ndimage.label(above)
    if n == 0:
        return None
    if n == 1:
        return lf
    sizes = np.bincount(lab.ravel())[1:]
    keep = int(np.argmax(sizes)) + 1
    nearest = ndimage.distance_transform_edt(lab == 0, return_distances=False, return_indices=True)
    owner = lab[tuple(nearest)]
    return np.where(owner == keep, lf, np.float32(0.0)).astype(np.float32)
