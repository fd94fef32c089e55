"""Dock widget "MedViT corrections": a view over the corrections core (:mod:`napari_medvit.corrections`).

The dock lists every result to correct (masks and boxes layers of a run, classification results
kept on image layers), shows the agreement of the corrected result with the model's shortly after
each burst of edits, autosaves it per source image, restores it when the image is opened again,
marks it reviewed ("Accept") and exports it. What is computed is the core's: the dock translates
the chosen layer into a :class:`~napari_medvit.corrections.Correction` record and back.

Classifications add no layer: the dock records them from the viewer's session
(``prediction_added``, emitted by the inference docks) into the image layer's metadata
(``medvit_class_results``); a 2D classifier's result on a volume is corrected slice by slice, the
slice on screen following napari's slider. Accepting emits the session's ``accepted``, exporting its
``exported``.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, Label, LineEdit, PushButton
from napari.layers import Image, Shapes
from napari.viewer import Viewer

from napari_medvit import corrections as core
from napari_medvit._layers import BOX_STYLE, CLASS_RESULTS_KEY, box_feature_defaults, layer_transform
from napari_medvit._session import PredictionAdded, RunInputs, connect_until_destroyed, session_for
from napari_medvit.corrections import REVIEW_KEY, ClassResult, Correction, record_class_result
from napari_medvit.io.meta import META_KEY
from napari_medvit.widgets._layout import ScrollingDock, fit_dock

# REVIEW_KEY, ClassResult and record_class_result are the core's, named here as before
__all__ = ["REVIEW_KEY", "ClassResult", "CorrectionsWidget", "kind_of", "record_class_result"]


def kind_of(item: Any) -> str:
    """'mask', 'boxes' or 'class'."""
    return core.item_kind(item)


class CorrectionsWidget(ScrollingDock):
    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__(labels=True)
        from qtpy.QtCore import QTimer

        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.layer = ComboBox(label="corrected result", choices=self._choices, nullable=True,
                              tooltip="masks and boxes layers of a run, and classification results of an image")
        self.class_choice = ComboBox(label="correct class", choices=self._class_choices, visible=False,
                                     tooltip="the model's predicted class is preset; pick the right one")
        self.metrics = Label(label="agreement", value="–")
        self.autosave = Label(label="autosave", value="–")
        self.accept_button = PushButton(text="Accept (mark reviewed)")
        self.review = Label(label="review", value="not reviewed")
        self.folder = FileEdit(label="export folder", mode="d", value="")
        self.case = LineEdit(label="case id", value="")
        self.export_button = PushButton(text="Export correction for retraining")
        self.export_all_button = PushButton(text="Export all accepted corrections")
        self.message = Label(label="", value="")
        self.extend([self.layer, self.class_choice, self.metrics, self.autosave, self.accept_button,
                     self.review, self.folder, self.case, self.export_button, self.export_all_button, self.message])
        self.last_metrics: dict[str, Any] = {}
        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(400)  # after a burst of brush strokes or box edits
        self._timer.timeout.connect(self._after_edits)
        self._connections: list[tuple[Any, Any]] = []
        self.layer.changed.connect(self._watch)
        self.class_choice.changed.connect(self._on_class_chosen)
        self.accept_button.changed.connect(self.accept)
        self.export_button.changed.connect(self.export)
        self.export_all_button.changed.connect(self.export_all)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._refresh)
        napari_viewer.layers.events.inserted.connect(self._offer_restore)
        # classification runs add no layer to watch (DAFT, timm): the session tells of each prediction
        connect_until_destroyed(self.session.prediction_added, self._on_prediction, self.native)
        self._collect(self.session.recent_predictions())  # runs before the dock was opened
        self._refresh()
        self._watch()
        self.end_form()
        fit_dock(self)

    @property
    def kind(self) -> str | None:
        """The kind of the chosen result: 'mask', 'boxes', 'class' or None."""
        return None if self.layer.value is None else kind_of(self.layer.value)

    def record(self) -> Correction:
        """The core's record of the chosen result (ValueError when none is chosen)."""
        if self.layer.value is None:
            raise ValueError("no corrected result is chosen")
        return core.record_of(self.layer.value, self.viewer.layers)

    # -- the list of results ----------------------------------------------------------------------
    def _choices(self, *_: Any) -> list[tuple[str, Any]]:
        return core.correction_items(self.viewer.layers)

    def _refresh(self, *_: Any) -> None:
        self.layer.reset_choices()
        if self.layer.value is None and self.layer.choices:
            self.layer.value = self.layer.choices[-1]  # the newest result

    def _on_prediction(self, prediction: Any, source: Any, inputs: RunInputs | None = None) -> None:
        try:
            self._collect([PredictionAdded(prediction, source, inputs or RunInputs())])
        except Exception as exc:  # a session callback: report, never break the run that emitted it
            self.message.value = f"could not record the run's result: {exc}"

    def _collect(self, events: list[PredictionAdded]) -> list[ClassResult]:
        """Keep each classification of ``events`` in its image layer's metadata; choose the newest."""
        found = []
        for event in events:
            source = event.source
            if isinstance(source, str):
                source = self.viewer.layers[source] if source in self.viewer.layers else None
            if not isinstance(source, Image) or source not in self.viewer.layers:
                continue
            result = record_class_result(source, event.prediction, tabular_features=event.inputs.tabular_features,
                                         tabular=event.inputs.tabular)
            if result is not None:
                found.append(result)
        if found:
            self._refresh()
            self.layer.value = found[-1]
            self._watch()  # the record may have changed under the same item
        return found

    # -- watching the chosen result ---------------------------------------------------------------
    def _schedule(self, *_: Any) -> None:
        self._timer.start()  # restarted by every edit: metrics once the burst is over

    def _connect(self, emitter: Any, callback: Any) -> None:
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    def _watch(self, *_: Any) -> None:
        for emitter, callback in self._connections:
            emitter.disconnect(callback)
        self._connections = []
        item = self.layer.value
        self.class_choice.visible = isinstance(item, ClassResult)
        if item is None:
            self.metrics.value = "–"
            return
        kind = kind_of(item)
        if kind == "mask":
            self._connect(item.events.paint, self._schedule)
            self._connect(item.events.data, self._schedule)
        elif kind == "boxes":
            self._keep_box_defaults(item)
            self._connect(item.events.data, self._schedule)
            self._connect(item.events.features, self._on_box_features)
        else:
            with self.class_choice.changed.blocked():
                self.class_choice.reset_choices()
                self.class_choice.value = item.chosen_at(self._slice(item))
            self.class_choice.label = "correct class of this slice" if item.per_slice else "correct class"
            if item.per_slice:  # the slider picks the slice whose class is corrected
                self._connect(self.viewer.dims.events.current_step, self._on_slice)
        self.case.value = self._default_case()
        review = item.metadata.get(REVIEW_KEY)
        self.review.value = f"accepted {review['time']}" if review else "not reviewed"
        self.update_metrics()

    def _default_case(self) -> str:
        try:
            return core.default_case_id(self.record())
        except (ValueError, KeyError):  # e.g. an unreadable geometry: the name still gives a case id
            return core.case_id_of(self.layer.value.name)

    def _keep_box_defaults(self, layer: Shapes) -> None:
        """A rectangle the user draws gets the first non-background class (napari resets the defaults
        to the first row whenever the features are replaced, e.g. by a new score threshold)."""
        wanted = box_feature_defaults(core.layer_correction(layer, None).categories())
        current = {k: layer.feature_defaults[k].iloc[0] for k in wanted if k in layer.feature_defaults}
        if current != wanted and set(wanted) <= set(layer.features.columns):
            layer.feature_defaults = wanted

    def _on_box_features(self, *_: Any) -> None:
        item = self.layer.value
        if isinstance(item, Shapes):
            self._keep_box_defaults(item)
        self._schedule()

    def _class_choices(self, *_: Any) -> list[tuple[str, int]]:
        """The classes of the chosen classification (napari's reset_choices recomputes them)."""
        item = self.layer.value if hasattr(self, "layer") else None
        if not isinstance(item, ClassResult):
            return []
        return [(n, i) for i, n in enumerate(item.metadata["class_names"])]

    def reset_choices(self, *_: Any) -> None:
        """napari calls this when layers change: keep the shown class, which resetting would lose."""
        super().reset_choices()
        self._show_chosen_class()

    def _show_chosen_class(self) -> bool:
        item = self.layer.value
        if not isinstance(item, ClassResult) or not self.class_choice.choices:
            return False
        with self.class_choice.changed.blocked():
            self.class_choice.value = item.chosen_at(self._slice(item))
        return True

    def _on_slice(self, *_: Any) -> None:
        item = self.layer.value
        if isinstance(item, ClassResult) and item.per_slice and self._show_chosen_class():
            self.update_metrics()

    def _on_class_chosen(self, *_: Any) -> None:
        item = self.layer.value
        if not isinstance(item, ClassResult) or self.class_choice.value is None:
            return
        index = self._slice(item)
        if int(self.class_choice.value) != item.chosen_at(index):
            item.choose(int(self.class_choice.value), index)
        self._after_edits()

    def _slice(self, item: Any) -> int:
        """The slice on screen of a per-slice class result (0 for anything else)."""
        return item.slice_index(self.viewer.dims.point) if isinstance(item, ClassResult) else 0

    def update_metrics(self) -> dict[str, Any]:
        item = self.layer.value
        if item is None:
            return {}
        try:
            record = self.record()
            m = core.agreement(record, self._slice(item))
        except (ValueError, KeyError) as exc:
            self.metrics.value = f"cannot compare: {exc}"
            return {}
        self.metrics.value = core.describe_record(record, m)
        tabular = record.original.get("tabular") if record.kind == "class" else None
        self.metrics.tooltip = ("tabular row of the run (exported with the class): " + ", ".join(
            f"{k} {'missing' if v is None else v}" for k, v in tabular.items())) if tabular else ""
        self.last_metrics = m
        return m

    # -- autosave and restore -------------------------------------------------------------------
    def _after_edits(self) -> None:
        self.update_metrics()
        self._save_quietly()

    def _save_quietly(self) -> None:
        try:
            self.save_now()
        except (OSError, ValueError) as exc:
            self.autosave.value = f"failed: {exc}"

    def save_now(self) -> Any:
        """Write the chosen correction to the session folder of its source image (atomic)."""
        if self.layer.value is None:
            return None
        path = core.autosave(self.record())
        self.autosave.value = f"saved {_dt.datetime.now():%H:%M:%S}" if path else \
            "off: the image was not opened from a file"
        return path

    def _offer_restore(self, event: Any) -> None:
        """Reopening an image brings back its autosaved corrections: masks and boxes as layers,
        class choices into the image's metadata."""
        from napari.utils.notifications import show_info

        layer = event.value
        source = core.source_path_of(layer) if isinstance(layer, Image) else None
        if source is None:
            return
        shape = np.shape(core.layers.image_data(layer))
        found = core.restorable(source, layer.name, layer.metadata[META_KEY], shape,
                                existing_layers={lay.name for lay in self.viewer.layers},
                                class_models=set(layer.metadata.get(CLASS_RESULTS_KEY, {})))
        for restored in found:
            if restored.record is not None:  # a class result: into the image's metadata
                results = {**layer.metadata.get(CLASS_RESULTS_KEY, {}), restored.record["model"]: restored.record}
                layer.metadata = {**layer.metadata, CLASS_RESULTS_KEY: results}
            elif restored.kind == "boxes":
                self.viewer.add_shapes(restored.data, name=restored.name, ndim=2, features=restored.features,
                                       metadata=restored.metadata, **BOX_STYLE, **layer_transform(layer))
            else:
                self.viewer.add_labels(restored.data, name=restored.name, opacity=0.5, metadata=restored.metadata,
                                       **layer_transform(layer))
            show_info(f"MedViT: restored corrections '{restored.saved_name}' saved {restored.saved_time}")
        if found:
            self._refresh()

    # -- accept and export -----------------------------------------------------------------------
    def accept(self, *_: Any) -> None:
        item = self.layer.value
        if item is None:
            return
        review = core.make_review(self.case.value or self._default_case(), self.update_metrics())
        if isinstance(item, ClassResult):
            item.update(**{REVIEW_KEY: review})
        else:
            item.metadata = {**item.metadata, REVIEW_KEY: review}
        self.review.value = f"accepted {review['time']}"
        self._save_quietly()
        self.session.accepted.emit(self.record())

    def _folder(self) -> str:
        folder = str(self.folder.value or "")
        return "" if folder in ("", ".") else folder

    def export(self, *_: Any) -> Any:
        """Export the chosen correction (image + corrected result + provenance); returns what the
        exporter returned (see :func:`napari_medvit.corrections.export_correction`) or None."""
        item, folder = self.layer.value, self._folder()
        if item is None or not folder:
            self.message.value = "choose a corrected result and an export folder first"
            return None
        try:
            case, result = core.export_correction(self.record(), folder, self.case.value)
        except (ValueError, OSError) as exc:
            self.message.value = f"not exported: {exc}"
            return None
        supersedes = getattr(result, "supersedes", None)
        self.message.value = f"exported {kind_of(item)} as {case} to {folder}" + (
            f" (new version of {supersedes})" if supersedes else "")
        self.session.exported.emit(result)
        return result

    def export_all(self, *_: Any) -> list[str]:
        """Export every accepted correction of the session to the export folder."""
        folder = self._folder()
        if not folder:
            self.message.value = "choose an export folder first"
            return []
        errors: list[str] = []
        cases = core.export_accepted(core.accepted_records(self.viewer.layers), folder, errors=errors)
        text = f"exported {len(cases)} accepted correction(s) to {folder}" if cases else "nothing exported"
        self.message.value = text + (f"; not exported: {'; '.join(errors)}" if errors else "")
        if cases:
            self.session.exported.emit(cases)
        return cases
