"""Spatial transforms on numpy arrays (no torch)."""

from __future__ import annotations

import numpy as np


def pad_to_multiple(image: np.ndarray, multiple: int,
                    axes: tuple[int, ...]) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """Zero-pad ``axes`` at their end up to a multiple of ``multiple``; returns (padded, pad widths)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    pads = [(0, 0)] * image.ndim
    for ax in axes:
        n = image.shape[ax]
        pads[ax] = (0, (-n) % multiple)
    return np.pad(image, pads, mode="constant"), tuple(pads)


def crop_padding(array: np.ndarray, pads: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Undo :func:`pad_to_multiple` on an array of the padded shape."""
    return array[tuple(slice(lo, array.shape[i] - hi) for i, (lo, hi) in enumerate(pads))]


def resize_map(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resample a low-resolution map (e.g. a stride-32 feature grid) onto an image grid, linearly,
    with cell centres on pixel centres (no corner alignment); float32."""
    from skimage.transform import resize

    return resize(np.asarray(values, dtype=np.float32), shape, order=1, mode="edge", anti_aliasing=False,
                  preserve_range=True).astype(np.float32)


def ras_affine(affine: np.ndarray) -> np.ndarray:
    """Index -> RAS affine of a (z, y, x) array from our index -> (S, P, L) world affine."""
    rev = np.eye(4)[[2, 1, 0, 3]]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ rev @ np.asarray(affine, dtype=float)


def to_model_grid(volume: np.ndarray, affine: np.ndarray, axcodes: str | None, pixdim: tuple[float, ...] | None,
                  order: int = 1) -> tuple[np.ndarray, dict]:
    """Reorient a (..., z, y, x) volume to ``axcodes`` (flips and axis permutations only, as MONAI's
    Orientation does) and resample it linearly to ``pixdim`` (mm, in the new axis order).

    Returns the new array and what :func:`from_model_grid` needs to map a result back exactly
    onto the original grid.
    """
    import nibabel.orientations as nio
    from scipy.ndimage import zoom

    lead = volume.shape[:-3]
    spatial = volume.shape[-3:]
    aff = ras_affine(affine)
    start = nio.io_orientation(aff)
    transform = nio.ornt_transform(start, nio.axcodes2ornt(axcodes)) if axcodes else np.array([[0, 1], [1, 1], [2, 1]])
    flat = volume.reshape((-1, *spatial))
    oriented = np.stack([nio.apply_orientation(v, transform) for v in flat])
    new_aff = aff @ nio.inv_ornt_aff(transform, spatial)
    spacing = np.linalg.norm(new_aff[:3, :3], axis=0)
    shape = oriented.shape[1:]
    if pixdim:
        out_shape = tuple(max(int(round(n * s / t)), 1) for n, s, t in zip(shape, spacing, pixdim, strict=True))
        factors = [o / n for o, n in zip(out_shape, shape, strict=True)]
        oriented = np.stack([zoom(v, factors, order=order, mode="nearest", grid_mode=True) for v in oriented])
    undo = {"transform": transform, "oriented_shape": shape, "spatial": spatial}
    return oriented.reshape((*lead, *oriented.shape[1:])), undo


def from_model_grid(result: np.ndarray, undo: dict, order: int = 0) -> np.ndarray:
    """Map a (z', y', x') result on the model grid back onto the original (z, y, x) grid."""
    import nibabel.orientations as nio
    from scipy.ndimage import zoom

    shape = tuple(undo["oriented_shape"])
    if result.shape != shape:
        factors = [o / n for o, n in zip(shape, result.shape, strict=True)]
        result = zoom(result, factors, order=order, mode="nearest", grid_mode=True)
        if result.shape != shape:  # rounding of the zoom output: crop or pad by edge values
            result = np.pad(result, [(0, max(s - r, 0)) for s, r in zip(shape, result.shape, strict=True)], mode="edge")
            result = result[tuple(slice(0, s) for s in shape)]
    inverse = _invert_ornt(undo["transform"])
    back = nio.apply_orientation(result, inverse)
    if back.shape != tuple(undo["spatial"]):
        raise ValueError(f"internal: mapped back to {back.shape}, expected {tuple(undo['spatial'])}")
    return back


def _invert_ornt(transform: np.ndarray) -> np.ndarray:
    """The orientation transform that undoes ``transform`` (nibabel's [axis, flip] rows)."""
    inverse = np.zeros_like(transform)
    for old_axis, (new_axis, flip) in enumerate(transform):
        inverse[int(new_axis)] = [old_axis, flip]
    return inverse
