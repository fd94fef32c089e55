"""Seeded synthetic brain-MRI + tabular cases (CN / MCI / Dementia) built on the real MNI152 T1.

Each case is one synthetic subject for DAFT-style models (Pölsterl et al., MICCAI 2021): a
T1-weighted volume, the 9 ADNI tabular values of ``napari_medvit.models._registry.ADNI_FEATURES``
and a diagnosis. The diagnosis needs *both* inputs: the image shows neurodegeneration only,
the tabular values show amyloid and tau only (plus demographics), and the label is a sum of
the two. It is *not* a model of real disease and must never be used to judge clinical
performance; it exists so that fusion code can be trained and tested offline on data where
image + tabular measurably beats either alone.

Every random draw comes from ``numpy.random.default_rng(seed)``: first all scalar subject
draws (in the order below), then the acquisition draws, then the noise volume. The label, the
tabular row and the latent variables therefore depend on ``seed`` only, not on ``shape``.

Template. The shipped ICBM 2009a MNI152 T1 (``sample_data/mni152_t1_1mm.nii.gz``, uint8, 1 mm)
is cropped to its brain bounding box plus 4 mm (159 x 189 x 153 mm, z x y x; RAS voxel order,
axes transposed to (z, y, x) as napari-medvit's reader does), and resampled to ``shape``: the
brain fills the volume and ``spacing`` is (159, 189, 153) mm / ``shape`` per axis (about
2.5 x 3.0 x 2.4 mm at the default 64^3). Derived once (cached): the lateral ventricles (the
two enclosed components darker than 100, 13.5 mL), the temporal horns (voxels darker than 120
near the hippocampi), the signed distance to these CSF spaces, the distance of every voxel to
(partial-volume) CSF (template darker than 145, sulci included) and a cortex weight (1 within
15 mm of the brain surface, 0 deeper than 25 mm).

Subject model (latent variables, all recorded in ``DementiaCase.params``):

* **Demographics**: age ~ Normal(73, 7) years clipped to 55-90; gender male with p = 0.5;
  education ~ round(Normal(16, 2.8)) clipped to 8-20 years; APOE4 alleles 0 / 1 / 2 with
  p = 0.6 / 0.3 / 0.1.
* **Amyloid (A)**: positive with p = sigmoid(0.1 + 1.2 APOE4 + 0.04 (age - 73)) (about 62 %
  overall). **Tau (T)**: positive only if amyloid positive, then with p = 0.4. The A/T stage
  ``at_stage`` is 0 (A-T-), 1 (A+T-) or 2 (A+T+). Latent loads: ``amyloid`` and ``tau`` are
  uniform in 0-0.2 when negative, 0.8-1.0 when positive. Neither is visible in the image.
* **Neurodegeneration (N)**: stage 0 / 1 / 2 drawn with p proportional to
  (0.30, 0.40, 0.30) * exp(0.2 * at_stage * stage) (mildly more atrophy with more pathology);
  the continuous ``neurodegeneration`` is (stage + 0.5) / 3 + Normal(0, 0.04), clipped to 0-1.
* **Diagnosis**: severity = at_stage + N stage (0-4); CN if severity <= 1, MCI if 2, Dementia
  if >= 3 (``clean_label``). With p = 0.05 the label is replaced by one of the two other classes
  (``label_flipped``). Classes come out at about 34-35 / 30-32 / 34-35 % (CN / MCI / Dementia;
  a sample of 300 cases varies by a few points). Neither the N stage (image)
  nor the A/T stage (tabular) alone determines the class: each stage value is compatible with
  two or three classes.

Image model (``image``: (Z, Y, X) float32, background exactly 0):

* **Ventricle enlargement**: the ventricle wall moves out by
  g = 5.0 N + 2.0 (age - 55) / 35 + Normal(0, 0.12) mm (about 0.5-7 mm; age is a confound:
  an old CN subject can have the ventricles of a young MCI one). Points that end up inside the
  enlarged ventricles are CSF; the tissue outside is pushed outward (along the smoothed gradient
  of the distance r to the original wall) by (g + min(g, 1)) exp(-(r - g) / 8 mm), a map that is
  monotone in r (no folding) and fades within a few cm. The temporal horns enlarge by (1 - 0.8 w) g (w: the medial
  temporal weight below), and nothing grows within about 2.5 mm of the mid-sagittal plane, so
  the septum between the lateral ventricles stays.
* **Grey-matter atrophy**: tissue closer than ``thick`` to CSF becomes CSF (soft edge 0.75 mm),
  which thins the cortex and widens the sulci, with
  thick = (0.6 N + 0.4 (age - 55) / 35 + Normal(0, 0.05)) mm x cortex weight
  + (1.0 N + Normal(0, 0.1)) mm x w, where w is a gaussian weight (sd 7 x 14 x 7 mm) around each
  hippocampus (MNI +-28, -22, -14): medial temporal (hippocampal) atrophy.
* **Acquisition**: a random rigid rotation (each axis uniform within +-5 degrees), isotropic
  scale 0.95-1.05 and shift +-3 mm per axis around the volume centre; the 1 mm template is
  smoothed before resampling (anti-aliasing, sigma 0.45 x step - 0.3 mm); a global gain
  0.8-1.25; a smooth multiplicative bias field exp(b), b a random quadratic polynomial of the
  position with peak |b| 0.05-0.2; gaussian noise of sd 1-3 % of the white-matter intensity
  inside the brain. Intensities are template grey values (white matter about 220) times gain
  and bias.

Tabular model (``tabular``: every name of ``TABULAR_FEATURES``; values clipped to
``TABULAR_RANGES``; ``n`` = neurodegeneration, ``a`` / ``t`` = amyloid / tau load):

* age (years, one decimal), gender (0 female / 1 male), education (years), APOE4 (0, 1, 2);
* ABETA = 1500 - 950 a + Normal(0, 70) pg/mL (positive: about 500-800; negative: 1300-1700);
* AV45 = 1.0 + 0.55 a + Normal(0, 0.04) SUVR (positive about 1.4-1.6; negative 0.9-1.2);
* PTAU = 14 + 30 t + 3 n + Normal(0, 3) pg/mL; TAU = 180 + 260 t + 40 n + Normal(0, 40) pg/mL;
* FDG = 1.30 - 0.12 n + Normal(0, 0.10) SUVR (a weak neurodegeneration marker);
* ABETA, TAU, PTAU, FDG, AV45 are each missing (``None``) independently with the probability
  in ``MISSING_RATES`` (15-20 %).

Fusion property (checked by ``tests/synthetic/test_dementia.py``): a multinomial logistic
regression (5-fold cross-validation on 300 cases, 32^3 or 64^3) reaches a balanced accuracy of
about 0.5-0.55 from two CSF fractions measured on the image (plus age), about 0.55-0.6 from
the tabular values (age and amyloid / tau scores: means of the available z-scored markers) and
about 0.9 from both. Fed the raw 9 values (mean-imputed, plus missing flags) instead of the
scores, the same linear model reaches about 0.6 on the tabular values and 0.8 with the image
(mean imputation of a missing marker misleads a linear model).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from napari_medvit.synthetic._seeds import check_seed, derived_seeds, map_cases, select_cases

__all__ = [
    "CLASSES",
    "TABULAR_FEATURES",
    "TABULAR_RANGES",
    "MISSING_RATES",
    "DementiaCase",
    "generate_dementia_case",
    "generate_dementia_dataset",
]

CLASSES = ("CN", "MCI", "Dementia")
#: The tabular inputs, in the order (and with the names) of the ADNI layout of DAFT
#: (``napari_medvit.models._registry.ADNI_FEATURES``).
TABULAR_FEATURES = ("age", "gender", "education", "APOE4", "ABETA", "TAU", "PTAU", "FDG", "AV45")
#: Closed range of every tabular value (the generator clips to it).
TABULAR_RANGES: dict[str, tuple[float, float]] = {
    "age": (55.0, 90.0),
    "gender": (0.0, 1.0),
    "education": (8.0, 20.0),
    "APOE4": (0.0, 2.0),
    "ABETA": (200.0, 1700.0),
    "TAU": (80.0, 800.0),
    "PTAU": (8.0, 80.0),
    "FDG": (0.8, 1.6),
    "AV45": (0.8, 2.0),
}
#: Probability that a fluid / PET biomarker is missing (``None``), independently per feature.
MISSING_RATES: dict[str, float] = {"ABETA": 0.15, "TAU": 0.20, "PTAU": 0.15, "FDG": 0.20, "AV45": 0.20}

_TEMPLATE_FILE = "mni152_t1_1mm.nii.gz"
_MIN_SIDE = 16
_MAX_SIDE = 256
_CROP_MARGIN = 4  # voxels (mm) around the template's brain bounding box
_CSF_VALUE = 60.0  # template grey value of ventricular CSF
_BRAIN_THRESHOLD = 25.0  # (smoothed) template grey value that delimits the brain
_SULCAL_THRESHOLD = 145.0  # template voxels darker than this are (partial-volume) CSF
_VENTRICLE_THRESHOLD = 100.0
_HORN_THRESHOLD = 120.0
_NORMAL_SIGMA = 2.0  # mm, smoothing of the signed distance before taking its gradient
_PUSH_MM = 8.0  # decay length of the outward push of the tissue around the enlarged ventricles
_HORN_DAMPING = 0.8  # the temporal horns enlarge by (1 - 0.8 w) g, w the medial temporal weight
_SEPTUM_MM = 2.5  # gaussian half-width (sd) of the midline band where the ventricles do not grow
_FIELD_STEP = 2  # the ventricle distance field and cortex weight are stored on a 2 mm grid
_RAMP_MM = 0.75  # width of the soft edge of the cortical erosion
#: Hippocampus / medial temporal lobe: centres (z, y, x) in MNI mm and radii in mm.
_MTL_CENTRES_MNI = ((-14.0, -22.0, -28.0), (-14.0, -22.0, 28.0))
_MTL_RADII = (7.0, 14.0, 7.0)
_MNI_ORIGIN_INDEX = (72.0, 134.0, 98.0)  # template voxel (k, j, i) of MNI (0, 0, 0)

# subject model (see the module docstring)
_APOE4_P = (0.6, 0.3, 0.1)
_AMYLOID_LOGIT = (0.1, 1.2, 0.04)  # intercept, per APOE4 allele, per year of age over 73
_P_TAU_GIVEN_AMYLOID = 0.4
_LOAD_NEG = (0.0, 0.2)  # amyloid / tau load of a negative subject
_LOAD_POS = (0.8, 1.0)  # ... of a positive one
_N_STAGE_BASE = (0.30, 0.40, 0.30)
_N_STAGE_TILT = 0.2
_N_JITTER = 0.04
_VENT_N_MM, _VENT_AGE_MM, _VENT_SD_MM = 5.0, 2.0, 0.12
_CTX_N_MM, _CTX_AGE_MM = 0.6, 0.4
_MTL_N_MM = 1.0
_LABEL_NOISE = 0.05

# acquisition nuisance
_ROTATION_DEG = 5.0
_SCALE_RANGE = (0.95, 1.05)
_SHIFT_MM = 3.0
_GAIN_RANGE = (0.8, 1.25)
_BIAS_RANGE = (0.05, 0.2)
_NOISE_RANGE = (0.01, 0.03)


@dataclass
class DementiaCase:
    """One synthetic subject: a T1-like volume, the ADNI tabular row and the diagnosis."""

    image: np.ndarray  # (Z, Y, X) float32
    tabular: dict[str, float | None]  # TABULAR_FEATURES -> value, None = missing
    label: str  # one of CLASSES
    spacing: tuple[float, float, float]  # (z, y, x) mm
    seed: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# input checks


def _check_shape(shape: Any) -> tuple[int, int, int]:
    try:
        vals = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be three integers (Z, Y, X), got {shape!r}") from None
    if len(vals) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in vals):
        raise ValueError(f"shape must be three integers (Z, Y, X), got {shape!r}")
    z, y, x = (int(v) for v in vals)
    if not all(_MIN_SIDE <= v <= _MAX_SIDE for v in (z, y, x)):
        raise ValueError(f"shape sides must lie in [{_MIN_SIDE}, {_MAX_SIDE}] voxels, got {(z, y, x)}")
    return z, y, x


# --------------------------------------------------------------------------------------------
# template and its derived maps (computed once)


def _template_path() -> Path:
    """Path of the shipped MNI152 T1 template the generator is built on."""
    import napari_medvit

    return Path(napari_medvit.__file__).parent / "sample_data" / _TEMPLATE_FILE


@dataclass(frozen=True)
class _Template:
    t1: np.ndarray  # (z, y, x) float32 template grey values (0-255), cropped, 1 mm
    dist: np.ndarray  # float32 mm from each voxel to the nearest (sulcal) CSF or outside voxel
    field: np.ndarray  # (z/2, y/2, x/2, 5) float32 on a 2 mm grid: signed distance to the
    #                    ventricles (mm, > 0 outside), its gradient (3), cortex weight
    mtl_centres: tuple[tuple[float, ...], ...]  # crop voxel coordinates (z, y, x) of each centre
    crop_start: tuple[int, ...]  # (z, y, x)
    midline_x: float  # crop voxel x of the mid-sagittal plane
    ventricle_ml: float
    horn_ml: float


@functools.lru_cache(maxsize=1)
def _template() -> _Template:
    import nibabel as nib

    path = _template_path()
    if not path.is_file():
        raise FileNotFoundError(f"the MNI152 template {path} is missing; reinstall napari-medvit")
    raw = np.asarray(nib.load(str(path)).dataobj).transpose(2, 1, 0).astype(np.float32)  # (z, y, x)
    nz = np.nonzero(raw > 0)
    lo = tuple(max(int(ax.min()) - _CROP_MARGIN, 0) for ax in nz)
    hi = tuple(min(int(ax.max()) + 1 + _CROP_MARGIN, s) for ax, s in zip(nz, raw.shape, strict=True))
    t1 = np.ascontiguousarray(raw[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
    dist = ndimage.distance_transform_edt(t1 >= _SULCAL_THRESHOLD).astype(np.float32)

    # lateral ventricles: the two large dark components that do not touch the crop border
    lab, n = ndimage.label(t1 < _VENTRICLE_THRESHOLD)
    sizes = ndimage.sum_labels(np.ones_like(t1), lab, np.arange(1, n + 1))
    vent = np.zeros(t1.shape, bool)
    found = 0
    for i, (size, sl) in enumerate(zip(sizes, ndimage.find_objects(lab), strict=True)):
        touches = any(s.start == 0 or s.stop == dim for s, dim in zip(sl, t1.shape, strict=True))
        if 2000 <= size <= 50000 and not touches:
            vent |= lab == i + 1
            found += 1
    if found != 2:
        raise RuntimeError(f"{path}: expected the two lateral ventricles in the template, found {found}")

    mtl = tuple(tuple(c + o - s for c, o, s in zip(cm, _MNI_ORIGIN_INDEX, lo, strict=True)) for cm in _MTL_CENTRES_MNI)
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in t1.shape], indexing="ij", sparse=True)
    horns = (t1 < _HORN_THRESHOLD) & (t1 > 0) & (_mtl_weight(grid, mtl) > 0.3)
    spaces = vent | horns
    # signed distance to the ventricles (mm, > 0 outside); the inside part only near them
    sd = ndimage.distance_transform_edt(~spaces)
    box = tuple(slice(max(sl.start - 2, 0), sl.stop + 2) for sl in ndimage.find_objects(spaces.astype(np.int8))[0])
    sd[box] -= ndimage.distance_transform_edt(spaces[box])
    k = _FIELD_STEP
    sd2 = np.ascontiguousarray(sd[::k, ::k, ::k], np.float32)
    # its gradient (unit length away from the medial surfaces, shorter on them), on the 2 mm grid
    normal = np.stack(np.gradient(ndimage.gaussian_filter(sd2, _NORMAL_SIGMA / k), k))
    # cortex weight: 1 within 15 mm of the outer surface, fading to 0 at 25 mm depth
    depth = ndimage.distance_transform_edt(t1[::k, ::k, ::k] > 0, sampling=k)
    cortex = np.clip((25.0 - depth) / 10.0, 0.0, 1.0)
    fld = np.ascontiguousarray(np.stack([sd2, *normal, cortex], axis=-1), np.float32)
    for a in (t1, dist, fld):
        a.setflags(write=False)
    return _Template(t1=t1, dist=dist, field=fld, mtl_centres=mtl, crop_start=lo,
                     midline_x=_MNI_ORIGIN_INDEX[2] - lo[2], ventricle_ml=float(vent.sum()) / 1000.0,
                     horn_ml=float(horns.sum()) / 1000.0)


def _mtl_weight(coords: Any, centres: tuple[tuple[float, ...], ...]) -> np.ndarray:
    """Smooth (gaussian) weight, 1 at the hippocampi, of points ``coords`` (z, y, x) in crop voxels."""
    out = None
    for c in centres:
        r2 = sum(((coords[i] - c[i]) / _MTL_RADII[i]) ** 2 for i in range(3))
        w = np.exp(-0.5 * r2)
        out = w if out is None else np.maximum(out, w)
    return np.asarray(out, np.float32)


@functools.lru_cache(maxsize=3)
def _template_at(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(z, y, x, 2) anti-aliased template and CSF distance for output ``shape``; output voxel centres."""
    tpl = _template()
    step = np.array(tpl.t1.shape, np.float64) / np.array(shape, np.float64)
    sigma = np.maximum(0.45 * step - 0.3, 0.0)
    t1 = ndimage.gaussian_filter(tpl.t1, sigma) if sigma.any() else tpl.t1
    vol = np.ascontiguousarray(np.stack([t1, tpl.dist], axis=-1), np.float32)
    axes = [((np.arange(n, dtype=np.float32) + 0.5) * np.float32(s) - 0.5) for n, s in zip(shape, step, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)
    vol.setflags(write=False)
    grid.setflags(write=False)
    return vol, grid


def _trilinear(vol: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Linear interpolation of the channels of ``vol`` (Z, Y, X, C) at ``pts`` (3, N) voxel
    coordinates (clamped to the volume); returns (C, N) float32."""
    shape = vol.shape[:3]
    flat = vol.reshape(-1, vol.shape[3])
    idx, frac = [], []
    for ax, dim in enumerate(shape):
        p = np.clip(pts[ax], 0.0, dim - 1.0)
        i0 = np.minimum(p.astype(np.int64), dim - 2)
        idx.append(i0)
        frac.append((p - i0).astype(np.float32))
    ny, nx = shape[1], shape[2]
    base = (idx[0] * ny + idx[1]) * nx + idx[2]
    out = np.zeros((base.size, flat.shape[1]), np.float32)
    for dz in (0, 1):
        wz = frac[0] if dz else 1.0 - frac[0]
        for dy in (0, 1):
            wy = wz * (frac[1] if dy else 1.0 - frac[1])
            for dx in (0, 1):
                w = wy * (frac[2] if dx else 1.0 - frac[2])
                out += flat[base + ((dz * ny + dy) * nx + dx)] * w[:, None]
    return out.T


# --------------------------------------------------------------------------------------------
# subject model


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def _rotation(angles: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    for axis, ang in enumerate(angles):
        c, s = np.cos(ang), np.sin(ang)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = out @ r
    return out


def _draw_subject(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, float | None], str]:
    """Demographics, A/T/N latents, diagnosis and the tabular row (scalar draws only)."""
    age = float(np.clip(rng.normal(73.0, 7.0), *TABULAR_RANGES["age"]))
    gender = float(rng.random() < 0.5)
    education = float(np.clip(np.round(rng.normal(16.0, 2.8)), *TABULAR_RANGES["education"]))
    apoe4 = int(rng.choice(3, p=_APOE4_P))
    p_amyloid = _sigmoid(_AMYLOID_LOGIT[0] + _AMYLOID_LOGIT[1] * apoe4 + _AMYLOID_LOGIT[2] * (age - 73.0))
    amyloid_pos = bool(rng.random() < p_amyloid)
    tau_pos = amyloid_pos and bool(rng.random() < _P_TAU_GIVEN_AMYLOID)
    at_stage = int(amyloid_pos) + int(tau_pos)
    amyloid = float(rng.uniform(*_LOAD_POS) if amyloid_pos else rng.uniform(*_LOAD_NEG))
    tau = float(rng.uniform(*_LOAD_POS) if tau_pos else rng.uniform(*_LOAD_NEG))
    w = np.asarray(_N_STAGE_BASE) * np.exp(_N_STAGE_TILT * at_stage * np.arange(3))
    n_stage = int(rng.choice(3, p=w / w.sum()))
    neuro = float(np.clip((n_stage + 0.5) / 3.0 + rng.normal(0.0, _N_JITTER), 0.0, 1.0))
    severity = at_stage + n_stage
    clean = 0 if severity <= 1 else (1 if severity == 2 else 2)
    flipped = bool(rng.random() < _LABEL_NOISE)
    label = (clean + int(rng.integers(1, 3))) % 3 if flipped else clean

    age01 = (age - 55.0) / 35.0
    vent_mm = float(max(_VENT_N_MM * neuro + _VENT_AGE_MM * age01 + rng.normal(0.0, _VENT_SD_MM), 0.0))
    ctx_mm = float(max(_CTX_N_MM * neuro + _CTX_AGE_MM * age01 + rng.normal(0.0, 0.05), 0.0))
    mtl_mm = float(max(_MTL_N_MM * neuro + rng.normal(0.0, 0.1), 0.0))

    def clip(name: str, v: float) -> float:
        return float(np.clip(v, *TABULAR_RANGES[name]))

    values: dict[str, float | None] = {
        "age": round(age, 1),
        "gender": gender,
        "education": education,
        "APOE4": float(apoe4),
        "ABETA": round(clip("ABETA", 1500.0 - 950.0 * amyloid + rng.normal(0.0, 70.0)), 1),
        "TAU": round(clip("TAU", 180.0 + 260.0 * tau + 40.0 * neuro + rng.normal(0.0, 40.0)), 1),
        "PTAU": round(clip("PTAU", 14.0 + 30.0 * tau + 3.0 * neuro + rng.normal(0.0, 3.0)), 2),
        "FDG": round(clip("FDG", 1.30 - 0.12 * neuro + rng.normal(0.0, 0.10)), 3),
        "AV45": round(clip("AV45", 1.0 + 0.55 * amyloid + rng.normal(0.0, 0.04)), 3),
    }
    for name, rate in MISSING_RATES.items():
        if rng.random() < rate:
            values[name] = None
    params = {
        "amyloid_positive": amyloid_pos, "tau_positive": tau_pos, "at_stage": at_stage,
        "amyloid": amyloid, "tau": tau, "p_amyloid": p_amyloid,
        "neurodegeneration_stage": n_stage, "neurodegeneration": neuro, "severity": severity,
        "clean_label": CLASSES[clean], "label_flipped": flipped,
        "ventricle_enlargement_mm": vent_mm, "cortical_thinning_mm": ctx_mm, "mtl_thinning_mm": mtl_mm,
    }
    return params, values, CLASSES[label]


def _render(rng: np.random.Generator, shape: tuple[int, int, int], params: dict[str, Any]) -> np.ndarray:
    tpl = _template()
    vol, grid = _template_at(shape)
    voxel_mm = float(np.mean(np.array(tpl.t1.shape, np.float64) / np.array(shape, np.float64)))
    centre = (np.array(tpl.t1.shape, np.float64) - 1.0) / 2.0
    angles = np.deg2rad(rng.uniform(-_ROTATION_DEG, _ROTATION_DEG, 3))
    scale = float(rng.uniform(*_SCALE_RANGE))
    shift = rng.uniform(-_SHIFT_MM, _SHIFT_MM, 3)
    # output voxel x shows the template at centre + R (x - centre) / scale - shift
    mat = (_rotation(angles) / scale).astype(np.float32)
    off = (centre - mat @ centre - shift).astype(np.float32)
    p = mat @ grid + off[:, None]
    fld = _trilinear(tpl.field, p / np.float32(_FIELD_STEP))
    # ventricle enlargement: the wall moves out by g mm; tissue within reach is pushed outward
    mtl = _mtl_weight(p, tpl.mtl_centres)
    g0 = max(params["ventricle_enlargement_mm"], 0.0)
    # temporal horns enlarge less; the septum between the lateral ventricles stays
    septum = np.exp(-0.5 * ((p[2] - np.float32(tpl.midline_x)) / np.float32(_SEPTUM_MM)) ** 2)
    g = np.float32(g0) * (1.0 - np.float32(_HORN_DAMPING) * mtl) * (1.0 - septum)
    delta = np.minimum(g, 1.0)
    r = fld[0]
    push = np.where(r >= g, (g + delta) * np.exp(-(np.maximum(r - g, 0.0)) / np.float32(_PUSH_MM)),
                    np.maximum(r + delta, 0.0))
    q = p - push * fld[1:4]
    img, dist = _trilinear(vol, q)
    inside = img > _BRAIN_THRESHOLD
    # the enlarged ventricles are filled with CSF (soft edge one output voxel wide)
    fill = np.clip((g - r) / np.float32(voxel_mm) + 0.5, 0.0, 1.0)
    img = img + fill * (np.float32(_CSF_VALUE) - img)
    # atrophy of the grey matter: tissue within `thick` mm of CSF turns into CSF
    thick = params["cortical_thinning_mm"] * fld[4] + params["mtl_thinning_mm"] * mtl
    erode = np.clip((thick - dist) / np.float32(_RAMP_MM), 0.0, 1.0)
    img = img - erode * np.maximum(img - np.float32(_CSF_VALUE), 0.0)

    gain = float(rng.uniform(*_GAIN_RANGE))
    # smooth multiplicative bias: exp of a random quadratic polynomial, peak |log| = bias_amp
    zz, yy, xx = (grid[i] / np.float32(tpl.t1.shape[i] - 1) * 2.0 - 1.0 for i in range(3))
    terms = np.stack([zz, yy, xx, zz * yy, zz * xx, yy * xx, zz * zz - 1 / 3, yy * yy - 1 / 3, xx * xx - 1 / 3])
    coef = rng.normal(0.0, 1.0, len(terms)).astype(np.float32)
    logb = np.tensordot(coef, terms, axes=1)
    bias_amp = float(rng.uniform(*_BIAS_RANGE))
    logb *= np.float32(bias_amp / max(float(np.abs(logb).max()), 1e-6))
    img = img * np.exp(logb) * np.float32(gain)
    noise_rel = float(rng.uniform(*_NOISE_RANGE))
    noise = rng.standard_normal(img.shape).astype(np.float32) * np.float32(noise_rel * 220.0 * gain)
    img = np.where(inside, np.maximum(img + noise, 0.0), 0.0).astype(np.float32)
    params.update(rotation_deg=tuple(float(v) for v in np.rad2deg(angles)), scale=scale,
                  shift_mm=tuple(float(v) for v in shift), gain=gain, bias_amplitude=bias_amp,
                  noise_sigma=float(noise_rel * 220.0 * gain))
    return img.reshape(shape)


# --------------------------------------------------------------------------------------------
# public API


def generate_dementia_case(seed: int, *, shape: tuple[int, int, int] = (64, 64, 64)) -> DementiaCase:
    """One synthetic subject; deterministic for a given ``seed`` and ``shape``.

    The label, the tabular row and the latent variables depend on ``seed`` only (not on
    ``shape``). See the module docstring for the generative model and its ranges.
    """
    seed = check_seed(seed)
    shape = _check_shape(shape)
    rng = np.random.default_rng(seed)
    params, values, label = _draw_subject(rng)
    image = _render(rng, shape, params)
    extent = _template().t1.shape
    spacing = (extent[0] / shape[0], extent[1] / shape[1], extent[2] / shape[2])
    return DementiaCase(image=image, tabular=values, label=label, spacing=spacing, seed=seed, params=params)


def generate_dementia_dataset(n: int, seed: int = 0, *,
                              shape: tuple[int, int, int] = (64, 64, 64), workers: int = 1,
                              cases: Any = None) -> list[DementiaCase]:
    """``n`` cases with distinct seeds derived from ``seed`` (each case records its own seed)."""
    seeds = select_cases(derived_seeds(n, seed), cases)  # cases: only these indices of the dataset
    shape = _check_shape(shape)
    return map_cases(partial(generate_dementia_case, shape=shape), seeds, workers)
