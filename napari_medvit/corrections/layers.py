"""Records from layer-like objects: what the docks hand the core, without the core importing napari.

A layer here is anything with ``name``, ``data`` and ``metadata`` (napari's layers in the viewer;
plain stand-ins in tests): masks and boxes are the layers that keep the model's result under
``medvit_original`` (an array for a mask, a dict with ``boxes`` for boxes; boxes layers also have
``features``), classifications live in an image layer's ``medvit_class_results`` (model -> record),
reached through a :class:`ClassResult` handle. An image is read as napari gives it: ``multiscale``
data's first level, ``rgb`` for colour frames. The items of :func:`correction_items` (a mask or
boxes layer, or a :class:`ClassResult`) are what the corrections dock lists; :func:`record_of`
turns one into a :class:`~napari_medvit.corrections.Correction`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_medvit._layers import CLASS_RESULTS_KEY, ORIGINAL_KEY, PREDICTION_KEY
from napari_medvit.corrections.records import (
    REVIEW_KEY,
    Correction,
    SourceImage,
    choose_class,
    chosen_at,
    class_result_name,
    merge_class_result,
)
from napari_medvit.io.meta import META_KEY, ImageMeta


def layer_meta(layer: Any) -> ImageMeta | None:
    """The layer's ImageMeta (``medvit_meta``), None without one."""
    entry = layer.metadata.get(META_KEY)
    return ImageMeta.from_dict(entry) if entry else None


def source_path_of(layer: Any) -> str | None:
    """The file the layer's image was opened from (its ImageMeta's ``source_path``), None if not from a file."""
    entry = layer.metadata.get(META_KEY) or {}
    return entry.get("source_path") or None


def image_data(layer: Any) -> Any:
    """A layer's array: the first level of multiscale data."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def source_image(layer: Any) -> SourceImage:
    return SourceImage(layer.name, image_data(layer), layer_meta(layer), bool(getattr(layer, "rgb", False)))


def layer_kind(layer: Any) -> str | None:
    """'mask' or 'boxes' for a layer that keeps the model's result beside the user's, else None."""
    original = layer.metadata.get(ORIGINAL_KEY)
    if original is None:
        return None
    return "boxes" if isinstance(original, Mapping) else "mask"


def layer_correction(layer: Any, source: SourceImage | None) -> Correction:
    """The record of a mask (Labels) or boxes (Shapes) layer; ``source``: its image, None if closed."""
    kind = layer_kind(layer)
    if kind is None:
        raise ValueError(f"the layer '{layer.name}' holds no model result to correct (no '{ORIGINAL_KEY}')")
    if kind == "mask":
        corrected: Any = np.asarray(layer.data)
        features = None
    else:
        corrected = [np.asarray(r, dtype=float) for r in layer.data]
        table = getattr(layer, "features", None)
        features = {str(k): list(table[k]) for k in table.columns} if table is not None else None
    return Correction(kind, layer.name, layer.metadata[ORIGINAL_KEY], corrected,
                      provenance=dict(layer.metadata.get(PREDICTION_KEY, {})),
                      review=layer.metadata.get(REVIEW_KEY), meta=layer_meta(layer), source=source,
                      source_name=layer.metadata.get(PREDICTION_KEY, {}).get("source_layer") or "",
                      source_path=source_path_of(layer), features=features)


def class_correction(image: Any, model: str, *, is_open: bool = True) -> Correction:
    """The record of ``model``'s classification of the image layer ``image`` (``is_open`` False: the
    image was closed, so the record has no source to export)."""
    results = image.metadata.get(CLASS_RESULTS_KEY, {})
    if model not in results:
        raise ValueError(f"the image '{image.name}' has no classification by {model!r}; it has {sorted(results)}")
    stored = results[model]
    original = {k: v for k, v in stored.items() if k not in ("chosen", REVIEW_KEY)}
    return Correction("class", class_result_name(stored, image.name), original, stored["chosen"],
                      provenance=dict(stored.get("provenance") or {}), review=stored.get(REVIEW_KEY),
                      meta=layer_meta(image), source=source_image(image) if is_open else None,
                      source_name=image.name, source_path=source_path_of(image), model=model)


@dataclass(frozen=True, eq=False)
class ClassResult:
    """The classification of ``model`` on an image layer; kept in ``layer.metadata[CLASS_RESULTS_KEY]``.
    Two handles on the same layer and model are equal."""

    layer: Any
    model: str

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassResult) and other.layer is self.layer and other.model == self.model

    def __hash__(self) -> int:
        return hash((id(self.layer), self.model))

    @property
    def metadata(self) -> dict[str, Any]:
        """The record: the model's side (see :func:`napari_medvit._layers.class_result`), ``chosen``, review."""
        return self.layer.metadata[CLASS_RESULTS_KEY][self.model]

    def update(self, **changes: Any) -> None:
        """Replace entries of the record (the layer's metadata is assigned anew, so napari sees the change)."""
        results = dict(self.layer.metadata.get(CLASS_RESULTS_KEY, {}))
        results[self.model] = {**results[self.model], **changes}
        self.layer.metadata = {**self.layer.metadata, CLASS_RESULTS_KEY: results}

    @property
    def name(self) -> str:
        return class_result_name(self.metadata, self.layer.name)

    @property
    def per_slice(self) -> bool:
        """A 2D classifier's result on a volume: one class per slice."""
        return bool(self.metadata.get("per_slice"))

    def slice_index(self, world_point: Sequence[float]) -> int:
        """The (flat, C-order) index of the slice at ``world_point`` (napari's ``viewer.dims.point``),
        found with the layer's ``world_to_data``; 0 if not per slice."""
        if not self.per_slice:
            return 0
        lead = [int(n) for n in self.metadata["slice_shape"]]
        position = np.asarray(self.layer.world_to_data(world_point), dtype=float)
        idx = [int(np.clip(np.round(position[a]), 0, n - 1)) for a, n in enumerate(lead)]
        return int(np.ravel_multi_index(idx, lead))

    def choose(self, class_index: int, slice_index: int = 0) -> None:
        """Set the corrected class (of one slice, for a per-slice result)."""
        self.update(chosen=choose_class(self.metadata, class_index, slice_index)["chosen"])

    def chosen_at(self, slice_index: int = 0) -> int:
        return chosen_at(self.metadata, slice_index)


