"""napari reader contribution (npe2 ``get_reader``) for NIfTI, DICOM and image frames."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_info
from napari.utils.transforms import Affine

from napari_medvit.io import META_KEY, ImageMeta, MedVitReadError, is_supported, read_image

PathLike = str | os.PathLike[str]
LayerDataTuple = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[PathLike | Sequence[PathLike]], list[LayerDataTuple]]

_PERCENTILES = (0.5, 99.5)
_MAX_SAMPLES = 2_000_000


def _as_paths(path: Any) -> list[str] | None:
    """The candidate paths napari hands us, or None if ``path`` is no path at all."""
    if isinstance(path, (str, os.PathLike)):
        return [os.fspath(path)]
    if isinstance(path, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in path):
        return [os.fspath(p) for p in path]
    return None


def get_reader(path: PathLike | Sequence[PathLike]) -> ReaderFunction | None:
    """Return :func:`read_layers` if ``path`` (or one path of a list) is ours, else None.

    Never raises: napari calls this for every path to find a reader.
    """
    try:
        paths = _as_paths(path)
        if not paths or not any(is_supported(p) for p in paths):
            return None
    except Exception:
        return None
    return read_layers


def layer_name(path: str, meta: ImageMeta) -> str:
    """File stem (``brain`` for ``brain.nii.gz``), or the series description for a DICOM folder."""
    if os.path.isdir(path):
        return str(meta.extra.get("series_description") or Path(os.path.abspath(path)).name)
    name = Path(path).name
    lower = name.lower()
    for suffix in (".nii.gz", ".nii"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _decompose(linear: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``linear = rotate @ shear @ diag(scale)`` (napari's composition order) with ``rotate`` a
    proper rotation and a reflection, if any, carried by a negative scale of the last axis.

    napari's own decomposition leaves a reflection in ``rotate`` *and* reports a negative scale,
    which composes back to the unflipped matrix; a flipped scan would be shown mirrored.
    """
    n = linear.shape[0]
    q, t = np.linalg.qr(linear)
    signs = np.where(np.diag(t) < 0, -1.0, 1.0)
    q, t = q * signs, signs[:, None] * t  # diag(t) > 0
    if np.linalg.det(q) < 0:
        flip = np.ones(n)
        flip[-1] = -1.0
        q, t = q * flip, flip[:, None] * t
    scale = np.diag(t).copy()
    shear = t / scale  # unit upper triangular: t = shear @ diag(scale)
    return q, scale, shear[np.triu(np.ones((n, n), dtype=bool), 1)]


def transform_kwargs(meta: ImageMeta, layer_ndim: int) -> dict[str, Any]:
    """``scale``/``translate``/``rotate``/``shear`` whose composition equals ``meta.affine``.

    Leading non-spatial axes (time) get the identity. Raises ValueError if the geometry
    cannot be expressed (a singular or non-finite affine), so that napari never receives a
    transform it cannot invert.
    """
    n_extra = layer_ndim - meta.ndim
    if n_extra < 0:
        raise ValueError(f"a {layer_ndim}D layer cannot carry a {meta.ndim}D geometry (axes {meta.axes})")
    matrix = np.eye(layer_ndim + 1)
    matrix[n_extra:, n_extra:] = meta.affine
    linear = matrix[:-1, :-1]
    finite = bool(np.all(np.isfinite(matrix)))
    if not finite or abs(np.linalg.det(linear)) < 1e-12 * max(1.0, np.abs(linear).max()) ** layer_ndim:
        raise ValueError(f"the image geometry is singular or not finite (affine {meta.affine.tolist()})")
    rotate, scale, shear = _decompose(linear)
    composed = Affine(scale=scale, rotate=rotate, shear=shear, ndim=layer_ndim).linear_matrix
    if not np.allclose(composed, linear, rtol=1e-6, atol=1e-9 * np.abs(linear).max()):
        raise ValueError(f"cannot express the image geometry as a napari transform (affine {meta.affine.tolist()})")
    return {
        "scale": scale,
        "translate": np.asarray(matrix[:-1, -1], dtype=float),
        "rotate": rotate,
        "shear": shear,
    }


