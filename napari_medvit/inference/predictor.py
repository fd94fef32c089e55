"""Predictor: runs a registered model on a numpy image and returns numpy results in image space.

``Predictor(model, device, precision).predict_iter(image, meta)`` is a generator: it yields
:class:`Progress` after each step and returns a :class:`Prediction` (``StopIteration.value``), so a
GUI worker can show progress and stop between steps. ``predict(...)`` drives the same generator
with plain callbacks (``progress=cb``, ``should_stop=cb``) for scripts and the CLI.

2D models run on 2D images directly and on volumes slice by slice along the leading axes; a volume
the reader put into display order (stored sagittal or coronal, :mod:`napari_medvit.io.orientation`)
is segmented on its acquired slices and the result put back on the display grid. 3D
segmentation models run by sliding window on the volume's own grid; 3D classifiers (DAFT, its
image-only 3D ResNet baseline) see the whole volume, robustly scaled to 0..1 and resampled
trilinearly to the model's ``resize3d``, and give one class-probability vector for it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_medvit.inference.options import DEVICES, PRECISIONS
from napari_medvit.io.meta import ImageMeta
from napari_medvit.io.orientation import stored_permutation, to_display, to_stored
from napari_medvit.models._registry import ModelSpec
from napari_medvit.transforms import scale_intensity_range, scale_to_unit
from napari_medvit.transforms.spatial import from_model_grid, to_model_grid


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


@dataclass
class Prediction:
    """Numpy-only result on the input image's grid.

    segment: ``labels`` and ``probabilities`` have the spatial shape of the input; for binary
    models ``probabilities`` is the foreground probability, for multi-class 3D models the
    probability of the winning class (a confidence map).
    classify: ``probabilities`` is (*lead, K) and ``labels`` (*lead) where ``lead`` is the input's
    spatial shape without its last two axes (empty for a 2D image: one vector, one label).
    ``attention`` maps (head-mean) have the input's spatial shape.
    detect: per query ``boxes`` (Q, 4), ``labels`` (Q,) best class and ``probabilities`` (Q,) its
    score; ``extras["log_gaussians"]`` holds SMCA's spatial priors on the feature grid.
    """

    task: str
    model_name: str
    labels: np.ndarray
    probabilities: np.ndarray
    attention: dict[str, np.ndarray] = field(default_factory=dict)
    attention_heads: dict[str, np.ndarray] = field(default_factory=dict)  # (*lead, heads, H, W) per map
    class_names: tuple[str, ...] = ()
    boxes: np.ndarray | None = None  # detect: (Q, 4) as (y0, x0, y1, x1) in pixels of the input
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    meta: ImageMeta | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


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
        """``explainer(model)`` (optional) is a context manager that captures attention while the
        model runs and then lists it with ``.maps()``: objects with ``name`` and ``heads``
        (B, H, h, w) on a grid covering the model input (see ``napari_medvit.explain``)."""
        spec: ModelSpec | None = getattr(model, "medvit_spec", None)
        if spec is None:
            raise ValueError("Predictor needs a model made by napari_medvit.models.create_model (no medvit_spec found)")
        if spec.task not in ("segment", "classify", "detect") or (spec.dims == 3 and spec.task == "detect"):
            raise ValueError(f"{spec.name}: the predictor does not run {spec.dims}D {spec.task} models yet")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = spec
        info = getattr(model, "checkpoint_info", None)
        manifest_pre = ((info.manifest or {}).get("preprocessing") or {}) if info is not None else {}
        # a checkpoint's own preprocessing (e.g. a MONAI bundle's window and spacing) wins over the registry's
        self.pre: dict[str, Any] = {**spec.preprocessing, **manifest_pre}
        self.device = resolve_device(device)
        self.precision = precision
        self._amp_dtype = autocast_dtype(precision)
        self.batch_size = batch_size
        self.resize = spec.preprocessing.get("resize") if resize == "model" else resize
        if spec.dims == 3:
            self.resize = None  # 3D models run by sliding window at the image's own grid
        if spec.dims == 2 and spec.task in ("classify", "detect") and not self.resize:
            raise ValueError(f"{spec.name} runs at a fixed input size: it needs resize")
        self.explainer = explainer
        self.model = model.to(self.device).eval()
        self.class_names = _class_names(model, spec)

    # -- public ---------------------------------------------------------------------------------
    def predict(self, image: np.ndarray, meta: ImageMeta | None = None, *,
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

    def predict_iter(self, image: np.ndarray, meta: ImageMeta | None = None, *,
                     tabular: Any = None) -> Generator[Progress, None, Prediction]:
        """``tabular``: for image + tabular models (DAFT), a mapping feature name -> value (None
        for missing) or a ready vector."""
        if "tabular" in self.pre:
            return (yield from self._predict_tabular(np.asarray(image), meta, tabular))
        if self.spec.dims == 3 and self.spec.task == "classify":
            return (yield from self._predict_volume_class(np.asarray(image), meta))
        if self.spec.dims == 3:
            return (yield from self._predict_volume(np.asarray(image), meta))
        if self.spec.task == "detect":
            return (yield from self._predict_boxes(np.asarray(image), meta))
        perm = stored_permutation(meta) if meta is not None and self.spec.task == "segment" else None
        if perm is None:
            return (yield from self._predict_slices(np.asarray(image), meta))
        # a volume stored sagittal or coronal: segment its acquired slices (the stored order),
        # not the display order's reformatted ones, and put the result back on the display grid
        prediction = yield from self._predict_slices(to_stored(np.asarray(image), meta), meta)
        prediction.labels = to_display(prediction.labels, meta, rgb=False)
        prediction.probabilities = to_display(prediction.probabilities, meta, rgb=False)
        prediction.attention = {k: to_display(v, meta, rgb=False) for k, v in prediction.attention.items()}
        prediction.attention_heads = {  # (*lead, heads, h, w): the heads axis first while reordering
            k: np.moveaxis(to_display(np.moveaxis(v, -3, 0), meta, rgb=False), 0, -3)
            for k, v in prediction.attention_heads.items()}
        prediction.provenance["slices"] = "acquired (stored) slices of a volume shown reordered"
        return prediction

    def _predict_slices(self, image: np.ndarray, meta: ImageMeta | None) -> Generator[Progress, None, Prediction]:
        """A 2D model on an image, or slice by slice along the leading axes of a volume."""
        t0 = time.perf_counter()
        rgb = meta.rgb if meta is not None else (image.ndim == 3 and image.shape[-1] in (3, 4))
        spatial = image.shape[:-1] if rgb else image.shape
        if len(spatial) < 2:
            raise ValueError(f"{self.spec.name} needs an image with at least 2 spatial axes, got shape {image.shape}")
        if rgb and image.shape[-1] == 4:
            image = image[..., :3]
        yield Progress(0, 1, "preparing image", time.perf_counter() - t0)
        unit = scale_to_unit(image, rgb=rgb)
        h, w = spatial[-2:]
        slices = unit.reshape((-1, h, w, unit.shape[-1]) if rgb else (-1, h, w))
        n = slices.shape[0]
        n_batches = -(-n // self.batch_size)

        chunks: list[tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]] = []
        for b, start in enumerate(range(0, n, self.batch_size)):
            yield Progress(b, n_batches, f"running {self.spec.display_name}", time.perf_counter() - t0)
            chunks.append(self._run_batch(slices[start:start + self.batch_size], rgb))
        yield Progress(n_batches, n_batches, "post-processing", time.perf_counter() - t0)
        probs = np.concatenate([c[0] for c in chunks])
        attention = {k: np.concatenate([c[1][k] for c in chunks]).reshape(spatial) for k in chunks[0][1]}
        lead = spatial[:-2]
        heads = {k: np.concatenate([c[2][k] for c in chunks]) for k in chunks[0][2]}
        heads = {k: v.reshape(*lead, v.shape[1], h, w) for k, v in heads.items()}

        if self.spec.task == "classify":
            labels = probs.argmax(axis=-1).reshape(lead)
            probs = probs.reshape(*lead, probs.shape[-1])
        else:
            threshold = float(self.pre.get("threshold", 0.5))
            labels = (probs > threshold).astype(np.uint8).reshape(spatial)
            probs = probs.reshape(spatial)
        return Prediction(
            task=self.spec.task,
            model_name=self.spec.name,
            labels=labels,
            probabilities=probs,
            attention=attention,
            attention_heads=heads,
            class_names=self.class_names,
            meta=meta,
            provenance=self._provenance(t0),
        )

    def _provenance(self, t0: float, **extra: Any) -> dict[str, Any]:
        info = getattr(self.model, "checkpoint_info", None)
        return {
            "model": self.spec.name,
            "weights": info.label if info else "unknown",
            "trained": bool(info.trained) if info else False,
            "checkpoint": info.source if info else "",
            "checkpoint_sha256": info.file_sha256 if info else "",
            "device": str(self.device),
            "precision": self.precision,
            "input_size": list(self.resize) if self.resize else "native",
            "seconds": round(time.perf_counter() - t0, 3),
            **extra,
        }

    @property
    def tabular_features(self) -> tuple[dict[str, Any], ...]:
        """The tabular inputs: the checkpoint manifest's list if it has one, else the registry's."""
        info = getattr(self.model, "checkpoint_info", None)
        manifest = (info.manifest or {}) if info is not None else {}
        return tuple(manifest.get("preprocessing", {}).get("tabular") or self.pre.get("tabular", ()))

    def _tabular_input(self, tabular: Any) -> torch.Tensor:
        from napari_medvit.transforms import tabular_vector

        if tabular is None:
            tabular = {}
        vec = tabular_vector(self.tabular_features, tabular) if isinstance(tabular, dict) else np.asarray(
            tabular, dtype=np.float32).reshape(-1)
        n = getattr(self.model, "n_tabular", vec.size)
        if vec.size != n:
            raise ValueError(f"{self.spec.name} takes {n} tabular values, got {vec.size}")
        return torch.from_numpy(vec)[None].to(self.device)

    def _check_volume(self, image: np.ndarray, meta: ImageMeta | None) -> None:
        if image.ndim != 3 or (meta is not None and meta.rgb):
            raise ValueError(f"{self.spec.name} takes a 3D single-channel volume; got an array of shape {image.shape}")

    def _volume_input(self, image: np.ndarray) -> torch.Tensor:
        """(1, 1, *resize3d) input of a 3D classifier: the volume robustly scaled to 0..1, resampled trilinearly."""
        size = tuple(self.pre.get("resize3d", image.shape))
        x = torch.from_numpy(scale_to_unit(image))[None, None].to(self.device)
        return F.interpolate(x, size=size, mode="trilinear", align_corners=False)

    def _predict_tabular(self, image: np.ndarray, meta: ImageMeta | None, tabular: Any) -> Generator[Progress, None, Prediction]:
        """Image + tabular classification (DAFT); the image features are kept for :meth:`retabulate`."""
        t0 = time.perf_counter()
        self._check_volume(image, meta)
        tab = self._tabular_input(tabular)
        yield Progress(0, 2, "preparing volume", time.perf_counter() - t0)
        x = self._volume_input(image)
        yield Progress(1, 2, f"running {self.spec.display_name}", time.perf_counter() - t0)
        with torch.inference_mode(), self._autocast():
            self._image_features = self.model.image_features(x)
        self._tabular_meta = meta
        prediction = self.retabulate(tab)
        prediction.provenance = self._provenance(t0)
        return prediction

    def retabulate(self, tabular: Any) -> Prediction:
        """Re-run only the tabular-dependent part (the DAFT block and head) on the last image."""
        features = getattr(self, "_image_features", None)
        if features is None:
            raise RuntimeError("retabulate needs a previous prediction on an image")
        t0 = time.perf_counter()
        tab = tabular if isinstance(tabular, torch.Tensor) else self._tabular_input(tabular)
        with torch.inference_mode(), self._autocast():
            out = self.model.forward_from_features(features, tab)
        from napari_medvit.transforms import tabular_names

        return self._classification(
            out["logits"], self._tabular_meta, t0,
            extras={"alpha": out["alpha"][0].float().cpu().numpy(), "beta": out["beta"][0].float().cpu().numpy(),
                    "tabular": tab[0].float().cpu().numpy(), "tabular_names": np.array(tabular_names(self.tabular_features))})

    def _classification(self, logits: torch.Tensor, meta: ImageMeta | None, t0: float, *,
                        extras: dict[str, np.ndarray] | None = None, **provenance: Any) -> Prediction:
        """A whole-input classification from the model's (1, K) logits: softmax probabilities and their argmax."""
        probs = torch.softmax(logits.float(), dim=-1)[0].cpu().numpy()
        return Prediction(task="classify", model_name=self.spec.name, labels=np.asarray(probs.argmax()),
                          probabilities=probs, class_names=self.class_names, meta=meta, extras=extras or {},
                          provenance=self._provenance(t0, **provenance))

    def _predict_volume_class(self, image: np.ndarray, meta: ImageMeta | None) -> Generator[Progress, None, Prediction]:
        """Image-only classification of a whole volume (DAFT's 3D ResNet baseline): one probability
        vector (K,) and its argmax, the volume prepared as DAFT's image input."""
        t0 = time.perf_counter()
        self._check_volume(image, meta)
        yield Progress(0, 2, "preparing volume", time.perf_counter() - t0)
        x = self._volume_input(image)
        yield Progress(1, 2, f"running {self.spec.display_name}", time.perf_counter() - t0)
        with torch.inference_mode(), self._autocast():
            logits = self.model(x)
        yield Progress(2, 2, "post-processing", time.perf_counter() - t0)
        return self._classification(logits, meta, t0, input_size=list(x.shape[2:]))

    def _predict_boxes(self, image: np.ndarray, meta: ImageMeta | None) -> Generator[Progress, None, Prediction]:
        """Detection on one 2D image: every query's box in pixel coordinates, its best class and score,
        and the SMCA spatial priors (log G of every decoder layer, head and query on the stride-32 grid)."""
        t0 = time.perf_counter()
        rgb = meta.rgb if meta is not None else (image.ndim == 3 and image.shape[-1] in (3, 4))
        spatial = image.shape[:-1] if rgb else image.shape
        if len(spatial) != 2:
            raise ValueError(f"{self.spec.name} detects in single 2D images; got an image of shape {image.shape}")
        yield Progress(0, 1, "preparing image", time.perf_counter() - t0)
        unit = scale_to_unit(image[..., :3] if rgb else image, rgb=rgb)
        x = self._to_input(unit[None], rgb)
        yield Progress(0, 1, f"running {self.spec.display_name}", time.perf_counter() - t0)
        with torch.inference_mode(), self._autocast():
            out = self.model.forward_all(x)
        yield Progress(1, 1, "post-processing", time.perf_counter() - t0)
        k = len(self.class_names) or out["pred_logits"].shape[-1] - 1
        probs = torch.sigmoid(out["pred_logits"][0, :, :k].float())  # focal-loss scores, no-object column dropped
        scores, labels = probs.max(dim=-1)
        cx, cy, bw, bh = out["pred_boxes"][0].float().unbind(-1)
        h, w = spatial
        boxes = torch.stack([(cy - bh / 2) * h, (cx - bw / 2) * w, (cy + bh / 2) * h, (cx + bw / 2) * w], dim=-1)
        log_g = torch.stack([g[0].float() for g in out.get("log_gaussians", [])]) if out.get("log_gaussians") else None
        extras = {"image_shape": np.array(spatial)}
        if "reference" in out:
            extras["reference"] = out["reference"][0].float().cpu().numpy()  # normalised (cx, cy)
        if log_g is not None:
            extras["log_gaussians"] = log_g.cpu().numpy()  # (layers, heads, Q, h/32, w/32)
        return Prediction(
            task="detect",
            model_name=self.spec.name,
            labels=labels.cpu().numpy(),
            probabilities=scores.cpu().numpy(),
            boxes=boxes.cpu().numpy(),
            extras=extras,
            class_names=self.class_names,
            meta=meta,
            provenance=self._provenance(t0),
        )

    def _predict_volume(self, image: np.ndarray, meta: ImageMeta | None) -> Generator[Progress, None, Prediction]:
        """3D segmentation with MONAI's sliding_window_inference, run in a helper thread so that
        each window is reported as progress and a closed generator stops it at the next window."""
        from monai.inferers import sliding_window_inference

        t0 = time.perf_counter()
        channels = self.spec.in_chans
        if meta is not None and meta.rgb:
            raise ValueError(f"{self.spec.name} segments 3D volumes, not RGB images")
        if channels == 1 and image.ndim != 3:
            raise ValueError(f"{self.spec.name} segments 3D single-channel volumes; got an array of shape {image.shape}")
        if channels > 1 and (image.ndim != 4 or image.shape[0] != channels):
            raise ValueError(f"{self.spec.name} takes {channels} co-registered volumes stacked as (channel, z, y, x); "
                             f"got an array of shape {image.shape}")
        spatial = image.shape[-3:]
        smallest = int(self.pre.get("min_size", 2))
        if min(spatial) < smallest:
            raise ValueError(f"{self.spec.name} needs a volume with at least {smallest} voxels along each axis, "
                             f"got {spatial}")
        pre = self.pre
        overlap = float(pre.get("overlap", 0.5))
        yield Progress(0, 1, "preparing volume", time.perf_counter() - t0)
        undo = None
        if meta is not None and (pre.get("axcodes") or pre.get("pixdim")):  # e.g. a bundle's RAS at 1.5x1.5x2 mm
            image, undo = to_model_grid(image, meta.affine, pre.get("axcodes"), pre.get("pixdim"))
            spatial = image.shape[-3:]
        volumes = image[None] if channels == 1 else image
        window = pre.get("intensity")
        if isinstance(window, dict):  # a fixed window, e.g. CT HU -175..250 -> 0..1
            unit = np.stack([scale_intensity_range(v, *window["window"], *window.get("range", (0.0, 1.0)),
                                                   clip=bool(window.get("clip", False))) for v in volumes])
        else:  # each channel (modality) scaled on its own intensity distribution
            unit = np.stack([scale_to_unit(v) for v in volumes])
        mean, std = float(pre.get("mean", (0.0,))[0]), float(pre.get("std", (1.0,))[0])
        x = torch.from_numpy((unit - mean) / std)[None]
        # no roi_size: the model takes the whole volume (TrUE-Net runs its own slices), one "window"
        roi = tuple(int(r) for r in pre["roi_size"]) if pre.get("roi_size") else tuple(spatial)
        # Slabs along z bound the memory: MONAI keeps K float32 outputs (and a weight map) per voxel of
        # what it is given, so it gets one slab (plus half a window of context on each side) at a time.
        slabs = _slabs(spatial[0], roi[0], int(pre.get("slab_windows", 2)))
        total = sum(_count_windows((r1 - r0, *spatial[1:]), roi, overlap) for r0, r1, _, _ in slabs)
        n_classes = max(len(self.class_names), 1)
        biggest = max(r1 - r0 for r0, r1, _, _ in slabs) * spatial[1] * spatial[2]
        buffer_mb = (n_classes + 1) * 4 * biggest / 2**20
        yield Progress(0, total, f"{self.spec.display_name}: {total} windows in {len(slabs)} slab(s), "
                       f"output buffer about {buffer_mb:.0f} MB", time.perf_counter() - t0)

        labels = np.empty(spatial, dtype=np.uint8 if n_classes <= 255 else np.int32)
        confidence = np.empty(spatial, dtype=np.float32)
        events: queue.Queue[int] = queue.Queue()
        stop = threading.Event()
        failure: dict[str, BaseException] = {}
        done = [0]

        def network(window: torch.Tensor) -> torch.Tensor:
            if stop.is_set():
                raise Cancelled("prediction cancelled")
            with self._autocast():  # no inference_mode: MONAI updates the window outputs in place
                out = self.model(window).float()
            done[0] += window.shape[0]
            events.put(done[0])
            return out

        def run() -> None:
            try:
                with torch.no_grad():  # grad mode is per thread
                    for r0, r1, k0, k1 in slabs:
                        logits = sliding_window_inference(
                            x[:, :, r0:r1], roi, int(pre.get("sw_batch_size", 1)), network, overlap=overlap,
                            mode=pre.get("blend", "gaussian"), sw_device=self.device, device="cpu")[0]
                        lab, conf = _argmax_in_slabs(logits[:, k0 - r0:k1 - r0])
                        labels[k0:k1], confidence[k0:k1] = lab, conf
                        del logits
            except BaseException as exc:  # handed to the generator's thread
                failure["error"] = exc
            finally:
                events.put(-1)

        thread = threading.Thread(target=run, name="medvit-sliding-window", daemon=True)
        thread.start()
        try:
            while True:
                n = events.get()
                if n < 0:
                    break
                yield Progress(min(n, total), max(total, n), f"{self.spec.display_name}: window", time.perf_counter() - t0)
        finally:
            stop.set()  # also when the consumer closed us early: stop at the next window
            thread.join()
        if "error" in failure:
            raise failure["error"]
        yield Progress(total, total, "post-processing", time.perf_counter() - t0)
        if undo is not None:  # back onto the image's own grid
            labels = from_model_grid(labels, undo, order=0)
            confidence = from_model_grid(confidence, undo, order=1)
        return Prediction(
            task="segment",
            model_name=self.spec.name,
            labels=labels,
            probabilities=confidence,
            class_names=self.class_names,
            meta=meta,
            provenance=self._provenance(t0, roi_size=list(roi), overlap=overlap, windows=done[0], slabs=len(slabs),
                                        output_buffer_mb=round(buffer_mb, 1)),
        )

    # -- internals ------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype)

    def _to_input(self, batch: np.ndarray, rgb: bool) -> torch.Tensor:
        """Normalise, then resize to the model's input size or pad (reflect) to its size multiple."""
        pre = self.pre
        x = torch.from_numpy(np.ascontiguousarray(batch))
        x = x.permute(0, 3, 1, 2) if rgb else x[:, None]
        if pre.get("color") == "rgb" and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != self.spec.in_chans:
            raise ValueError(f"{self.spec.name} expects {self.spec.in_chans} channels, the image gives {x.shape[1]}")
        mean = torch.tensor(pre.get("mean", (0.0,) * x.shape[1]), dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(pre.get("std", (1.0,) * x.shape[1]), dtype=torch.float32).view(1, -1, 1, 1)
        x = ((x - mean) / std).to(self.device)
        h, w = x.shape[-2:]
        if self.resize:
            return F.interpolate(x, size=tuple(self.resize), mode="bilinear", align_corners=False, antialias=True)
        multiple = int(pre.get("size_multiple", 32))
        pad_h, pad_w = (-h) % multiple, (-w) % multiple
        return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(h, w) > max(pad_h, pad_w) else "constant")

    def _to_image(self, t: torch.Tensor, size: tuple[int, int], padded_size: tuple[int, int]) -> np.ndarray:
        """Map (B, C, h, w) maps over the model input back onto the (B, C, H, W) image grid."""
        t = t.float()
        if self.resize:
            t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
        else:
            t = F.interpolate(t, size=padded_size, mode="bilinear", align_corners=False)[..., : size[0], : size[1]]
        return t.cpu().numpy()

    @torch.inference_mode()
    def _run_batch(self, batch: np.ndarray, rgb: bool) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(probabilities, head-mean maps (B, H, W), per-head maps (B, heads, H, W)) of one batch."""
        size = batch.shape[1:3]
        x = self._to_input(batch, rgb)
        padded = tuple(x.shape[-2:])
        capture = self.explainer(self.model) if self.explainer is not None else contextlib.nullcontext()
        with capture as cap, self._autocast():
            if self.spec.task == "classify":
                out = {"logits": self.model(x)}
            else:
                out = self.model.forward_all(x) if hasattr(self.model, "forward_all") else {"map_2": self.model(x)}
        maps = dict(self._attention_maps(out, size, padded))
        heads: dict[str, np.ndarray] = {}
        if cap is not None:
            for m in cap.maps():
                per_head = self._to_image(m.heads, size, padded)
                heads[m.name] = per_head
                maps[m.name] = per_head.mean(axis=1)
        if self.spec.task == "classify":
            return torch.softmax(out["logits"].float(), dim=-1).cpu().numpy(), maps, heads
        logits = out["map_2"].float()
        if logits.shape[1] != 1:
            raise ValueError(f"{self.spec.name}: {logits.shape[1]}-class segmentation is not supported yet")
        return self._to_image(torch.sigmoid(logits), size, padded)[:, 0], maps, heads

    def _attention_maps(self, out: dict[str, Any], size: tuple[int, int],
                        padded: tuple[int, int]) -> Iterator[tuple[str, np.ndarray]]:
        for kind, key in (("BiFusion spatial attention", "bifusion_attention"), ("attention gate", "gate_attention")):
            for m in out.get(key, ()):
                stride = padded[0] // m.shape[-2]
                yield f"{kind} 1/{stride}", self._to_image(m, size, padded)[:, 0]


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
    for size, r in zip(shape, roi):
        size = max(size, r)
        step = max(int(r * (1 - overlap)), 1)
        total *= 1 if size == r else -(-(size - r) // step) + 1
    return total


def _argmax_in_slabs(logits: torch.Tensor, slab: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Labels and the winning class probability from (K, Z, Y, X) logits, a few slices at a time
    (softmax of all classes over a whole volume at once would double the memory)."""
    k, z = logits.shape[0], logits.shape[1]
    labels = np.empty(logits.shape[1:], dtype=np.uint8 if k <= 255 else np.int32)
    confidence = np.empty(logits.shape[1:], dtype=np.float32)
    for start in range(0, z, slab):
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


def _class_names(model: torch.nn.Module, spec: ModelSpec) -> tuple[str, ...]:
    """Class names from the checkpoint manifest, the registry, ImageNet's (1000 classes), or numbers."""
    info = getattr(model, "checkpoint_info", None)
    manifest = (info.manifest or {}) if info is not None else {}
    if manifest.get("class_names"):
        return tuple(manifest["class_names"])
    if spec.task != "classify":
        return spec.class_names
    n = int(getattr(model, "num_classes", 0) or 0)
    if spec.class_names and len(spec.class_names) == n:
        return spec.class_names
    if n == 1000:
        from timm.data import ImageNetInfo

        info1k = ImageNetInfo()
        return tuple(info1k.index_to_description(i) for i in range(n))
    return tuple(f"class {i}" for i in range(n))
