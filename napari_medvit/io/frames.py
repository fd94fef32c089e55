"""Ordinary image frames (endoscopy, dermoscopy, ...): PNG, JPEG, TIFF and BMP."""

from __future__ import annotations

import os

import numpy as np
from skimage.io import imread, imsave

from ._atomic import atomic_write
from .errors import MedVitReadError
from .limits import ImageTooLargeError, check_allocation
from .meta import ImageMeta

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def is_frame_path(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).lower().endswith(FRAME_SUFFIXES)


_TIFF_SUFFIXES = (".tif", ".tiff")
_BYTES_PER_BAND = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}


def _max_frame_pixels() -> int | None:
    """Pillow's decompression-bomb limit (twice ``MAX_IMAGE_PIXELS``, where Pillow raises), applied
    to every frame format, TIFF included (tifffile has no such limit)."""
    from PIL import Image

    return None if Image.MAX_IMAGE_PIXELS is None else 2 * int(Image.MAX_IMAGE_PIXELS)


def _check_pixels(path: str, height: int, width: int, what: str) -> None:
    limit = _max_frame_pixels()
    if limit is not None and height * width > limit:
        raise ImageTooLargeError(
            f"{path}: {what} declares {height} x {width} pixels per frame, more than the {limit:,}-pixel limit "
            "for image frames (a decompression bomb?); frames that large are not endoscopy or radiology images")


def _probe(path: str) -> bool:
    """Check the declared size against the frame pixel limit and the memory budget from the
    header alone (nothing is decoded); True if the frame is CMYK and must be converted to RGB."""
    if path.lower().endswith(_TIFF_SUFFIXES):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise MedVitReadError(f"{path}: the TIFF file holds no image")
            page = tif.pages[0]
            _check_pixels(path, int(page.imagelength), int(page.imagewidth), "the TIFF header")
            series = tif.series[0]
            check_allocation(path, tuple(series.shape), np.dtype(series.dtype).itemsize, "the TIFF header")
            return int(page.photometric) == int(tifffile.PHOTOMETRIC.SEPARATED)
    from PIL import Image

    with Image.open(path) as im:  # reads the header; raises DecompressionBombError for bombs
        width, height = im.size
        _check_pixels(path, height, width, f"the {im.format or 'image'} header")
        frames = int(getattr(im, "n_frames", 1) or 1)
        bands = len(im.getbands())
        check_allocation(path, (frames, height, width, bands), _BYTES_PER_BAND.get(im.mode, 1),
                         f"the {im.format or 'image'} header")
        return im.mode == "CMYK"


def _cmyk_to_rgb(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode != "CMYK":
            raise MedVitReadError(f"{path}: a CMYK image that Pillow cannot convert to RGB (mode {im.mode})")
        return np.asarray(im.convert("RGB"))


def read_frame(path: str | os.PathLike[str]) -> tuple[np.ndarray, ImageMeta]:
    """Read an image frame with unit spacing and identity geometry.

    RGB stays RGB (channel last, ``meta.rgb``), RGBA loses its alpha channel, grey+alpha
    becomes grey, CMYK (print JPEGs and TIFFs) is converted to RGB. A multi-page TIFF becomes a
    ``(z, y, x)`` stack. The declared size is checked against the memory budget
    (:mod:`napari_medvit.io.limits`) before decoding: a deflate TIFF or PNG that would expand to
    gigabytes is refused with :class:`~napari_medvit.io.limits.ImageTooLargeError`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MedVitReadError(f"{path}: no such image file")
    try:
        cmyk = _probe(path)
        image = _cmyk_to_rgb(path) if cmyk else np.asarray(imread(path))
    except MedVitReadError:
        raise
    except Exception as exc:  # imageio/Pillow/tifffile raise many types for corrupt files
        from PIL import Image

        if isinstance(exc, Image.DecompressionBombError):
            raise ImageTooLargeError(f"{path}: refused as a decompression bomb ({exc})") from None
        raise MedVitReadError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc
    if image.dtype.kind not in "biuf":
        raise MedVitReadError(f"{path}: unsupported pixel type {image.dtype}")
    if image.dtype == bool:  # 1-bit PNG / bilevel TIFF: 0 and 1, as every other reader gives them
        image = image.astype(np.uint8)

    rgb = False
    if image.ndim >= 3 and image.shape[-1] in (3, 4):
        image, rgb = image[..., :3], True
    elif image.ndim >= 3 and image.shape[-1] == 2:  # grey + alpha
        image = image[..., 0]
    spatial = image.ndim - (1 if rgb else 0)
    if spatial not in (2, 3) or 0 in image.shape:
        raise MedVitReadError(f"{path}: unsupported image shape {image.shape}")
    meta = ImageMeta.identity(spatial, rgb=rgb, source_path=os.path.abspath(path))
    meta.extra["spatial_shape"] = [int(s) for s in image.shape[:spatial]]
    if cmyk:
        meta.extra["converted_from"] = "CMYK"
    return np.ascontiguousarray(image), meta


def write_png_labels(path: str | os.PathLike[str], labels: np.ndarray) -> str:
    """Write a 2D label image as PNG with its exact values (uint8 if they fit, else uint16).

    Raises ValueError for non-2D, negative, non-integer or too large (> 65535) labels.
    The file is replaced atomically. Returns the written path.
    """
    path = os.fspath(path)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{path}: PNG labels must be 2D (y, x), got shape {labels.shape}")
    if labels.dtype != bool and labels.dtype.kind not in "iuf":
        raise ValueError(f"{path}: labels must be numeric, got dtype {labels.dtype}")
    if labels.size and labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        raise ValueError(f"{path}: labels of dtype {labels.dtype} contain non-integer values")
    lo = labels.min() if labels.size else 0
    hi = labels.max() if labels.size else 0
    if lo < 0:
        raise ValueError(f"{path}: PNG labels cannot be negative, found {lo}")
    if hi > np.iinfo(np.uint16).max:
        raise ValueError(f"{path}: label value {hi} exceeds the PNG maximum 65535")
    out = labels.astype(np.uint8 if hi < 256 else np.uint16)
    atomic_write(path, lambda tmp: imsave(tmp, out, check_contrast=False))
    return path


__all__ = ["FRAME_SUFFIXES", "is_frame_path", "read_frame", "write_png_labels"]
