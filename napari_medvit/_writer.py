"""napari writer contributions (npe2 single-layer writers) for label layers."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from napari.utils.transforms import Affine

from napari_medvit.io import META_KEY, ImageMeta, write_nifti_labels, write_png_labels


def _labels_array(data: Any) -> np.ndarray:
    """The full-resolution array of a (possibly multiscale) labels layer."""
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValueError("the labels layer holds no data")
        data = data[0]
    return np.asarray(data)


def geometry_from_layer(attributes: dict[str, Any], ndim: int) -> ImageMeta:
    """An :class:`ImageMeta` for a layer of ``ndim`` dims from napari's layer attributes.

    Prefers the ``medvit_meta`` the reader put into ``metadata``; otherwise composes the
    layer's ``affine`` with its ``scale``/``translate``/``rotate``/``shear`` (world axes are
    taken to be ours, ``(S, P, L)``). For 4D layers the last three axes are the spatial ones.
    """
    stored = (attributes.get("metadata") or {}).get(META_KEY)
    if stored is not None:
        return ImageMeta.from_dict(stored)

    def get(key: str) -> Any:
        value = attributes.get(key)
        return None if value is None else np.asarray(value, dtype=float)

    data2physical = Affine(
        scale=get("scale") if get("scale") is not None else np.ones(ndim),
        translate=get("translate") if get("translate") is not None else np.zeros(ndim),
        rotate=get("rotate") if get("rotate") is not None else np.eye(ndim),
        shear=get("shear") if get("shear") is not None else np.zeros(ndim * (ndim - 1) // 2),
        ndim=ndim,
    )
    physical2world = attributes.get("affine")
    if isinstance(physical2world, Affine):
        physical2world = physical2world.affine_matrix
    matrix = data2physical.affine_matrix
    if physical2world is not None:
        matrix = np.asarray(physical2world, dtype=float) @ matrix
    if matrix.shape != (ndim + 1, ndim + 1):
        raise ValueError(f"layer transform of shape {matrix.shape} does not fit {ndim}D labels")
    spatial = min(ndim, 3)
    matrix = matrix[ndim - spatial :, ndim - spatial :]
    axes = ("z", "y", "x")[-spatial:]
    return ImageMeta.from_affine(matrix, axes=axes)


def _with_suffix(path: str, suffixes: tuple[str, ...], default: str) -> str:
    return path if path.lower().endswith(suffixes) else path + default


def _refuse_source(path: str, attributes: dict[str, Any]) -> None:
    """A mask is never written over the image it was drawn on (or a file that links to it)."""
    stored = (attributes.get("metadata") or {}).get(META_KEY) or {}
    source = stored.get("source_path")
    if not source or not os.path.exists(path):
        return
    try:
        inside = os.path.isdir(source) and os.path.realpath(path).startswith(os.path.realpath(source) + os.sep)
        same = os.path.isfile(source) and os.path.samefile(path, source)
    except OSError:
        return
    if same or inside:
        raise ValueError(f"{path}: this is the source image the labels were drawn on ({source}); "
                         "save the labels under another name")


def write_labels_nifti(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a labels layer as NIfTI with its source image geometry; returns ``[path]``.

    Refuses (ValueError) to replace the layer's source image."""
    path = _with_suffix(os.fspath(path), (".nii", ".nii.gz"), ".nii.gz")
    _refuse_source(path, meta)
    labels = _labels_array(data)
    write_nifti_labels(path, labels, geometry_from_layer(meta, labels.ndim))
    return [path]


def write_labels_png(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a 2D labels layer as a PNG mask with exact label values; returns ``[path]``."""
    path = _with_suffix(os.fspath(path), (".png",), ".png")
    _refuse_source(path, meta)
    write_png_labels(path, _labels_array(data))
    return [path]


__all__ = ["geometry_from_layer", "write_labels_nifti", "write_labels_png"]
