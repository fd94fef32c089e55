"""MONAI bundles as checkpoints: ``configs/metadata.json`` + ``configs/inference.json`` + ``models/model.pt``.

What is read (plain JSON values only; bundle expressions such as ``"$..."`` are never executed):

* ``network_def``: the architecture (``_target_`` SwinUNETR / UNETR / UNet) and its arguments. MONAI >= 1.5's
  SwinUNETR has no ``img_size``; bundles that still pass it load (the argument is dropped).
* preprocessing transforms: ``Orientationd`` (axcodes), ``Spacingd`` (pixdim), ``ScaleIntensityRanged``
  (a_min, a_max, b_min, b_max, clip);
* the inferer: ``SlidingWindowInferer`` roi_size, overlap, sw_batch_size, mode;
* label names: ``metadata.json`` -> network_data_format.outputs.pred.channel_def.

The weights (``models/model.pt``, a plain state_dict) are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from napari_medvit.models.manifest import CheckpointError, Manifest

_ARCH = {"SwinUNETR": "swin_unetr", "UNETR": "unetr", "UNet": "unet"}


def is_bundle(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "configs" / "inference.json").is_file() and (p / "models" / "model.pt").is_file()


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"MONAI bundle: cannot read {path}: {exc}") from exc


def _target(entry: Any) -> str:
    return str(entry.get("_target_", "")).rsplit(".", 1)[-1] if isinstance(entry, dict) else ""


def _plain(args: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments with JSON values only (no references, no expressions)."""
    return {k: v for k, v in args.items() if not k.startswith("_")
            and not (isinstance(v, str) and v.startswith(("$", "@", "%")))}


def _walk(node: Any):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def read_bundle(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], Manifest]:
    root = Path(path)
    if not is_bundle(root):
        raise CheckpointError(f"{root}: not a MONAI bundle (needs configs/inference.json and models/model.pt)")
    inference = _load_json(root / "configs" / "inference.json")
    metadata = _load_json(root / "configs" / "metadata.json") if (root / "configs" / "metadata.json").is_file() else {}

    net = inference.get("network_def")
    arch = _ARCH.get(_target(net))
    if arch is None:
        raise CheckpointError(f"{root.name}: network_def {_target(net) or net!r} is not one of {sorted(_ARCH)}")
    config = _plain(net)
    if arch == "swin_unetr":
        config.pop("img_size", None)  # MONAI >= 1.5
        config.pop("use_checkpoint", None)

    pre: dict[str, Any] = {}
    for node in _walk(inference):
        kind = _target(node)
        if kind in ("Orientationd", "Orientation") and isinstance(node.get("axcodes"), str):
            pre["axcodes"] = node["axcodes"]
        elif kind in ("Spacingd", "Spacing") and isinstance(node.get("pixdim"), list):
            pre["pixdim"] = [float(v) for v in node["pixdim"]]
        elif kind in ("ScaleIntensityRanged", "ScaleIntensityRange"):
            pre["intensity"] = {"window": [float(node["a_min"]), float(node["a_max"])],
                                "range": [float(node.get("b_min", 0.0)), float(node.get("b_max", 1.0))],
                                "clip": bool(node.get("clip", False))}
        elif kind in ("SlidingWindowInferer",):
            if isinstance(node.get("roi_size"), list):
                pre["roi_size"] = [int(v) for v in node["roi_size"]]
            for key in ("overlap", "sw_batch_size"):
                if isinstance(node.get(key), (int, float)):
                    pre[key] = node[key]
            if isinstance(node.get("mode"), str):
                pre["blend"] = node["mode"]

    channel_def = (metadata.get("network_data_format", {}).get("outputs", {}).get("pred", {}).get("channel_def", {}))
    class_names = [str(channel_def[k]) for k in sorted(channel_def, key=lambda s: int(s))] if channel_def else []

    try:
        obj = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{root.name}/models/model.pt: not a plain state_dict that loads without "
                              f"unpickling code ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{root.name}/models/model.pt: expected a state_dict")
    manifest = Manifest(
        arch=arch, config=config, class_names=class_names, preprocessing=pre, trained=True,
        description=f"MONAI bundle {metadata.get('name', root.name)} {metadata.get('version', '')}".strip(),
        extra={"bundle": str(root), "monai_version": metadata.get("monai_version", "")},
    )
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, manifest
