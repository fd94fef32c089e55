"""The memory budget: how large an image the readers agree to load.

A 125 KB compressed file can declare 100 GB of voxels (a NIfTI header, a deflate TIFF, a DICOM
with a huge ``NumberOfFrames``). The readers compute the size an image would need *from its
header*, before any voxel is decoded, and refuse it with :class:`ImageTooLargeError` naming the
file, the declared shape and both sizes, instead of failing later with an empty ``MemoryError``
or swapping the machine to a halt.

The budget is a setting, read at every check:

* ``MEDVIT_MEMORY_BUDGET``: an absolute size, ``"8G"``, ``"512M"``, ``"2.5GB"`` or bytes;
* otherwise ``MEDVIT_MEMORY_FRACTION`` (default ``0.5``) of the memory available now.

:func:`set_memory_budget` overrides both in-process (``None`` restores the environment's).
"""

from __future__ import annotations

import os
import re

from .errors import MedVitReadError

DEFAULT_FRACTION = 0.5
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_override: int | None = None


class ImageTooLargeError(MedVitReadError):
    """The image a file declares would need more memory than the budget allows."""


def parse_size(text: str) -> int:
    """``"8G"``, ``"512 MB"``, ``"1.5g"`` or ``"1000000"`` -> bytes. Raises ValueError naming the text."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match:
        raise ValueError(f"memory size {text!r}: expected a number with an optional unit K, M, G or T (e.g. 8G)")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if value <= 0:
        raise ValueError(f"memory size {text!r} must be positive")
    return int(value)


def available_memory() -> int:
    """Bytes of memory available now (psutil; /proc/meminfo or sysconf as fallbacks)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported platform
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 8 << 30


def set_memory_budget(nbytes: int | str | None) -> None:
    """Override the budget in this process (``None``: back to the environment's setting)."""
    global _override
    _override = None if nbytes is None else (parse_size(nbytes) if isinstance(nbytes, str) else int(nbytes))


def memory_budget() -> int:
    """The current budget in bytes (see the module docstring)."""
    if _override is not None:
        return _override
    absolute = os.environ.get("MEDVIT_MEMORY_BUDGET")
    if absolute:
        return parse_size(absolute)
    fraction_text = os.environ.get("MEDVIT_MEMORY_FRACTION")
    try:
        fraction = float(fraction_text) if fraction_text else DEFAULT_FRACTION
    except ValueError:
        raise ValueError(f"MEDVIT_MEMORY_FRACTION={fraction_text!r}: expected a number between 0 and 1") from None
    if not 0 < fraction <= 1:
        raise ValueError(f"MEDVIT_MEMORY_FRACTION={fraction_text!r}: expected a number between 0 and 1")
    return int(available_memory() * fraction)


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def check_allocation(path: str, shape: tuple[int, ...], itemsize: int, what: str = "image") -> int:
    """Raise :class:`ImageTooLargeError` if ``shape`` x ``itemsize`` bytes exceed the budget.

    Returns the byte count. ``what`` describes the shape's source (e.g. "the NIfTI header").
    """
    n = itemsize
    for s in shape:
        n *= int(s)
    budget = memory_budget()
    if n > budget:
        dims = " x ".join(str(int(s)) for s in shape)
        raise ImageTooLargeError(
            f"{path}: {what} declares {dims} voxels, which would need {format_bytes(n)}; the memory budget is "
            f"{format_bytes(budget)} (set MEDVIT_MEMORY_BUDGET, e.g. 32G, to allow more)"
        )
    return n


__all__ = [
    "DEFAULT_FRACTION",
    "ImageTooLargeError",
    "available_memory",
    "check_allocation",
    "format_bytes",
    "memory_budget",
    "parse_size",
    "set_memory_budget",
]
