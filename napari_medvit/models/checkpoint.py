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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        from napari_medvit.models.bundle import looks_like_bundle, read_bundle
        from napari_medvit.models.truenet import read_truenet_folder

        if looks_like_bundle(path):
            bundle_state, bundle_manifest = read_bundle(path)
            return bundle_state, bundle_manifest, file_sha256(path / "models" / "model.pt")
        planes = read_truenet_folder(path)
        if planes is None:
            raise CheckpointError(f"{path}: a folder checkpoint must be a MONAI bundle (configs/inference.json, "
                                  "models/model.pt) or TrUE-Net's three files *_axial.pth, *_sagittal.pth, "
                                  "*_coronal.pth")
        digest = hashlib.sha256("".join(file_sha256(p) for p in sorted(path.glob("*_*.pth"))).encode()).hexdigest()
        return planes, None, digest
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from exc
    manifest_dict: Any = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path.name}: not a readable safetensors file ({_first_line(exc)})") from exc
        if not state:
            raise CheckpointError(f"{path.name}: contains no tensors")
        if MANIFEST_KEY in meta:
            try:
                manifest_dict = json.loads(meta[MANIFEST_KEY])
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{path.name}: its manifest is not valid JSON ({exc})") from exc
            if manifest_dict is None:
                raise CheckpointError(f"{path.name}: its manifest is null, expected a JSON object")
    elif path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        state, manifest_dict = unwrap_state_dict(load_torch_file(path), path.name)
    else:
        raise CheckpointError(f"{path.name}: unsupported checkpoint extension {path.suffix!r} "
                              "(.safetensors, .pt, .pth)")
    try:
        manifest = Manifest.from_dict(manifest_dict) if manifest_dict is not None else None
    except CheckpointError as exc:
        raise CheckpointError(f"{path.name}: {exc}") from exc
    if manifest is not None and manifest.weights_sha256:
        actual = weights_digest(state)
        if actual != manifest.weights_sha256:
            raise CheckpointError(
                f"{path.name}: the weights do not match the digest in its manifest "
                f"(expected {manifest.weights_sha256[:12]}…, got {actual[:12]}…): the file is corrupt or was altered"
            )
    return state, manifest, digest


def _a(noun: str) -> str:
    if noun == "NoneType":
        return "None"
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (its type's name if it has none)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].split(". ", 1)[0] if lines else type(exc).__name__


def load_torch_file(path: str | os.PathLike[str], name: str | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; CheckpointError naming the file (``name``) otherwise.

    A file that needs to unpickle code (a class, a function) is refused as such; any other failure
    (zero bytes, truncated, not a PyTorch file) is reported as unreadable."""
    name = name or Path(path).name
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        detail = None  # torch's own reason, after its advice on weights_only
        if "WeightsUnpickler error:" in text:
            after = text.split("WeightsUnpickler error:", 1)[1]
            detail = next((line.strip() for line in after.splitlines() if line.strip()), None)
        if "Unsupported global" in text:
            detail = (detail or _first_line(exc)).split(" Please use")[0]
            raise CheckpointError(
                f"{name}: refused — it needs to unpickle code to load, which napari-medvit never does "
                f"(torch.load weights_only=True). Re-save it as a plain state_dict. Detail: {detail}"
            ) from exc
        reason = detail or _first_line(exc)
        reason = reason if reason == type(exc).__name__ else f"{type(exc).__name__}: {reason}"
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint ({reason})") from exc


_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")


def unwrap_state_dict(obj: Any, name: str) -> tuple[dict[str, torch.Tensor], Any]:
    """``(state_dict, manifest or None)`` of what ``torch.load`` returned for the file ``name``.

    Accepted: a dict of tensors, or one under ``state_dict`` / ``model_state_dict`` / ``model`` / ``net``
    (other top-level entries such as ``epoch`` or ``optimizer`` are then ignored), with our manifest
    under ``manifest``. Every entry of the state_dict must be a dense tensor under a string key."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{name}: expected a dict of tensors, found {type(obj).__name__}")
    manifest = obj.get("manifest")
    if isinstance(manifest, torch.Tensor):  # a plain state_dict with a tensor of that name
        manifest = None
    elif "manifest" in obj and not isinstance(manifest, dict):
        raise CheckpointError(f"{name}: its 'manifest' entry is {_a(type(manifest).__name__)}, expected a dict "
                              "(a JSON object)")
    where = "the checkpoint"  # a top-level state_dict
    for key in _STATE_DICT_KEYS:
        if key in obj and not isinstance(obj[key], torch.Tensor):
            if not isinstance(obj[key], dict):
                raise CheckpointError(f"{name}: its {key!r} entry is {_a(type(obj[key]).__name__)}, expected a dict "
                                      "of tensors (a state_dict)")
            obj, where = obj[key], f"its {key!r} entry"
            break
    if not obj:
        raise CheckpointError(f"{name}: contains no tensors ({where} is empty)")
    return check_state_dict(obj, f"{name}: {where}"), manifest


def check_state_dict(state_dict: dict[Any, Any], where: str) -> dict[str, torch.Tensor]:
    """``state_dict`` itself, once every key is a string and every value a dense tensor holding data;
    otherwise CheckpointError ``"{where} ..."`` naming the first bad entry."""
    hint = "a state_dict holds tensors only" + (
        ", at the top level or under " + "/".join(repr(k) for k in _STATE_DICT_KEYS) if where.endswith("the checkpoint")
        else "")
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{where} has the key {key!r} ({type(key).__name__}); "
                                  "state_dict keys must be strings")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where} holds {_a(type(value).__name__)} under {key!r}, expected a tensor ({hint})")
        if value.layout != torch.strided or value.is_quantized or value.is_meta:
            kind = ("meta" if value.is_meta else "quantized" if value.is_quantized
                    else str(value.layout).replace("torch.", ""))
            raise CheckpointError(f"{where} holds a {kind} tensor under {key!r}, expected a dense tensor")
    return state_dict


