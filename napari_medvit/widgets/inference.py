"""Dock widget "MedViT inference": pick an image and a model, run it in the background.

The widget owns its :class:`~napari_medvit.inference.Predictor` and keeps it between runs, so
the model is built once per (model, checkpoint, device, precision). Model building and
inference run in a napari thread worker; layers are added only from the worker's signals, in
the main thread. Set ``MEDVIT_SYNC=1`` to run the same generator synchronously (debugging).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, FileEdit, FloatSlider, Label, PushButton, SpinBox
from napari.layers import Image, Layer
from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info, show_warning

from napari_medvit._layers import (
    PREDICTION_KEY,
    TABULAR_KEY,
    attention_limits,
    labels_digest,
    layer_transform,
    prediction_layers,
    top_k,
)
from napari_medvit._session import RunInputs, connect_until_destroyed, session_for
from napari_medvit.inference.options import DEVICES, PRECISIONS
from napari_medvit.io.meta import META_KEY, ImageMeta
from napari_medvit.models import get_spec, list_models
from napari_medvit.widgets._detection import DetectionView
from napari_medvit.widgets._layout import ScrollingDock, fit_dock
from napari_medvit.widgets._workers import RunFailed, Runs, guard_runtime_errors, start_generator_run
from napari_medvit.widgets.charts import AffinePlot, ProbabilityChart
from napari_medvit.widgets.tabular import TabularPanel

_NO_CHECKPOINT = Path(".")
_UNTRAINED = "untrained (random initialisation)"
_FROM_FILE = "<file>"


def _image_meta(layer: Image) -> ImageMeta:
    if META_KEY in layer.metadata:
        return ImageMeta.from_dict(layer.metadata[META_KEY])
    # napari counts no channel axis in an RGB layer's ndim
    return ImageMeta.identity(min(layer.ndim, 3), rgb=bool(layer.rgb))


def _prewarm() -> None:
    """Import the model libraries in the background while the user looks at the widget.

    Importing torch/timm/torchvision takes seconds on first use; doing it when the dock opens
    rather than when Run is pressed shortens the first run by that much.
    """
    from napari_medvit.models._compat import keep_triton_out_without_cuda

    keep_triton_out_without_cuda()
    import timm  # noqa: F401  (imports torch and torchvision too)


__all__ = ["InferenceWidget", "RunFailed", "guard_runtime_errors"]  # the last two live in _workers


def _compute(predictor: Any, key: tuple[str, str, str, str], data: np.ndarray, meta: ImageMeta,
             tabular: dict[str, float | None] | None = None) -> Generator[Any, None, tuple[Any, Any]]:
    """Worker body: build the model if needed, then yield the predictor's progress events."""
    return (yield from guard_runtime_errors(_compute_steps(predictor, key, data, meta, tabular)))


def _compute_steps(predictor: Any, key: tuple[str, str, str, str], data: np.ndarray, meta: ImageMeta,
                   tabular: dict[str, float | None] | None) -> Generator[Any, None, tuple[Any, Any]]:
    from napari_medvit.explain import explainer_for
    from napari_medvit.inference import Predictor, Progress
    from napari_medvit.models import create_model

    name, checkpoint, device, precision = key
    if predictor is None:
        yield Progress(0, 1, f"building {get_spec(name).display_name}", 0.0)
        model = create_model(name, checkpoint=checkpoint or None)
        predictor = Predictor(model, device=device, precision=precision, explainer=explainer_for(model.medvit_spec))
    if tabular is not None:  # the checkpoint's feature list decides; fields it does not know are left out
        known = {n for f in getattr(predictor, "tabular_features", ()) for n in (f["name"], f.get("missing"))}
        tabular = {k: v for k, v in tabular.items() if k in known}
    prediction = yield from predictor.predict_iter(data, meta, tabular=tabular)
    return predictor, prediction


