"""2D models on frames, and on volumes slice by slice along the leading axes.

The image goes through the one input pipeline (:mod:`napari_medvit.transforms.prepare`): scaled to
0..1 as a whole (so the slices of a volume share one scaling), then each batch of slices prepared
at the model's input size; outputs and maps come back onto the image grid with
:func:`~napari_medvit.transforms.prepare.restore_frames`. A segmentation of a volume the reader put
into display order (stored sagittal or coronal, :mod:`napari_medvit.io.orientation`) runs on its
acquired slices and is put back on the display grid.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_medvit.inference.prediction import ATTENTION, MASK, Overlay, Prediction, mask_overlay, probabilities_overlay
from napari_medvit.inference.runners import Runner, Steps
from napari_medvit.io.meta import ImageMeta
from napari_medvit.io.orientation import stored_permutation, to_display, to_stored
from napari_medvit.transforms.prepare import prepare_frames, restore_frames, unit_frames


@dataclass
class _Map:
    data: list[np.ndarray] = field(default_factory=list)  # (B, H, W) per batch
    heads: list[np.ndarray] = field(default_factory=list)  # (B, heads, H, W) per batch
    visible: bool = False
    description: str = ""


class FrameRunner(Runner):
    """The slice loop; subclasses turn the model's main output into per-slice results."""

    acquired_slices = False  # run a reordered volume on its stored (acquired) slices

    def run(self, image: Any, meta: ImageMeta | None, tabular: Any = None) -> Steps:
        image = np.asarray(image)
        if not (self.acquired_slices and meta is not None and stored_permutation(meta) is not None):
            return (yield from self._run(image, meta))
        prediction = yield from self._run(to_stored(image, meta), meta)
        return _to_display(prediction, meta)

    def _run(self, image: np.ndarray, meta: ImageMeta | None) -> Steps:
        t0 = time.perf_counter()
        rgb = meta.rgb if meta is not None else (image.ndim == 3 and image.shape[-1] in (3, 4))
        spatial = image.shape[:-1] if rgb else image.shape
        if len(spatial) < 2:
            raise ValueError(f"{self.config.name} needs an image with at least 2 spatial axes, got shape {image.shape}")
        yield self.progress(0, 1, "preparing image", t0)
        unit = unit_frames(image, rgb)
        h, w = spatial[-2:]
        slices: np.ndarray = unit.reshape((-1, h, w, unit.shape[-1]) if rgb else (-1, h, w))
        size = self.predictor.batch_size
        n_batches = -(-slices.shape[0] // size)
        outputs: list[np.ndarray] = []
        maps: dict[str, _Map] = {}
        for b, start in enumerate(range(0, slices.shape[0], size)):
            yield self.progress(b, n_batches, f"running {self.name}", t0)
            outputs.append(self._batch(slices[start:start + size], rgb, maps))
        yield self.progress(n_batches, n_batches, "post-processing", t0)
        lead = tuple(spatial[:-2])
        overlays = [_attention(name, m, lead, (h, w)) for name, m in maps.items()]
        return self.finish(np.concatenate(outputs), tuple(spatial), overlays, meta, t0)

    @torch.inference_mode()
    def _batch(self, batch: np.ndarray, rgb: bool, maps: dict[str, _Map]) -> np.ndarray:
        p = self.predictor
        frames = prepare_frames(batch, p.pre, self.config.in_chans, rgb=rgb, size=p.resize, device=p.device)
        capture = p.explainer(p.model) if p.explainer is not None else contextlib.nullcontext()
        with capture as cap, self.autocast():
            main, found = self.config.adapter.forward(p.model, frames.x)
        for m in found:
            entry = maps.setdefault(m.name, _Map(visible=m.visible, description=m.description))
            entry.data.append(restore_frames(m.tensor, frames.grid)[:, 0])
        if cap is not None:
            captured = cap.maps()
            shown = self.config.adapter.shown_map([m.name for m in captured])
            for m in captured:
                entry = maps.setdefault(m.name, _Map(visible=m.name == shown, description=m.description))
                per_head = restore_frames(m.heads, frames.grid)
                entry.heads.append(per_head)
                entry.data.append(per_head.mean(axis=1))
        return self.outputs(main, frames.grid)

    def outputs(self, main: torch.Tensor, grid: Any) -> np.ndarray:
        raise NotImplementedError

    def finish(self, outputs: np.ndarray, spatial: tuple[int, ...], overlays: list[Overlay],
               meta: ImageMeta | None, t0: float) -> Prediction:
        raise NotImplementedError


class Segment2DRunner(FrameRunner):
    """Binary 2D segmentation: the foreground probability, thresholded at ``threshold``."""

    acquired_slices = True

    def outputs(self, main: torch.Tensor, grid: Any) -> np.ndarray:
        if main.shape[1] != 1:
            raise ValueError(f"{self.config.name}: {main.shape[1]}-class segmentation is not supported yet")
        return restore_frames(torch.sigmoid(main.float()), grid)[:, 0]

    def finish(self, outputs: np.ndarray, spatial: tuple[int, ...], overlays: list[Overlay],
               meta: ImageMeta | None, t0: float) -> Prediction:
        probs = outputs.reshape(spatial)
        labels = (probs > self.predictor.pre.threshold).astype(np.uint8)
        names = self.config.class_names
        return Prediction(task="segment", model_name=self.config.name, labels=labels, probabilities=probs,
                          class_names=names, overlays=[mask_overlay(labels, names), *overlays], meta=meta,
                          provenance=self.provenance(t0))


class ClassifyFramesRunner(FrameRunner):
    """A 2D classifier: one probability vector per frame (per slice of a volume)."""

    def outputs(self, main: torch.Tensor, grid: Any) -> np.ndarray:
        return torch.softmax(main.float(), dim=-1).cpu().numpy()

    def finish(self, outputs: np.ndarray, spatial: tuple[int, ...], overlays: list[Overlay],
               meta: ImageMeta | None, t0: float) -> Prediction:
        lead = spatial[:-2]
        probs = outputs.reshape(*lead, outputs.shape[-1])
        names = self.config.class_names
        return Prediction(task="classify", model_name=self.config.name, labels=probs.argmax(axis=-1),
                          probabilities=probs, class_names=names,
                          overlays=[probabilities_overlay(probs, names), *overlays], meta=meta,
                          provenance=self.provenance(t0))


def _attention(name: str, m: _Map, lead: tuple[int, ...], hw: tuple[int, int]) -> Overlay:
    data = np.concatenate(m.data).reshape(*lead, *hw)
    heads = None
    if m.heads:
        stacked = np.concatenate(m.heads)
        heads = stacked.reshape(*lead, stacked.shape[1], *hw)
    return Overlay(ATTENTION, name, data, heads=heads, visible=m.visible, description=m.description)


def _to_display(prediction: Prediction, meta: ImageMeta) -> Prediction:
    """A prediction on a volume's stored slices, put back into the display order of its image."""
    prediction.labels = to_display(prediction.labels, meta, rgb=False)
    prediction.probabilities = to_display(prediction.probabilities, meta, rgb=False)
    for o in prediction.overlays:
        if o.kind == MASK:
            o.data = prediction.labels
        elif o.kind == ATTENTION:
            o.data = to_display(o.data, meta, rgb=False)
            if o.heads is not None:  # (*lead, heads, h, w): the heads axis first while reordering
                o.heads = np.moveaxis(to_display(np.moveaxis(o.heads, -3, 0), meta, rgb=False), 0, -3)
    prediction.provenance["slices"] = "acquired (stored) slices of a volume shown reordered"
    return prediction
