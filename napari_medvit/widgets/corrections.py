"""Dock widget "MedViT corrections": agreement of a corrected mask with the model's, accept, export.

Works on a Labels layer made by a MedViT run: the model's own mask is kept in the layer's metadata
(``medvit_original``) while the user edits the layer with napari's brush, fill and eraser. The
agreement (Dice, IoU, HD95 from MONAI, edited voxels) is recomputed shortly after each burst of
edits; "Accept" marks the case reviewed; "Export" adds it to an nnU-Net-layout folder.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton
from napari.layers import Labels
from napari.viewer import Viewer

from napari_medvit._layers import ORIGINAL_KEY, PREDICTION_KEY, layer_transform
from napari_medvit.io.meta import META_KEY, ImageMeta

REVIEW_KEY = "medvit_review"


def _case_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "case"


class CorrectionsWidget(Container):
    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__(labels=True)
        from qtpy.QtCore import QTimer

        self.viewer = napari_viewer
        self.layer = ComboBox(label="corrected mask", choices=self._mask_choices, nullable=True)
        self.metrics = Label(label="agreement", value="–")
        self.accept_button = PushButton(text="Accept (mark reviewed)")
        self.review = Label(label="review", value="not reviewed")
        self.folder = FileEdit(label="export folder", mode="d", value="")
        self.case = LineEdit(label="case id", value="")
        self.export_button = PushButton(text="Export corrected mask for retraining")
        self.message = Label(label="", value="")
        self.extend([self.layer, self.metrics, self.accept_button, self.review, self.folder, self.case,
                     self.export_button, self.message])
        self.last_metrics: dict[str, Any] = {}
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(400)  # after a burst of brush strokes
        self._timer.timeout.connect(self._after_edits)
        self._watched: Labels | None = None
        self.layer.changed.connect(self._watch)
        self.accept_button.changed.connect(self.accept)
        self.export_button.changed.connect(self.export)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._refresh)
        napari_viewer.layers.events.inserted.connect(self._offer_restore)
        self.autosave = Label(label="autosave", value="–")
        self.insert(self.index(self.accept_button), self.autosave)
        self._refresh()
        self._watch()

    def _refresh(self, *_: Any) -> None:
        self.layer.reset_choices()
        if self.layer.value is None and self.layer.choices:
            self.layer.value = self.layer.choices[-1]  # the newest prediction

    def _schedule(self, *_: Any) -> None:
        self._timer.start()  # restarted by every stroke: metrics once the burst is over

    def _mask_choices(self, *_: Any) -> list[tuple[str, Labels]]:
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Labels) and ORIGINAL_KEY in layer.metadata]

    def _watch(self, *_: Any) -> None:
        if self._watched is not None:
            self._watched.events.paint.disconnect(self._schedule)
            self._watched.events.data.disconnect(self._schedule)
        layer = self._watched = self.layer.value
        if layer is None:
            self.metrics.value = "–"
            return
        layer.events.paint.connect(self._schedule)
        layer.events.data.connect(self._schedule)
        if not self.case.value:
            self.case.value = _case_id(layer.metadata.get(PREDICTION_KEY, {}).get("source_layer") or layer.name)
        review = layer.metadata.get(REVIEW_KEY)
        self.review.value = f"accepted {review['time']}" if review else "not reviewed"
        self.update_metrics()

    def _meta(self, layer: Labels) -> ImageMeta | None:
        entry = layer.metadata.get(META_KEY)
        return ImageMeta.from_dict(entry) if entry else None

    def update_metrics(self) -> dict[str, Any]:
        from napari_medvit.training.export import mask_metrics

        layer = self.layer.value
        if layer is None:
            return {}
        meta = self._meta(layer)
        spacing = meta.spacing if meta is not None and meta.ndim == layer.ndim else None
        m = mask_metrics(layer.metadata[ORIGINAL_KEY], np.asarray(layer.data), spacing)
        hd = "–" if m["hd95"] is None else f"{m['hd95']:.1f}{' mm' if spacing else ' px'}"
        self.metrics.value = f"Dice {m['dice']:.3f} · IoU {m['iou']:.3f} · HD95 {hd} · {m['edited_voxels']} edited"
        self.last_metrics = m
        return m

    # -- autosave and restore -------------------------------------------------------------------
    def _after_edits(self) -> None:
        self.update_metrics()
        self.save_now()

    def _source_path(self, layer: Any) -> str | None:
        entry = layer.metadata.get(META_KEY) or {}
        return entry.get("source_path") or None

    def save_now(self) -> Any:
        """Write the current corrections to the session folder of their source image (atomic)."""
        from napari_medvit.io.session import save_correction

        layer = self.layer.value
        if layer is None:
            return None
        source = self._source_path(layer)
        if source is None:
            self.autosave.value = "off: the image was not opened from a file"
            return None
        prov = {k: v for k, v in layer.metadata.get(PREDICTION_KEY, {}).items() if not isinstance(v, np.ndarray)}
        path = save_correction(source, layer.name, np.asarray(layer.data), layer.metadata[ORIGINAL_KEY],
                               {"provenance": prov, "review": layer.metadata.get(REVIEW_KEY)})
        self.autosave.value = f"saved {_dt.datetime.now():%H:%M:%S}"
        return path

    def _offer_restore(self, event: Any) -> None:
        """Reopening an image brings back its autosaved corrections as Labels layers."""
        from napari.layers import Image
        from napari.utils.notifications import show_info

        from napari_medvit.io.session import load_corrections

        layer = event.value
        source = self._source_path(layer) if isinstance(layer, Image) else None
        if source is None:
            return
        existing = {lay.name for lay in self.viewer.layers}
        for saved in load_corrections(source):
            name = f"{saved.name} (autosaved {saved.info.get('saved', '')})"
            if name in existing or saved.labels.shape != layer.data.shape[: saved.labels.ndim]:
                continue
            prov = dict(saved.info.get("provenance") or {})
            prov["source_layer"] = layer.name
            metadata = {META_KEY: layer.metadata[META_KEY], PREDICTION_KEY: prov, ORIGINAL_KEY: saved.original}
            if saved.info.get("review"):
                metadata[REVIEW_KEY] = saved.info["review"]
            self.viewer.add_labels(saved.labels, name=name, opacity=0.5, metadata=metadata, **layer_transform(layer))
            show_info(f"MedViT: restored corrections '{saved.name}' saved {saved.info.get('saved', '')}")

    def accept(self, *_: Any) -> None:
        layer = self.layer.value
        if layer is None:
            return
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        layer.metadata = {**layer.metadata, REVIEW_KEY: {"accepted": True, "time": stamp, **self.update_metrics()}}
        self.review.value = f"accepted {stamp}"

    def export(self, *_: Any) -> Any:
        """Export image + corrected mask + provenance; returns the exported case or None."""
        from napari_medvit.training.export import export_case

        layer = self.layer.value
        folder = str(self.folder.value or "")
        if layer is None or folder in ("", "."):
            self.message.value = "choose a corrected mask and an export folder first"
            return None
        prov = dict(layer.metadata.get(PREDICTION_KEY, {}))
        source = prov.get("source_layer")
        if source not in self.viewer.layers:
            self.message.value = f"the source image '{source}' is no longer open: cannot export its image"
            return None
        image_layer = self.viewer.layers[source]
        meta = self._meta(layer) or ImageMeta.identity(min(image_layer.ndim, 3), rgb=bool(image_layer.rgb))
        names = prov.get("class_names") or ["background", "foreground"]
        try:
            case = export_case(folder, self.case.value, np.asarray(image_layer.data), meta, np.asarray(layer.data),
                               label_names={n: i for i, n in enumerate(names)}, original=layer.metadata[ORIGINAL_KEY],
                               provenance={"model": prov.get("model"), "weights": prov.get("weights"),
                                           "checkpoint_sha256": prov.get("checkpoint_sha256"),
                                           "reviewed": bool(layer.metadata.get(REVIEW_KEY))})
        except (ValueError, OSError) as exc:
            self.message.value = f"not exported: {exc}"
            return None
        self.message.value = f"exported as {case.case_id} to {folder}" + (
            f" (new version of {case.supersedes})" if case.supersedes else "")
        return case
