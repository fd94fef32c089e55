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

import functools
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

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
#: Every side of the output volumes is a multiple of this.
SIDE_MULTIPLE = 16
#: Documented range of the total lesion (mask) volume in mL for ``n_lesions=None`` cases that
#: have lesions, at spacings up to 3 mm.
LESION_VOLUME_RANGE_ML = (0.5, 40.0)

_MARGIN_XY_MM = 11.0  # least background in x and y (both sides together)
_MARGIN_TOP_MM = 8.0  # least background above the vertex
_CROP_BOTTOM_MM = 5.0  # of the (already cut) brainstem, below the first slice
_PAD = 8  # zero voxels around the cropped template (room for interpolation)
_ELASTIC_CTRL_MM = 32.0
_BIAS_CTRL_MM = 64.0
_LOAD_MEDIAN_ML = 4.0
_LOAD_SIGMA = 0.9
_LOAD_CLIP_ML = (1.0, 40.0)
_PV_INFLATE = 1.35
_FIT_SLACK_MM = 2.0  # least distance of the deformed brain's hull to the sides and top of the grid
_MIDLINE_MM = 7.0  # lesions fade out closer than this to the mid-sagittal plane
_WM_FRACTION = {"periventricular": 0.7, "deep": 0.9}  # of a lesion's ellipsoid, wanted at placement


def _template_path() -> Path:
    import napari_medvit

    return Path(napari_medvit.__file__).parent / "sample_data" / "mni152_t1_1mm.nii.gz"


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
    if isinstance(spacing, bool) or not isinstance(spacing, (int, float, np.integer, np.floating)):
        raise ValueError(f"spacing must be a number of mm in [{SPACING_RANGE[0]}, {SPACING_RANGE[1]}], "
                         f"got {spacing!r}")
    s = float(spacing)
    if not (SPACING_RANGE[0] <= s <= SPACING_RANGE[1]):  # also rejects nan
        raise ValueError(f"spacing must lie in [{SPACING_RANGE[0]}, {SPACING_RANGE[1]}] mm, got {spacing!r}")
    return s


def _check_n_lesions(n_lesions: Any) -> int | None:
    if n_lesions is None:
        return None
    if isinstance(n_lesions, bool) or not isinstance(n_lesions, (int, np.integer)):
        raise ValueError(f"n_lesions must be None or an integer in 0..{MAX_LESIONS}, got {n_lesions!r}")
    if not 0 <= n_lesions <= MAX_LESIONS:
        raise ValueError(f"n_lesions must lie in 0..{MAX_LESIONS}, got {n_lesions}")
    return int(n_lesions)


# --------------------------------------------------------------------------------------------
# the template (1 mm), its tissue classes and the output grids


@dataclass(frozen=True)
class _Atlas:
    t1: np.ndarray  # (z, y, x) float32, template intensities (uint8 scale), cropped + padded
    brain: np.ndarray  # float32 0/1
    vent_dist: np.ndarray  # float32, mm to the lateral ventricles
    wm_depth: np.ndarray  # float32, mm to the nearest non-WM voxel (0 outside WM)
    affine: np.ndarray  # (z, y, x) atlas index -> RAS mm
    t_csf: float  # CSF | GM threshold
    t_wm: float  # GM | WM threshold
    wm_peak: float
    centroid: np.ndarray  # brain centroid, atlas index (= mm)
    brain_lo: np.ndarray  # brain bounding box, atlas index, inclusive
    brain_hi: np.ndarray
    vent_lo: np.ndarray  # ventricle bounding box
    vent_hi: np.ndarray
    vent_volume_ml: float
    hull: np.ndarray  # (N, 3) vertices of the brain's convex hull, atlas index


