"""Finding DICOM files in folders and grouping them into series of stackable slices, for
:mod:`napari_medvit.io.dicom` (headers only: no pixel data is read here)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from ._dicom_tags import _DIRECTORY_SOP_CLASS, _count, _dcmread, _looks_like_raw_dicom, _orientation, is_dicom_path
from .errors import MedVitReadError

_MAX_FOLDER_FILES = 20000


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


@dataclass
class _Series:
    """The files (and headers) of one stack of slices found in a folder."""

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
