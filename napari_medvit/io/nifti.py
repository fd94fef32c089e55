"""NIfTI-1/2 reading, and writing label maps with the source image's exact header geometry.

Index and world conventions (see :mod:`napari_medvit.io.meta`): nibabel indexes the data as
``(i, j, k[, t])`` with an affine ``A`` mapping ``(i, j, k)`` to RAS millimetres. We return
the array transposed to ``(k, j, i)`` (``(t, k, j, i)`` for 4D) and the affine
``M = P @ F @ A @ P`` that maps ``(k, j, i)`` to world ``(S, P, L)``, where ``P`` reverses
the three spatial axes and ``F = diag(-1, -1, 1, 1)`` turns RAS into LPS.

Everything needed to write the *same* header geometry back (raw qform/sform fields and codes,
pixdim including qfac, units, dim_info) is kept in ``meta.extra["nifti"]``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from typing import Any

import nibabel as nib
import numpy as np

from ._atomic import atomic_write
from .errors import MedVitReadError
from .limits import check_allocation
from .meta import ImageMeta
from .orientation import REORIENT_KEY, stored_affine, stored_permutation, to_display_order, to_stored

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NIFTI_EXTRA_KEY = "nifti"

_REVERSE = np.eye(4)[[2, 1, 0, 3]]  # P: swaps index/world axis order (x, y, z) <-> (z, y, x)
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # F


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    name = os.fspath(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def nifti_to_world_affine(ras_affine: np.ndarray) -> np.ndarray:
    """nibabel ``(i, j, k) -> RAS`` affine to our ``(k, j, i) -> (S, P, L)`` affine."""
    return _REVERSE @ _RAS_TO_LPS @ np.asarray(ras_affine, dtype=float) @ _REVERSE


def world_to_nifti_affine(world_affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`nifti_to_world_affine` (P and F are their own inverses)."""
    return _RAS_TO_LPS @ _REVERSE @ np.asarray(world_affine, dtype=float) @ _REVERSE


def _finite_or_none(value: Any) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None


def _matrix_or_none(matrix: np.ndarray | None) -> list[list[float]] | None:
    return None if matrix is None else np.asarray(matrix, dtype=float).tolist()


def _header_geometry(img: nib.Nifti1Image) -> dict[str, Any]:
    """The JSON-serialisable header fields that define the geometry, copied verbatim."""
    hdr = img.header

    def coded(getter: Any) -> tuple[Any, int]:
        try:
            with np.errstate(all="ignore"):
                matrix, code = getter(coded=True)
            return matrix, int(code)
        except Exception:  # undecodable quaternions: the raw fields below are still copied
            return None, int(hdr["qform_code"])

    qform, qcode = coded(hdr.get_qform)
    sform, scode = coded(hdr.get_sform)
    return {
        "header_class": type(hdr).__name__,
        "affine": None,  # set by read_nifti: the affine that places the image
        "qform": _matrix_or_none(qform),
        "qform_code": int(qcode),
        "sform": _matrix_or_none(sform),
        "sform_code": int(scode),
        # raw fields, written back as they are so that the header is geometrically identical
        "quatern": [float(hdr["quatern_b"]), float(hdr["quatern_c"]), float(hdr["quatern_d"])],
        "qoffset": [float(hdr["qoffset_x"]), float(hdr["qoffset_y"]), float(hdr["qoffset_z"])],
        "srow": [[float(v) for v in hdr[f"srow_{a}"]] for a in "xyz"],
        "pixdim": [float(v) for v in hdr["pixdim"]],
        "zooms": [float(z) for z in hdr["pixdim"][1 : len(img.shape) + 1]],
        "xyzt_units": int(hdr["xyzt_units"]),
        "dim_info": int(hdr["dim_info"]),
        "on_disk_dtype": str(hdr.get_data_dtype()),
        "scl_slope": _finite_or_none(hdr["scl_slope"]),
        "scl_inter": _finite_or_none(hdr["scl_inter"]),
        "shape": [int(s) for s in img.shape],
    }


_MAX_VOXEL_MM = 1e4  # 10 m voxels: no scanner writes these; a corrupt or absurd sform does
_MAX_ORIGIN_MM = 1e6
_RGB_FIELDS = (("R", "G", "B"), ("R", "G", "B", "A"))


