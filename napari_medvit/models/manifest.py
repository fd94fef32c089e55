"""Checkpoint manifests: what a weights file is, readable without importing torch.

The widgets list shipped checkpoints from their manifests when they open; reading a
safetensors header through ``framework="numpy"`` keeps torch out of napari's main thread until
a model is actually built (in a worker).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_KEY = "medvit_manifest"


def strip_module_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A new dict without DataParallel/DDP's ``module.`` key prefix."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for the requested model; the message says why."""


@dataclass
class Manifest:
    arch: str
    config: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    trained: bool = True
    description: str = ""
    weights_sha256: str = ""
    plugin_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # plain JSON types (tuples -> lists)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        if "arch" not in d:
            raise CheckpointError(f"checkpoint manifest has no 'arch' field (fields: {sorted(d)})")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def bundled_dir() -> Path:
    """Folder of the checkpoints shipped with the plugin (``sample_data/checkpoints``)."""
    import napari_medvit

    return Path(napari_medvit.__file__).parent / "sample_data" / "checkpoints"


def read_manifest(path: str | os.PathLike[str]) -> Manifest | None:
    """The manifest of a .safetensors checkpoint, read from its header only (no tensors loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:  # the header only; no torch import
            meta = f.metadata() or {}
        return Manifest.from_dict(json.loads(meta[MANIFEST_KEY])) if MANIFEST_KEY in meta else None
    except Exception as exc:
        raise CheckpointError(f"{Path(path).name}: cannot read its manifest ({exc})") from exc


def bundled_checkpoints(arch: str, folder: str | os.PathLike[str] | None = None) -> list[tuple[Path, Manifest]]:
    """Shipped .safetensors checkpoints whose manifest names ``arch``, sorted by file name.

    Unreadable files are skipped here (they are reported when someone tries to load them).
    """
    root = Path(folder) if folder is not None else bundled_dir()
    found = []
    for path in sorted(root.glob("*.safetensors")) if root.is_dir() else []:
        try:
            manifest = read_manifest(path)
        except CheckpointError:
            continue
        if manifest is not None and manifest.arch == arch:
            found.append((path, manifest))
    return found
