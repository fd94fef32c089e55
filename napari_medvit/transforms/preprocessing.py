"""The typed, validated preprocessing of a model: what :mod:`napari_medvit.transforms.prepare` does.

A registry entry (``ModelSpec.preprocessing``) and a checkpoint manifest (``preprocessing``) each give
a plain dict; :meth:`Preprocessing.from_dict` checks every key once, and
:meth:`Preprocessing.merged` lays a checkpoint's keys over the registry's (the checkpoint wins: a
MONAI bundle's intensity window and spacing, a fine-tuned DAFT's tabular statistics). An unknown
or misspelled key, or a value of the wrong kind, is a :class:`ConfigError` naming the key, the
place it came from and (for a misspelling) the key that was probably meant.

Keys (all optional; the default is used when absent):

==================  =========================================================================
``resize``          (H, W) a 2D model runs at; null: the native size padded to ``size_multiple``
``size_multiple``   2D padding multiple (default 32)
``mean``, ``std``   per input channel, after scaling to 0..1 (default 0 and 1)
``color``           ``"rgb"``: a grey image is replicated to 3 channels
``threshold``       foreground probability of a binary mask (default 0.5)
``score_threshold`` the detection score above which boxes are shown (default 0.3)
``roi_size``        (z, y, x) sliding-window size of a 3D model; null: the whole volume
``overlap``         sliding-window overlap, 0 <= overlap < 1 (default 0.5)
``sw_batch_size``   windows per forward pass (default 1)
``blend``           ``"gaussian"`` or ``"constant"`` window blending (MONAI's mode)
``slab_windows``    windows of z per slab, which bounds the output buffer (default 2)
``intensity``       ``"percentile"`` (0.5/99.5 percentiles to 0..1, per channel) or a fixed window
                    ``{"window": [a_min, a_max], "range": [b_min, b_max], "clip": bool}``
``min_size``        the smallest extent a 3D model accepts along each axis (default 2)
``resize3d``        (z, y, x) a 3D classifier's whole-volume input size
``tabular``         the tabular input features (DAFT): ``name``, ``unit``, ``default``, ``missing``,
                    ``mean``, ``std``
``axcodes``         orientation a 3D model expects (e.g. ``"RAS"``, a MONAI bundle's)
``pixdim``          voxel spacing in mm a 3D model expects
==================  =========================================================================
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any


class ConfigError(ValueError):
    """A model configuration (registry entry, checkpoint manifest) that cannot be used; the message
    names the key, its value and where it came from."""


@dataclass(frozen=True)
class IntensityWindow:
    """A fixed intensity window: [a_min, a_max] mapped linearly onto [b_min, b_max] (MONAI's
    ``ScaleIntensityRanged``), clipped to the range when ``clip``."""

    window: tuple[float, float]
    range: tuple[float, float] = (0.0, 1.0)
    clip: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"window": list(self.window), "range": list(self.range), "clip": self.clip}


_TABULAR_FIELDS = {"name": str, "unit": str, "default": float, "missing": str, "mean": float, "std": float}


@dataclass(frozen=True)
class Preprocessing:
    """See the module docstring for the keys."""

    resize: tuple[int, int] | None = None
    size_multiple: int = 32
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    color: str | None = None
    threshold: float = 0.5
    score_threshold: float = 0.3
    roi_size: tuple[int, int, int] | None = None
    overlap: float = 0.5
    sw_batch_size: int = 1
    blend: str = "gaussian"
    slab_windows: int = 2
    intensity: str | IntensityWindow = "percentile"
    min_size: int = 2
    resize3d: tuple[int, int, int] | None = None
    tabular: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    axcodes: str | None = None
    pixdim: tuple[float, ...] | None = None

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, *, where: str = "preprocessing") -> Preprocessing:
        """Check every key of ``values`` (see the module docstring); ConfigError naming ``where``."""
        return cls().merged(values, where=where)

    def merged(self, values: Mapping[str, Any] | None, *, where: str = "preprocessing") -> Preprocessing:
        """A copy with the keys of ``values`` laid over this one's, each checked."""
        if values is None:
            return self
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: preprocessing must be an object of keys, got {type(values).__name__}")
        known = self.keys()
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
                raise ConfigError(f"{where}: unknown preprocessing key {key!r}{hint}")
            changes[key] = _CHECKS[key](value, f"{where}: preprocessing {key!r}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """All keys as JSON values."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, IntensityWindow):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = [dict(v) if isinstance(v, dict) else v for v in value]
            out[f.name] = value
        return out

    def channel_stats(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) for ``channels`` input channels (a single value applies to every channel)."""
        mean = self.mean or (0.0,)
        std = self.std or (1.0,)
        if len(mean) == 1:
            mean = mean * channels
        if len(std) == 1:
            std = std * channels
        return mean, std


# -- value checks: each returns the typed value or raises ConfigError naming ``what`` -------------------

def _fail(what: str, value: Any, expected: str) -> ConfigError:
    text = repr(value)
    text = text if len(text) <= 60 else text[:59] + "…"
    return ConfigError(f"{what} is {text}, expected {expected}")


def _number(value: Any, what: str, expected: str = "a number") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(what, value, expected)
    return float(value)


def _whole(value: Any, what: str, lowest: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise _fail(what, value, f"a whole number >= {lowest}")
    return int(value)


def _sizes(n: int, optional: bool = True) -> Any:
    def check(value: Any, what: str) -> tuple[int, ...] | None:
        if value is None and optional:
            return None
        if not isinstance(value, (list, tuple)) or len(value) != n or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            raise _fail(what, value, f"{n} positive whole numbers" + (" or null" if optional else ""))
        return tuple(int(v) for v in value)
    return check


def _numbers(positive: bool = False) -> Any:
    def check(value: Any, what: str) -> tuple[float, ...] | None:
        if value is None:
            return None
        expected = "a list of " + ("positive " if positive else "") + "numbers"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise _fail(what, value, expected)
        out = tuple(_number(v, what, expected) for v in value)
        if positive and any(v <= 0 for v in out):
            raise _fail(what, value, expected)
        return out
    return check


def _choice(*options: Any) -> Any:
    def check(value: Any, what: str) -> Any:
        if value not in options:
            raise _fail(what, value, "one of " + ", ".join(repr(o) for o in options))
        return value
    return check


def _fraction(value: Any, what: str) -> float:
    number = _number(value, what, "a number from 0 to 1")
    if not 0.0 <= number <= 1.0:
        raise _fail(what, value, "a number from 0 to 1")
    return number


def _overlap(value: Any, what: str) -> float:
    number = _number(value, what, "a number from 0 up to (not including) 1")
    if not 0.0 <= number < 1.0:
        raise _fail(what, value, "a number from 0 up to (not including) 1")
    return number


def _intensity(value: Any, what: str) -> str | IntensityWindow:
    if value == "percentile":
        return "percentile"
    expected = '"percentile" or {"window": [a_min, a_max], "range": [b_min, b_max], "clip": true/false}'
    if not isinstance(value, Mapping) or "window" not in value or set(value) - {"window", "range", "clip"}:
        raise _fail(what, value, expected)
    window = _numbers()(value["window"], f"{what} window")
    rng = _numbers()(value.get("range", (0.0, 1.0)), f"{what} range")
    if window is None or len(window) != 2 or window[0] == window[1]:
        raise _fail(f"{what} window", value["window"], "two different numbers [a_min, a_max]")
    if rng is None or len(rng) != 2:
        raise _fail(f"{what} range", value.get("range"), "two numbers [b_min, b_max]")
    clip = value.get("clip", False)
    if not isinstance(clip, bool):
        raise _fail(f"{what} clip", clip, "true or false")
    return IntensityWindow((window[0], window[1]), (rng[0], rng[1]), clip)


def _axcodes(value: Any, what: str) -> str | None:
    if value is None:
        return None
    axis = {"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}
    axes = [axis.get(c) for c in value.upper()] if isinstance(value, str) else []
    if len(axes) not in (2, 3) or None in axes or len(set(axes)) != len(axes):
        raise _fail(what, value, 'orientation letters, one of L/R, P/A, I/S per axis (e.g. "RAS")')
    return value


def _tabular(value: Any, what: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, (list, tuple)):
        raise _fail(what, value, "a list of features {name, unit, default, missing, mean, std}")
    out = []
    names: set[str] = set()
    for n, feature in enumerate(value):
        where = f"{what} feature {n + 1}"
        if not isinstance(feature, Mapping) or not isinstance(feature.get("name"), str) or not feature["name"]:
            raise _fail(where, feature, "an object with a non-empty 'name'")
        unknown = sorted(set(feature) - set(_TABULAR_FIELDS))
        if unknown:
            raise ConfigError(f"{where} ({feature['name']!r}): unknown field(s) {unknown}; known: "
                              f"{', '.join(_TABULAR_FIELDS)}")
        for key, kind in _TABULAR_FIELDS.items():
            if key in feature and feature[key] is not None:
                if kind is str and not isinstance(feature[key], str):
                    raise _fail(f"{where} {key!r}", feature[key], "a string")
                if kind is float:
                    _number(feature[key], f"{where} {key!r}")
        if feature["name"] in names:
            raise ConfigError(f"{where}: the name {feature['name']!r} is used twice")
        names.add(feature["name"])
        out.append(dict(feature))
    return tuple(out)


_CHECKS: dict[str, Any] = {
    "resize": _sizes(2),
    "size_multiple": _whole,
    "mean": _numbers(),
    "std": _numbers(positive=True),
    "color": _choice(None, "rgb"),
    "threshold": _fraction,
    "score_threshold": _fraction,
    "roi_size": _sizes(3),
    "overlap": _overlap,
    "sw_batch_size": _whole,
    "blend": _choice("gaussian", "constant"),
    "slab_windows": _whole,
    "intensity": _intensity,
    "min_size": _whole,
    "resize3d": _sizes(3),
    "tabular": _tabular,
    "axcodes": _axcodes,
    "pixdim": _numbers(positive=True),
}