class InferenceWidget(DetectionView, ScrollingDock):
    """Image layer, model, checkpoint, device, precision; Run and Cancel; progress with ETA."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, *, model: str = "transfuse_s",
                 autorun: bool = False) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.predictor: Any = None
        self._predictor_key: tuple[str, str, str, str] | None = None
        self.worker: Any = None
        self._pbar: Any = None
        self._source: Layer | None = None
        self.last_prediction: Any = None

        self.image = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self.model = ComboBox(
            label="model",
            choices=[(f"{get_spec(n).display_name} ({get_spec(n).task})", n)
                     for task in ("segment", "classify", "detect") for n in list_models(task=task)],
            value=model,
        )
        self.weights = ComboBox(label="weights", choices=self._weight_choices)
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.safetensors *.pt *.pth", value="",
                                   visible=False)
        self.weights_info = Label(label="", value="")
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto")
        self.precision = ComboBox(label="precision", choices=list(PRECISIONS), value="fp32")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(label="status", value="idle")
        self.head = ComboBox(label="attention head", choices=["mean"], value="mean", visible=False)
        self.threshold = FloatSlider(label="score ≥", min=0.0, max=1.0, step=0.01, value=0.3, visible=False)
        self.query = SpinBox(label="query (Gaussian)", min=0, max=0, value=0, visible=False,
                             tooltip="the object query whose SMCA spatial prior is shown; or click its box")
        self.extend([self.image, self.model, self.weights, self.checkpoint, self.weights_info, self.device,
                     self.precision, self.run_button, self.cancel_button, self.status, self.head, self.threshold,
                     self.query])
        self.threshold.changed.connect(self._refresh_detection)
        self.query.changed.connect(self._refresh_prior)
        self._boxes_layer: Any = None
        self._prior_layer: Any = None
        self.chart = ProbabilityChart()
        self.body.layout().addWidget(self.chart)
        self.affine_plot = AffinePlot()
        self.body.layout().addWidget(self.affine_plot)
        self.tabular: TabularPanel | None = None
        self.model.changed.connect(self._update_tabular_panel)
        self.channels: list[ComboBox] = []  # further co-registered modalities for multi-channel models
        self.model.changed.connect(self._update_channel_inputs)
        self.body.layout().addStretch(1)  # keep the form compact at the top of a tall dock
        self.head.changed.connect(self._show_head)
        self._attention_layers: dict[str, Layer] = {}

        self._connect_callbacks()
        self._prefer_bundled()
        self._update_weights_info()
        self._apply_score_threshold()
        self._update_tabular_panel()
        self._update_channel_inputs()
        self._refresh_images()
        self._follow_selection()
        fit_dock(self)
        # this dock's workers: cancelled and waited for when the dock or napari closes (see _workers)
        self._runs = Runs(self.native)
        self.prewarm_worker = self._runs.start(
            create_worker(_prewarm, _start_thread=False, _connect={"errored": lambda exc: None}))
        # a fine-tuned version promoted in this viewer becomes this dock's model and checkpoint
        connect_until_destroyed(session_for(napari_viewer).promoted, self._on_promoted, self.native)
        if autorun:
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self.run)

    def _connect_callbacks(self) -> None:
        """The dock's own widgets and the viewer's layer list drive the dock's state."""
        self._reset_insist()
        for event in (self.model.changed, self.image.changed, self.weights.changed):
            event.connect(self._reset_insist)
        self.run_button.changed.connect(lambda: self.run())
        self.cancel_button.changed.connect(self.cancel)
        self.checkpoint.changed.connect(self._update_weights_info)
        self.weights.changed.connect(self._update_weights_info)
        self.checkpoint.changed.connect(self._update_tabular_panel)
        self.weights.changed.connect(self._update_tabular_panel)
        self.image.changed.connect(self._fill_tabular_from_layer)
        self.model.changed.connect(self._prefer_bundled)
        for event in (self.model.changed, self.weights.changed, self.checkpoint.changed):
            event.connect(self._apply_score_threshold)
        layers = self.viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.reordered):
            event.connect(self._refresh_images)
        layers.selection.events.active.connect(self._follow_selection)

    # -- choices ------------------------------------------------------------------------------
    def _image_choices(self, *_: Any) -> list[tuple[str, Image]]:
        layers = [layer for layer in self.viewer.layers if isinstance(layer, Image)
                  and PREDICTION_KEY not in layer.metadata]
        return [(layer.name, layer) for layer in layers]

    def _refresh_images(self, *_: Any) -> None:
        self.image.reset_choices()
        for combo in getattr(self, "channels", []):
            combo.reset_choices()
        if self.image.value is None and self.image.choices:
            self._follow_selection()

    def _follow_selection(self, *_: Any) -> None:
        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and PREDICTION_KEY not in active.metadata:
            self.image.reset_choices()
            self.image.value = active
        elif self.image.value is None and self.image.choices:
            self.image.value = self.image.choices[-1]

    def _weight_choices(self, *_: Any) -> list[tuple[str, str]]:
        """The chosen model's weights in the user's weights folder, then the shipped ones
        (:mod:`napari_medvit.models.weights`), untrained, or a file of the user's."""
        from napari_medvit.models.weights import available_weights

        model = self.model.value if hasattr(self, "model") else "transfuse_s"
        found = [(w.label, str(w.path)) for w in available_weights(model)]
        return [*found, (_UNTRAINED, ""), ("checkpoint file…", _FROM_FILE)]

    def _prefer_bundled(self, *_: Any) -> None:
        """A model's own weights (the user's, else the shipped demo weights) are the default whenever the
        model is chosen; untrained only when it has none."""
        self.weights.reset_choices()
        bundled = [value for _, value in self._weight_choices() if value not in ("", _FROM_FILE)]
        if bundled:
            self.weights.value = bundled[0]

    def use_checkpoint(self, path: str | Path) -> None:
        """Choose a checkpoint file of the user's (as "checkpoint file…" + the file field do)."""
        self.weights.value = _FROM_FILE
        self.checkpoint.value = path

    def _checkpoint_path(self) -> str:
        if self.weights.value != _FROM_FILE:
            return self.weights.value or ""
        value = self.checkpoint.value
        if value in (None, "", _NO_CHECKPOINT) or str(value) in ("", "."):
            return ""
        return str(value)

    def _update_weights_info(self, *_: Any) -> None:
        self.checkpoint.visible = self.weights.value == _FROM_FILE
        ckpt = self._checkpoint_path()
        self.weights_info.value = f"weights from {Path(ckpt).name}" if ckpt else "untrained: random weights"
        self.weights_info.tooltip = (
            "Weights loaded from the checkpoint file above." if ckpt else
            "No checkpoint chosen: the model has random weights, so its masks and attention maps show no "
            "learned content. Choose a .safetensors/.pt/.pth checkpoint to get real results."
        )

    @property
    def source(self) -> Layer | None:
        """The image layer of the last run (the corrections dock exports it with the corrections)."""
        return self._source

    # -- running ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.worker is not None

    def run(self, layer: Image | None = None, model: str | None = None) -> Any:
        """Start a run on ``layer`` (default: the chosen image) and return the worker (or None)."""
        if self.running:
            show_info("MedViT: a run is already in progress; cancel it first.")
            return None
        if model is not None:
            self.model.value = model
        if layer is not None:
            self.image.reset_choices()
            self.image.value = layer
        layer = self.image.value
        if layer is None:
            show_warning("MedViT: open an image first (File > Open Sample > MedViT > Endoscopy frame with a polyp).")
            return None
        key = (self.model.value, self._checkpoint_path(), self.device.value, self.precision.value)
        predictor = self.predictor if key == self._predictor_key else None
        data = np.asarray(layer.data[0] if layer.multiscale else layer.data)
        spec = get_spec(key[0])
        meta = _image_meta(layer)
        if not self._fits(layer, data, meta, key):
            return None
        if spec.dims == 3 and spec.in_chans > 1:
            try:
                data = self._stack_channels(layer, data)
            except ValueError as exc:
                show_warning(f"MedViT: {exc}")
                self.status.value = str(exc)
                return None
        self._source = layer
        self.status.value = f"starting {get_spec(key[0]).display_name} on {layer.name}"
        self._set_running(True)
        self._pbar = napari_progress(total=0, desc=f"MedViT {get_spec(key[0]).display_name}")
        gen = _compute(predictor, key, data, meta, self.tabular.values() if self.tabular is not None else None)
        self.worker = start_generator_run(self._runs, gen, {  # None when MEDVIT_SYNC=1 ran it already
            "yielded": self._on_progress,
            "returned": lambda result: self._on_returned(result, key),
            "errored": self._on_error,
            "aborted": self._on_aborted,
            "finished": self._on_finished,
        })
        return self.worker

    def _fits(self, layer: Image, data: np.ndarray, meta: ImageMeta, key: tuple[str, str, str, str]) -> bool:
        """Whether the model fits the image (:func:`napari_medvit.inference.fit.check_input`), before anything
        is built: a problem stops the run with a message; a caution stops the first click only (the button
        then reads "Run anyway")."""
        from napari_medvit.inference.fit import check_input

        sources = (layer.name, *[c.value.name for c in self.channels if c.value is not None]) if self.channels else ()
        fit = check_input(self._weights_config(), tuple(data.shape), meta, channel_sources=sources)
        if fit.problems:
            self.status.value = fit.problems[0]
            show_warning(f"MedViT: {fit.problems[0]}")
            return False
        insist = (key, id(layer))
        if fit.cautions and self._insisted != insist:
            self._insisted = insist
            self.run_button.text = "Run anyway"
            self.status.value = f"{fit.cautions[0]}. Press Run anyway to go on."
            show_warning(f"MedViT: {fit.cautions[0]}")
            return False
        self._reset_insist()
        return True

    def _reset_insist(self, *_: Any) -> None:
        self._insisted: tuple[Any, int] | None = None
        self.run_button.text = "Run"

    def cancel(self) -> None:
        if self.worker is not None:
            self.status.value = "cancelling…"
            self.worker.quit()

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.cancel_button.enabled = running

    def _on_progress(self, event: Any) -> None:
        pbar = self._pbar
        if pbar is None:  # a late signal from a finished run
            return
        self.status.value = str(event)
        pbar.total = max(int(event.total), 1)
        pbar.n = int(event.done)
        pbar.set_description(event.message)
        pbar.refresh()

    def _on_returned(self, result: tuple[Any, Any], key: tuple[str, str, str, str]) -> None:
        predictor, prediction = result
        self.predictor, self._predictor_key = predictor, key
        self.last_prediction = prediction
        source = self._source
        transform = layer_transform(source) if source is not None else {}
        self.threshold.visible = self.query.visible = prediction.task == "detect"
        if prediction.task == "detect":
            self._start_detection(prediction)
        tuples = [] if prediction.task == "detect" else prediction_layers(prediction, transform=transform,
                                   source_metadata=source.metadata if source is not None else None,
                                   source_name=source.name if source is not None else "")
        self._attention_layers = {}
        masks = []
        for data, kwargs, layer_type in tuples:
            layer = self._add_or_update(data, kwargs, layer_type)
            if layer_type == "image":
                self._attention_layers[kwargs["metadata"][PREDICTION_KEY]["map"]] = layer
                layer.colorbar.visible = True  # its colour scale on the canvas (drawn while the layer is shown)
            elif layer_type == "labels":
                masks.append(layer)
        for mask in masks:  # the mask is drawn over the (additive) attention heatmaps, not under them
            self.viewer.layers.move(self.viewer.layers.index(mask), len(self.viewer.layers))
        if masks:  # the layer to correct is the selected one (brush and eraser act on it), not a heat map
            self.viewer.layers.selection.active = masks[-1]
        features = getattr(predictor, "tabular_features", ())
        if self.tabular is not None and [f["name"] for f in features] != [f["name"] for f in self.tabular.features]:
            self._update_tabular_panel(features=list(features))  # the checkpoint's own list (e.g. from a .pt)
        self._update_chart(prediction)
        self._update_head_choices(prediction)
        secs = prediction.provenance.get("seconds", 0.0)
        self.status.value = (f"done in {secs:.1f} s on {prediction.provenance.get('device')}: "
                             f"{get_spec(key[0]).display_name}, {prediction.provenance.get('weights')}"
                             + (" (demo weights, synthetic training data)" if prediction.provenance.get("demo_weights")
                                else ""))
        if not prediction.provenance.get("trained", False):
            show_warning(f"MedViT: {get_spec(key[0]).display_name} ran with UNTRAINED weights — its "
                         "outputs show no learned content. Load a checkpoint to get real results.")
        self._publish(prediction)

    def _publish(self, prediction: Any) -> None:
        """Tell the viewer's session (the corrections dock) about a prediction and what the run was given."""
        features = tuple(getattr(self.predictor, "tabular_features", ()) or ())
        inputs = RunInputs(features, self.tabular.values() if self.tabular is not None else None)
        session_for(self.viewer).add_prediction(prediction, self._source, inputs, origin=self)

    def _on_promoted(self, model_name: str, version: Any) -> None:
        """A fine-tuned version was promoted: use it (switching to its model)."""
        if model_name not in self.model.choices:
            self.status.value = f"promoted {model_name} is not a model of this dock"
            return
        self.model.value = model_name
        self.use_checkpoint(version)

    # -- multi-channel inputs (FLAIR + T1) -------------------------------------------------------
    def _update_channel_inputs(self, *_: Any) -> None:
        spec = get_spec(self.model.value)
        wanted = spec.in_chans - 1 if spec.dims == 3 else 0
        while len(self.channels) > wanted:
            self.remove(self.channels.pop())
        while len(self.channels) < wanted:
            combo = ComboBox(label=f"channel {len(self.channels) + 2}", choices=self._image_choices, nullable=True,
                             tooltip="a co-registered volume of another modality (e.g. T1 beside FLAIR), same shape")
            self.insert(self.index(self.image) + 1 + len(self.channels), combo)
            self.channels.append(combo)
        fit_dock(self)
        self.image.label = "channel 1" if wanted else "image"

    def _stack_channels(self, first: Image, data: np.ndarray) -> np.ndarray:
        """(channel, z, y, x) from the chosen layers; a missing or mis-shaped modality is an error."""
        volumes = [data]
        for combo in self.channels:
            layer = combo.value
            if layer is None:
                raise ValueError(f"{get_spec(self.model.value).display_name} needs {len(self.channels) + 1} "
                                 f"co-registered volumes: choose one for '{combo.label}'")
            vol = np.asarray(layer.data[0] if layer.multiscale else layer.data)
            if vol.shape != data.shape:
                raise ValueError(f"'{layer.name}' has shape {vol.shape} but '{first.name}' has {data.shape}: "
                                 "the modalities must be co-registered on one grid")
            volumes.append(vol)
        return np.stack(volumes)

    # -- tabular inputs (DAFT) -------------------------------------------------------------------
    def _update_tabular_panel(self, *_: Any, features: Any = None) -> None:
        """Show a panel of tabular fields when the chosen model takes tabular data: those of its resolved
        configuration (the checkpoint manifest's feature list when it has one, read from a .safetensors
        header, or from the built model after a run; else the registry's). Values already entered are kept."""
        if features is None:
            features = list(self._weights_config().tabular_features)
        current = getattr(self, "tabular", None)  # change events can come while __init__ runs
        kept = current.values() if current is not None else {}
        if current is not None:
            self.remove(current)
            self.tabular = None
        if features:
            self.tabular = TabularPanel(features)
            self.tabular.set_values({k: v for k, v in kept.items() if k in self.tabular.fields})
            self.insert(self.index(self.run_button), self.tabular)
            self.tabular.changed.connect(self._retabulate)
            self._fill_tabular_from_layer()
            fit_dock(self)

    def _fill_tabular_from_layer(self, *_: Any) -> None:
        """A layer that carries its subject's tabular row (``TABULAR_KEY``, e.g. the DAFT sample) fills the fields."""
        layer = self.image.value if hasattr(self, "image") else None
        row = layer.metadata.get(TABULAR_KEY) if layer is not None else None
        if getattr(self, "tabular", None) is not None and isinstance(row, dict):
            self.tabular.set_values({k: v for k, v in row.items() if k in self.tabular.fields})

    def _weights_config(self) -> Any:
        """The chosen model's resolved configuration with the chosen checkpoint (its manifest read from the
        file's header, without torch); the registry's alone when the file cannot be read (reported on Run)."""
        from napari_medvit.models.config import ConfigError, resolve, resolve_checkpoint
        from napari_medvit.models.manifest import CheckpointError

        path = self._checkpoint_path() if hasattr(self, "weights") else ""
        try:
            return resolve_checkpoint(self.model.value, path or None)
        except (CheckpointError, ConfigError, OSError):
            return resolve(self.model.value)

    def _apply_score_threshold(self, *_: Any) -> None:
        """A detector's boxes are shown from its own score threshold (its preprocessing's ``score_threshold``)."""
        if get_spec(self.model.value).task == "detect":
            self.threshold.value = self._weights_config().preprocessing.score_threshold

    def _retabulate(self, *_: Any) -> None:
        """A tabular value changed: re-run only DAFT's cheap part on the last image ("what if age were 80?")."""
        prediction, predictor = self.last_prediction, self.predictor
        if (self.tabular is None or prediction is None or predictor is None or self.running
                or prediction.affine is None or prediction.model_name != self.model.value):
            return
        try:
            new = predictor.retabulate(self.tabular.values())
        except ValueError as exc:
            self.status.value = f"tabular input: {exc}"
            return
        new.provenance = {**prediction.provenance, "seconds": new.provenance["seconds"]}
        self.last_prediction = new
        self._update_chart(new)
        self._publish(new)
        self.status.value = f"updated from the tabular values in {1000 * new.provenance['seconds']:.0f} ms"

    def _update_chart(self, prediction: Any) -> None:
        if prediction.affine is not None:
            self.affine_plot.set_affine(*prediction.affine)
        else:
            self.affine_plot.clear_plot()
        if prediction.task != "classify":
            self.chart.clear_chart()
            return
        index = (0,) * (prediction.probabilities.ndim - 1)  # volumes: the first slice's vector
        untrained = "" if prediction.provenance.get("trained", False) else " (untrained weights)"
        self.chart.set_probabilities(top_k(prediction, self.chart.k, index),
                                     title=f"{get_spec(prediction.model_name).display_name}{untrained}")

    def _update_head_choices(self, prediction: Any) -> None:
        n_heads = {v.shape[-3] for v in prediction.attention_heads.values()}
        if prediction.log_gaussians is not None:
            n_heads = {prediction.log_gaussians.shape[1]}
        if not n_heads:
            self.head.visible = False
            return
        self.head.choices = ["mean", *(str(i + 1) for i in range(max(n_heads)))]
        self.head.value = "mean"
        self.head.visible = True

    def _show_head(self, *_: Any) -> None:
        """Show one attention head (or the head-mean) in the attention layers of the last run."""
        prediction = self.last_prediction
        if prediction is None:
            return
        if prediction.task == "detect":
            self._refresh_prior()
            return
        for name, layer in self._attention_layers.items():
            if layer not in self.viewer.layers:
                continue
            heads = prediction.attention_heads.get(name)
            if self.head.value == "mean" or heads is None:
                layer.data = prediction.attention[name]
            else:
                h = min(int(self.head.value), heads.shape[-3]) - 1
                layer.data = heads[..., h, :, :]
            layer.contrast_limits = attention_limits(layer.data)

    def _add_or_update(self, data: Any, kwargs: dict[str, Any], layer_type: str) -> Layer:
        """Replace an earlier prediction layer of the same name unless the user edited it."""
        name = kwargs["name"]
        if name in self.viewer.layers:
            old = self.viewer.layers[name]
            prov = old.metadata.get(PREDICTION_KEY, {})
            edited = layer_type == "labels" and prov.get("labels_sha256") != labels_digest(np.asarray(old.data))
            if PREDICTION_KEY in old.metadata and not edited and old.data.shape == data.shape:
                old.data = data
                old.metadata = kwargs["metadata"]
                if "contrast_limits" in kwargs:
                    old.contrast_limits = kwargs["contrast_limits"]
                return old
        return self.viewer.add_layer(Layer.create(data, kwargs, layer_type))

    def _on_error(self, exc: BaseException) -> None:
        self.status.value = f"failed: {exc}"
        show_error(f"MedViT: {exc}")

    def _on_aborted(self) -> None:
        self.status.value = "cancelled"

    def _on_finished(self) -> None:
        self.worker = None
        self._set_running(False)
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
