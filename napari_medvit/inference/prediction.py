"""What a run returns: a numpy-only :class:`Prediction` with typed :class:`Overlay` objects.

The napari adapter (:mod:`napari_medvit._layers`) renders overlays by their ``kind``
(:data:`napari_medvit.models.adapters.OVERLAY_KINDS`), never by their name; a model family's adapter
declares the kinds its runs carry (its output contract).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_medvit.io.meta import ImageMeta
from napari_medvit.models.adapters import AFFINE, ATTENTION, BOXES, MASK, OVERLAY_KINDS, PRIOR, PROBABILITIES

__all__ = ["AFFINE", "ATTENTION", "BOXES", "MASK", "OVERLAY_KINDS", "PRIOR", "PROBABILITIES", "Overlay", "Prediction"]


@dataclass
class Overlay:
    """One thing a run shows.

    ``kind``: mask (``data`` the label map), attention (``data`` the head-mean map on the image grid,
    ``heads`` (*lead, heads, H, W) per head), boxes (``data`` (Q, 4) as (y0, x0, y1, x1) pixels;
    ``attrs`` ``scores``, ``labels``, ``score_threshold``), prior (``data`` SMCA's log-Gaussians
    (decoder layers, heads, Q, h, w) on the feature grid; ``attrs`` ``image_shape``), class_probabilities
    (``data`` (*lead, K)), affine (``data`` (2, C): DAFT's alpha and beta). ``visible``: shown when the
    run's layers are added; ``description``: a tooltip for the user."""

    kind: str
    name: str
    data: np.ndarray
    heads: np.ndarray | None = None
    visible: bool = True
    description: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in OVERLAY_KINDS:
            raise ValueError(f"unknown overlay kind {self.kind!r}; known: {', '.join(OVERLAY_KINDS)}")


@dataclass
class Prediction:
    """Numpy-only result on the input image's grid.

    segment: ``labels`` and ``probabilities`` have the spatial shape of the input; for binary
    models ``probabilities`` is the foreground probability, for multi-class 3D models the
    probability of the winning class (a confidence map).
    classify: ``probabilities`` is (*lead, K) and ``labels`` (*lead) where ``lead`` is the input's
    spatial shape without its last two axes (empty for a 2D image: one vector, one label).
    detect: per query ``boxes`` (Q, 4), ``labels`` (Q,) best class and ``probabilities`` (Q,) its score.
    ``overlays``: what the viewer shows (see :class:`Overlay`). ``extras``: the model's other inputs
    and outputs: ``tabular`` (the input vector) and ``tabular_names`` (DAFT), ``reference`` (SMCA's
    normalised reference points), ``image_shape`` (detection).
    """

    task: str
    model_name: str
    labels: np.ndarray
    probabilities: np.ndarray
    class_names: tuple[str, ...] = ()
    boxes: np.ndarray | None = None  # detect: (Q, 4) as (y0, x0, y1, x1) in pixels of the input
    overlays: list[Overlay] = field(default_factory=list)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    meta: ImageMeta | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def overlays_of(self, kind: str) -> list[Overlay]:
        return [o for o in self.overlays if o.kind == kind]

    def overlay(self, kind: str) -> Overlay | None:
        """The first overlay of ``kind`` (None without one)."""
        found = self.overlays_of(kind)
        return found[0] if found else None

    @property
    def attention(self) -> dict[str, np.ndarray]:
        """Head-mean attention maps by overlay name."""
        return {o.name: o.data for o in self.overlays_of(ATTENTION)}

    @property
    def attention_heads(self) -> dict[str, np.ndarray]:
        """Per-head attention maps (*lead, heads, H, W) by overlay name (maps that have heads)."""
        return {o.name: o.heads for o in self.overlays_of(ATTENTION) if o.heads is not None}

    @property
    def log_gaussians(self) -> np.ndarray | None:
        prior = self.overlay(PRIOR)
        return None if prior is None else prior.data

    @property
    def affine(self) -> tuple[np.ndarray, np.ndarray] | None:
        """DAFT's (alpha, beta) of the last run, or None."""
        found = self.overlay(AFFINE)
        return None if found is None else (found.data[0], found.data[1])


def mask_overlay(labels: np.ndarray, class_names: tuple[str, ...], description: str = "") -> Overlay:
    return Overlay(MASK, "mask", labels, description=description, attrs={"class_names": list(class_names)})


def probabilities_overlay(probabilities: np.ndarray, class_names: tuple[str, ...]) -> Overlay:
    return Overlay(PROBABILITIES, "class probabilities", probabilities, attrs={"class_names": list(class_names)})


def boxes_overlay(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, score_threshold: float) -> Overlay:
    return Overlay(BOXES, "boxes", boxes, attrs={"scores": scores, "labels": labels,
                                                 "score_threshold": float(score_threshold)})
