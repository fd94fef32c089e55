"""Seeded synthetic 3D brain MRI (FLAIR + T1) with white-matter-hyperintensity-like lesions.

Every case is built on the real MNI152 T1 template shipped with the package
(``sample_data/mni152_t1_1mm.nii.gz``: uint8, 197 x 233 x 189 voxels (x, y, z), 1 mm, RAS+,
skull-stripped), so that 3D lesion-segmentation code (Swin-UNETR, UNETR, 3D U-Nets, TrUE-Net
with FLAIR + T1) can be trained and tested offline on realistic anatomy with exact ground
truth. It is *not* a model of any real patient and must never be used to judge clinical
performance.

Output grid. The template is cropped to the bounding box of its brain (145 x 181 x 155 mm,
x y z) and resampled at an isotropic ``spacing`` of 1.0-4.0 mm (``SPACING_RANGE``) onto a
fixed grid whose every side is a multiple of 16 voxels (``SIDE_MULTIPLE``; UNETR patches and
Swin windows need it), padded with background: the brain is centred in x and y with at least
11 mm to spare along each (both sides together), the first axial slice starts 5 mm above the template's
lower edge (which already cuts the brainstem) and at least 8 mm are left above the vertex.
Shapes (Z, Y, X): 160 x 192 x 160 at 1 mm, 112 x 128 x 112 at 1.5 mm, 80 x 96 x 80 at 2 mm,
64 x 80 x 64 at 2.5 mm, 64 x 64 x 64 at 3 mm, 48 x 48 x 48 at 4 mm. Arrays are in (Z, Y, X)
order (axial slices along the first axis; z inferior -> superior, y posterior -> anterior,
x left -> right) and ``affine`` maps (z, y, x) indices to MNI152 RAS+ millimetres of the
fixed grid (the subject itself is a deformed copy of the template, so its landmarks lie within
about a centimetre of their MNI coordinates). For a NIfTI file use
``nibabel.Nifti1Image(case.flair.transpose(2, 1, 0), case.affine[:, [2, 1, 0, 3]])``. All
cases at one spacing share the grid, shape and affine of ``brain_template(spacing)``. When
downsampling, the template is first blurred with a gaussian of sigma
``0.4 * sqrt(spacing**2 - 1)`` mm (partial volume, anti-aliasing), then sampled trilinearly.

Generative model (every draw comes from ``numpy.random.default_rng(seed)``; no draw depends on
``spacing``, so one seed gives the same subject at every spacing, only sampled more or less
finely; and no draw but the lesions' depends on ``n_lesions``, so
``generate_brain_case(seed, n_lesions=0)`` is the lesion-free twin of every other count: same
anatomy, bias and noise):

* **Tissue classes** of the template: background (0) and, on brain voxels,
  ``skimage.filters.threshold_multiotsu`` with 4 classes gives thresholds t0 < t1 < t2
  (128, 168, 199 on the uint8 scale): CSF below t0, grey matter between t0 and t2 (t1 only
  splits dark from bright GM; deep grey nuclei are GM), white matter above t2 (WM peak: the
  median above t2, 217). Soft partial-volume memberships are logistic functions of the
  resampled, deformed T1 intensity ``I``: ``p_csf = sigmoid((t0 - I) / 8)``,
  ``p_wm = sigmoid((I - t2) / 5)``, ``p_gm = brain - p_csf - p_wm`` (clipped at 0), all times
  the (blurred) brain mask.
* **Ventricles**: connected components of ``brain & (I < 0.8 t0)`` of at least 1 mL that do
  not touch the brain's surface and whose centroid lies within 40 mm of the brain's centroid
  (the two lateral ventricles, 7 mL each); ``vent_dist`` is the distance to them (mm).
* **Deformation** (the subject's anatomy, applied to the template before everything else):
  the template is sampled at ``T(p) = c + R S (p - c) + t + u(p)`` with ``c`` the brain's
  centroid, ``R`` rotations of -5..5 degrees about each axis, ``S`` per-axis scales 0.95-1.05,
  ``t`` a translation of -3..3 mm per axis and ``u`` a smooth elastic field: a cubic B-spline
  on 32 mm control points with normal coefficients, rescaled so that the largest component of
  ``u`` on the knots inside the brain's box is 0-3 mm (drawn uniformly). The deformed brain's
  convex hull is then kept 2 mm inside the box that every grid covers, by a whole-subject
  shift and, for the few subjects too large for it, a shrink along that axis (at most ~2 %;
  ``params["deformation"]["fit_shift_mm"]`` and ``["fit_scale"]``); so no brain is cut, and
  at 4 mm the brain's partial-volume edge may reach the outermost voxels.
* **T1-like image**: the deformed template intensities divided by the WM peak (WM ~ 1, GM
  ~ 0.78, ventricles ~ 0.3-0.45); inside lesions multiplied by ``1 - (1 - k) ramp(L)`` with
  ``k`` 0.60-0.85 per subject (+-0.05 per lesion, clipped to 0.55-0.90): hypointense.
* **FLAIR-like image**: ``p_csf * c_csf + p_gm * c_gm + p_wm`` with CSF suppressed
  (``c_csf`` 0.10-0.25) and grey matter a bit brighter than white matter (``c_gm`` 1.10-1.30);
  inside lesions multiplied by ``1 + (c - 1) ramp(L)`` with ``c`` 1.30-1.80 per subject
  (+-0.1 per lesion, clipped to 1.25-1.90): hyperintense. Partial-volume voxels on the
  ventricle walls take a GM-like value, a thin bright periventricular lining as on real FLAIR.
* **Lesions**: ``n_lesions`` (when None: 0 with probability 0.10, otherwise
  ``1 + floor(Gamma(shape 1.3, scale 5))`` capped at ``MAX_LESIONS`` = 25, median 6: many
  subjects with few lesions, a few with many). A subject lesion load ``V`` (mL) is drawn
  log-normally, ``log V = log 4 + 0.4 log(n / 6) + 0.9 N(0, 1)`` clipped to 1-40 mL, and split
  among the lesions with heavy-tailed weights ``U**(-1 / 1.1)`` (U uniform), periventricular
  lesions weighing 3x more: many small lesions and a few large ones; each nominal volume is
  clipped to 0.01-8 mL (periventricular) or 0.01-2 mL (deep). The first lesion is
  periventricular with probability 0.8, the others with 0.5.

  - *periventricular* (caps and bands along the lateral ventricles): a flattened ellipsoid of
    1.35 times the nominal volume (the part in the ventricles is cut off), tangent semi-axes
    ``R sqrt(e) t`` and ``R sqrt(e) / t``, normal semi-axis ``R / e`` (``e`` 1.3-2.5, ``t``
    0.8-1.25, ``R`` the radius of that volume), its short axis along the gradient of
    ``vent_dist``; centred in white matter 1.5 mm to (2 mm + normal semi-axis) from the
    ventricles;
  - *deep* white matter: an ellipsoid (semi-axes ``R e1``, ``R e2``, ``R / (e1 e2)``,
    ``e1`` 1.0-1.6, ``e2`` 0.8-1.2) with a random orientation, centred in white matter more
    than 8 mm from the ventricles, at least ``min(2 + R / 2, 5)`` mm deep in WM, at MNI
    height z 0-60 mm.

  Centres are drawn uniformly (ventricles' box +-12 mm, or the brain's box), at least 9 mm off
  the mid-sagittal plane, and of those meeting the conditions the first whose ellipsoid lies
  for 70 % (periventricular) or 90 % (deep) in white matter (64 random points) is taken, else
  the best of 240. Each outline is perturbed by 5 random plane waves (wavelength 1.0-2.0
  ``R``, total relative amplitude 0.10-0.30): blobby shapes. A lesion's membership is
  ``f = sigmoid(d / w)``, ``d`` the approximate signed distance (mm) inside its outline and
  ``w = 0.5 + 0.15 spacing`` mm, times ``p_wm`` times a fade-out closer than 7 mm to the
  mid-sagittal plane (corpus callosum, fornix); only its largest face-connected part above 0.5
  is kept (with the soft edge nearest to it), and a lesion with no voxel above 0.5 on the grid
  is dropped entirely. Lesions may overlap and merge, so the mask has at most ``n_lesions``
  connected components (any connectivity). The lesion field is ``L = max_i f_i`` and **the
  mask is exactly ``L >= 0.5``**; both images are altered through
  ``ramp(L) = smoothstep((L - 0.3) / 0.4)`` (0 below 0.3, 0.5 on the mask's border, 1 above
  0.7): full contrast inside the mask, a soft edge with less than half of it just outside,
  nothing elsewhere.
* **Acquisition**, for each image separately: a smooth multiplicative bias field ``exp(b)``,
  ``b`` a cubic B-spline on 64 mm control points with normal coefficients rescaled so that
  its largest value on the knots inside the brain's box is 0.10-0.20 (about +-10-20 %); a
  global intensity scale (log-uniform 0.8-1.25); Rician noise of sigma 0.015-0.04 (FLAIR) and
  0.01-0.03 (T1) times that scale. The background outside the deformed, skull-stripped brain
  is exactly 0. Measured at 2 mm over seeds 0-49: mean white matter 0.78-1.36 (FLAIR) and
  0.82-1.33 (T1); mean lesion / white matter 1.25-1.99 (FLAIR) and 0.59-0.90 (T1); maxima
  1.3-2.5 (FLAIR) and 1.0-1.6 (T1); CSF (2nd percentile of FLAIR in the brain) 0.08-0.22.

Measured (seeds 0-199, ``n_lesions=None``, 182 cases with lesions): total lesion (mask) volume
at 2 mm min 0.82, 5 % 0.96, median 4.1, 95 % 18.6, max 28 mL; at 3 mm min 0.54, median 3.8,
max 27 mL; at 4 mm lesions shrink by partial volume (min 0.26 mL). ``LESION_VOLUME_RANGE_ML``
(0.5-40 mL) is the documented range for spacings up to 3 mm. Individual lesions range from
about 0.01 mL (a few voxels at 1 mm; the smallest vanish on coarse grids) to ~9 mL. Generation
takes ~0.3-0.6 s per case at 2 mm and ~2.5 s at 1 mm on one busy CPU core (the first call also
loads and analyses the template, ~2-3 s).

Every case records its seed and the drawn values in ``BrainCase.params``: ``n_lesions``,
``lesion_volume_ml`` (mask volume), ``lesion_load_target_ml``, ``lesions`` (one dict per
placed lesion: kind, centre in voxel indices, semi-axes, nominal and mask volumes, contrasts),
``deformation``, ``bias``, ``intensity_scale``, ``noise`` and ``flair_contrast``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from scipy import ndimage

from napari_medvit.synthetic._brain_atlas import SIDE_MULTIPLE, _atlas, _brain_template_cached, _filtered, _Grid, _grid
from napari_medvit.synthetic._brain_fields import _fit_in_grid, _ramp, _rotation, _sigmoid, _Spline, _Warp
from napari_medvit.synthetic._brain_lesions import _MIDLINE_MM, _draw_lesions, _Lesion, _one_component, _render_lesion
from napari_medvit.synthetic._seeds import check_seed, derived_seeds, map_cases, select_cases

__all__ = [
    "BrainCase",
    "brain_template",
    "generate_brain_case",
    "generate_brain_dataset",
    "LESION_VOLUME_RANGE_ML",
    "MAX_LESIONS",
    "SIDE_MULTIPLE",
    "SPACING_RANGE",
]

MAX_LESIONS = 25
#: Allowed isotropic voxel sizes (mm).
SPACING_RANGE = (1.0, 4.0)
#: Documented range of the total lesion (mask) volume in mL for ``n_lesions=None`` cases that
#: have lesions, at spacings up to 3 mm.
LESION_VOLUME_RANGE_ML = (0.5, 40.0)

_ELASTIC_CTRL_MM = 32.0
_BIAS_CTRL_MM = 64.0


@dataclass
class BrainCase:
    """One synthetic subject: co-registered FLAIR and T1, and the exact lesion mask."""

    flair: np.ndarray  # (Z, Y, X) float32, FLAIR-like
    t1: np.ndarray  # (Z, Y, X) float32, T1-like
    mask: np.ndarray  # (Z, Y, X) uint8, 1 on lesion voxels
    spacing: tuple[float, float, float]  # mm, (Z, Y, X) order
    affine: np.ndarray  # (4, 4) float64, (z, y, x) indices -> MNI152 RAS+ mm
    seed: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# argument checks


def _check_spacing(spacing: Any) -> float:
    """The spacing as a float in ``SPACING_RANGE`` (mm); ValueError otherwise (nan included)."""
    if isinstance(spacing, bool) or not isinstance(spacing, (int, float, np.integer, np.floating)):
        raise ValueError(f"spacing must be a number of mm in [{SPACING_RANGE[0]}, {SPACING_RANGE[1]}], "
                         f"got {spacing!r}")
    s = float(spacing)
    if not (SPACING_RANGE[0] <= s <= SPACING_RANGE[1]):  # also rejects nan
        raise ValueError(f"spacing must lie in [{SPACING_RANGE[0]}, {SPACING_RANGE[1]}] mm, got {spacing!r}")
    return s


def _check_n_lesions(n_lesions: Any) -> int | None:
    """None, or the lesion count as an int in 0..MAX_LESIONS; ValueError otherwise."""
    if n_lesions is None:
        return None
    if isinstance(n_lesions, bool) or not isinstance(n_lesions, (int, np.integer)):
        raise ValueError(f"n_lesions must be None or an integer in 0..{MAX_LESIONS}, got {n_lesions!r}")
    if not 0 <= n_lesions <= MAX_LESIONS:
        raise ValueError(f"n_lesions must lie in 0..{MAX_LESIONS}, got {n_lesions}")
    return int(n_lesions)


def brain_template(spacing: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """The undeformed MNI152 T1 template on the output grid of ``spacing`` mm, and its affine.

    Returns a read-only (Z, Y, X) float32 array in the template's own units (0-255; white
    matter ~217) on the grid of every ``generate_brain_case(..., spacing=spacing)``, and the
    (4, 4) affine mapping (z, y, x) indices to MNI152 RAS+ mm. Cached (``functools.lru_cache``).
    """
    return _brain_template_cached(_check_spacing(spacing))


# --------------------------------------------------------------------------------------------
# synthesis stages: the subject's draws come from one generator, in the order of _synthesize


@dataclass(frozen=True)
class _Acquisition:
    """The contrast and acquisition draws of one subject (drawn before the lesions)."""

    c_csf: float  # FLAIR value of CSF (suppressed)
    c_gm: float  # FLAIR value of grey matter (white matter is 1)
    bias_amp: np.ndarray  # (2,) peak of the log bias field: FLAIR, T1
    bias: _Spline  # two bias components: FLAIR, T1
    gains: np.ndarray  # (2,) global intensity scale: FLAIR, T1
    sig_f: float  # Rician noise sigma, FLAIR (before the gain)
    sig_t: float  # Rician noise sigma, T1
    noise_seed: int  # seed of the noise volumes' own generator

    def params(self) -> dict[str, Any]:
        """The ``BrainCase.params`` entries these draws are recorded under."""
        return {"flair_contrast": {"csf": float(self.c_csf), "gm": float(self.c_gm), "wm": 1.0},
                "bias": {"flair": float(self.bias_amp[0]), "t1": float(self.bias_amp[1])},
                "intensity_scale": {"flair": float(self.gains[0]), "t1": float(self.gains[1])},
                "noise": {"kind": "rician", "flair_sigma": float(self.sig_f), "t1_sigma": float(self.sig_t)}}


def _draw_lesion_count(rng: np.random.Generator, n_lesions: int | None) -> int:
    """The number of lesions: ``n_lesions``, or drawn (0 with probability 0.1, else 1 + Gamma)."""
    # both draws always happen, so that the rest of the stream does not depend on n_lesions:
    # generate_brain_case(seed, n_lesions=0) is the lesion-free twin of every other count
    u0, g0 = rng.random(), rng.gamma(1.3, 5.0)
    if n_lesions is None:
        return 0 if u0 < 0.10 else 1 + min(MAX_LESIONS - 1, int(g0))
    return n_lesions


def _draw_deformation(rng: np.random.Generator) -> tuple[_Warp, dict[str, Any]]:
    """The subject's anatomy: rotation, scales, translation and elastic field, fitted into the grid;
    returns the warp and its ``params["deformation"]`` record."""
    rot = rng.uniform(-5.0, 5.0, 3)
    scale = rng.uniform(0.95, 1.05, 3)
    shift = rng.uniform(-3.0, 3.0, 3)
    elastic_mm = rng.uniform(0.0, 3.0)
    elastic = _Spline.random(rng, _ELASTIC_CTRL_MM, elastic_mm, 3)
    warp = _Warp(matrix=_rotation(rot) @ np.diag(scale), centre=_atlas().centroid, shift=shift, elastic=elastic)
    warp, fit_scale, fit_shift = _fit_in_grid(warp)
    return warp, {"rotation_deg": rot.tolist(), "scale": scale.tolist(),
                  "translation_mm": shift.tolist(), "elastic_max_mm": float(elastic_mm),
                  "fit_scale": fit_scale.tolist(), "fit_shift_mm": fit_shift.tolist()}


def _draw_acquisition(rng: np.random.Generator) -> _Acquisition:
    """FLAIR contrasts, bias fields, intensity scales, noise levels and the noise seed."""
    c_csf, c_gm = rng.uniform(0.10, 0.25), rng.uniform(1.10, 1.30)
    bias_amp = rng.uniform(0.10, 0.20, 2)
    bias = _Spline.random(rng, _BIAS_CTRL_MM, 1.0, 2)
    gains = np.exp(rng.uniform(np.log(0.8), np.log(1.25), 2))
    sig_f, sig_t = rng.uniform(0.015, 0.04), rng.uniform(0.01, 0.03)
    noise_seed = int(rng.integers(2**63 - 1))
    return _Acquisition(c_csf=c_csf, c_gm=c_gm, bias_amp=bias_amp, bias=bias, gains=gains, sig_f=sig_f, sig_t=sig_t,
                        noise_seed=noise_seed)


@dataclass
class _Anatomy:
    """The deformed template on the output grid, before lesions and acquisition."""

    flair: np.ndarray  # FLAIR-like tissue contrast
    t1: np.ndarray  # T1-like intensities (white-matter peak 1)
    brain: np.ndarray  # soft brain mask
    p_wm: np.ndarray  # white-matter membership
    allowed: np.ndarray  # where lesions may be: p_wm, faded out near the midline


def _anatomy(warp: _Warp, spacing: float, axes: list[np.ndarray], acq: _Acquisition) -> _Anatomy:
    """Sample the (blurred) template through the warp and derive the tissue memberships and the
    lesion-free FLAIR and T1 contrasts (no draws)."""
    at = _atlas()
    t1_src, brain_src = _filtered(spacing)
    coords = warp.grid(axes)
    t1 = ndimage.map_coordinates(t1_src, coords, order=1, mode="constant", cval=0.0, output=np.float32)
    brain = ndimage.map_coordinates(brain_src, coords, order=1, mode="constant", cval=0.0, output=np.float32)
    # |x| (mm) from the template's mid-sagittal plane: lesions keep off the midline (corpus
    # callosum, fornix, septum)
    ras_x = sum(np.float32(at.affine[0, k]) * coords[k] for k in range(3)) + np.float32(at.affine[0, 3])
    off_midline = _sigmoid((np.abs(ras_x) - np.float32(_MIDLINE_MM)) / np.float32(1.0))
    del ras_x
    p_csf = _sigmoid((np.float32(at.t_csf) - t1) / np.float32(8.0)) * brain
    p_wm = _sigmoid((t1 - np.float32(at.t_wm)) / np.float32(5.0)) * brain
    allowed = p_wm * off_midline
    del coords, off_midline
    p_gm = np.clip(brain - p_csf - p_wm, 0.0, None)
    flair = p_csf * np.float32(acq.c_csf) + p_gm * np.float32(acq.c_gm) + p_wm
    t1 *= np.float32(1.0 / at.wm_peak)
    return _Anatomy(flair=flair, t1=t1, brain=brain, p_wm=p_wm, allowed=allowed)


def _add_lesions(lesions: list[_Lesion], g: _Grid, axes: list[np.ndarray],
                 anatomy: _Anatomy) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Render the lesions on the grid and alter FLAIR and T1 through ``ramp(L)`` (in place; overlapping
    lesions combine by max, not sum). Returns the mask ``L >= 0.5``, the lesion field ``L`` and
    one ``params["lesions"]`` record per lesion."""
    mask = np.zeros(g.shape, np.uint8)
    lesion_info = []
    for les in lesions:
        sl, f = _render_lesion(les, g, axes)
        lf = _one_component(f * anatomy.allowed[sl])
        lesion_info.append((les, sl, lf))
    gain_f = np.ones(g.shape, np.float32)
    fac_t = np.ones(g.shape, np.float32)
    field_l = np.zeros(g.shape, np.float32)
    out_lesions = []
    for les, sl, lf in lesion_info:
        own = 0
        if lf is not None:  # None: too small for this grid, or outside white matter: no trace at all
            r = _ramp(lf)
            field_l[sl] = np.maximum(field_l[sl], lf)
            gain_f[sl] = np.maximum(gain_f[sl], 1.0 + np.float32(les.flair_gain - 1.0) * r)
            fac_t[sl] = np.minimum(fac_t[sl], 1.0 - np.float32(1.0 - les.t1_factor) * r)
            own = int(np.count_nonzero(lf >= 0.5))
        out_lesions.append({
            "kind": les.kind,
            "centre_zyx": ((les.centre - g.origin) / g.spacing).tolist(),
            "semi_axes_mm": les.semi.tolist(),
            "volume_target_ml": les.volume_ml,
            "volume_ml": own * g.spacing**3 / 1000.0,
            "flair_gain": les.flair_gain,
            "t1_factor": les.t1_factor,
        })
    mask[field_l >= 0.5] = 1
    anatomy.flair *= gain_f
    anatomy.t1 *= fac_t
    return mask, field_l, out_lesions


