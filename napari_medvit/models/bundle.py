"""MONAI bundles as checkpoints: ``configs/metadata.json`` + ``configs/inference.json`` + ``models/model.pt``.

What is read (plain JSON values only; bundle expressions such as ``"$..."`` are never executed, an
``"@id"`` reference is followed to the literal value it names, and a ``"$"`` expression or ``"%"`` macro where a
value is needed is an error naming the file and the key):

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
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from napari_medvit.models.checkpoint import load_torch_file, unwrap_state_dict
from napari_medvit.models.manifest import CheckpointError, Manifest, describe, json_kind, short_repr

_ARCH = {"SwinUNETR": "swin_unetr", "UNETR": "unetr", "UNet": "unet"}


def _fill_monai_defaults(arch: str, target: str, config: dict[str, Any]) -> None:
    """Arguments a bundle's network_def leaves out take MONAI's own defaults, as when MONAI built the
    network whose weights the bundle holds, not the plugin's reference configuration (e.g. UNet's
    ``num_res_units`` is 0 in MONAI, 2 in the plugin's U-Net)."""
    import importlib
    import inspect

    from monai.networks import nets

    from napari_medvit.models._registry import get_spec

    spec = get_spec(arch)
    factory = getattr(importlib.import_module(spec.module), spec.factory)
    ours = set(spec.factory_args) | {name for name, p in inspect.signature(factory).parameters.items()
                                     if p.default is not inspect.Parameter.empty}
    skip = {"img_size", "use_checkpoint"} if arch == "swin_unetr" else set()  # dropped above (MONAI >= 1.5)
    for name, param in inspect.signature(getattr(nets, target)).parameters.items():
        if name in ours and name not in config and name not in skip and param.default is not inspect.Parameter.empty:
            config[name] = list(param.default) if isinstance(param.default, tuple) else param.default


def is_bundle(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "configs" / "inference.json").is_file() and (p / "models" / "model.pt").is_file()


def looks_like_bundle(path: str | os.PathLike[str]) -> bool:
    """A folder with a ``configs`` folder or a ``models/model.pt``: read as a bundle, so a missing piece is named."""
    p = Path(path)
    return p.is_dir() and ((p / "configs").is_dir() or (p / "models" / "model.pt").exists())


_MISSING = object()
_ID_SEP = re.compile(r"::|#")  # MONAI's id separators (``#`` before MONAI 1.2, ``::`` since)


