"""Checkpoint manifests: what a weights file is, readable without importing torch.

The widgets list shipped checkpoints from their manifests when they open; reading a
safetensors header through ``framework="numpy"`` keeps torch out of napari's main thread until
a model is actually built (in a worker).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
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
    def from_dict(cls, d: Any) -> Manifest:
        """A manifest from its JSON object; CheckpointError naming the field whose value has the wrong type.

        Unknown fields are ignored (manifests written by newer versions still load)."""
        if not isinstance(d, dict):
            raise CheckpointError(f"checkpoint manifest is {describe(d)}, expected a JSON object")
        if "arch" not in d:
            raise CheckpointError(f"checkpoint manifest has no 'arch' field (fields: {sorted(map(str, d))})")
        for name, value in d.items():
            if name in _FIELD_CHECKS:
                check, expected = _FIELD_CHECKS[name]
                if not check(value):
                    raise CheckpointError(f"checkpoint manifest field {name!r} is {describe(value)}, "
                                          f"expected {expected}")
        known = {f for f in cls.__dataclass_fields__}
        fields = {k: v for k, v in d.items() if k in known}
        if "class_names" in fields:
            fields["class_names"] = list(fields["class_names"])  # a .pt manifest may hold a tuple
        return cls(**fields)


def json_kind(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", tuple: "a list", dict: "an object"}
    return names.get(type(value), f"a {type(value).__name__}")


def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(value: Any) -> str:
    """A value and its JSON type for an error message: ``[1, 2] (a list)``, ``null``."""
    return "null" if value is None else f"{short_repr(value)} ({json_kind(value)})"


def _is_object(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and (value == "" or (len(value) == 64
                                                       and all(c in "0123456789abcdef" for c in value)))


# field -> (check, what was expected); the types of the Manifest dataclass as JSON values
_FIELD_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "arch": (lambda v: isinstance(v, str) and bool(v), "a non-empty string (a registered model name)"),
    "config": (_is_object, "a JSON object (string keys) of factory arguments"),
    "class_names": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v), "a list of strings"),
    "preprocessing": (_is_object, "a JSON object (string keys)"),
    "trained": (lambda v: isinstance(v, bool), "true or false"),
    "description": (lambda v: isinstance(v, str), "a string"),
    "weights_sha256": (_is_digest, "64 lowercase hex digits or an empty string"),
    "plugin_version": (lambda v: isinstance(v, str), "a string"),
    "extra": (_is_object, "a JSON object (string keys)"),
}


def bundled_dir() -> Path:
    """Folder of the checkpoints shipped with the plugin (``sample_data/checkpoints``)."""
    import napari_medvit

    return Path(napari_medvit.__file__).parent / "sample_data" / "checkpoints"


def read_manifest(path: str | os.PathLike[str]) -> Manifest | None:
    """The manifest of a .safetensors checkpoint, read from its header only (no tensors loaded)."""
    from safetensors import safe_open

    name = Path(path).name
    try:
        with safe_open(str(path), framework="numpy") as f:  # the header only; no torch import
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{name}: cannot read its manifest ({exc})") from exc
    if MANIFEST_KEY not in meta:
        return None
    try:
        return Manifest.from_dict(json.loads(meta[MANIFEST_KEY]))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{name}: its manifest is not valid JSON ({exc})") from exc
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {exc}") from exc


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