def _rician(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """``img`` with Rician noise of ``sigma``: the magnitude of two noisy channels."""
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n1 *= np.float32(sigma)
    n1 += img
    n2 = rng.standard_normal(img.shape, dtype=np.float32)
    n2 *= np.float32(sigma)
    return np.sqrt(n1 * n1 + n2 * n2)


def _acquire(acq: _Acquisition, axes: list[np.ndarray], flair: np.ndarray,
             t1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bias fields, global intensity scales and Rician noise (from ``acq.noise_seed``) on both images."""
    b = acq.bias.on_grid(axes)
    for img, amp, k in ((flair, acq.bias_amp[0], 0), (t1, acq.bias_amp[1], 1)):
        img *= np.exp(b[k] * np.float32(amp))
    del b
    flair *= np.float32(acq.gains[0])
    t1 *= np.float32(acq.gains[1])
    nrng = np.random.default_rng(acq.noise_seed)
    flair = _rician(nrng, flair, acq.sig_f * acq.gains[0])
    t1 = _rician(nrng, t1, acq.sig_t * acq.gains[1])
    return flair, t1


def _synthesize(seed: int, spacing: float, n_lesions: int | None) -> tuple[BrainCase, dict[str, np.ndarray]]:
    """One case and its intermediate fields (``p_wm``, ``allowed``, ``brain``, ``lesion_field``).

    Every subject draw comes from ``default_rng(seed)`` in this order: lesion count, deformation,
    contrasts and acquisition, lesions (nothing before the lesions depends on their count); the
    noise volumes come from a generator of their own.
    """
    seed = check_seed(seed)
    spacing = _check_spacing(spacing)
    n_lesions = _check_n_lesions(n_lesions)
    g = _grid(spacing)
    rng = np.random.default_rng(seed)
    n = _draw_lesion_count(rng, n_lesions)
    params: dict[str, Any] = {"seed": seed, "spacing": spacing, "n_lesions": n,
                              "n_lesions_requested": n_lesions}
    warp, deformation = _draw_deformation(rng)
    params["deformation"] = deformation
    acq = _draw_acquisition(rng)
    params.update(acq.params())
    lesions, load = _draw_lesions(rng, warp, n)

    axes = g.axes()
    anatomy = _anatomy(warp, spacing, axes, acq)
    mask, field_l, out_lesions = _add_lesions(lesions, g, axes, anatomy)
    flair, t1 = _acquire(acq, axes, anatomy.flair, anatomy.t1)
    inside = anatomy.brain >= 0.5  # the background outside the deformed brain is exactly 0
    flair[~inside] = 0.0
    t1[~inside] = 0.0
    mask[~inside] = 0

    params.update(lesions=out_lesions, lesion_load_target_ml=load,
                  lesion_volume_ml=float(np.count_nonzero(mask)) * spacing**3 / 1000.0)
    case = BrainCase(flair=flair.astype(np.float32, copy=False), t1=t1.astype(np.float32, copy=False), mask=mask,
                     spacing=(spacing, spacing, spacing), affine=g.affine.copy(), seed=seed, params=params)
    return case, {"p_wm": anatomy.p_wm, "allowed": anatomy.allowed, "brain": anatomy.brain, "lesion_field": field_l}


# --------------------------------------------------------------------------------------------
# public API


def generate_brain_case(seed: int, *, spacing: float = 2.0, n_lesions: int | None = None) -> BrainCase:
    """One synthetic subject; deterministic for a given ``seed``, ``spacing`` and ``n_lesions``.

    ``n_lesions=None`` draws the count with the seed (0 with probability 0.1); an explicit
    count in 0..``MAX_LESIONS`` is honoured (lesions may merge, so the mask has at most that
    many connected components). See the module docstring for the generative model.
    """
    return _synthesize(seed, spacing, n_lesions)[0]


def generate_brain_dataset(n: int, seed: int = 0, *, spacing: float = 2.0, workers: int = 1,
                           cases: Any = None) -> list[BrainCase]:
    """``n`` cases with distinct seeds derived from ``seed`` (each case records its own seed)."""
    seeds = select_cases(derived_seeds(n, seed), cases)  # cases: only these indices of the dataset
    spacing = _check_spacing(spacing)
    return map_cases(partial(generate_brain_case, spacing=spacing), seeds, workers)
