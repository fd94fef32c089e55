"""DICOM reading: single files (2D, multi-frame) and folders of one or more series.

Geometry (see :mod:`napari_medvit.io.meta`): a volume is indexed ``(slice, row, col)``.
``ImageOrientationPatient`` gives ``r`` (direction of increasing column index) and ``c``
(direction of increasing row index); slices are sorted by the projection of
``ImagePositionPatient`` on ``n = r x c``. In LPS::

    world = IPP_first + slice * v + row * row_spacing * c + col * col_spacing * r

with ``v`` the slice step vector (along the line through the slice positions, so a gantry
tilt becomes a shear), and the world axes are then reversed to ``(S, P, L)``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from .errors import MedVitReadError
from .limits import check_allocation
from .meta import ImageMeta
from .orientation import to_display_order

DICOM_SUFFIXES = (".dcm", ".dicom")
_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # DICOMDIR (Media Storage Directory Storage)
_REVERSE3 = np.eye(3)[::-1]  # LPS <-> (S, P, L)
_MAX_FOLDER_FILES = 20000


# -- file recognition -----------------------------------------------------------------------
def has_dicm_preamble(path: str | os.PathLike[str]) -> bool:
    """True if the file carries the 128-byte preamble followed by ``DICM``. Never raises."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_path(path: str | os.PathLike[str]) -> bool:
    """A file with a DICOM extension or the ``DICM`` preamble. Never raises."""
    try:
        if not os.path.isfile(path):
            return False
    except (OSError, ValueError):
        return False
    return os.fspath(path).lower().endswith(DICOM_SUFFIXES) or has_dicm_preamble(path)


def iter_folder_files(
    folder: str | os.PathLike[str], limit: int | None = None, max_dirs: int | None = None
) -> Iterator[str]:
    """Files under ``folder`` (recursively, sorted, hidden entries skipped).

    Stops after ``limit`` files or ``max_dirs`` visited folders.
    """
    count = 0
    for n_dirs, (root, dirs, files) in enumerate(os.walk(folder)):
        if max_dirs is not None and n_dirs >= max_dirs:
            return
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            yield os.path.join(root, name)
            count += 1
            if limit is not None and count >= limit:
                return


def folder_has_dicom(folder: str | os.PathLike[str], max_files: int = 64, max_dirs: int = 32) -> bool:
    """True if one of the first ``max_files`` files under ``folder`` is a DICOM file."""
    try:
        return any(
            is_dicom_path(f) and os.path.basename(f).upper() != "DICOMDIR"
            for f in iter_folder_files(folder, limit=max_files, max_dirs=max_dirs)
        )
    except OSError:
        return False


# -- small helpers --------------------------------------------------------------------------
def _floats(value: Any) -> list[float] | None:
    if value is None:
        return None
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if all(np.isfinite(out)) else None


def _first_float(*values: Any) -> float | None:
    for value in values:
        if value is None or value == "":
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        if np.isfinite(v) and v > 0:
            return v
    return None


def _number(ds: Dataset, keyword: str, path: str, default: float | None = None) -> float | None:
    """A numeric tag as a finite float; text that is no number is a :class:`MedVitReadError`."""
    if keyword not in ds:
        return default
    try:
        value = ds[keyword].value
    except Exception as exc:  # pydicom converts lazily and may raise for malformed values
        raise MedVitReadError(f"{path}: the DICOM tag {keyword} cannot be decoded ({exc})") from exc
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)) or (isinstance(value, Sequence) and not isinstance(value, (str, bytes))):
        value = value[0] if len(value) else default  # a multi-valued tag: the first value applies
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MedVitReadError(f"{path}: the DICOM tag {keyword} holds {str(value)!r}, which is not a number") from None
    if not np.isfinite(number):
        raise MedVitReadError(f"{path}: the DICOM tag {keyword} holds {number}, which is not a finite number")
    return number


def _count(ds: Dataset, keyword: str, path: str, default: int) -> int:
    """A count tag (NumberOfFrames, Rows, ...) as a positive int, or a :class:`MedVitReadError`."""
    number = _number(ds, keyword, path, float(default))
    if number is None or number != int(number) or number < 0:
        raise MedVitReadError(f"{path}: the DICOM tag {keyword} holds {number}, which is not a whole number")
    return int(number) or default