@contextlib.contextmanager
def _quiet_nibabel() -> Any:
    """nibabel logs the header fields it repairs on load (to stderr); the reader reports what
    matters itself, in its own words."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _affine_problem(affine: np.ndarray) -> str | None:
    """Why an ``(i, j, k) -> RAS`` affine cannot place an image, or None if it can."""
    affine = np.asarray(affine, dtype=float)
    if not np.all(np.isfinite(affine)):
        return "holds non-finite values: NaN or infinity"
    linear = affine[:3, :3]
    sizes = np.linalg.norm(linear, axis=0)
    if np.any(sizes < 1e-6) or abs(np.linalg.det(linear)) < 1e-6 * float(np.prod(np.maximum(sizes, 1e-300))):
        return f"is singular: voxel axes of length {[round(float(v), 6) for v in sizes]} mm or not independent"
    if np.any(sizes > _MAX_VOXEL_MM) or np.any(np.abs(affine[:3, 3]) > _MAX_ORIGIN_MM):
        return (f"has absurd values: voxel sizes {[float(f'{v:.4g}') for v in sizes]} mm, "
                f"origin {[float(f'{v:.4g}') for v in affine[:3, 3]]} mm")
    return None


def _placing_affine(img: nib.Nifti1Image, path: str) -> tuple[np.ndarray, str, list[str], list[str]]:
    """The affine to place the image, where it came from, and warnings about ignored ones.

    nibabel's choice (sform, else qform, else pixdim) first; a broken one is skipped for the next
    valid one with a warning. None valid: :class:`MedVitReadError` naming each problem.
    """
    hdr = img.header
    candidates: list[tuple[str, Any]] = []
    with np.errstate(all="ignore"):
        for name, getter in (("sform", hdr.get_sform), ("qform", hdr.get_qform)):
            try:
                matrix, code = getter(coded=True)
            except Exception:  # e.g. quaternions that do not form a rotation
                matrix, code = None, 1
            if int(code) > 0:
                candidates.append((name, matrix))
        try:
            candidates.append(("pixdim", hdr.get_base_affine()))
        except Exception:
            candidates.append(("pixdim", None))
    problems: list[str] = []
    ignored: list[str] = []
    for name, matrix in candidates:
        problem = "cannot be decoded" if matrix is None else _affine_problem(matrix)
        if problem is None:
            how = "voxel sizes (pixdim) only: its position and orientation are unknown" if name == "pixdim" else name
            notes = [f"{path}: ignored the NIfTI {p}; the image is placed by its {how}" for p in problems]
            return np.asarray(matrix, dtype=float), name, notes, ignored
        problems.append(f"{name} ({problem})")
        ignored.append(name)
    raise MedVitReadError(f"{path}: the NIfTI header cannot place the image: " + "; ".join(problems))


def read_nifti(path: str | os.PathLike[str]) -> tuple[np.ndarray, ImageMeta]:
    """Read a ``.nii``/``.nii.gz`` file (see :func:`_read_nifti`), nibabel's repair log silenced."""
    with _quiet_nibabel():
        return _read_nifti(path)


def _load(path: str) -> nib.Nifti1Image | nib.Nifti2Image:
    """nibabel's image of an existing NIfTI file (header repair notes silenced); MedVitReadError otherwise."""
    if not os.path.isfile(path):
        raise MedVitReadError(f"{path}: no such NIfTI file")
    try:
        with warnings.catch_warnings(), _quiet_nibabel():
            warnings.simplefilter("ignore")  # nibabel's header repair notes; problems are reported below
            img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for corrupt files (gzip, struct, ...)
        raise MedVitReadError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise MedVitReadError(f"{path}: expected a NIfTI image, nibabel found a {type(img).__name__}")
    return img


