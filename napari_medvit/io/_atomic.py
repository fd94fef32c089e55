"""Atomic file replacement: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst"}


def _full_suffix(name: str) -> str:
    """The suffix that format detection relies on: ``.nii.gz`` rather than just ``.gz``."""
    suffixes = Path(name).suffixes
    if not suffixes:
        return ""
    if suffixes[-1].lower() in _COMPRESSION_SUFFIXES and len(suffixes) >= 2:
        return suffixes[-2] + suffixes[-1]
    return suffixes[-1]


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike[str], write_fn: Callable[[str], object]) -> str:
    """Write ``path`` through ``write_fn(tmp_path)`` and swap it in atomically.

    ``write_fn`` receives the path of a temporary file in the same directory whose name
    ends with the same (compound) suffix as ``path``, so that writers choosing their format
    from the extension behave as for ``path``. The temporary file is flushed to disk and
    then moved over ``path`` with :func:`os.replace`. If ``write_fn`` (or anything after
    it) fails, the temporary file is removed and an existing ``path`` is left untouched.

    Returns ``path`` as a string.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise ValueError(f"cannot write {str(target)!r}: the folder {str(directory)!r} does not exist")
    if target.is_dir():
        raise ValueError(f"cannot write {str(target)!r}: it is a folder")

    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=f".tmp{_full_suffix(target.name)}")
    os.close(fd)
    try:
        write_fn(tmp)
        mode = (target.stat().st_mode & 0o7777) if target.exists() else _default_mode()
        os.chmod(tmp, mode)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    # Make the rename itself durable where the platform allows it.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return str(target)


def finished_files(folder: str | os.PathLike[str], pattern: str) -> list[Path]:
    """The files of ``folder`` matching ``pattern``, sorted, without the hidden temporary files
    (``.<name>.<random>.tmp<suffix>``) that a writer killed inside :func:`atomic_write` leaves behind."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))