def _item(ds: Dataset, *keywords: str) -> Dataset | None:
    """Follow a chain of sequence keywords, taking the first item of each."""
    node: Dataset | None = ds
    for kw in keywords:
        seq = node.get(kw) if node is not None else None
        if not seq:
            return None
        node = seq[0]
    return node


def _functional(ds: Dataset, frame: Dataset | None, seq_keyword: str) -> Dataset | None:
    """An enhanced multi-frame functional group macro, per-frame first then shared."""
    for group in (frame, _item(ds, "SharedFunctionalGroupsSequence")):
        if group is not None:
            found = _item(group, seq_keyword)
            if found is not None:
                return found
    return None


def _orientation(ds: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """Unit row-direction cosine ``r`` and column-direction cosine ``c``, or None."""
    iop = _floats(ds.get("ImageOrientationPatient"))
    if iop is None:
        plane = _functional(ds, None, "PlaneOrientationSequence")
        iop = _floats(plane.get("ImageOrientationPatient")) if plane is not None else None
    if iop is None or len(iop) != 6:
        return None
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    nr, nc = np.linalg.norm(r), np.linalg.norm(c)
    if nr < 1e-6 or nc < 1e-6 or abs(np.dot(r / nr, c / nc)) > 1e-3:
        return None
    return r / nr, c / nc


def _pixel_spacing(ds: Dataset) -> tuple[tuple[float, float], str]:
    """``(row spacing, column spacing)`` in mm and the tag it came from."""
    measures = _functional(ds, None, "PixelMeasuresSequence")
    candidates = (
        ("PixelSpacing", ds.get("PixelSpacing")),
        ("PixelMeasuresSequence", measures.get("PixelSpacing") if measures is not None else None),
        ("ImagerPixelSpacing", ds.get("ImagerPixelSpacing")),
    )
    for source, value in candidates:
        values = _floats(value)
        if values is not None and len(values) == 2 and min(values) > 0:
            return (values[0], values[1]), source
    return (1.0, 1.0), "default"


def _spacing_notes(ds: Dataset, path: str, spacing_source: str) -> list[str]:
    """Warnings for spacing tags present but unusable (text, zero, negative): never silently 1 mm."""
    notes = []
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "SpacingBetweenSlices", "SliceThickness"):
        if keyword not in ds:
            continue
        try:
            value = ds[keyword].value
        except Exception:  # pydicom could not convert the text at all
            value = ds[keyword].repval if hasattr(ds[keyword], "repval") else "?"
        if value is None or value == "":
            continue
        values = _floats(value if isinstance(value, Sequence) and not isinstance(value, str) else [value])
        if values is None or min(values) <= 0:
            notes.append(f"{path}: the DICOM tag {keyword} holds {value!r}, not positive numbers; ignored")
    if notes and spacing_source == "default":
        notes.append(f"{path}: no usable pixel spacing: 1 mm per pixel is assumed, so distances and volumes are not mm")
    return notes


def _slice_spacing(ds: Dataset) -> float | None:
    measures = _functional(ds, None, "PixelMeasuresSequence")
    return _first_float(
        ds.get("SpacingBetweenSlices"),
        measures.get("SpacingBetweenSlices") if measures is not None else None,
        ds.get("SliceThickness"),
        measures.get("SliceThickness") if measures is not None else None,
    )


def _to_output_dtype(values: np.ndarray) -> np.ndarray:
    """int16 if the modality values are integral and fit, else float32.

    Integral values beyond float32's exact range (2**24) are kept as int32 rather than
    rounded.
    """
    if values.size == 0:
        return values.astype(np.int16)
    integral = values.dtype.kind in "iub" or (
        bool(np.all(np.isfinite(values))) and np.array_equal(values, np.round(values))
    )
    if integral:
        lo, hi = float(values.min()), float(values.max())
        if np.iinfo(np.int16).min <= lo and hi <= np.iinfo(np.int16).max:
            return values.astype(np.int16)
        if max(abs(lo), abs(hi)) > 2**24 and np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max:
            return values.astype(np.int32)
    return values.astype(np.float32)


