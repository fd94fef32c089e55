"""The MNI152 template of the brain generator (:mod:`napari_medvit.synthetic.brain`): loaded once,
cropped, split into tissue classes and ventricles, and the fixed output grid of every spacing.

All of it is derived from the shipped template alone (no random draws) and cached.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

#: Every side of the output volumes is a multiple of this.
SIDE_MULTIPLE = 16

_MARGIN_XY_MM = 11.0  # least background in x and y (both sides together)
_MARGIN_TOP_MM = 8.0  # least background above the vertex
_CROP_BOTTOM_MM = 5.0  # of the (already cut) brainstem, below the first slice
_PAD = 8  # zero voxels around the cropped template (room for interpolation)


def _template_path() -> Path:
    """The shipped MNI152 T1 template (``sample_data/mni152_t1_1mm.nii.gz``)."""
    import napari_medvit

    return Path(napari_medvit.__file__).parent / "sample_data" / "mni152_t1_1mm.nii.gz"


@dataclass(frozen=True)
class _Atlas:
    """The 1 mm template cropped to its brain, with its tissue thresholds, ventricles and extents."""

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
    """Load and analyse the template once: crop, multi-Otsu thresholds, lateral ventricles, distance
    maps, affine and convex hull (read-only arrays, cached)."""
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
    vol = np.pad(vol, _PAD)[tuple(slice(int(a), int(b) + 1 + 2 * _PAD) for a, b in zip(lo, hi, strict=True))]
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
    """The output grid of one spacing: shape (Z, Y, X), atlas-space origin and the voxel affine."""

    shape: tuple[int, int, int]
    origin: np.ndarray  # atlas index (= mm) of voxel (0, 0, 0)
    spacing: float
    affine: np.ndarray

    def axes(self) -> list[np.ndarray]:
        """Atlas-space coordinate (mm) of the voxel centres along each axis."""
        return [self.origin[i] + self.spacing * np.arange(self.shape[i], dtype=np.float64) for i in range(3)]


@functools.lru_cache(maxsize=8)
def _grid(spacing: float) -> _Grid:
    """The fixed output grid of ``spacing`` mm (sides multiples of SIDE_MULTIPLE, margins as documented)."""
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
    """The undeformed, blurred template sampled on the grid of ``spacing`` mm, and the grid's affine."""
    g = _grid(spacing)
    t1, _ = _filtered(spacing)
    az, ay, ax = g.axes()
    coords = np.meshgrid(az.astype(np.float32), ay.astype(np.float32), ax.astype(np.float32), indexing="ij")
    out = ndimage.map_coordinates(t1, coords, order=1, mode="constant", cval=0.0, output=np.float32)
    out.flags.writeable = False
    return out, g.affine
