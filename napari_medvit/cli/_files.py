"""Checks of the files and folders a ``medvit`` command is given: outputs are never an input and never
an existing file without ``--overwrite`` (see :mod:`napari_medvit.cli`), inputs are read with the
plugin's readers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_medvit.io import ImageMeta


def _resolved(path: str | Path) -> Path:
    """``path`` made absolute, ``~`` expanded and links followed."""
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` (resolved, links followed) is ``folder`` or lies somewhere below it."""
    p, f = _resolved(path), _resolved(folder)
    return p == f or f in p.parents


def _is_same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` are the same file (False when either cannot be looked at)."""
    try:
        return os.path.samefile(a, b)  # symbolic and hard links, case-insensitive file systems
    except OSError:
        return False


def _refuse_inputs(path: str | Path, option: str, inputs: Sequence[tuple[str, str | None]]) -> None:
    """ValueError when ``path`` is, or resolves to, one of ``inputs`` ((what, path)) or lies inside an input folder."""
    for what, given in inputs:
        if not given or not os.path.lexists(given):
            continue
        if os.path.isdir(given):
            if _inside(path, given):
                raise ValueError(f"{option} {path} lies inside the input folder {given} ({what}): writing there "
                                 "would change the input; choose an output outside it")
        elif _is_same_file(path, given) or _resolved(path) == _resolved(given):
            raise ValueError(f"{option} {path} is the input file {given} ({what}): refusing to overwrite an input; "
                             "choose another output file")


def _check_output_file(path: str, option: str, *, suffixes: Sequence[str], overwrite: bool,
                       inputs: Sequence[tuple[str, str | None]] = ()) -> Path:
    """The checks a file named by the user passes before anything is computed (see the module docstring)."""
    out = Path(path)
    _refuse_inputs(out, option, inputs)
    if path.endswith(("/", os.sep)) or out.is_dir():
        raise ValueError(f"{option} {path}: is a folder; give the file to write")
    if not out.name.lower().endswith(tuple(suffixes)):
        raise ValueError(f"{option} {path}: unsupported file type; use {', '.join(suffixes)}")
    if os.path.lexists(out) and not overwrite:
        raise ValueError(f"{option} {path}: the file exists; give --overwrite to replace it")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable")
    return out


def _read_input(path: str, what: str) -> tuple[Any, ImageMeta]:
    """:func:`~napari_medvit.io.read_image` for a file the user named: its only error, MedVitReadError,
    names the file (bad input, exit 2); so does an array the models cannot take."""
    from napari_medvit.io import read_image

    image, meta = read_image(path)
    dtype = getattr(image, "dtype", None)
    if dtype is None or dtype.kind not in "biuf":
        raise ValueError(f"{what} {path}: unsupported voxel type {dtype} (e.g. an RGB24 NIfTI); "
                         "convert it to a numeric image (one channel, or RGB as three)")
    return image, meta