def _modality_values(raw: np.ndarray, ds: Dataset, frame: Dataset | None = None) -> np.ndarray:
    """Stored values to modality values (e.g. Hounsfield units), as float64 or the raw integers."""
    path = str(getattr(ds, "filename", None) or "DICOM file")
    transform = _functional(ds, frame, "PixelValueTransformationSequence")
    if transform is not None and "RescaleSlope" in transform:
        slope = _number(transform, "RescaleSlope", path, 1.0)
        intercept = _number(transform, "RescaleIntercept", path, 0.0)
        out = raw.astype(np.float64) * slope + intercept
    else:
        # validated here so that text in these tags is an error naming the file and the tag
        _number(ds, "RescaleSlope", path)
        _number(ds, "RescaleIntercept", path)
        try:
            out = apply_modality_lut(raw, ds)
        except MedVitReadError:
            raise
        except Exception as exc:  # a malformed Modality LUT
            raise MedVitReadError(f"{path}: cannot apply the DICOM modality LUT ({type(exc).__name__}: {exc})") from exc
    if ds.get("Modality") == "RTDOSE" and ds.get("DoseGridScaling") is not None:
        out = out.astype(np.float64) * _number(ds, "DoseGridScaling", path, 1.0)
    return out


def _is_rgb(ds: Dataset) -> bool:
    return int(ds.get("SamplesPerPixel", 1)) > 1


