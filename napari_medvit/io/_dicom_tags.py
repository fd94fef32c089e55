"""DICOM file recognition and tag decoding for :mod:`napari_medvit.io.dicom`: reading headers, numbers,
orientation, pixel spacing, modality values and the non-identifying tags kept in the meta.

Every problem with a tag is a :class:`~napari_medvit.io.errors.MedVitReadError` naming the file and the tag.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, overload

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from .errors import MedVitReadError

DICOM_SUFFIXES = (".dcm", ".dicom")
_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # DICOMDIR (Media Storage Directory Storage)


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


def _floats(value: Any) -> list[float] | None:
    """A multi-valued tag as finite floats, or None."""
    if value is None:
        return None
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if all(np.isfinite(out)) else None


def _first_float(*values: Any) -> float | None:
    """The first of ``values`` that is a finite positive number, or None."""
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


@overload
def _number(ds: Dataset, keyword: str, path: str, default: float) -> float: ...
@overload
def _number(ds: Dataset, keyword: str, path: str, default: None = None) -> float | None: ...
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
    if number != int(number) or number < 0:
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
    """SpacingBetweenSlices, else SliceThickness (plain or in the pixel measures), or None."""
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
    """Whether the pixels have several samples (RGB)."""
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
    """pydicom's dataset of ``path`` (forced for preamble-less files that look raw); MedVitReadError otherwise."""
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
    """The decoded stored pixel values; MedVitReadError naming the file when absent or undecodable."""
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
    numeric = ("SliceThickness", "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept", "WindowCenter",
               "WindowWidth")
    for kw in numeric:
        value = ds.get(kw)
        if value is None or value == "":
            continue
        numbers = _floats(value) if isinstance(value, Sequence) and not isinstance(value, str) else _floats([value])
        if numbers:
            out[kw] = numbers if len(numbers) > 1 else numbers[0]
    return out