@functools.lru_cache(maxsize=1)
def _atlas() -> _Atlas:
    import nibabel as nib
    from skimage.filters import threshold_multiotsu

    path = _template_path()
    if not path.is_file():
        raise FileNotFoundError(f"the MNI152 template is missing: {path}")
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"expected a 3D template, got shape {data.shape}")
    vol = data.transpose(2, 1, 0)  # (z, y, x)
    brain = vol > 0
    nz = np.argwhere(brain)
    lo, hi = nz.min(axis=0), nz.max(axis=0)
    vol = np.pad(vol, _PAD)[tuple(slice(int(a), int(b) + 1 + 2 * _PAD) for a, b in zip(lo, hi))]
    vol = np.ascontiguousarray(vol)
    offset = lo - _PAD  # atlas index + offset = template (z, y, x) index
    brain = vol > 0
    t_csf, _, t_wm = (float(v) for v in threshold_multiotsu(vol[brain], classes=4))
    wm_peak = float(np.median(vol[vol > t_wm]))

    # lateral ventricles: dark CSF components inside the brain near its centre
    centroid = np.array(ndimage.center_of_mass(brain))
    csf = brain & (vol < 0.8 * t_csf)
    lab, n = ndimage.label(csf)
    surface = ndimage.binary_dilation(brain & ~ndimage.binary_erosion(brain))
    touching = set(np.unique(lab[surface]).tolist())
    sizes = ndimage.sum(csf, lab, range(1, n + 1))
    coms = ndimage.center_of_mass(csf, lab, range(1, n + 1))
    keep = [i + 1 for i in range(n) if sizes[i] >= 1000 and (i + 1) not in touching
            and np.linalg.norm(np.asarray(coms[i]) - centroid) < 40.0]
    if not keep:
        raise RuntimeError("could not find the lateral ventricles in the template")
    vent = np.isin(lab, keep)
    vent_dist = ndimage.distance_transform_edt(~vent).astype(np.float32)
    wm_depth = ndimage.distance_transform_edt(vol > t_wm).astype(np.float32)
    vz = np.argwhere(vent)

    aff_xyz = np.asarray(img.affine, dtype=np.float64)
    aff = np.eye(4)
    aff[:3, :3] = aff_xyz[:3, :3][:, ::-1]  # column for z index is template column 2, etc.
    aff[:3, 3] = aff_xyz[:3, :3] @ offset[::-1].astype(np.float64) + aff_xyz[:3, 3]
    nzb = np.argwhere(brain)
    from scipy.spatial import ConvexHull

    surf = np.argwhere(brain & ~ndimage.binary_erosion(brain)).astype(np.float64)
    hull = surf[ConvexHull(surf).vertices]
    for arr in (vol, vent_dist, wm_depth):
        arr.flags.writeable = False
    brain_f = brain.astype(np.float32)
    brain_f.flags.writeable = False
    return _Atlas(t1=vol, brain=brain_f, vent_dist=vent_dist, wm_depth=wm_depth, affine=aff,
                  t_csf=t_csf, t_wm=t_wm, wm_peak=wm_peak, centroid=centroid,
                  brain_lo=nzb.min(axis=0).astype(np.float64), brain_hi=nzb.max(axis=0).astype(np.float64),
                  vent_lo=vz.min(axis=0).astype(np.float64), vent_hi=vz.max(axis=0).astype(np.float64),
                  vent_volume_ml=float(vent.sum()) / 1000.0, hull=hull)


