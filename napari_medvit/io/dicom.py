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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from ._dicom_folder import _scan_folder, _Series, folder_has_dicom
from ._dicom_folder import iter_folder_files as iter_folder_files  # importable from here, as before the split
from ._dicom_tags import (
    _DIRECTORY_SOP_CLASS,
    DICOM_SUFFIXES,
    _count,
    _dcmread,
    _floats,
    _functional,
    _is_rgb,
    _item,
    _modality_values,
    _number,
    _orientation,
    _pixel_spacing,
    _pixels,
    _slice_spacing,
    _spacing_notes,
    _tag_summary,
    _to_output_dtype,
    has_dicm_preamble,
    is_dicom_path,
)
from .errors import MedVitReadError
from .limits import check_allocation
from .meta import ImageMeta
from .orientation import to_display_order

_REVERSE3 = np.eye(3)[::-1]  # LPS <-> (S, P, L)


# -- geometry -------------------------------------------------------------------------------
@dataclass
class _StackGeometry:
    """Where a stack of slices lies: its affine, slice order, positions and spacing warnings."""

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
    """The meta of a (slice, row, col) volume placed by ``affine``."""
    return ImageMeta.from_affine(
        affine,
        axes=("z", "y", "x"),
        source_path=os.path.abspath(path),
        modality=str(ds.get("Modality")) if ds.get("Modality") else None,
        rgb=rgb,
        extra=extra,
    )


def _emit(meta: ImageMeta, notes: list[str]) -> None:
    """Record ``notes`` in ``meta.extra["warnings"]`` and issue each as a UserWarning."""
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
    """One DICOM file: a 2D image, or a multi-frame volume placed by its per-frame positions."""
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
def _read_series(series: _Series, folder: str) -> tuple[np.ndarray, ImageMeta]:
    """The slices of one series stacked into a volume, sorted along the slice normal (or by InstanceNumber)."""
    if len(series.files) == 1:
        return _read_single_file(series.files[0])
    datasets = [_dcmread(p) for p in series.files]  # pixel data stay undecoded until _pixels
    ds0 = datasets[0]
    _check_size(ds0, folder, frames=series.frames, what=f"the series {series.label()}")
    rgb = _is_rgb(ds0)
    slices = []
    for ds, path in zip(datasets, series.files, strict=True):
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
        numbers = [int(_number(ds, "InstanceNumber", p, float(i)) or i)
                   for i, (ds, p) in enumerate(zip(datasets, series.files, strict=True))]
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
    """The series with the most slices in ``folder``; the other series and skipped files are listed in the meta."""
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
            relative = [os.path.relpath(f, folder) for f in files]
            shown = ", ".join(relative[:5]) + (f" and {len(relative) - 5} more" if len(relative) > 5 else "")
            why = f" ({relative[0]}: {skipped[files[0]]})" if what == "unreadable DICOM" else ""
            notes.append(f"{folder}: skipped {len(files)} {what} file(s): {shown}{why}")
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