def _voxel_layout(img: nib.Nifti1Image, path: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    """The shape to read (trailing singleton axes beyond the fourth dropped), the on-disk voxel type
    and whether it is RGB(A); MedVitReadError for what the reader refuses (module docstring)."""
    try:
        shape = tuple(int(s) for s in img.shape)
        on_disk = np.dtype(img.header.get_data_dtype())
    except Exception as exc:
        raise MedVitReadError(f"{path}: the NIfTI header is corrupt ({type(exc).__name__}: {exc})") from exc
    if any(s <= 0 for s in shape):
        raise MedVitReadError(f"{path}: the NIfTI header declares an empty axis (shape {shape}); "
                              "the file holds no image")
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 4:
        raise MedVitReadError(f"{path}: {len(img.shape)}D NIfTI images (shape {img.shape}) are not supported")
    if len(shape) < 2:
        raise MedVitReadError(f"{path}: NIfTI image of shape {img.shape} has fewer than 2 dimensions")
    rgb = on_disk.names is not None
    if rgb and tuple(on_disk.names) not in _RGB_FIELDS:
        raise MedVitReadError(f"{path}: unsupported structured NIfTI voxel type with fields {on_disk.names}")
    if rgb and len(shape) > 3:
        raise MedVitReadError(f"{path}: 4D RGB NIfTI images (shape {shape}) are not supported")
    if on_disk.kind == "c":
        raise MedVitReadError(
            f"{path}: complex-valued voxels ({on_disk}) are not supported; save the magnitude (numpy.abs) "
            "or the real part as a real-valued NIfTI")
    if not rgb and on_disk.kind not in "biuf":
        raise MedVitReadError(f"{path}: unsupported NIfTI voxel type {on_disk}")
    return shape, on_disk, rgb


def _read_voxels(img: nib.Nifti1Image, path: str, shape: tuple[int, ...], on_disk: np.dtype,
                 rgb: bool) -> np.ndarray:
    """The voxel values as stored, ``(i, j, k[, t])`` (2D as one slice; RGB channel last), scaled by
    scl_slope/scl_inter, native byte order; refused before reading when over the memory budget."""
    try:
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    except (AttributeError, TypeError, ValueError):
        slope, inter = 1.0, 0.0
    scaled = not rgb and (slope != 1.0 or inter != 0.0)
    # decoded values (float64 while nibabel scales), plus the contiguous copy in display order
    itemsize = 8 if scaled else (3 if rgb else on_disk.itemsize)
    check_allocation(path, shape, itemsize * 2, "the NIfTI header")
    try:
        # RGB voxels are never scaled (the NIfTI standard ignores scl_slope for them)
        data = np.asanyarray(img.dataobj.get_unscaled() if rgb else img.dataobj)
    except Exception as exc:  # truncated or corrupt data block
        raise MedVitReadError(f"{path}: cannot read the NIfTI voxel data ({type(exc).__name__}: {exc})") from exc
    data = data.reshape(shape + (1,) * (3 - len(shape)))  # 2D -> single slice
    if rgb:
        data = np.stack([np.asarray(data[c]) for c in "RGB"], axis=-1).astype(np.uint8, copy=False)

    if data.dtype.byteorder not in ("=", "|"):  # e.g. big-endian '>i2' files
        data = data.astype(data.dtype.newbyteorder("="))
    if data.dtype == np.float64 and on_disk.kind != "f":
        data = data.astype(np.float32)  # scaled integers: float32 is plenty
    return data


def _nifti_meta(img: nib.Nifti1Image, path: str, data: np.ndarray, rgb: bool, affine: np.ndarray,
                affine_source: str, ignored: list[str]) -> ImageMeta:
    """The meta of the image placed by ``affine``, with the header geometry kept for writing back."""
    n_spatial = data.ndim - (1 if rgb else 0)
    geometry = _header_geometry(img)
    geometry["affine"] = affine.tolist()
    geometry["affine_source"] = affine_source
    geometry["ignored_forms"] = [f for f in ignored if f in ("sform", "qform")]  # zeroed in written masks
    geometry["shape"] = [int(s) for s in data.shape[:3]]
    geometry["full_shape"] = [int(s) for s in data.shape[:n_spatial]]
    return ImageMeta.from_affine(
        nifti_to_world_affine(affine),
        axes=("z", "y", "x"),
        source_path=os.path.abspath(path),
        modality=None,
        rgb=rgb,
        extra={NIFTI_EXTRA_KEY: geometry},
    )


def _read_nifti(path: str | os.PathLike[str]) -> tuple[np.ndarray, ImageMeta]:
    """Read a ``.nii``/``.nii.gz`` file as a ``(z, y, x)`` or ``(t, z, y, x)`` array and its meta.

    2D images become a single-slice volume; trailing singleton dimensions beyond the fourth
    are dropped. RGB24 / RGBA32 voxels become an RGB image (channel last, ``meta.rgb``; alpha
    dropped). A sagittal or coronal storage order comes back in display order
    (:mod:`napari_medvit.io.orientation`).

    Raises :class:`MedVitReadError` naming the file for missing, corrupt or unsupported files:
    complex voxels (refused: save the magnitude), a zero-sized axis, a header whose sform, qform
    and pixdim all fail to place the image (non-finite, singular or absurd; a broken sform with
    a valid qform is skipped with a warning), and :class:`~napari_medvit.io.limits.ImageTooLargeError`
    when the header declares more voxels than the memory budget, before any voxel is read.
    """
    path = os.fspath(path)
    img = _load(path)
    shape, on_disk, rgb = _voxel_layout(img, path)
    affine, affine_source, notes, ignored = _placing_affine(img, path)
    data = _read_voxels(img, path, shape, on_disk, rgb)
    n_spatial = data.ndim - (1 if rgb else 0)
    order = (2, 1, 0) if n_spatial == 3 else (3, 2, 1, 0)
    array = np.ascontiguousarray(data.transpose(order + ((3,) if rgb else ())))
    meta = _nifti_meta(img, path, data, rgb, affine, affine_source, ignored)
    if notes:
        meta.extra["warnings"] = notes
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=2)
    return to_display_order(array, meta)  # sagittal/coronal storage: axes reordered, undone on write


