"""Autosave and restore of corrections, per source image (the file I/O is :mod:`napari_medvit.io.session`).

:func:`autosave` writes a record to the session folder of the file its image was opened from;
:func:`restorable` lists what an image opened again gets back: masks and boxes as new layers
(:class:`Restored` with their data and metadata) and class results for the image's metadata. The
on-disk format is that of :func:`napari_medvit.io.session.save_correction`:

- mask: ``labels`` the corrected mask, ``original`` the model's; info ``kind``, ``provenance``, ``review``.
- boxes: ``labels`` the rectangles' vertices (M, 4, 2), ``original`` the model's boxes (N, 4); info
  also ``features`` (the rectangles' columns) and ``original`` (the model's classes, scores, queries).
- class: saved as ``"<model> class"`` with empty ``labels`` and the probabilities as ``original``; info
  ``record`` (the class record without its review) and ``review``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_medvit._layers import ORIGINAL_KEY, PREDICTION_KEY
from napari_medvit.corrections.records import REVIEW_KEY, Correction
from napari_medvit.io.meta import META_KEY


def autosave(record: Correction, root: Path | None = None) -> Path | None:
    """Write ``record`` to the session folder of its source image (atomic); None when the image
    was not opened from a file (nothing to find it again by)."""
    from napari_medvit.io.session import save_correction

    if record.source_path is None:
        return None
    if record.kind == "class":
        result = record.class_record()
        return save_correction(record.source_path, f"{record.model} class", np.zeros(0),
                               np.asarray(result["probabilities"]),
                               {"kind": "class", "record": result, "review": record.review}, root=root)
    prov = {k: v for k, v in record.provenance.items() if not isinstance(v, np.ndarray)}
    info: dict[str, Any] = {"kind": record.kind, "provenance": prov, "review": record.review}
    if record.kind == "mask":
        labels, original = np.asarray(record.corrected), record.original
    else:  # the rectangles' vertices, their features and the model's boxes
        labels = np.asarray([np.asarray(r, dtype=float) for r in record.corrected]).reshape(-1, 4, 2)
        original = record.original["boxes"]
        info["features"] = dict(record.features or {})
        info["original"] = {k: v for k, v in record.original.items() if k != "boxes"}
    return save_correction(record.source_path, record.name, labels, original, info, root=root)


@dataclass(frozen=True)
class Restored:
    """An autosaved correction to bring back: for ``"mask"`` and ``"boxes"`` a new layer ``name`` with
    ``data`` (labels, or rectangles' vertices), ``metadata`` and (boxes) ``features``; for ``"class"``
    the ``record`` to add to the image's class results."""

    kind: str
    name: str
    saved_name: str
    saved_time: str
    data: Any = None
    metadata: dict[str, Any] | None = None
    features: dict[str, list[Any]] | None = None
    record: dict[str, Any] | None = None


def restorable(source_path: str, image_name: str, meta_entry: dict[str, Any], image_shape: tuple[int, ...], *,
               existing_layers: Collection[str] = (), class_models: Collection[str] = (),
               root: Path | None = None) -> list[Restored]:
    """What reopening the image ``image_name`` (opened from ``source_path``, geometry ``meta_entry``,
    array shape ``image_shape``) brings back, oldest first. Left out: a mask or boxes layer whose
    name is among ``existing_layers``, a class result of a model in ``class_models`` (the image
    has one), a mask whose shape does not fit the image."""
    from napari_medvit.io.session import load_corrections

    found: list[Restored] = []
    models = set(class_models)
    for saved in load_corrections(source_path, root=root):
        kind, time = saved.info.get("kind", "mask"), saved.info.get("saved", "")
        name = f"{saved.name} (autosaved {time})"
        review = saved.info.get("review")
        if kind == "class":
            record = dict(saved.info["record"], source_layer=image_name)
            if record["model"] in models:
                continue
            models.add(record["model"])
            if review:
                record[REVIEW_KEY] = review
            found.append(Restored("class", name, saved.name, time, record=record))
            continue
        if name in existing_layers:
            continue
        prov = {**(saved.info.get("provenance") or {}), "source_layer": image_name}
        metadata: dict[str, Any] = {META_KEY: meta_entry, PREDICTION_KEY: prov}
        if review:
            metadata[REVIEW_KEY] = review
        if kind == "boxes":
            original = {**saved.info.get("original", {}), "boxes": saved.original.reshape(-1, 4)}
            found.append(Restored("boxes", name, saved.name, time, list(saved.labels),
                                  {**metadata, ORIGINAL_KEY: original}, saved.info.get("features")))
        elif saved.labels.shape == tuple(image_shape[: saved.labels.ndim]):
            found.append(Restored("mask", name, saved.name, time, saved.labels,
                                  {**metadata, ORIGINAL_KEY: saved.original}))
    return found