def _looks_like_raw_dicom(path: str) -> bool:
    """A file without preamble that starts with a DICOM data element of group 0002 or 0008
    (little or big endian), as old ACR-NEMA style files do."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    if len(head) < 8:
        return False
    group_le = int.from_bytes(head[:2], "little")
    group_be = int.from_bytes(head[:2], "big")
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


def _dcmread(path: str, *, header_only: bool = False) -> Dataset:
    force = not has_dicm_preamble(path)  # an old file may lack the preamble: then it must look raw
    if force and not _looks_like_raw_dicom(path):
        raise MedVitReadError(
            f"{path}: not a DICOM file (no 'DICM' marker after the 128-byte preamble and no DICOM data "
            "element at the start)")
    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only, force=force)
    except Exception as exc:
        raise MedVitReadError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def _pixels(ds: Dataset, path: str) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise MedVitReadError(f"{path}: the DICOM file holds no pixel data (Modality {ds.get('Modality')!r})")
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        raise MedVitReadError(f"{path}: cannot decode the DICOM pixel data ({type(exc).__name__}: {exc})") from exc


def _tag_summary(ds: Dataset) -> dict[str, Any]:
    """JSON-friendly, non-identifying tags worth keeping."""
    out: dict[str, Any] = {}
    for kw in (
        "Modality", "SeriesInstanceUID", "SeriesDescription", "StudyInstanceUID", "SOPClassUID",
        "PhotometricInterpretation", "Manufacturer", "BodyPartExamined", "PatientPosition",
    ):
        value = ds.get(kw)
        if value not in (None, ""):
            out[kw] = str(value)
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "ImagerPixelSpacing"):
        values = _floats(ds.get(kw))
        if values is not None:
            out[kw] = values
    numeric = ("SliceThickness", "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth")
    for kw in numeric:
        value = ds.get(kw)
        if value is None or value == "":
            continue
        numbers = _floats(value) if isinstance(value, Sequence) and not isinstance(value, str) else _floats([value])
        if numbers:
            out[kw] = numbers if len(numbers) > 1 else numbers[0]
    return out


# -- geometry -------------------------------------------------------------------------------
@dataclass
class _StackGeometry:
    affine: np.ndarray  # 4x4, (slice, row, col) -> (S, P, L)
    order: np.ndarray  # permutation sorting the slices by position
    positions: list[float]  # sorted projections on the slice normal
    warnings: list[str] = field(default_factory=list)


def _stack_geometry(
    ipps: np.ndarray,
    rc: tuple[np.ndarray, np.ndarray],
    pixel_spacing: tuple[float, float],
    fallback_step: float | None,
    label: str,
) -> _StackGeometry:
    """Sort slices by position and build the volume affine; warns on irregular spacing."""
    r, c = rc
    n = np.cross(r, c)
    proj = ipps @ n
    order = np.argsort(proj, kind="stable")
    ipps, proj = ipps[order], proj[order]
    notes: list[str] = []
    if len(proj) > 1:
        steps = np.diff(proj)
        if np.any(steps < 1e-4):
            k = int(np.argmin(steps))
            raise MedVitReadError(
                f"{label}: several slices share the position {proj[k]:.3f} mm along the slice normal "
                "(multiple acquisitions or echoes in one series); 4D DICOM series are not supported"
            )
        step = float(np.median(steps))
        line = ipps[-1] - ipps[0]
        v = step * line / float(line @ n)  # follows a gantry tilt, projects to `step` on n
        tolerance = max(0.01, 0.01 * step)
        bad = np.flatnonzero(np.abs(steps - step) > tolerance)
        if bad.size:
            k = int(bad[np.argmax(np.abs(steps[bad] - step))])
            offset = float(proj[-1] - (proj[0] + step * (len(proj) - 1)))
            notes.append(
                f"{label}: slice spacing is not uniform: the step between slices {k} and {k + 1} "
                f"(positions {proj[k]:.2f} and {proj[k + 1]:.2f} mm along the slice normal) is "
                f"{steps[k]:.2f} mm while the median step is {step:.2f} mm "
                f"({bad.size} of {steps.size} steps differ). The volume uses the median step, so "
                f"slices can be displayed up to {abs(offset):.2f} mm from their true position."
            )
    else:
        v = n * (fallback_step or 1.0)
    row_sp, col_sp = pixel_spacing
    lps = np.column_stack([v, row_sp * c, col_sp * r])
    affine = np.eye(4)
    affine[:3, :3] = _REVERSE3 @ lps
    affine[:3, 3] = _REVERSE3 @ ipps[0]
    return _StackGeometry(affine=affine, order=order, positions=[float(p) for p in proj], warnings=notes)


def _meta_from_affine(affine: np.ndarray, *, path: str, ds: Dataset, rgb: bool, extra: dict[str, Any]) -> ImageMeta:
    return ImageMeta.from_affine(
        affine,
        axes=("z", "y", "x"),
        source_path=os.path.abspath(path),
        modality=str(ds.get("Modality")) if ds.get("Modality") else None,
        rgb=rgb,
        extra=extra,
    )


def _emit(meta: ImageMeta, notes: list[str]) -> None:
    if notes:
        meta.extra.setdefault("warnings", []).extend(notes)
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=3)


# -- single files ---------------------------------------------------------------------------
def _frame_positions(ds: Dataset, nframes: int, rc: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray | None:
    """Per-frame ImagePositionPatient of a multi-frame file, or None."""
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    if frames and len(frames) == nframes:
        positions = []
        for frame in frames:
            plane = _item(frame, "PlanePositionSequence")
            ipp = _floats(plane.get("ImagePositionPatient")) if plane is not None else None
            if ipp is None or len(ipp) != 3:
                return None
            positions.append(ipp)
        return np.asarray(positions)
    ipp = _floats(ds.get("ImagePositionPatient"))
    offsets = _floats(ds.get("GridFrameOffsetVector"))  # RT dose grids
    if ipp is not None and len(ipp) == 3 and offsets is not None and len(offsets) == nframes and rc is not None:
        n = np.cross(*rc)
        return np.asarray(ipp)[None, :] + np.asarray(offsets)[:, None] * n[None, :]
    return None


def _check_size(ds: Dataset, path: str, frames: int | None = None, what: str = "the DICOM header") -> None:
    """Refuse, from the header, pixel data larger than the memory budget (float64 modality values)."""
    rows, cols = _count(ds, "Rows", path, 0), _count(ds, "Columns", path, 0)
    frames = frames if frames is not None else _count(ds, "NumberOfFrames", path, 1)
    samples = _count(ds, "SamplesPerPixel", path, 1)
    check_allocation(path, (frames, rows, cols, samples), 8, what)


def _read_single_file(path: str) -> tuple[np.ndarray, ImageMeta]:
    ds = _dcmread(path)  # pixel data stay undecoded (and compressed) until _pixels
    if str(ds.get("SOPClassUID", "")) == _DIRECTORY_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise MedVitReadError(f"{path}: this is a DICOMDIR index, not an image; open its folder instead")
    _check_size(ds, path)
    raw = _pixels(ds, path)
    rgb = _is_rgb(ds)
    nframes = _count(ds, "NumberOfFrames", path, 1)
    rc = _orientation(ds)
    spacing, spacing_source = _pixel_spacing(ds)
    extra: dict[str, Any] = {"dicom": _tag_summary(ds), "spacing_source": spacing_source}
    extra["dicom"]["number_of_frames"] = nframes
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        extra["photometric"] = "MONOCHROME1"  # displays inverted: 0 is white

    if nframes == 1:
        values = raw if rgb else _to_output_dtype(_modality_values(raw, ds))
        ipp = _floats(ds.get("ImagePositionPatient"))
        if rc is not None and ipp is not None and len(ipp) == 3:
            geo = _stack_geometry(np.asarray([ipp]), rc, spacing, _slice_spacing(ds), path)
            extra["affine_3d"] = geo.affine.tolist()  # the slice's true place, for 3D export
        meta = ImageMeta(
            spacing=spacing,
            origin=(0.0, 0.0),
            direction=((1.0, 0.0), (0.0, 1.0)),
            axes=("y", "x"),
            source_path=os.path.abspath(path),
            modality=str(ds.get("Modality")) if ds.get("Modality") else None,
            rgb=rgb,
            extra=extra,
        )
        meta.extra["spatial_shape"] = [int(s) for s in values.shape[:2]]
        _emit(meta, _spacing_notes(ds, path, spacing_source))
        return np.ascontiguousarray(values), meta

    # multi-frame
    frames_ds = ds.get("PerFrameFunctionalGroupsSequence")
    if not rgb:
        per_frame = bool(frames_ds) and len(frames_ds) == nframes
        if per_frame and _functional(ds, frames_ds[0], "PixelValueTransformationSequence"):
            values = np.stack([_modality_values(raw[i], ds, frames_ds[i]) for i in range(nframes)])
        else:
            values = _modality_values(raw, ds)
        values = _to_output_dtype(values)
    else:
        values = raw
    notes: list[str] = _spacing_notes(ds, path, spacing_source)
    positions = _frame_positions(ds, nframes, rc)
    if positions is not None and rc is not None:
        geo = _stack_geometry(positions, rc, spacing, _slice_spacing(ds), path)
        values = values[geo.order]
        affine, notes = geo.affine, geo.warnings
        extra["slice_positions"] = geo.positions
    else:
        step = _slice_spacing(ds) or 1.0
        affine = np.diag([step, spacing[0], spacing[1], 1.0])
        ipp = _floats(ds.get("ImagePositionPatient"))
        if rc is not None and ipp is not None and len(ipp) == 3:
            r, c = rc
            affine[:3, :3] = _REVERSE3 @ np.column_stack([step * np.cross(r, c), spacing[0] * c, spacing[1] * r])
            affine[:3, 3] = _REVERSE3 @ np.asarray(ipp)
        extra["slice_spacing_source"] = "SpacingBetweenSlices/SliceThickness" if _slice_spacing(ds) else "default 1.0"
    extra["spatial_shape"] = [int(s) for s in values.shape[:3]]
    meta = _meta_from_affine(affine, path=path, ds=ds, rgb=rgb, extra=extra)
    _emit(meta, notes)
    return np.ascontiguousarray(values), meta


# -- folders --------------------------------------------------------------------------------
@dataclass
class _Series:
    key: tuple[Any, ...]
    files: list[str]
    headers: list[Dataset]
    frames: int = 0

    @property
    def first(self) -> Dataset:
        return self.headers[0]

    def summary(self) -> dict[str, Any]:
        ds = self.first
        return {
            "SeriesInstanceUID": str(ds.get("SeriesInstanceUID", "")),
            "SeriesDescription": str(ds.get("SeriesDescription", "") or ""),
            "Modality": str(ds.get("Modality", "") or ""),
            "number_of_files": len(self.files),
            "number_of_slices": self.frames,
            "folder": os.path.dirname(self.files[0]),
        }

    def label(self) -> str:
        ds = self.first
        name = str(ds.get("SeriesDescription", "") or "") or os.path.basename(os.path.dirname(self.files[0]))
        files = "file" if len(self.files) == 1 else "files"
        return f"'{name}' ({ds.get('Modality', '?')}, {len(self.files)} {files})"


def _scan_folder(folder: str) -> tuple[list[_Series], dict[str, str], list[str]]:
    """Group the image files under ``folder`` into series of stackable slices.

    Also returns the DICOM-named files that could not be read (with the reason) and the other
    (non-DICOM) files.
    """
    groups: dict[tuple[Any, ...], _Series] = {}
    reasons: dict[str, str] = {}  # the DICOM-named files that could not be read, and why
    ignored: list[str] = []
    for i, path in enumerate(iter_folder_files(folder)):
        if i >= _MAX_FOLDER_FILES:
            raise MedVitReadError(f"{folder}: more than {_MAX_FOLDER_FILES} files; open a series folder instead")
        if os.path.basename(path).upper() == "DICOMDIR":
            continue
        if not is_dicom_path(path) and not _looks_like_raw_dicom(path):
            ignored.append(path)
            continue
        try:
            ds = _dcmread(path, header_only=True)
        except MedVitReadError as exc:
            reasons[path] = str(exc).replace(f"{path}: ", "", 1)
            continue
        if str(ds.get("SOPClassUID", "")) == _DIRECTORY_SOP_CLASS or "Rows" not in ds or "Columns" not in ds:
            continue  # DICOMDIR, structured reports, RT plans, ...: no image
        try:
            nframes = _count(ds, "NumberOfFrames", path, 1)
            rows, cols = _count(ds, "Rows", path, 0), _count(ds, "Columns", path, 0)
            samples = _count(ds, "SamplesPerPixel", path, 1)
        except MedVitReadError as exc:
            reasons[path] = str(exc).replace(f"{path}: ", "", 1)
            continue
        rc = _orientation(ds)
        key: tuple[Any, ...] = (
            str(ds.get("SeriesInstanceUID", "")),
            None if rc is None else tuple(np.round(np.concatenate(rc), 4)),
            rows,
            cols,
            samples,
            str(ds.get("SOPInstanceUID", path)) if nframes > 1 else "",  # a multi-frame file is its own volume
        )
        series = groups.setdefault(key, _Series(key=key, files=[], headers=[]))
        series.files.append(path)
        series.headers.append(ds)
        series.frames += nframes
    return list(groups.values()), reasons, ignored


def _read_series(series: _Series, folder: str) -> tuple[np.ndarray, ImageMeta]:
    if len(series.files) == 1:
        return _read_single_file(series.files[0])
    datasets = [_dcmread(p) for p in series.files]  # pixel data stay undecoded until _pixels
    ds0 = datasets[0]
    _check_size(ds0, folder, frames=series.frames, what=f"the series {series.label()}")
    rgb = _is_rgb(ds0)
    slices = []
    for ds, path in zip(datasets, series.files):
        raw = _pixels(ds, path)
        slices.append(raw if rgb else _modality_values(raw, ds))
    values = np.stack(slices)
    if not rgb:
        values = _to_output_dtype(values)
    spacing, spacing_source = _pixel_spacing(ds0)
    extra: dict[str, Any] = {"dicom": _tag_summary(ds0), "spacing_source": spacing_source}
    if ds0.get("PhotometricInterpretation") == "MONOCHROME1":
        extra["photometric"] = "MONOCHROME1"
    rc = _orientation(ds0)
    ipps = [_floats(ds.get("ImagePositionPatient")) for ds in datasets]
    notes: list[str] = _spacing_notes(ds0, str(series.files[0]), spacing_source)
    label = f"{folder} (series {series.label()})"
    if rc is not None and all(p is not None and len(p) == 3 for p in ipps):
        geo = _stack_geometry(np.asarray(ipps), rc, spacing, _slice_spacing(ds0), label)
        order, affine, notes = geo.order, geo.affine, geo.warnings
        extra["slice_positions"] = geo.positions
    else:
        numbers = [int(_number(ds, "InstanceNumber", p, float(i)) or i) for i, (ds, p) in enumerate(zip(datasets, series.files))]
        order = np.argsort(numbers, kind="stable")
        step = _slice_spacing(ds0) or 1.0
        affine = np.diag([step, spacing[0], spacing[1], 1.0])
        notes.append(
            f"{label}: slices lack ImagePositionPatient/ImageOrientationPatient; they are ordered "
            f"by InstanceNumber with a slice spacing of {step:g} mm and no patient orientation"
        )
    values = values[order]
    extra["files"] = [os.path.relpath(series.files[i], folder) for i in order]
    extra["dicom"]["number_of_files"] = len(series.files)
    extra["spatial_shape"] = [int(s) for s in values.shape[:3]]
    meta = _meta_from_affine(affine, path=folder, ds=ds0, rgb=rgb, extra=extra)
    _emit(meta, notes)
    return np.ascontiguousarray(values), meta


def _read_folder(folder: str) -> tuple[np.ndarray, ImageMeta]:
    series_list, skipped, ignored = _scan_folder(folder)
    if not series_list:
        first = next(iter(skipped), None)
        detail = f" ({len(skipped)} unreadable, e.g. {first}: {skipped[first]})" if first else ""
        if ignored:
            detail += f" ({len(ignored)} other file(s), e.g. {os.path.relpath(ignored[0], folder)})"
        raise MedVitReadError(f"{folder}: the folder holds no DICOM image files{detail}")
    # most slices first; ties keep the (sorted) folder order
    ranked = sorted(series_list, key=lambda s: -s.frames)
    chosen, others = ranked[0], ranked[1:]
    array, meta = _read_series(chosen, folder)
    meta.source_path = os.path.abspath(folder)
    description = str(chosen.first.get("SeriesDescription", "") or "")
    meta.extra["series_description"] = description or Path(folder).name
    if others:
        meta.extra["other_series"] = [s.summary() for s in others]
        counts: dict[str, int] = {}
        for s in others:
            counts[s.label()] = counts.get(s.label(), 0) + 1
        listed = [f"{n} x {lab}" if n > 1 else lab for lab, n in counts.items()]
        if len(listed) > 6:
            listed = listed[:6] + [f"{len(listed) - 6} more"]
        names = ", ".join(listed)
        n_uids = len({s.key[0] for s in series_list})
        held = f"{n_uids} DICOM series"
        if n_uids != len(series_list):  # a series split by orientation or image size
            held = f"{len(series_list)} separate image stacks in {n_uids} DICOM series"
        meta.extra["other_series_message"] = (
            f"{Path(folder).name}: holds {held}; opened {chosen.label()} with {chosen.frames} "
            f"slice{'s' if chosen.frames != 1 else ''}. Not opened: {names}. "
            "Open a series' own folder to see it."
        )
    notes = []
    for files, what in ((list(skipped), "unreadable DICOM"), (ignored, "non-DICOM")):
        if files:
            names = [os.path.relpath(f, folder) for f in files]
            listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            why = f" ({names[0]}: {skipped[files[0]]})" if what == "unreadable DICOM" else ""
            notes.append(f"{folder}: skipped {len(files)} {what} file(s): {listed}{why}")
    if skipped:
        meta.extra["skipped_files"] = [os.path.relpath(f, folder) for f in skipped]
    if ignored:
        meta.extra["ignored_files"] = [os.path.relpath(f, folder) for f in ignored]
    _emit(meta, notes)
    return array, meta


def read_dicom(path: str | os.PathLike[str]) -> tuple[np.ndarray, ImageMeta]:
    """Read a DICOM file or a folder holding DICOM series.

    * one single-frame file -> 2D ``(rows, cols)`` (``(rows, cols, 3)`` for RGB) with
      ``PixelSpacing``, origin 0 and identity direction; its position stays in ``extra``;
    * a multi-frame file -> 3D ``(frame, row, col)``, placed by per-frame positions when the
      file has them, else stacked with ``SpacingBetweenSlices``/``SliceThickness``;
    * a folder (searched recursively, extension-less files recognised by the ``DICM``
      preamble) -> the series with the most slices, sorted along the slice normal; the other
      series are listed in ``extra["other_series"]`` and ``extra["other_series_message"]``;
    * a sagittal or coronal volume comes with its axes in display order
      (:mod:`napari_medvit.io.orientation`).

    Stored values are converted to modality values (RescaleSlope/Intercept): int16 when they
    are integral and fit, else float32. Raises :class:`MedVitReadError` naming the file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        array, meta = _read_folder(path)
    elif not os.path.isfile(path):
        raise MedVitReadError(f"{path}: no such DICOM file or folder")
    else:
        array, meta = _read_single_file(path)
    # sagittal/coronal acquisitions: spatial axes in display order, undone by the writers
    # (extra["files"] and extra["slice_positions"] keep describing the stored slice axis)
    return to_display_order(array, meta)


__all__ = ["DICOM_SUFFIXES", "folder_has_dicom", "has_dicm_preamble", "is_dicom_path", "read_dicom"]
