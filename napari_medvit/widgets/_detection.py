"""The inference dock's detection view: SMCA-DETR's boxes above the score threshold and the Gaussian prior of
the chosen query, redrawn in place on re-runs; boxes the user edited are never redrawn."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Layer

from napari_medvit._layers import (
    ORIGINAL_KEY,
    PREDICTION_KEY,
    box_rectangles,
    detection_layers,
    layer_transform,
    rectangles_to_boxes,
)


class DetectionView:
    """Mixed into :class:`~napari_medvit.widgets.inference.InferenceWidget` (its viewer, source, widgets)."""

    viewer: Any
    last_prediction: Any
    _source: Any
    _boxes_layer: Any
    _prior_layer: Any
    head: Any
    threshold: Any
    query: Any
    status: Any

    def _start_detection(self, prediction: Any) -> None:
        """A new detection: the layers of this model's last run on the same image are updated in place
        (boxes only when the user has not edited them: edited boxes are kept and the new run gets its own)."""
        if not self._same_run_target(self._boxes_layer, prediction) or self._boxes_edited(self._boxes_layer):
            self._boxes_layer = None
        if not self._same_run_target(self._prior_layer, prediction):
            self._prior_layer = None
        self.query.max = max(len(prediction.probabilities) - 1, 0)
        with self.query.changed.blocked():
            self.query.value = int(np.argmax(prediction.probabilities))
        self._refresh_detection()

    def _same_run_target(self, layer: Any, prediction: Any) -> bool:
        """Whether ``layer`` (a detection layer of this dock) shows ``prediction``'s model on the same image."""
        if layer is None or layer not in self.viewer.layers:
            return False
        prov = layer.metadata.get(PREDICTION_KEY, {})
        source = self._source.name if self._source is not None else ""
        return prov.get("model") == prediction.model_name and prov.get("source_layer") == source

    def _refresh_prior(self, *_: Any) -> None:
        """Show another query's (or head's) Gaussian prior; the boxes, perhaps edited, stay as they are."""
        self._refresh_detection(boxes_too=False)

    def _boxes_edited(self, boxes: Layer) -> bool:
        original = boxes.metadata.get(ORIGINAL_KEY, {}).get("boxes")
        if original is None:
            return False
        current = rectangles_to_boxes(list(boxes.data))
        return len(current) != len(original) or not np.allclose(current, original)

    def _refresh_detection(self, *_: Any, boxes_too: bool = True) -> None:
        """(Re)draw the boxes above the score threshold and the chosen query's Gaussian prior.

        Boxes the user has edited (moved, resized, deleted, drawn) are never redrawn: a new
        threshold then applies to the next run, and the status line says so."""
        prediction = self.last_prediction
        if prediction is None or prediction.task != "detect":
            return
        source = self._source
        head = self.head.value if self.head.value == "mean" else int(self.head.value) - 1
        (rects, shape_kwargs, _), (prior, prior_kwargs, _) = detection_layers(
            prediction, threshold=float(self.threshold.value), query=int(self.query.value), head=head,
            transform=layer_transform(source) if source is not None else {},
            source_metadata=source.metadata if source is not None else None,
            source_name=source.name if source is not None else "")
        boxes = self._boxes_layer
        if boxes is None or boxes not in self.viewer.layers:
            boxes = self._boxes_layer = self.viewer.add_layer(Layer.create(rects, shape_kwargs, "shapes"))
            boxes.events.highlight.connect(self._query_from_selection)
        elif boxes_too and self._boxes_edited(boxes):
            self.status.value = "the boxes were edited: they are kept, the new threshold applies to the next run"
        elif boxes_too:
            _, features = box_rectangles(prediction, float(self.threshold.value))
            boxes.data = rects
            boxes.features = features
            boxes.metadata = shape_kwargs["metadata"]
        prior_layer = self._prior_layer
        if prior_layer is None or prior_layer not in self.viewer.layers:
            self._prior_layer = self.viewer.add_layer(Layer.create(prior, prior_kwargs, "image"))
        else:
            prior_layer.data = prior
            prior_layer.metadata = prior_kwargs["metadata"]
        self.viewer.layers.selection.active = self._boxes_layer

    def _query_from_selection(self, *_: Any) -> None:
        """Clicking a box shows the Gaussian prior of its query."""
        boxes = self._boxes_layer
        if boxes is None or len(boxes.selected_data) != 1:
            return
        index = next(iter(boxes.selected_data))
        query = int(boxes.features["query"].iloc[index])
        if query != self.query.value:
            self.query.value = query

