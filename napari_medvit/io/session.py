"""Autosaved corrections: one folder per source image, written atomically after each burst of edits.

``<root>/<key>/<name>.npz`` holds the corrected labels, the model's original mask and a JSON
record (layer name, provenance, time). Other kinds of corrections name theirs in the record's
``kind``: ``"boxes"`` stores the rectangles' vertices (M, 4, 2) as ``labels`` and the model's
boxes (N, 4) as ``original``; ``"class"`` keeps the whole result in the record. The key is a digest
of the source file's absolute path (or of whatever identifier the caller gives for images without a
file), so reopening the same
image finds its corrections. The default root is ``$XDG_DATA_HOME/napari-medvit/sessions``
(``~/.local/share/...``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_medvit.io._atomic import atomic_write, finished_files


@dataclass
class SavedCorrection:
    name: str
    labels: np.ndarray
    original: np.ndarray
    info: dict[str, Any]
    path: Path


def sessions_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "napari-medvit" / "sessions"


def session_key(source: str) -> str:
    ident = os.path.abspath(source) if os.path.exists(source) else source
    return hashlib.sha1(ident.encode()).hexdigest()[:16]


def _file_name(name: str) -> str:
    return (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "mask") + ".npz"


def save_correction(source: str, name: str, labels: np.ndarray, original: np.ndarray, info: dict[str, Any],
                    root: Path | None = None) -> Path:
    folder = (root or sessions_root()) / session_key(source)
    folder.mkdir(parents=True, exist_ok=True)
    record = {**info, "name": name, "source": source, "saved": _dt.datetime.now().isoformat(timespec="seconds")}
    path = folder / _file_name(name)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, labels=np.asarray(labels), original=np.asarray(original),
                                info=np.array(json.dumps(record, default=str)))

    atomic_write(path, write)
    return path


def load_corrections(source: str, root: Path | None = None) -> list[SavedCorrection]:
    """The corrections saved for ``source``, oldest first; unreadable files are skipped."""
    folder = (root or sessions_root()) / session_key(source)
    found = []
    for path in sorted(finished_files(folder, "*.npz"), key=lambda p: p.stat().st_mtime):
        try:
            with np.load(path, allow_pickle=False) as z:
                info = json.loads(str(z["info"]))
                found.append(SavedCorrection(info.get("name", path.stem), z["labels"], z["original"], info, path))
        except (OSError, ValueError, KeyError):
            continue
    return found
