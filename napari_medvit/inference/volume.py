"""Whole-volume classification: DAFT's image-only 3D ResNet, and DAFT itself (image + tabular).

The volume goes through :func:`~napari_medvit.transforms.prepare.prepare_volume_classifier` (robustly
scaled to 0..1, resampled trilinearly to ``resize3d``); the result is one probability vector (K,) and
its argmax. :class:`TabularRunner` keeps the last image's features, so that a changed tabular value
re-runs only the DAFT block and the head (:meth:`TabularRunner.retabulate`, "what if age were 80?").
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from napari_medvit.inference.prediction import AFFINE, Overlay, Prediction, probabilities_overlay
from napari_medvit.inference.runners import Runner, Steps
from napari_medvit.io.meta import ImageMeta
from napari_medvit.transforms import tabular_names, tabular_vector
from napari_medvit.transforms.prepare import prepare_volume_classifier


class ClassifyVolumeRunner(Runner):
    def run(self, image: Any, meta: ImageMeta | None, tabular: Any = None) -> Steps:
        t0 = time.perf_counter()
        image = np.asarray(image)
        self.check(image, meta)
        yield self.progress(0, 2, "preparing volume", t0)
        x = prepare_volume_classifier(image, self.predictor.pre, device=self.predictor.device)
        yield self.progress(1, 2, f"running {self.name}", t0)
        with torch.inference_mode(), self.autocast():
            logits = self.predictor.model(x)
        yield self.progress(2, 2, "post-processing", t0)
        return self.classification(logits, meta, t0, input_size=list(x.shape[2:]))

    def check(self, image: np.ndarray, meta: ImageMeta | None) -> None:
        if image.ndim != 3 or (meta is not None and meta.rgb):
            raise ValueError(f"{self.config.name} takes a 3D single-channel volume; "
                             f"got an array of shape {image.shape}")

    def classification(self, logits: torch.Tensor, meta: ImageMeta | None, t0: float, *,
                       overlays: list[Overlay] | None = None, extras: dict[str, np.ndarray] | None = None,
                       **provenance: Any) -> Prediction:
        """A whole-input classification from the model's (1, K) logits: softmax probabilities and their argmax."""
        probs = torch.softmax(logits.float(), dim=-1)[0].cpu().numpy()
        names = self.config.class_names
        return Prediction(task="classify", model_name=self.config.name, labels=np.asarray(probs.argmax()),
                          probabilities=probs, class_names=names,
                          overlays=[probabilities_overlay(probs, names), *(overlays or [])], meta=meta,
                          extras=extras or {}, provenance=self.provenance(t0, **provenance))


class TabularRunner(ClassifyVolumeRunner):
    """DAFT: the image's features once per image, then the tabular-dependent part per tabular row."""

    def __init__(self, predictor: Any) -> None:
        super().__init__(predictor)
        self.image_features: torch.Tensor | None = None
        self.image_meta: ImageMeta | None = None

    @property
    def features(self) -> tuple[dict[str, Any], ...]:
        return self.predictor.pre.tabular

    def vector(self, tabular: Any) -> torch.Tensor:
        """The model's tabular input from a mapping (feature name -> value, None for missing) or a ready vector."""
        if tabular is None:
            tabular = {}
        if isinstance(tabular, dict):
            vec = tabular_vector(self.features, tabular)
        else:
            vec = np.asarray(tabular, dtype=np.float32).reshape(-1)
        n = getattr(self.predictor.model, "n_tabular", vec.size)
        if vec.size != n:
            raise ValueError(f"{self.config.name} takes {n} tabular values, got {vec.size}")
        return torch.from_numpy(vec)[None].to(self.predictor.device)

    def run(self, image: Any, meta: ImageMeta | None, tabular: Any = None) -> Steps:
        t0 = time.perf_counter()
        image = np.asarray(image)
        self.check(image, meta)
        tab = self.vector(tabular)
        yield self.progress(0, 2, "preparing volume", t0)
        x = prepare_volume_classifier(image, self.predictor.pre, device=self.predictor.device)
        yield self.progress(1, 2, f"running {self.name}", t0)
        with torch.inference_mode(), self.autocast():
            self.image_features = self.predictor.model.image_features(x)
        self.image_meta = meta
        prediction = self.retabulate(tab)
        prediction.provenance = self.provenance(t0)
        return prediction

    def retabulate(self, tabular: Any) -> Prediction:
        """Re-run only the tabular-dependent part (the DAFT block and head) on the last image."""
        if self.image_features is None:
            raise RuntimeError("retabulate needs a previous prediction on an image")
        t0 = time.perf_counter()
        tab = tabular if isinstance(tabular, torch.Tensor) else self.vector(tabular)
        with torch.inference_mode(), self.autocast():
            out = self.predictor.model.forward_from_features(self.image_features, tab)
        affine = np.stack([out["alpha"][0].float().cpu().numpy(), out["beta"][0].float().cpu().numpy()])
        return self.classification(
            out["logits"], self.image_meta, t0,
            overlays=[Overlay(AFFINE, "DAFT affine", affine,
                              description="DAFT's per-channel scale (alpha) and shift (beta) of the image features")],
            extras={"tabular": tab[0].float().cpu().numpy(), "tabular_names": np.array(tabular_names(self.features))})