@functools.lru_cache(maxsize=4)
def _filtered(spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Template T1 and brain mask blurred for a grid of ``spacing`` mm (anti-aliasing)."""
    at = _atlas()
    sigma = 0.4 * math.sqrt(max(spacing**2 - 1.0, 0.0))
    if sigma < 0.05:
        return at.t1, at.brain
    t1 = ndimage.gaussian_filter(at.t1, sigma, truncate=3.0)
    brain = ndimage.gaussian_filter(at.brain, sigma, truncate=3.0)
    t1.flags.writeable = False
    brain.flags.writeable = False
    return t1, brain


@dataclass(frozen=True)
class _Grid:
    shape: tuple[int, int, int]
    origin: np.ndarray  # atlas index (= mm) of voxel (0, 0, 0)
    spacing: float
    affine: np.ndarray

    def axes(self) -> list[np.ndarray]:
        """Atlas-space coordinate (mm) of the voxel centres along each axis."""
        return [self.origin[i] + self.spacing * np.arange(self.shape[i], dtype=np.float64) for i in range(3)]


@functools.lru_cache(maxsize=8)
def _grid(spacing: float) -> _Grid:
    at = _atlas()
    extent = at.brain_hi - at.brain_lo + 1.0  # mm
    need = (extent[0] - _CROP_BOTTOM_MM + _MARGIN_TOP_MM, extent[1] + _MARGIN_XY_MM, extent[2] + _MARGIN_XY_MM)
    shape = tuple(int(SIDE_MULTIPLE * math.ceil(e / (SIDE_MULTIPLE * spacing) - 1e-9)) for e in need)
    origin = np.empty(3)
    # z: the lower edge of the first slice _CROP_BOTTOM_MM above the brain's (cut) lower edge,
    # spare slices on top
    origin[0] = at.brain_lo[0] - 0.5 + _CROP_BOTTOM_MM + spacing / 2.0
    for ax in (1, 2):  # y, x: centred
        origin[ax] = (at.brain_lo[ax] + at.brain_hi[ax]) / 2.0 - (shape[ax] - 1) * spacing / 2.0
    affine = at.affine.copy()
    affine[:3, :3] = at.affine[:3, :3] * spacing
    affine[:3, 3] = at.affine[:3, :3] @ origin + at.affine[:3, 3]
    affine.flags.writeable = False
    return _Grid(shape=shape, origin=origin, spacing=spacing, affine=affine)  # type: ignore[arg-type]


def _fov_box() -> tuple[np.ndarray, np.ndarray]:
    """Atlas-space box (mm) that every grid covers, whatever the spacing (z: no lower bound)."""
    at = _atlas()
    lo = at.brain_lo - 0.5 - _MARGIN_XY_MM / 2.0
    hi = at.brain_hi + 0.5 + _MARGIN_XY_MM / 2.0
    lo[0], hi[0] = -np.inf, at.brain_hi[0] + 0.5 + _MARGIN_TOP_MM
    return lo, hi


@functools.lru_cache(maxsize=4)
def _brain_template_cached(spacing: float) -> tuple[np.ndarray, np.ndarray]:
    g = _grid(spacing)
    t1, _ = _filtered(spacing)
    az, ay, ax = g.axes()
    coords = np.meshgrid(az.astype(np.float32), ay.astype(np.float32), ax.astype(np.float32), indexing="ij")
    out = ndimage.map_coordinates(t1, coords, order=1, mode="constant", cval=0.0, output=np.float32)
    out.flags.writeable = False
    return out, g.affine


def brain_template(spacing: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """The undeformed MNI152 T1 template on the output grid of ``spacing`` mm, and its affine.

    Returns a read-only (Z, Y, X) float32 array in the template's own units (0-255; white
    matter ~217) on the grid of every ``generate_brain_case(..., spacing=spacing)``, and the
    (4, 4) affine mapping (z, y, x) indices to MNI152 RAS+ mm. Cached (``functools.lru_cache``).
    """
    return _brain_template_cached(_check_spacing(spacing))


# --------------------------------------------------------------------------------------------
# smooth fields


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
                    for lo, hi in zip(at.brain_lo, at.brain_hi))
        m = float(np.abs(knots[(slice(None), *box)]).max())
        coef *= peak / m if m > 0 else 0.0
        return _Spline(coef=coef, origin=origin, step=step)

    def _w(self, x: np.ndarray, axis: int) -> np.ndarray:
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
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


def _ramp(x: np.ndarray) -> np.ndarray:
    t = np.clip((x - 0.3) / 0.4, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))[None, :]
    return q


# --------------------------------------------------------------------------------------------
# lesions


@dataclass
class _Lesion:
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
    at = _atlas()
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
    for wv, ph, am in zip(les.waves, les.phases, les.amps):
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


# --------------------------------------------------------------------------------------------
# public API


def _rician(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n1 *= np.float32(sigma)
    n1 += img
    n2 = rng.standard_normal(img.shape, dtype=np.float32)
    n2 *= np.float32(sigma)
    return np.sqrt(n1 * n1 + n2 * n2)


def _synthesize(seed: int, spacing: float, n_lesions: int | None) -> tuple[BrainCase, dict[str, np.ndarray]]:
    seed = check_seed(seed)
    spacing = _check_spacing(spacing)
    n_lesions = _check_n_lesions(n_lesions)
    at = _atlas()
    g = _grid(spacing)
    t1_src, brain_src = _filtered(spacing)
    rng = np.random.default_rng(seed)

    # both draws always happen, so that the rest of the stream does not depend on n_lesions:
    # generate_brain_case(seed, n_lesions=0) is the lesion-free twin of every other count
    u0, g0 = rng.random(), rng.gamma(1.3, 5.0)
    if n_lesions is None:
        n = 0 if u0 < 0.10 else 1 + min(MAX_LESIONS - 1, int(g0))
    else:
        n = n_lesions
    params: dict[str, Any] = {"seed": seed, "spacing": spacing, "n_lesions": n,
                              "n_lesions_requested": n_lesions}

    # -- deformation ---------------------------------------------------------------------------
    rot = rng.uniform(-5.0, 5.0, 3)
    scale = rng.uniform(0.95, 1.05, 3)
    shift = rng.uniform(-3.0, 3.0, 3)
    elastic_mm = rng.uniform(0.0, 3.0)
    elastic = _Spline.random(rng, _ELASTIC_CTRL_MM, elastic_mm, 3)
    warp = _Warp(matrix=_rotation(rot) @ np.diag(scale), centre=at.centroid, shift=shift, elastic=elastic)
    warp, fit_scale, fit_shift = _fit_in_grid(warp)
    params["deformation"] = {"rotation_deg": rot.tolist(), "scale": scale.tolist(),
                             "translation_mm": shift.tolist(), "elastic_max_mm": float(elastic_mm),
                             "fit_scale": fit_scale.tolist(), "fit_shift_mm": fit_shift.tolist()}

    # -- contrasts and acquisition draws (all drawn before the lesions: fixed rng order) --------
    c_csf, c_gm = rng.uniform(0.10, 0.25), rng.uniform(1.10, 1.30)
    bias_amp = rng.uniform(0.10, 0.20, 2)
    bias = _Spline.random(rng, _BIAS_CTRL_MM, 1.0, 2)
    gains = np.exp(rng.uniform(np.log(0.8), np.log(1.25), 2))
    sig_f, sig_t = rng.uniform(0.015, 0.04), rng.uniform(0.01, 0.03)
    noise_seed = int(rng.integers(2**63 - 1))
    params.update(flair_contrast={"csf": float(c_csf), "gm": float(c_gm), "wm": 1.0},
                  bias={"flair": float(bias_amp[0]), "t1": float(bias_amp[1])},
                  intensity_scale={"flair": float(gains[0]), "t1": float(gains[1])},
                  noise={"kind": "rician", "flair_sigma": float(sig_f), "t1_sigma": float(sig_t)})

    lesions, load = _draw_lesions(rng, warp, n)

    # -- anatomy on the grid ------------------------------------------------------------------
    axes = g.axes()
    coords = warp.grid(axes)
    t1 = ndimage.map_coordinates(t1_src, coords, order=1, mode="constant", cval=0.0, output=np.float32)
    brain = ndimage.map_coordinates(brain_src, coords, order=1, mode="constant", cval=0.0, output=np.float32)
    inside = brain >= 0.5
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
    flair = p_csf * np.float32(c_csf) + p_gm * np.float32(c_gm) + p_wm
    t1 *= np.float32(1.0 / at.wm_peak)
    del p_csf, p_gm

    # -- lesions -------------------------------------------------------------------------------
    mask = np.zeros(g.shape, np.uint8)
    lesion_info = []
    for les in lesions:
        sl, f = _render_lesion(les, g, axes)
        lf = _one_component(f * allowed[sl])
        lesion_info.append((les, sl, lf))
    # combine (max over lesions) so that overlapping lesions do not add up
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
            "volume_ml": own * spacing**3 / 1000.0,
            "flair_gain": les.flair_gain,
            "t1_factor": les.t1_factor,
        })
    mask[field_l >= 0.5] = 1
    flair *= gain_f
    t1 *= fac_t
    del gain_f, fac_t

    # -- acquisition ---------------------------------------------------------------------------
    b = bias.on_grid(axes)
    for img, amp, k in ((flair, bias_amp[0], 0), (t1, bias_amp[1], 1)):
        img *= np.exp(b[k] * np.float32(amp))
    del b
    flair *= np.float32(gains[0])
    t1 *= np.float32(gains[1])
    nrng = np.random.default_rng(noise_seed)
    flair = _rician(nrng, flair, sig_f * gains[0])
    t1 = _rician(nrng, t1, sig_t * gains[1])
    flair[~inside] = 0.0
    t1[~inside] = 0.0
    mask[~inside] = 0

    params.update(lesions=out_lesions, lesion_load_target_ml=load,
                  lesion_volume_ml=float(np.count_nonzero(mask)) * spacing**3 / 1000.0)
    case = BrainCase(flair=flair.astype(np.float32, copy=False), t1=t1.astype(np.float32, copy=False), mask=mask,
                     spacing=(spacing, spacing, spacing), affine=g.affine.copy(), seed=seed, params=params)
    return case, {"p_wm": p_wm, "allowed": allowed, "brain": brain, "lesion_field": field_l}


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
