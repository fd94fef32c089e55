"""Stored voxel order versus display order: every scan shown on its own geometry.

napari slices a layer along world axes and renders the two (or three) displayed ones. Its
data-to-world transform must therefore keep each world axis fed mainly by *one* array axis:
a transform that maps array axis 0 to world axis 2 (a sagittal or coronal acquisition stored
as it came from the scanner, e.g. NIfTI direction rows ``[[0,1,0],[0,0,-1],[1,0,0]]`` or DICOM
``ImageOrientationPatient [0,1,0,0,0,-1]``) leaves the displayed 2x2 block singular, and
vispy fails with ``LinAlgError: Singular matrix``.

The choice made here (deliberately, over passing the permutation as napari's ``affine``):
the readers **reorder the spatial array axes** so that array axis ``w`` is the one whose
direction is closest to world axis ``w`` (an assignment over ``|direction|``, so oblique scans
near any plane work too). Only the axis *order* changes; the signs (flips) and the residual
rotation of an oblique scan stay in the affine, which napari displays exactly. Every consumer
(the viewer, inference, training, the corrections) then sees one consistent ``(array, meta)``
pair whose ``meta.affine`` describes the reordered array.

The permutation is recorded in ``meta.extra["reorient"]`` and the writers undo it
(:func:`to_stored`, :func:`stored_affine`), so a label map drawn on the reordered array is
written back in the file's own voxel order with the file's own header: the round trip is
exact (``array_equal`` voxels and affines). Reading never changes a file that is already in
display order (every axial scan): there is then no ``reorient`` entry at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from .meta import ImageMeta

REORIENT_KEY = "reorient"


def display_permutation(direction: np.ndarray) -> tuple[int, ...]:
    """For each world axis ``w``, the array axis whose direction is closest to it.

    ``direction`` has one column per array axis (unit vectors in world coordinates). Ties
    (an exactly 45-degree oblique) are broken towards the stored order.
    """
    cosines = np.abs(np.asarray(direction, dtype=float))
    n = cosines.shape[0]
    # tiny preference for the identity keeps ties deterministic and changes nothing else
    cost = -(cosines + 1e-9 * np.eye(n))
    rows, cols = linear_sum_assignment(cost)  # rows: world axes, cols: array axes
    perm = np.empty(n, dtype=int)
    perm[rows] = cols
    return tuple(int(p) for p in perm)


def _full_axes(perm: tuple[int, ...], array_ndim: int, meta: ImageMeta, rgb: bool | None = None) -> tuple[int, ...]:
    """The permutation of all array axes (leading time axes and a trailing RGB axis stay).

    ``rgb``: whether the array has the trailing colour axis (default ``meta.rgb``; a label map of
    an RGB image has none)."""
    n_channel = 1 if (meta.rgb if rgb is None else rgb) else 0
    lead = array_ndim - meta.ndim - n_channel
    if lead < 0:
        raise ValueError(f"array of {array_ndim} dims cannot carry a {meta.ndim}D geometry")
    axes = list(range(lead)) + [lead + p for p in perm] + list(range(lead + meta.ndim, array_ndim))
    return tuple(axes)


def to_display_order(array: np.ndarray, meta: ImageMeta) -> tuple[np.ndarray, ImageMeta]:
    """Reorder the spatial axes of a reader's ``(array, meta)`` into display order.

    Returns the inputs unchanged when they already are (no copy, no ``reorient`` entry).
    ``meta.extra["spatial_shape"]``, if present, is updated to the new shape.
    """
    if meta.ndim < 2 or REORIENT_KEY in meta.extra:
        return array, meta
    perm = display_permutation(np.asarray(meta.direction))
    if perm == tuple(range(meta.ndim)):
        return array, meta
    axes = _full_axes(perm, array.ndim, meta)
    out = np.ascontiguousarray(array.transpose(axes))
    affine = meta.affine
    new_affine = affine.copy()
    new_affine[:-1, :-1] = affine[:-1, :-1][:, list(perm)]
    extra = dict(meta.extra)
    extra[REORIENT_KEY] = {
        "permutation": list(perm),  # display axis w = stored spatial axis permutation[w]
        "stored_spatial_shape": [int(s) for s in meta.spatial_shape(array.shape)],
    }
    if "spatial_shape" in extra:
        extra["spatial_shape"] = [int(s) for s in meta.spatial_shape(out.shape)]
    new = ImageMeta.from_affine(
        new_affine, axes=meta.axes, source_path=meta.source_path, modality=meta.modality, rgb=meta.rgb, extra=extra
    )
    return out, new


def stored_permutation(meta: ImageMeta) -> tuple[int, ...] | None:
    """The recorded display permutation, validated, or None when the array is in stored order."""
    entry: Any = meta.extra.get(REORIENT_KEY)
    if entry is None:
        return None
    try:
        perm = tuple(int(p) for p in entry["permutation"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"meta.extra[{REORIENT_KEY!r}] is malformed: {entry!r}") from None
    if sorted(perm) != list(range(meta.ndim)):
        raise ValueError(f"meta.extra[{REORIENT_KEY!r}] permutation {perm} does not fit {meta.ndim} spatial axes")
    return perm


def to_stored(array: np.ndarray, meta: ImageMeta, *, rgb: bool | None = None) -> np.ndarray:
    """Undo :func:`to_display_order` on an array on the display grid (labels, images).

    The array holds the spatial axes last (optionally after leading axes), then a trailing RGB
    axis when ``rgb`` (default ``meta.rgb``; pass False for a label map of an RGB image).
    """
    perm = stored_permutation(meta)
    if perm is None:
        return array
    inverse = tuple(int(i) for i in np.argsort(perm))
    return np.ascontiguousarray(array.transpose(_full_axes(inverse, array.ndim, meta, rgb)))


def to_display(array: np.ndarray, meta: ImageMeta, *, rgb: bool | None = None) -> np.ndarray:
    """The inverse of :func:`to_stored`: an array in the source's stored voxel order (e.g. a model's
    output computed on the acquired slices) onto the display grid of ``meta``."""
    perm = stored_permutation(meta)
    if perm is None:
        return array
    return np.ascontiguousarray(array.transpose(_full_axes(perm, array.ndim, meta, rgb)))


def stored_affine(meta: ImageMeta) -> np.ndarray:
    """``meta.affine`` for the array in its stored voxel order (what the file's header says)."""
    affine = meta.affine
    perm = stored_permutation(meta)
    if perm is None:
        return affine
    out = affine.copy()
    out[:-1, :-1] = affine[:-1, :-1][:, list(np.argsort(perm))]
    return out


__all__ = [
    "REORIENT_KEY",
    "display_permutation",
    "stored_affine",
    "stored_permutation",
    "to_display",
    "to_display_order",
    "to_stored",
]