def contrast_limits(array: np.ndarray) -> tuple[float, float]:
    """Robust display range: the 0.5 and 99.5 percentiles of the finite values."""
    flat = array.reshape(-1)
    if flat.dtype == bool:
        flat = flat.view(np.uint8)
    if flat.size > _MAX_SAMPLES:
        flat = flat[:: flat.size // _MAX_SAMPLES + 1]
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(flat, _PERCENTILES))
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
    if not hi > lo:  # a constant image; a step that is not lost to rounding, even near float max
        step = max(1.0, abs(lo) * 1e-6)
        lo, hi = (lo, lo + step) if np.isfinite(lo + step) else (lo - step, lo)
    return lo, hi


def _check_layer_data(path: str, array: Any, meta: ImageMeta) -> None:
    """What napari can display, checked before a layer exists (else the viewer is left with a
    layer it cannot draw): a numeric array of 2 to 5 dims without empty axes whose shape the
    geometry describes; RGB as a trailing axis of 3 values."""
    if not isinstance(array, np.ndarray):
        raise MedVitReadError(f"{path}: the reader returned {type(array).__name__}, not an array")
    if array.dtype.kind not in "biuf":
        raise MedVitReadError(f"{path}: voxels of type {array.dtype} cannot be displayed")
    if array.size == 0 or 0 in array.shape:
        raise MedVitReadError(f"{path}: the image is empty (shape {array.shape})")
    if meta.rgb and (array.ndim < 3 or array.shape[-1] not in (3, 4)):
        raise MedVitReadError(f"{path}: an RGB image must end with 3 colour values per pixel, got shape {array.shape}")
    spatial = array.ndim - (1 if meta.rgb else 0)
    if not meta.ndim <= spatial <= 5 or meta.ndim not in (2, 3):
        raise MedVitReadError(f"{path}: an array of shape {array.shape} does not fit a {meta.ndim}D geometry")
    recorded = meta.extra.get("spatial_shape")
    if recorded is not None and tuple(int(s) for s in recorded) != tuple(meta.spatial_shape(array.shape)):
        raise MedVitReadError(f"{path}: the array shape {array.shape} differs from the recorded image shape {recorded}")


def layer_data_tuple(path: str, array: np.ndarray, meta: ImageMeta) -> LayerDataTuple:
    """napari layer data for a reader result, validated first (:class:`MedVitReadError` naming
    ``path`` for anything napari could not display)."""
    _check_layer_data(path, array, meta)
    layer_ndim = array.ndim - (1 if meta.rgb else 0)
    try:
        transform = transform_kwargs(meta, layer_ndim)
    except ValueError as exc:
        raise MedVitReadError(f"{path}: {exc}") from None
    kwargs: dict[str, Any] = {
        "name": layer_name(path, meta),
        "metadata": {META_KEY: meta.to_dict()},
        "rgb": meta.rgb,
        **transform,
    }
    if not meta.rgb:
        kwargs["colormap"] = "gray_r" if meta.extra.get("photometric") == "MONOCHROME1" else "gray"
        kwargs["contrast_limits"] = contrast_limits(array)
    return (array, kwargs, "image")


def read_layers(path: PathLike | Sequence[PathLike]) -> list[LayerDataTuple]:
    """Read every supported path into an image layer tuple; errors name the file."""
    paths = _as_paths(path)
    if paths is None:
        raise MedVitReadError(f"{path!r}: not a path or a list of paths")
    if len(paths) > 1:
        paths = [p for p in paths if is_supported(p)]
    layers: list[LayerDataTuple] = []
    for p in paths:
        try:
            array, meta = read_image(p)
            layer = layer_data_tuple(p, array, meta)
        except MedVitReadError:
            raise
        except MemoryError:
            raise MedVitReadError(f"{p}: not enough memory to read the image (see MEDVIT_MEMORY_BUDGET)") from None
        except Exception as exc:  # a reader bug or an exotic file: still name the file
            raise MedVitReadError(f"{p}: cannot be read ({type(exc).__name__}: {exc})") from exc
        message = meta.extra.get("other_series_message")
        if message:
            show_info(str(message))
        layers.append(layer)
    return layers


__all__ = ["contrast_limits", "get_reader", "layer_data_tuple", "layer_name", "read_layers", "transform_kwargs"]