def record_class_result(layer: Any, prediction: Any, *, tabular_features: Any = (),
                        tabular: dict[str, float | None] | None = None) -> ClassResult | None:
    """Keep a classification of the image layer ``layer`` in its metadata (see
    :func:`~napari_medvit.corrections.merge_class_result`); None for a result that is not a classification."""
    results = layer.metadata.get(CLASS_RESULTS_KEY, {})
    merged = merge_class_result(results, prediction, source_name=layer.name,
                                tabular_features=tabular_features, tabular=tabular)
    if merged is None:
        return None
    model, new = merged
    if new is not results:
        layer.metadata = {**layer.metadata, CLASS_RESULTS_KEY: new}
    return ClassResult(layer, model)


def item_kind(item: Any) -> str:
    """'class' for a :class:`ClassResult`, else the layer's kind ('mask' or 'boxes')."""
    if isinstance(item, ClassResult):
        return "class"
    kind = layer_kind(item)
    if kind is None:
        raise ValueError(f"the layer '{item.name}' holds no model result to correct (no '{ORIGINAL_KEY}')")
    return kind


def correction_items(layers: Iterable[Any]) -> list[tuple[str, Any]]:
    """(label, item) for every correctable result among ``layers`` (e.g. ``viewer.layers``), in layer
    order: masks and boxes layers made by a run (or restored from autosave), and the classification
    results kept on image layers (:class:`ClassResult`)."""
    items: list[tuple[str, Any]] = []
    for layer in layers:
        kind = layer_kind(layer)
        if kind is not None:
            items.append((f"{layer.name} — {kind}", layer))
        for model in layer.metadata.get(CLASS_RESULTS_KEY, {}):
            result = ClassResult(layer, model)
            items.append((f"{result.name} — class", result))
    return items


def record_of(item: Any, layers: Iterable[Any]) -> Correction:
    """The record of an item of :func:`correction_items`; its source image is looked for among ``layers``
    (by name for a mask or boxes; a class result's image must still be one of them)."""
    layers = list(layers)
    if isinstance(item, ClassResult):
        return class_correction(item.layer, item.model, is_open=any(lay is item.layer for lay in layers))
    name = item.metadata.get(PREDICTION_KEY, {}).get("source_layer")
    image = next((lay for lay in layers if lay.name == name), None)
    return layer_correction(item, source_image(image) if image is not None else None)


def correction_records(layers: Iterable[Any]) -> list[Correction]:
    """The record of every correctable result among ``layers`` (see :func:`correction_items`)."""
    layers = list(layers)
    return [record_of(item, layers) for _, item in correction_items(layers)]


def accepted_records(layers: Iterable[Any]) -> list[Correction]:
    """The accepted (reviewed) ones of :func:`correction_records`: what a session's fine-tuning trains on."""
    return [record for record in correction_records(layers) if record.reviewed]
