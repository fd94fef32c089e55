"""Medical image I/O without any GUI dependency: NIfTI, DICOM and ordinary frames.

Every reader returns ``(array, ImageMeta)`` following the conventions of
:mod:`napari_medvit.io.meta`.
"""

from __future__ import annotations

import os

import numpy as np

from ._atomic import atomic_write, finished_files
from .dicom import folder_has_dicom, has_dicm_preamble, is_dicom_path, read_dicom
from .errors import MedVitReadError
from .frames import is_frame_path, read_frame, write_png_labels
from .limits import ImageTooLargeError, memory_budget, set_memory_budget
from .meta import META_KEY, ImageMeta
from .nifti import is_nifti_path, read_nifti, write_nifti_labels


def is_supported(path: str | os.PathLike[str]) -> bool:
    """Cheap check whether :func:`read_image` can try ``path``. Never raises.

    Files are recognised by extension (NIfTI, DICOM, frames) or the DICOM ``DICM`` preamble;
    a folder only when one of its first files is DICOM.
    """
    try:
        path = os.fspath(path)
        if os.path.isdir(path):
            return folder_has_dicom(path)
        if not os.path.isfile(path):
            return False
        return is_nifti_path(path) or is_frame_path(path) or is_dicom_path(path)
    except Exception:  # e.g. odd path types or permission problems
        return False


def read_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, ImageMeta]:
    """Read a NIfTI file, a DICOM file or folder, or an image frame.

    Raises :class:`MedVitReadError` (naming ``path``) for anything unsupported or unreadable,
    and its subclass :class:`ImageTooLargeError` when the file declares more voxels than the
    memory budget allows (:mod:`napari_medvit.io.limits`); no other exception escapes.
    """
    try:
        path = os.fspath(path)
    except TypeError:
        raise MedVitReadError(f"{path!r}: not a file path") from None
    try:
        if os.path.isdir(path):
            return read_dicom(path)
        if not os.path.isfile(path):
            raise MedVitReadError(f"{path}: no such file or folder")
        if is_nifti_path(path):
            return read_nifti(path)
        if is_frame_path(path):
            return read_frame(path)
        if is_dicom_path(path):
            return read_dicom(path)
    except MedVitReadError:
        raise
    except MemoryError:
        raise MedVitReadError(f"{path}: not enough memory to read the image (see MEDVIT_MEMORY_BUDGET)") from None
    except OSError as exc:  # permissions, a file vanishing while read, ...
        raise MedVitReadError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:  # a malformed file the readers did not foresee: still name the file
        raise MedVitReadError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc
    raise MedVitReadError(
        f"{path}: unsupported file type; expected NIfTI (.nii, .nii.gz), DICOM (.dcm or a file "
        "with the DICM preamble, or a folder of them) or an image (.png, .jpg, .tif, .bmp)"
    )


__all__ = [
    "META_KEY",
    "ImageMeta",
    "ImageTooLargeError",
    "MedVitReadError",
    "atomic_write",
    "finished_files",
    "has_dicm_preamble",
    "is_supported",
    "memory_budget",
    "read_dicom",
    "read_frame",
    "read_image",
    "read_nifti",
    "set_memory_budget",
    "write_nifti_labels",
    "write_png_labels",
]