class _BundleJson:
    """One JSON file of a bundle read as plain values: an ``@id`` reference resolves to the literal value it
    names in the same file; ``$`` expressions and ``%`` macros are refused (never evaluated)."""

    def __init__(self, root: Path, rel: str) -> None:
        self.root, self.rel = root, rel
        try:
            data = json.loads((root / rel).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise CheckpointError(f"MONAI bundle {root.name}: cannot read {rel}: {exc}") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"MONAI bundle {root.name}: {rel} holds {json_kind(data)}, expected a JSON object")
        self.data: dict[str, Any] = data

    def error(self, key_id: str, problem: str) -> CheckpointError:
        return CheckpointError(f"MONAI bundle {self.root.name}: {self.rel} {key_id or '(top level)'}: {problem}")

    def lookup(self, ref: str) -> Any:
        node: Any = self.data
        for part in _ID_SEP.split(ref):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return _MISSING
        return node

    def literal(self, value: Any, key_id: str, origin: str = "", seen: frozenset[str] = frozenset()) -> Any:
        """``value`` with its ``@`` references replaced by what they name; CheckpointError naming ``key_id`` for an
        expression, a macro, a reference to nothing or a circular one (``origin``: the key that referred here)."""
        via = f" (referred to from {origin})" if origin else ""
        if isinstance(value, str) and value.startswith("@"):
            ref = _ID_SEP.sub("#", value[1:])
            if ref in seen:
                raise self.error(key_id, f"the reference {value!r} is circular{via}; a literal value is needed")
            target = self.lookup(ref) if ref and not ref.startswith("#") else _MISSING
            if target is _MISSING:
                raise self.error(key_id, f"{short_repr(value)} refers to an id that {self.rel} does not define{via}; "
                                         "a literal value is needed")
            return self.literal(target, ref, origin or key_id, seen | {ref})
        if isinstance(value, str) and value.startswith(("$", "%")):
            what = "an expression" if value[0] == "$" else "a macro"
            raise self.error(key_id, f"{short_repr(value)} is {what}, which napari-medvit never evaluates{via}; "
                                     "a literal value is needed")
        if isinstance(value, list):
            return [self.literal(v, f"{key_id}#{i}", origin, seen) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.literal(v, f"{key_id}#{k}", origin, seen) for k, v in value.items()}
        return value

    def number(self, node: dict[str, Any], key: str, node_id: str, default: Any = _MISSING) -> Any:
        """A finite real number under ``key`` of ``node`` (``default`` when absent or null, else required)."""
        key_id = f"{node_id}#{key}"
        if key not in node:
            if default is _MISSING:
                raise self.error(key_id, f"{key!r} is missing ({_target(node)} needs it), expected a number")
            return default
        value = self.literal(node[key], key_id)
        if value is None and default is not _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(key_id, f"{key!r} is {describe(value)}, expected a finite number")
        return value

    def count(self, node: dict[str, Any], key: str, node_id: str) -> int:
        """A positive integer under ``key`` of ``node``."""
        key_id = f"{node_id}#{key}"
        value = self.literal(node[key], key_id)
        if not _is_count(value):
            raise self.error(key_id, f"{key!r} is {describe(value)}, expected a positive integer")
        return int(value)

    def integers(self, node: dict[str, Any], key: str, node_id: str, dims: int) -> list[int]:
        """Positive integers under ``key``: a list, or one number for every spatial dimension."""
        key_id = f"{node_id}#{key}"
        value = self.literal(node[key], key_id)
        values = value if isinstance(value, list) else [value] * dims
        if not values or not all(_is_count(v) for v in values):
            raise self.error(key_id, f"{key!r} is {short_repr(value)}, expected a positive integer or a list of them")
        return [int(v) for v in values]


def _is_count(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and value == int(value) and value > 0)


def _target(entry: Any) -> str:
    target = entry.get("_target_", "") if isinstance(entry, dict) else ""
    return target.rsplit(".", 1)[-1] if isinstance(target, str) else ""


