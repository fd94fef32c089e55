"""Per-task runners behind :class:`~napari_medvit.inference.predictor.Predictor`.

A runner turns one image into a :class:`~napari_medvit.inference.prediction.Prediction` for one kind of
task, as a generator of :class:`Progress` events; the predictor picks it from the model's resolved
configuration (:data:`RUNNERS`: task and dimensionality; image + tabular models by their ``tabular``
preprocessing) and hands it itself (model, device, precision, batch size, input size, explainer).
Everything family-specific comes from the configuration's adapter.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from napari_medvit.io.meta import ImageMeta
from napari_medvit.models.config import ResolvedConfig

if TYPE_CHECKING:
    from napari_medvit.inference.prediction import Prediction
    from napari_medvit.inference.predictor import Predictor


class Cancelled(RuntimeError):
    """Raised by :meth:`Predictor.predict` when ``should_stop()`` turned true."""


@dataclass
class Progress:
    done: int
    total: int
    message: str
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        if self.done <= 0 or self.total <= self.done:
            return None if self.done <= 0 else 0.0
        return self.elapsed_s / self.done * (self.total - self.done)

    def __str__(self) -> str:
        eta = self.eta_s
        tail = f", about {eta:.0f} s left" if eta else ""
        return f"{self.message} ({self.done}/{self.total}, {self.elapsed_s:.1f} s{tail})"


Steps = Generator[Progress, None, "Prediction"]


class Runner:
    """Base class: ``run(image, meta, tabular)`` yields progress and returns the prediction."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    @property
    def config(self) -> ResolvedConfig:
        return self.predictor.config

    @property
    def name(self) -> str:
        return self.predictor.config.spec.display_name

    def run(self, image: Any, meta: ImageMeta | None, tabular: Any = None) -> Steps:
        raise NotImplementedError

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return self.predictor.autocast()

    def progress(self, done: int, total: int, message: str, t0: float) -> Progress:
        return Progress(done, total, message, time.perf_counter() - t0)

    def provenance(self, t0: float, **extra: Any) -> dict[str, Any]:
        return self.predictor.provenance(t0, **extra)


# (task, dims) -> "module:Runner" (modules of this package, imported on first use)
RUNNERS = {
    ("segment", 2): "napari_medvit.inference.frames:Segment2DRunner",
    ("classify", 2): "napari_medvit.inference.frames:ClassifyFramesRunner",
    ("detect", 2): "napari_medvit.inference.detect:DetectRunner",
    ("segment", 3): "napari_medvit.inference.segment3d:Segment3DRunner",
    ("classify", 3): "napari_medvit.inference.volume:ClassifyVolumeRunner",
}
TABULAR_RUNNER = "napari_medvit.inference.volume:TabularRunner"


def runner_class(config: ResolvedConfig) -> type[Runner]:
    """The runner for a model; ValueError for a task the predictor does not run."""
    reference = TABULAR_RUNNER if config.preprocessing.tabular else RUNNERS.get((config.task, config.dims))
    if reference is None:
        raise ValueError(f"{config.name}: the predictor does not run {config.dims}D {config.task} models yet")
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)
