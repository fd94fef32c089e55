"""Checkpoints: safe loading, a manifest beside the weights, and loud errors on mismatch.

Formats
-------
* ``.safetensors``: tensors plus a string metadata entry ``medvit_manifest`` holding the manifest
  as JSON.
* ``.pt`` / ``.pth``: ``{"state_dict": {...}, "manifest": {...}}`` or a plain state_dict (the
  official repositories' layout). Always read with ``torch.load(weights_only=True)``: a file that
  needs to unpickle code is refused.

The manifest records the architecture, its configuration, class names, preprocessing, whether
the weights were trained, and ``weights_sha256``: a digest of the tensors (names, dtypes, shapes,
bytes) that is checked on load, so a truncated or altered file is never used silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from napari_medvit.io import atomic_write
from napari_medvit.models.manifest import MANIFEST_KEY, CheckpointError, Manifest

__all__ = ["CheckpointError", "CheckpointInfo", "Manifest", "load_weights", "read_checkpoint", "save_checkpoint",
           "weights_digest"]

_MAX_LISTED = 12


@dataclass
class CheckpointInfo:
    """What the viewer shows about the weights a model carries (provenance)."""

    trained: bool
    source: str  # a file path, or "random initialisation"
    file_sha256: str = ""
    manifest: dict[str, Any] | None = None
    new_head: tuple[str, ...] = ()  # class-head prefixes left freshly initialised (create_model(new_head=True))

    @property
    def label(self) -> str:
        if not self.trained:
            return "untrained weights"
        return f"weights {Path(self.source).name} ({self.file_sha256[:8]})" if self.file_sha256 else "trained weights"


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes of the tensors, in sorted key order."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _compact_int(t: torch.Tensor) -> torch.Tensor:
    """An integer tensor in the smallest of int8/int16/int32 that holds its values (others unchanged)."""
    if t.dtype not in (torch.int32, torch.int64) or t.numel() == 0:
        return t
    lo, hi = int(t.min()), int(t.max())
    for small in (torch.int8, torch.int16, torch.int32):
        info = torch.iinfo(small)
        if info.min <= lo and hi <= info.max:
            return t.to(small)
    return t


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], manifest: Manifest, *,
                    dtype: torch.dtype | None = None) -> Path:
    """Write weights + manifest atomically (.safetensors or .pt/.pth). Returns the path.

    ``dtype`` (e.g. ``torch.float16``): store the floating-point tensors in that type (half the
    size) and the integer buffers (e.g. Swin's relative-position indices) in the smallest signed integer
    type that holds their values; loading casts both back to the model's types."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else _compact_int(v) for k, v in state.items()}
    manifest.weights_sha256 = weights_digest(state)
    if not manifest.plugin_version:
        from napari_medvit import __version__

        manifest.plugin_version = __version__
    payload = manifest.to_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={MANIFEST_KEY: json.dumps(payload)}))
    elif path.suffix in (".pt", ".pth"):
        atomic_write(path, lambda tmp: torch.save({"state_dict": state, "manifest": payload}, tmp))
    else:
        raise CheckpointError(f"{path}: unsupported checkpoint extension {path.suffix!r} (.safetensors, .pt, .pth)")
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], Manifest | None, str]:
    """Read ``(state_dict, manifest or None, file sha256)`` without unpickling any code."""
    path = Path(path)
    if path.is_dir():
        from napari_medvit.models.bundle import is_bundle, read_bundle
        from napari_medvit.models.truenet import read_truenet_folder

        if is_bundle(path):
            state, manifest = read_bundle(path)
            return state, manifest, file_sha256(path / "models" / "model.pt")
        state = read_truenet_folder(path)
        if state is None:
            raise CheckpointError(f"{path}: a folder checkpoint must be a MONAI bundle (configs/inference.json, "
                                  "models/model.pt) or TrUE-Net's three files *_axial.pth, *_sagittal.pth, *_coronal.pth")
        digest = hashlib.sha256("".join(file_sha256(p) for p in sorted(path.glob("*_*.pth"))).encode()).hexdigest()
        return state, None, digest
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    digest = file_sha256(path)
    manifest_dict: dict[str, Any] | None = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path.name}: not a readable safetensors file ({exc})") from exc
        if MANIFEST_KEY in meta:
            try:
                manifest_dict = json.loads(meta[MANIFEST_KEY])
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{path.name}: its manifest is not valid JSON ({exc})") from exc
    elif path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                raise CheckpointError(
                    f"{path.name}: refused — it needs to unpickle code to load, which napari-medvit never does "
                    f"(torch.load weights_only=True). Re-save it as a plain state_dict. Detail: {msg}"
                ) from exc
            raise CheckpointError(f"{path.name}: not a readable PyTorch checkpoint ({msg})") from exc
        state, manifest_dict = _unwrap(obj, path)
    else:
        raise CheckpointError(f"{path.name}: unsupported checkpoint extension {path.suffix!r} (.safetensors, .pt, .pth)")
    manifest = Manifest.from_dict(manifest_dict) if manifest_dict is not None else None
    if manifest is not None and manifest.weights_sha256:
        actual = weights_digest(state)
        if actual != manifest.weights_sha256:
            raise CheckpointError(
                f"{path.name}: the weights do not match the digest in its manifest "
                f"(expected {manifest.weights_sha256[:12]}…, got {actual[:12]}…): the file is corrupt or was altered"
            )
    return state, manifest, digest


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name}: expected a dict of tensors, found {type(obj).__name__}")
    manifest = obj.get("manifest") if isinstance(obj.get("manifest"), dict) else None
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path.name}: contains no tensors (top-level keys: {sorted(map(str, obj))[:10]})")
    return state, manifest


def compare_state_dicts(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mis-shaped) keys of ``given`` relative to ``expected``."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    misshaped = sorted(
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(given)
        if tuple(expected[k].shape) != tuple(given[k].shape)
    )
    return missing, unexpected, misshaped


def _listing(title: str, items: list[str]) -> str:
    shown = "\n    ".join(items[:_MAX_LISTED])
    more = f"\n    … and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"  {len(items)} {title}:\n    {shown}{more}"


def load_weights(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    filter_fn: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]] | None = None,
    source: str = "checkpoint",
    keep_initialised: tuple[str, ...] = (),
) -> None:
    """Load strictly; on any mismatch raise CheckpointError listing missing/unexpected/mis-shaped keys.

    ``keep_initialised``: state-dict prefixes (e.g. a class head) that keep the model's own
    initialisation; the checkpoint's entries under them are ignored, whatever their shapes."""
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    expected = model.state_dict()
    if keep_initialised:
        def under(key: str) -> bool:
            return any(key == p or key.startswith(p + ".") for p in keep_initialised)

        state_dict = {k: v for k, v in state_dict.items() if not under(k)}
        state_dict.update({k: v for k, v in expected.items() if under(k)})
    missing, unexpected, misshaped = compare_state_dicts(expected, state_dict)
    if missing or unexpected or misshaped:
        parts = [f"{source} does not fit {type(model).__name__}:"]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if misshaped:
            parts.append(_listing("mis-shaped keys", misshaped))
        raise CheckpointError("\n".join(parts))
    model.load_state_dict(state_dict, strict=True)

