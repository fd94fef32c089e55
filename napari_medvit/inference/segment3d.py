"""3D segmentation by MONAI's sliding window on the volume's own grid (or the model's, when it asks for one).

The volume goes through :func:`~napari_medvit.transforms.prepare.prepare_volume`; MONAI's
``sliding_window_inference`` runs in a helper thread so that each window is reported as progress and a
closed generator stops it at the next window. Slabs along z bound the memory: MONAI keeps K float32
outputs (and a weight map) per voxel of what it is given, so it gets one slab (plus half a window of
context on each side) at a time.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from napari_medvit.inference.prediction import Prediction, mask_overlay
from napari_medvit.inference.runners import Cancelled, Progress, Runner, Steps
from napari_medvit.io.meta import ImageMeta
from napari_medvit.transforms.prepare import PreparedVolume, prepare_volume, restore_volume


class Segment3DRunner(Runner):
    def run(self, image: Any, meta: ImageMeta | None, tabular: Any = None) -> Steps:
        t0 = time.perf_counter()
        image = np.asarray(image)
        self._check(image, meta)
        pre = self.predictor.pre
        yield self.progress(0, 1, "preparing volume", t0)
        volumes = image[None] if self.config.in_chans == 1 else image
        prepared = prepare_volume(volumes, pre, meta.affine if meta is not None else None)
        spatial = tuple(int(n) for n in prepared.x.shape[-3:])
        # no roi_size: the model takes the whole volume (TrUE-Net runs its own slices), one "window"
        roi = tuple(pre.roi_size) if pre.roi_size else spatial
        slabs = _slabs(spatial[0], roi[0], pre.slab_windows)
        total = sum(_count_windows((r1 - r0, *spatial[1:]), roi, pre.overlap) for r0, r1, _, _ in slabs)
        n_classes = max(len(self.config.class_names), 1)
        biggest = max(r1 - r0 for r0, r1, _, _ in slabs) * spatial[1] * spatial[2]
        buffer_mb = (n_classes + 1) * 4 * biggest / 2**20
        yield self.progress(0, total, f"{self.name}: {total} windows in {len(slabs)} slab(s), "
                            f"output buffer about {buffer_mb:.0f} MB", t0)
        labels = np.empty(spatial, dtype=np.uint8 if n_classes <= 255 else np.int32)
        confidence = np.empty(spatial, dtype=np.float32)
        windows = yield from self._slide(torch.from_numpy(prepared.x)[None], roi, slabs, total, labels, confidence, t0)
        yield self.progress(total, total, "post-processing", t0)
        return self._prediction(labels, confidence, prepared, meta, t0, roi_size=list(roi), overlap=pre.overlap,
                                windows=windows, slabs=len(slabs), output_buffer_mb=round(buffer_mb, 1))

    def _check(self, image: np.ndarray, meta: ImageMeta | None) -> None:
        name, channels = self.config.name, self.config.in_chans
        if meta is not None and meta.rgb:
            raise ValueError(f"{name} segments 3D volumes, not RGB images")
        if channels == 1 and image.ndim != 3:
            raise ValueError(f"{name} segments 3D single-channel volumes; got an array of shape {image.shape}")
        if channels > 1 and (image.ndim != 4 or image.shape[0] != channels):
            raise ValueError(f"{name} takes {channels} co-registered volumes stacked as (channel, z, y, x); "
                             f"got an array of shape {image.shape}")
        smallest = self.predictor.pre.min_size
        if min(image.shape[-3:]) < smallest:
            raise ValueError(f"{name} needs a volume with at least {smallest} voxels along each axis, "
                             f"got {image.shape[-3:]}")

    def _slide(self, x: torch.Tensor, roi: tuple[int, ...], slabs: list[tuple[int, int, int, int]], total: int,
               labels: np.ndarray, confidence: np.ndarray, t0: float) -> Generator[Progress, None, int]:
        """Run the windows of every slab in a helper thread, yielding progress per window; the windows run."""
        from monai.inferers import sliding_window_inference

        p, pre = self.predictor, self.predictor.pre
        events: queue.Queue[int] = queue.Queue()
        stop = threading.Event()
        failure: dict[str, BaseException] = {}
        done = [0]

        def network(window: torch.Tensor) -> torch.Tensor:
            if stop.is_set():
                raise Cancelled("prediction cancelled")
            with self.autocast():  # no inference_mode: MONAI updates the window outputs in place
                out = p.model(window).float()
            done[0] += window.shape[0]
            events.put(done[0])
            return out

        def work() -> None:
            try:
                with torch.no_grad():  # grad mode is per thread
                    for r0, r1, k0, k1 in slabs:
                        logits = sliding_window_inference(
                            x[:, :, r0:r1], roi, pre.sw_batch_size, network, overlap=pre.overlap, mode=pre.blend,
                            sw_device=p.device, device="cpu")[0]
                        labels[k0:k1], confidence[k0:k1] = _argmax_in_slabs(logits[:, k0 - r0:k1 - r0])
                        del logits
            except BaseException as exc:  # handed to the generator's thread
                failure["error"] = exc
            finally:
                events.put(-1)

        thread = threading.Thread(target=work, name="medvit-sliding-window", daemon=True)
        thread.start()
        try:
            while (n := events.get()) >= 0:
                yield self.progress(min(n, total), max(total, n), f"{self.name}: window", t0)
        finally:
            stop.set()  # also when the consumer closed us early: stop at the next window
            thread.join()
        if "error" in failure:
            raise failure["error"]
        return done[0]

    def _prediction(self, labels: np.ndarray, confidence: np.ndarray, prepared: PreparedVolume,
                    meta: ImageMeta | None, t0: float, **provenance: Any) -> Prediction:
        labels = restore_volume(labels, prepared, order=0)  # back onto the image's own grid
        confidence = restore_volume(confidence, prepared, order=1)
        names = self.config.class_names
        return Prediction(task="segment", model_name=self.config.name, labels=labels, probabilities=confidence,
                          class_names=names, overlays=[mask_overlay(labels, names)], meta=meta,
                          provenance=self.provenance(t0, **provenance))


def _slabs(n: int, roi: int, windows_per_slab: int) -> list[tuple[int, int, int, int]]:
    """Split ``n`` slices into slabs: (read start, read end, keep start, keep end).

    Each slab keeps ``roi * windows_per_slab`` slices and reads half a window more on each side,
    so that every kept slice has the context the whole-volume pass would give it.
    """
    core = max(roi * max(windows_per_slab, 1), 1)
    halo = roi // 2
    if n <= core + 2 * halo:
        return [(0, n, 0, n)]
    return [(max(0, k0 - halo), min(n, k0 + core + halo), k0, min(n, k0 + core)) for k0 in range(0, n, core)]


def _count_windows(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> int:
    """Number of windows MONAI's sliding_window_inference visits (for progress only)."""
    total = 1
    for size, r in zip(shape, roi, strict=True):
        size = max(size, r)
        step = max(int(r * (1 - overlap)), 1)
        total *= 1 if size == r else -(-(size - r) // step) + 1
    return total


def _argmax_in_slabs(logits: torch.Tensor, slab: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Labels and the winning class probability from (K, Z, Y, X) logits, a few slices at a time
    (softmax of all classes over a whole volume at once would double the memory)."""
    k = logits.shape[0]
    labels = np.empty(logits.shape[1:], dtype=np.uint8 if k <= 255 else np.int32)
    confidence = np.empty(logits.shape[1:], dtype=np.float32)
    for start in range(0, logits.shape[1], slab):
        part = logits[:, start:start + slab]
        if k == 1:
            p = torch.sigmoid(part[0])
            labels[start:start + slab] = (p > 0.5).numpy()
            confidence[start:start + slab] = torch.where(p > 0.5, p, 1 - p).numpy()
        else:
            p, idx = torch.softmax(part, dim=0).max(dim=0)
            labels[start:start + slab] = idx.numpy()
            confidence[start:start + slab] = p.numpy()
    return labels, confidence