def compare_state_dicts(expected: dict[str, torch.Tensor],
                        given: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
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
    state_dict = check_state_dict(state_dict, source)
    if filter_fn is not None:
        try:
            state_dict = filter_fn(state_dict, model)
        except CheckpointError:
            raise
        except (AttributeError, IndexError, KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: its tensors cannot be mapped onto {type(model).__name__} "
                                  f"({type(exc).__name__}: {_first_line(exc)})") from exc
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
    _check_dtypes(model, expected, state_dict, source)
    model.load_state_dict(state_dict, strict=True)


_INT_DTYPES = frozenset(d for d in (getattr(torch, n, None) for n in (
    "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64")) if isinstance(d, torch.dtype))
_KIND_WORDS = {"float": "a floating-point tensor", "int": "an integer tensor", "bool": "a bool tensor",
               "complex": "a complex tensor"}


def _dtype_kind(dtype: torch.dtype) -> str:
    """float / int / bool / complex; any other type (quantized, ...) is a kind of its own."""
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "float"
    return "int" if dtype in _INT_DTYPES else str(dtype)


def _check_dtypes(model: nn.Module, expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor],
                  source: str) -> None:
    """Refuse tensors whose dtype is of another kind than the model's (a float tensor for an integer buffer, an
    integer or bool tensor for a float parameter, complex anything), and integers outside the model's type.

    Conversions within a kind load as before: fp16/bf16 floats into fp32 parameters and int8/int16/int32 into
    int64 buffers are how :func:`save_checkpoint` (``dtype=``) packs the shipped weights."""
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    problems = []
    for key in sorted(expected):
        want, got = expected[key], given[key]
        role = "parameter" if key in params else "buffer"
        kind = _dtype_kind(want.dtype)
        if _dtype_kind(got.dtype) != kind:
            problems.append(f"{key!r} is {got.dtype} in the checkpoint but a {want.dtype} {role} in the model "
                            f"(expected {_KIND_WORDS.get(kind, str(want.dtype))})")
        elif kind == "int" and got.dtype != want.dtype and got.numel():
            integral = got.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
            values = got if integral else got.double()
            lo, hi, info = int(values.min()), int(values.max()), torch.iinfo(want.dtype)
            if lo < info.min or hi > info.max:
                problems.append(f"{key!r} holds integers in [{lo}, {hi}], outside the range of the model's "
                                f"{want.dtype} {role} ([{info.min}, {info.max}])")
    if problems:
        more = ""
        if len(problems) > 1:  # one line: the first problem in full, then the other keys
            keys = [problem.split(" ", 1)[0] for problem in problems[1:]]
            listed = ", ".join(keys[:_MAX_LISTED]) + (", …" if len(keys) > _MAX_LISTED else "")
            more = f" (and {len(keys)} more: {listed})"
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: {problems[0]}{more}")
