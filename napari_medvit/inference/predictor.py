"""Predictor: runs a registered model on a numpy image and returns numpy results in image space.

``Predictor(model, device, precision).predict_iter(image, meta)`` is a generator: it yields
:class:`Progress` after each step and returns a :class:`Prediction` (``StopIteration.value``), so a
GUI worker can show progress and stop between steps. ``predict(...)`` drives the same generator
with plain callbacks (``progress=cb``, ``should_stop=cb``) for scripts and the CLI.

The predictor is a thin facade: it holds the model on its device with the model's resolved
configuration (:func:`napari_medvit.models.config.config_of`) and hands each image to the runner of
the model's task (:mod:`napari_medvit.inference.runners`): 2D segmentation and classification
(:mod:`~napari_medvit.inference.frames`: frames, and volumes slice by slice; a volume stored sagittal
or coronal is segmented on its acquired slices), 3D segmentation by sliding window
(:mod:`~napari_medvit.inference.segment3d`), detection (:mod:`~napari_medvit.inference.detect`),
and whole-volume classification with or without tabular data (:mod:`~napari_medvit.inference.volume`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator
from typing import Any

import torch

from napari_medvit.inference.options import DEVICES, PRECISIONS
from napari_medvit.inference.prediction import Overlay, Prediction
from napari_medvit.inference.runners import Cancelled, Progress, Runner, runner_class
from napari_medvit.io.meta import ImageMeta
from napari_medvit.models.config import ResolvedConfig, config_of
from napari_medvit.transforms.preprocessing import Preprocessing

__all__ = ["Cancelled", "Overlay", "Prediction", "Predictor", "Progress", "autocast_dtype", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an unavailable explicit choice raises ValueError."""
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available (torch.cuda.is_available() is False)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but Apple MPS is not available on this machine")
    if name != "cpu" and not name.startswith(("cuda", "mps")):
        raise ValueError(f"unknown device {name!r}; choose one of {DEVICES}")
    return torch.device(name)


def autocast_dtype(precision: str) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


class Predictor:
    """Holds a model on a device and runs it; keep one per model between runs."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "auto", precision: str = "fp32",
                 *, batch_size: int = 4, resize: tuple[int, int] | None | str = "model",
                 explainer: Callable[[torch.nn.Module], Any] | None = None) -> None:
        """``resize``: "model" (the model's ``resize``), None (native size padded to ``size_multiple``)
        or (H, W). ``explainer(model)`` (optional) is a context manager that captures attention while
        the model runs and then lists it with ``.maps()``: objects with ``name`` and ``heads``
        (B, H, h, w) on a grid covering the model input (see ``napari_medvit.explain``)."""
        try:
            self.config: ResolvedConfig = config_of(model)
        except ValueError:
            raise ValueError("Predictor needs a model made by napari_medvit.models.create_model "
                             "(no medvit_config found)") from None
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = self.config.spec
        self.pre: Preprocessing = self.config.preprocessing
        self.device = resolve_device(device)
        self.precision = precision
        self._amp_dtype = autocast_dtype(precision)
        self.batch_size = batch_size
        if isinstance(resize, str) and resize != "model":
            raise ValueError(f'resize must be "model", None or (H, W), got {resize!r}')
        self.resize: tuple[int, int] | None = self.pre.resize if isinstance(resize, str) else resize
        if self.config.dims == 3:
            self.resize = None  # 3D models run by sliding window at the image's own grid
        if self.config.dims == 2 and self.config.task in ("classify", "detect") and not self.resize:
            raise ValueError(f"{self.config.name} runs at a fixed input size: it needs resize")
        self.explainer = explainer
        self.model = model.to(self.device).eval()
        self.class_names = self.config.class_names
        self.runner: Runner = runner_class(self.config)(self)

    # -- public ---------------------------------------------------------------------------------
    def predict(self, image: Any, meta: ImageMeta | None = None, *,
                progress: Callable[[Progress], None] | None = None,
                should_stop: Callable[[], bool] | None = None, tabular: Any = None) -> Prediction:
        gen = self.predict_iter(image, meta, tabular=tabular)
        while True:
            if should_stop is not None and should_stop():
                gen.close()
                raise Cancelled("prediction cancelled")
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if progress is not None:
                progress(event)

    def predict_iter(self, image: Any, meta: ImageMeta | None = None, *,
                     tabular: Any = None) -> Generator[Progress, None, Prediction]:
        """``tabular``: for image + tabular models (DAFT), a mapping feature name -> value (None
        for missing) or a ready vector."""
        prediction = yield from self.runner.run(image, meta, tabular)
        return self._checked(prediction)

    def _checked(self, prediction: Prediction) -> Prediction:
        """The output contract: a run carries only the overlay kinds its family's adapter declares."""
        extra = sorted({o.kind for o in prediction.overlays} - set(self.config.outputs))
        if extra:
            raise RuntimeError(f"{self.config.name}: the run produced overlay kind(s) {extra} that its adapter "
                               f"{type(self.config.adapter).__name__} does not declare (outputs {self.config.outputs})")
        return prediction

    def retabulate(self, tabular: Any) -> Prediction:
        """Image + tabular models: re-run only the tabular-dependent part on the last image."""
        again = getattr(self.runner, "retabulate", None)
        if again is None:
            raise RuntimeError(f"{self.config.name} takes no tabular data")
        return self._checked(again(tabular))

    @property
    def tabular_features(self) -> tuple[dict[str, Any], ...]:
        """The tabular inputs: the checkpoint manifest's list if it has one, else the registry's."""
        return self.pre.tabular

    # -- what the runners share ---------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype)

    def provenance(self, t0: float, **extra: Any) -> dict[str, Any]:
        info = getattr(self.model, "checkpoint_info", None)
        return {
            "model": self.config.name,
            "weights": info.label if info else "unknown",
            "trained": bool(info.trained) if info else False,
            "demo_weights": bool(((info.manifest or {}).get("extra") or {}).get("demo")) if info else False,
            "checkpoint": info.source if info else "",
            "checkpoint_sha256": info.file_sha256 if info else "",
            "device": str(self.device),
            "precision": self.precision,
            "input_size": list(self.resize) if self.resize else "native",
            "seconds": round(time.perf_counter() - t0, 3),
            **extra,
        }
