"""Image geometry carried beside every array the readers return.

Conventions (one for the whole package):

* Spatial arrays are stored slowest axis first: 3D volumes as ``(z, y, x)``, 2D images as
  ``(y, x)``; a time axis, if any, comes first ``(t, z, y, x)``; an RGB channel axis, if any,
  comes last (``rgb=True``) and is not a spatial axis.
* World coordinates are millimetres in DICOM's patient system (LPS) with the axis order
  reversed to match the array: world = ``(S, P, L)`` for ``(z, y, x)``. napari then shows axial
  slices in the radiological convention (anterior up, the patient's left on the right of the
  screen) without any extra flip.
* ``affine`` maps a (spatial) array index to world coordinates:
  ``world = direction @ diag(spacing) @ index + origin``.

Format-specific details needed for an exact round trip (the NIfTI header geometry, DICOM
tags) live in ``extra``, which stays JSON-serialisable so that the meta survives in
``layer.metadata`` and in session files.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

META_KEY = "medvit_meta"  # key under which layers carry ImageMeta.to_dict()


@dataclass
class ImageMeta:
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[tuple[float, ...], ...]
    axes: tuple[str, ...]
    source_path: str | None = None
    modality: str | None = None
    rgb: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.spacing)
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = tuple(tuple(float(v) for v in row) for row in self.direction)
        self.axes = tuple(str(a) for a in self.axes)
        if len(self.origin) != n or len(self.direction) != n or any(len(r) != n for r in self.direction):
            raise ValueError(
                f"ImageMeta: spacing {self.spacing}, origin {self.origin} and direction "
                f"{self.direction} must all describe {n} spatial axes"
            )
        if any(s <= 0 or not np.isfinite(s) for s in self.spacing):
            raise ValueError(f"ImageMeta: spacing must be positive and finite, got {self.spacing}")

    # -- geometry ---------------------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        """Whether ``spacing`` is a physical size (mm): true for NIfTI and DICOM; false for photos and
        frames (their spacing is one pixel) and for layers without geometry (``extra["calibrated"]``)."""
        return bool(self.extra.get("calibrated", True))

    @property
    def ndim(self) -> int:
        """Number of spatial axes the geometry describes (the last ``ndim`` non-channel axes)."""
        return len(self.spacing)

    @property
    def affine(self) -> np.ndarray:
        """(ndim+1, ndim+1) matrix mapping a spatial array index to world millimetres."""
        n = self.ndim
        a = np.eye(n + 1)
        a[:n, :n] = np.asarray(self.direction) @ np.diag(self.spacing)
        a[:n, n] = self.origin
        return a

    @classmethod
    def from_affine(cls, affine: np.ndarray, axes: tuple[str, ...], **kwargs: Any) -> ImageMeta:
        """Split an index-to-world affine into spacing, direction and origin."""
        affine = np.asarray(affine, dtype=float)
        n = affine.shape[0] - 1
        if affine.shape != (n + 1, n + 1) or n < 1:
            raise ValueError(f"affine must be a square (n+1, n+1) matrix, got shape {affine.shape}")
        linear = affine[:n, :n]
        spacing = np.linalg.norm(linear, axis=0)
        if np.any(spacing == 0):
            raise ValueError(f"affine has a zero-length axis: {affine.tolist()}")
        direction = linear / spacing
        return cls(
            spacing=tuple(spacing),
            origin=tuple(affine[:n, n]),
            direction=tuple(map(tuple, direction)),
            axes=axes,
            **kwargs,
        )

    @classmethod
    def identity(cls, ndim: int, *, rgb: bool = False, **kwargs: Any) -> ImageMeta:
        """Unit spacing, no rotation, at the origin: a frame's (or an unknown image's) geometry, uncalibrated
        (its spacing is a pixel, not a length) unless ``extra`` says otherwise."""
        axes = ("z", "y", "x")[-ndim:] if ndim <= 3 else tuple(f"d{i}" for i in range(ndim))
        kwargs["extra"] = {"calibrated": False, **(kwargs.get("extra") or {})}
        return cls(
            spacing=(1.0,) * ndim,
            origin=(0.0,) * ndim,
            direction=tuple(tuple(float(i == j) for j in range(ndim)) for i in range(ndim)),
            axes=axes,
            rgb=rgb,
            **kwargs,
        )

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spacing"] = list(self.spacing)
        d["origin"] = list(self.origin)
        d["direction"] = [list(r) for r in self.direction]
        d["axes"] = list(self.axes)
        d["extra"] = copy.deepcopy(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageMeta:
        try:
            return cls(
                spacing=tuple(d["spacing"]),
                origin=tuple(d["origin"]),
                direction=tuple(tuple(r) for r in d["direction"]),
                axes=tuple(d["axes"]),
                source_path=d.get("source_path"),
                modality=d.get("modality"),
                rgb=bool(d.get("rgb", False)),
                extra=copy.deepcopy(d.get("extra", {})),
            )
        except KeyError as exc:
            raise ValueError(f"ImageMeta dict lacks the field {exc.args[0]!r}: {sorted(d)}") from None

    def spatial_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The spatial part of an array shape described by this meta (drops t and channels)."""
        if self.rgb:
            shape = shape[:-1]
        return tuple(shape[-self.ndim :])