def _label_dtype(labels: np.ndarray) -> np.dtype:
    """Smallest of uint8 / int16 / int32 holding every label value (checked to be integral)."""
    if labels.dtype == bool:
        return np.dtype(np.uint8)
    if labels.dtype.kind not in "iuf":
        raise ValueError(f"labels must be numeric, got dtype {labels.dtype}")
    if labels.size == 0:
        return np.dtype(np.uint8)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"labels of dtype {labels.dtype} contain non-integer values")
    lo, hi = labels.min(), labels.max()
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    raise ValueError(f"label values {lo}..{hi} do not fit into int32")


def _spatial_labels(labels: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """Labels on the display grid of ``meta`` as a 3D ``(z, y, x)`` array in the source file's
    stored voxel order (the reader's axis reordering undone, :mod:`napari_medvit.io.orientation`)."""
    source: tuple[int, ...] | None = None  # stored spatial shape of the image the meta came from
    geometry = meta.extra.get(NIFTI_EXTRA_KEY)
    perm = stored_permutation(meta)
    if geometry is not None:
        source = tuple(int(s) for s in reversed(geometry["shape"]))  # (k, j, i)
    elif perm is not None:
        source = tuple(int(s) for s in meta.extra[REORIENT_KEY]["stored_spatial_shape"])
    elif meta.extra.get("spatial_shape") is not None:  # recorded by the DICOM and frame readers
        source = tuple(int(s) for s in meta.extra["spatial_shape"])
    given = labels.shape
    if labels.ndim == meta.ndim + 1 and labels.shape[0] == 1:
        labels = labels[0]  # a single time point of a 4D source
    if perm is not None and labels.ndim == meta.ndim:
        shown = None if source is None else tuple(source[p] for p in perm)
        if shown is not None and labels.shape != shown:
            raise ValueError(f"labels shape {given} differs from the source image shape {shown}")
        labels = to_stored(labels, meta, rgb=False)
    elif source is not None and labels.shape != source:
        raise ValueError(f"labels shape {given} differs from the source image shape {source}")
    if labels.ndim == 2 and meta.ndim == 2:
        labels = labels[np.newaxis]
    if labels.ndim != 3:
        raise ValueError(
            f"labels of shape {given} cannot be written with a {meta.ndim}D geometry; "
            "expected a 3D (z, y, x) or 2D (y, x) label array"
        )
    return labels


def _ras_affine_from_meta(meta: ImageMeta) -> np.ndarray:
    """A 4x4 ``(i, j, k) -> RAS`` affine for a meta without NIfTI header fields."""
    if meta.ndim == 3:
        world = stored_affine(meta)  # the labels are written in the source's stored voxel order
    elif meta.ndim == 2:
        affine_3d = meta.extra.get("affine_3d")  # e.g. a single DICOM slice's true position
        if affine_3d is not None:
            world = np.asarray(affine_3d, dtype=float)
        else:  # embed (y, x) into (z, y, x) with a unit slice
            world = np.eye(4)
            world[1:3, 1:3] = meta.affine[:2, :2]
            world[1:3, 3] = meta.affine[:2, 2]
    else:
        raise ValueError(f"cannot write NIfTI with a {meta.ndim}D geometry (spacing {meta.spacing})")
    return world_to_nifti_affine(world)


def _build_header(geometry: dict[str, Any] | None, meta: ImageMeta, dtype: np.dtype) -> nib.Nifti1Header:
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    if geometry is None:
        affine = _ras_affine_from_meta(meta)
        hdr.set_qform(affine, code=1)
        hdr.set_sform(affine, code=1)
        hdr.set_xyzt_units(xyz="mm")
    else:
        hdr["pixdim"] = np.asarray(geometry["pixdim"], dtype=np.float32)
        hdr["quatern_b"], hdr["quatern_c"], hdr["quatern_d"] = geometry["quatern"]
        hdr["qoffset_x"], hdr["qoffset_y"], hdr["qoffset_z"] = geometry["qoffset"]
        for axis, row in zip("xyz", geometry["srow"], strict=True):
            hdr[f"srow_{axis}"] = np.asarray(row, dtype=np.float32)
        # a form the reader found broken is written with code 0, so that other viewers place the
        # mask as this one placed the image (by the form it used); the raw fields stay as they were
        ignored = geometry.get("ignored_forms") or []
        hdr["qform_code"] = 0 if "qform" in ignored else int(geometry["qform_code"])
        hdr["sform_code"] = 0 if "sform" in ignored else int(geometry["sform_code"])
        hdr["xyzt_units"] = int(geometry["xyzt_units"])
        hdr["dim_info"] = int(geometry["dim_info"])
    # label values are stored verbatim: no intensity scaling
    hdr["scl_slope"] = 1.0
    hdr["scl_inter"] = 0.0
    hdr["intent_code"] = 1002  # NIFTI_INTENT_LABEL
    return hdr


def write_nifti_labels(path: str | os.PathLike[str], labels: np.ndarray, meta: ImageMeta) -> str:
    """Write a ``(z, y, x)`` (or 2D ``(y, x)``) label array as NIfTI with the geometry of ``meta``.

    With NIfTI header fields in ``meta.extra`` (the meta came from :func:`read_nifti`), the
    qform and sform, their codes, pixdim, units and dim_info are copied verbatim, so that
    nibabel reads back bit-identical ``affine``, ``get_qform()`` and ``get_sform()``.
    Otherwise the RAS affine is derived from ``meta.affine`` and stored as both qform and
    sform with code 1 (scanner). The dtype is uint8 when the labels fit, else int16/int32.
    The file is replaced atomically. Returns the written path.
    """
    path = os.fspath(path)
    if not is_nifti_path(path):
        raise ValueError(f"{path}: a NIfTI label file must end with .nii or .nii.gz")
    labels = np.asarray(labels)
    spatial = _spatial_labels(labels, meta)
    dtype = _label_dtype(spatial)
    geometry = meta.extra.get(NIFTI_EXTRA_KEY)
    hdr = _build_header(geometry, meta, dtype)
    data = np.ascontiguousarray(spatial.transpose(2, 1, 0)).astype(dtype, copy=False)
    img = nib.Nifti1Image(data, affine=None, header=hdr)
    img.header.set_data_dtype(dtype)
    atomic_write(path, lambda tmp: nib.save(img, tmp))
    return path


def nifti_image_like(volume: np.ndarray, meta: ImageMeta) -> nib.Nifti1Image:
    """An intensity image (not labels) of the shape and geometry ``meta`` describes, dtype kept
    (float types other than float32/64 become float32), for exporting training images."""
    spatial = _spatial_labels(np.asarray(volume), meta)  # the same shape checks as for labels
    dtype = spatial.dtype if spatial.dtype in (np.uint8, np.int16, np.int32, np.float32, np.float64) \
        else np.dtype(np.float32)
    hdr = _build_header(meta.extra.get(NIFTI_EXTRA_KEY), meta, dtype)
    hdr["intent_code"] = 0  # an image, not a label map
    data = np.ascontiguousarray(spatial.transpose(2, 1, 0)).astype(dtype, copy=False)
    img = nib.Nifti1Image(data, affine=None, header=hdr)
    img.header.set_data_dtype(dtype)
    return img


__all__ = [
    "NIFTI_SUFFIXES",
    "nifti_image_like",
    "is_nifti_path",
    "nifti_to_world_affine",
    "read_nifti",
    "world_to_nifti_affine",
    "write_nifti_labels",
]