def _walk(node: Any, node_id: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every JSON object in ``node`` with its MONAI id (``preprocessing#transforms#2``)."""
    if isinstance(node, dict):
        yield node_id, node
        for k, v in node.items():
            yield from _walk(v, f"{node_id}#{k}" if node_id else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{node_id}#{i}" if node_id else str(i))


def _check_bundle_files(root: Path) -> None:
    """CheckpointError unless ``root`` is a folder holding configs/inference.json and models/model.pt."""
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a MONAI bundle folder (configs/inference.json, models/model.pt)")
    for rel in ("configs/inference.json", "models/model.pt"):
        if not (root / rel).is_file():
            yaml = " (YAML configs are not read: convert it to configs/inference.json)" \
                if rel.endswith(".json") and (root / "configs" / "inference.yaml").is_file() else ""
            raise CheckpointError(f"MONAI bundle {root.name}: {rel} is missing or not a file{yaml}; a bundle "
                                  "needs configs/inference.json and models/model.pt")


def _network(inference: _BundleJson, root: Path) -> tuple[str, dict[str, Any], int]:
    """The architecture of ``network_def``, its arguments as literals (MONAI's defaults for those left
    out) and the number of spatial dimensions."""
    net = inference.data.get("network_def", _MISSING)
    if net is _MISSING:
        raise inference.error("network_def", "is missing; it names the network (_target_ SwinUNETR, UNETR or UNet)")
    if isinstance(net, str) and net.startswith("@"):
        net = inference.literal(net, "network_def")
    if not isinstance(net, dict):
        raise inference.error("network_def", f"is {describe(net)}, expected an object naming the "
                                             "network in _target_ (SwinUNETR, UNETR or UNet)")
    arch = _ARCH.get(_target(net))
    if arch is None:
        raise CheckpointError(f"MONAI bundle {root.name}: configs/inference.json network_def "
                              f"{_target(net) or net.get('_target_')!r} is not one of {sorted(_ARCH)}")
    config = {k: v for k, v in net.items() if not k.startswith("_")}
    if arch == "swin_unetr":
        config.pop("img_size", None)  # MONAI >= 1.5
        config.pop("use_checkpoint", None)
    config = {k: inference.literal(v, f"network_def#{k}") for k, v in config.items()}
    _fill_monai_defaults(arch, _target(net), config)
    spatial_dims = config.get("spatial_dims", 3)
    dims = int(spatial_dims) if _is_count(spatial_dims) else 3
    return arch, config, dims


def _axcodes(inference: _BundleJson, node: dict[str, Any], node_id: str) -> str:
    """``Orientationd`` axcodes: orientation codes such as 'RAS'."""
    axcodes = inference.literal(node["axcodes"], f"{node_id}#axcodes")
    if not _is_axcodes(axcodes):
        raise inference.error(f"{node_id}#axcodes", f"'axcodes' is {short_repr(axcodes)}, expected orientation "
                                                    "codes such as 'RAS' (one of L/R, A/P, S/I per axis)")
    return axcodes


def _pixdim(inference: _BundleJson, node: dict[str, Any], node_id: str, dims: int) -> list[float]:
    """``Spacingd`` pixdim: positive voxel sizes in mm (one number stands for every axis)."""
    pixdim = inference.literal(node["pixdim"], f"{node_id}#pixdim")
    values = pixdim if isinstance(pixdim, list) else [pixdim] * dims
    if not values or not all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
                             and v > 0 for v in values):
        raise inference.error(f"{node_id}#pixdim", f"'pixdim' is {short_repr(pixdim)}, expected positive "
                                                  "voxel sizes in mm (a number or a list of numbers)")
    return [float(v) for v in values]


def _intensity(inference: _BundleJson, node: dict[str, Any], node_id: str) -> dict[str, Any]:
    """``ScaleIntensityRanged``: the intensity window, the range it maps to (0..1 without b_min/b_max)
    and whether values are clipped."""
    a_min, a_max = (float(inference.number(node, k, node_id)) for k in ("a_min", "a_max"))
    if a_min == a_max:
        raise inference.error(f"{node_id}#a_max", f"a_min and a_max are both {a_min}, expected an "
                                                 "intensity window of non-zero width")
    b_min, b_max = (inference.number(node, k, node_id, default=None) for k in ("b_min", "b_max"))
    if b_min is None or b_max is None:  # MONAI then maps the window to 0..1 without rescaling
        b_min, b_max = 0.0, 1.0
    clip = inference.literal(node.get("clip", False), f"{node_id}#clip")
    if not isinstance(clip, bool):
        raise inference.error(f"{node_id}#clip", f"'clip' is {short_repr(clip)}, expected true or false")
    return {"window": [a_min, a_max], "range": [float(b_min), float(b_max)], "clip": clip}


def _sliding_window(inference: _BundleJson, node: dict[str, Any], node_id: str, dims: int,
                    pre: dict[str, Any]) -> None:
    """``SlidingWindowInferer``: roi_size, overlap, sw_batch_size and mode (as ``blend``) into ``pre``."""
    if "roi_size" in node:
        pre["roi_size"] = inference.integers(node, "roi_size", node_id, dims)
    if "overlap" in node:
        overlap = inference.number(node, "overlap", node_id)
        if not 0 <= overlap < 1:
            raise inference.error(f"{node_id}#overlap", f"'overlap' is {overlap}, expected a number in [0, 1)")
        pre["overlap"] = overlap
    if "sw_batch_size" in node:
        pre["sw_batch_size"] = inference.count(node, "sw_batch_size", node_id)
    if "mode" in node:
        mode = inference.literal(node["mode"], f"{node_id}#mode")
        if mode not in ("constant", "gaussian"):
            raise inference.error(f"{node_id}#mode", f"'mode' is {short_repr(mode)}, expected 'constant' or "
                                                    "'gaussian'")
        pre["blend"] = mode


def _preprocessing(inference: _BundleJson, dims: int) -> dict[str, Any]:
    """The preprocessing and inferer settings of every enabled transform of inference.json, in file
    order (a later one of a kind wins)."""
    pre: dict[str, Any] = {}
    for node_id, node in _walk(inference.data):
        kind = _target(node)
        if node.get("_disabled_") is True:
            continue
        if kind in ("Orientationd", "Orientation") and "axcodes" in node:
            pre["axcodes"] = _axcodes(inference, node, node_id)
        elif kind in ("Spacingd", "Spacing") and "pixdim" in node:
            pre["pixdim"] = _pixdim(inference, node, node_id, dims)
        elif kind in ("ScaleIntensityRanged", "ScaleIntensityRange"):
            pre["intensity"] = _intensity(inference, node, node_id)
        elif kind in ("SlidingWindowInferer",):
            _sliding_window(inference, node, node_id, dims, pre)
    return pre


def read_bundle(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], Manifest]:
    """``(state_dict, manifest)`` of a MONAI bundle folder; CheckpointError naming the bundle file and key."""
    root = Path(path)
    _check_bundle_files(root)
    inference = _BundleJson(root, "configs/inference.json")
    meta_file = root / "configs" / "metadata.json"
    metadata = _BundleJson(root, "configs/metadata.json").data if meta_file.exists() else {}
    arch, config, dims = _network(inference, root)
    pre = _preprocessing(inference, dims)
    class_names = _class_names(root, metadata)

    name = f"{root.name}/models/model.pt"
    state, _ = unwrap_state_dict(load_torch_file(root / "models" / "model.pt", name), name)
    manifest = Manifest(
        arch=arch, config=config, class_names=class_names, preprocessing=pre, trained=True,
        description=f"MONAI bundle {metadata.get('name', root.name)} {metadata.get('version', '')}".strip(),
        extra={"bundle": str(root), "monai_version": metadata.get("monai_version", "")},
    )
    return state, manifest


_AXIS_OF = {code: pair for pair in ("LR", "AP", "SI") for code in pair}


def _is_axcodes(value: Any) -> bool:
    """2 or 3 orientation codes, one per axis: 'RAS', 'LPS', 'PL', ..."""
    if not isinstance(value, str) or len(value) not in (2, 3):
        return False
    axes = [_AXIS_OF.get(code) for code in value.upper()]
    return None not in axes and len(set(axes)) == len(axes)


def _class_names(root: Path, metadata: dict[str, Any]) -> list[str]:
    """Label names from metadata.json's network_data_format.outputs.pred.channel_def (``{"0": "background"}``):
    keys 0..n-1 without gaps, string values; [] when the bundle does not say."""
    node: Any = metadata
    key_id = ""
    for key in ("network_data_format", "outputs", "pred", "channel_def"):
        key_id = f"{key_id}#{key}" if key_id else key
        node = node.get(key, {})
        if not isinstance(node, dict):
            raise CheckpointError(f"MONAI bundle {root.name}: configs/metadata.json {key_id}: is {json_kind(node)}, "
                                  "expected a JSON object")
    where = f"MONAI bundle {root.name}: configs/metadata.json {key_id}"
    channels: dict[int, str] = {}
    for key, value in node.items():
        text = key.strip()
        if not (text.isascii() and text.isdigit()):
            raise CheckpointError(f"{where}: key {key!r} is not a channel number, expected keys 0, 1, 2, ...")
        if int(text) in channels:
            raise CheckpointError(f"{where}: channel {int(text)} is named twice (key {key!r})")
        if not isinstance(value, str) or not value.strip():
            raise CheckpointError(f"{where}#{key}: is {describe(value)}, expected the label's "
                                  "name (a non-empty string)")
        channels[int(text)] = value
    gaps = [i for i in range(len(channels)) if i not in channels]
    if gaps:
        raise CheckpointError(f"{where}: has no entry for channel {gaps[0]} (keys {sorted(channels)}), expected "
                              f"channels 0..{len(channels) - 1}")
    return [channels[i] for i in range(len(channels))]
