"""The result records of a correction: plain data, no napari.

A :class:`Correction` is one result to correct as the corrections core sees it: its kind
(``"mask"``, ``"boxes"`` or ``"class"``), the model's original result beside the corrected one,
the run's provenance, the review (``None`` until accepted) and the source image
(:class:`SourceImage`, ``None`` when it is no longer open). The dock builds records from napari
layers (see :mod:`napari_medvit.corrections.layers`) each time it needs one; arrays are the
layers' own, not copies.

- mask: ``original`` and ``corrected`` are label arrays of the same shape.
- boxes: ``original`` is the model's side (``boxes`` (N, 4) as (y0, x0, y1, x1), ``classes``,
  ``scores``, ``queries``), ``corrected`` the rectangles' vertices (M, 4, 2), ``features`` the
  rectangles' feature columns (``class`` names the class of each rectangle).
- class: ``original`` is the model's side of the classification
  (:func:`napari_medvit._layers.class_result`: class names, probabilities, predicted, tabular row,
  per-slice layout), ``corrected`` the chosen class index (a list of one index per slice for a
  per-slice result).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_medvit._layers import class_result, default_box_class, rectangles_to_boxes
from napari_medvit.io.meta import ImageMeta

REVIEW_KEY = "medvit_review"  # the review of an accepted result, in a layer's metadata or a class record
KINDS = ("mask", "boxes", "class")


def case_id_of(name: str) -> str:
    """A case id made from a layer name: runs of other characters than letters, digits, ``_`` and ``-``
    become one ``-`` (``"frame 7"`` -> ``"frame-7"``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "case"


@dataclass(frozen=True)
class SourceImage:
    """The image a result was computed on: its name, its array (a multiscale image's first level,
    converted with ``np.asarray`` only when exported), its geometry, RGB or not."""

    name: str
    data: Any
    meta: ImageMeta | None = None
    rgb: bool = False

    def array(self) -> np.ndarray:
        return np.asarray(self.data)

    def image_meta(self) -> ImageMeta:
        """Its ImageMeta, else an identity geometry of its (at most 3) spatial axes."""
        if self.meta is not None:
            return self.meta
        ndim = np.ndim(self.data) - (1 if self.rgb else 0)
        return ImageMeta.identity(max(1, min(ndim, 3)), rgb=self.rgb)


@dataclass(frozen=True, eq=False)
class Correction:
    """One result to correct (see the module docstring for what ``original`` and ``corrected`` hold)."""

    kind: str
    name: str
    original: Any
    corrected: Any
    provenance: dict[str, Any] = field(default_factory=dict)
    review: dict[str, Any] | None = None
    meta: ImageMeta | None = None  # the result's own geometry (a mask's or boxes' layer; the image's for a class)
    source: SourceImage | None = None
    source_name: str = ""
    source_path: str | None = None  # the file the image was opened from: the autosave's key
    features: dict[str, list[Any]] | None = None  # boxes: the rectangles' feature columns
    model: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"a correction's kind is one of {KINDS}, not {self.kind!r}")

    @property
    def reviewed(self) -> bool:
        return bool(self.review)

    @property
    def per_slice(self) -> bool:
        """A 2D classifier's result on a volume: one class per slice."""
        return self.kind == "class" and bool(self.original.get("per_slice"))

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """A mask's voxel spacing when its geometry describes all its axes in mm (HD95 in mm), else None
        (HD95 in pixels: a photo's spacing is a pixel)."""
        if (self.kind != "mask" or self.meta is None or self.meta.ndim != np.ndim(self.corrected)
                or not self.meta.calibrated):
            return None
        return self.meta.spacing

    def class_record(self) -> dict[str, Any]:
        """A class result as the image layer keeps it (without the review): the model's side and ``chosen``."""
        if self.kind != "class":
            raise ValueError(f"class_record is for class results; {self.name!r} is a {self.kind} result")
        return {**self.original, "chosen": self.corrected}

    def boxes(self) -> np.ndarray:
        """The corrected boxes, (M, 4) as (y0, x0, y1, x1) in data coordinates."""
        return rectangles_to_boxes(self.corrected)

    def categories(self) -> list[str]:
        """The detection classes: the run's class names, else the model's, else the model's box classes."""
        names = self.provenance.get("class_names")
        if not names and self.provenance.get("model"):
            from napari_medvit.models import get_spec

            names = list(get_spec(self.provenance["model"]).class_names)
        if not names:
            names = sorted({str(c) for c in self.original.get("classes", [])})
        return [str(n) for n in names] or ["object"]

    def box_classes(self, categories: list[str] | None = None) -> list[str]:
        """The class of each rectangle: its ``class`` feature when it names a category, else the first
        non-background category (a rectangle drawn without one)."""
        categories = self.categories() if categories is None else categories
        default = default_box_class(categories)
        column = (self.features or {}).get("class")
        if column is None or len(column) != len(self.corrected):
            return [default] * len(self.corrected)
        return [c if c in categories else default for c in (str(v) for v in column)]


def default_case_id(record: Correction) -> str:
    """The case id of an export: the one given at acceptance, else made from the source image's name."""
    if record.review and record.review.get("case_id"):
        return str(record.review["case_id"])
    if record.kind == "class":
        return case_id_of(record.source_name)
    return case_id_of(record.provenance.get("source_layer") or record.name)


def make_review(case_id: str, metrics: dict[str, Any], now: _dt.datetime | None = None) -> dict[str, Any]:
    """The review record of an accepted result: accepted, the time (seconds), its case id, its agreement."""
    stamp = (now or _dt.datetime.now()).isoformat(timespec="seconds")
    return {"accepted": True, "time": stamp, "case_id": case_id, **metrics}


def class_result_name(record: dict[str, Any], image_name: str) -> str:
    """The name of a classification result: ``"<model> class[ (per slice)] of <image>"``."""
    per = " (per slice)" if record.get("per_slice") else ""
    return f"{record.get('display', record.get('model'))} class{per} of {image_name}"


def merge_class_result(results: dict[str, Any], prediction: Any, *, source_name: str,
                       tabular_features: Any = (),
                       tabular: dict[str, float | None] | None = None) -> tuple[str, dict[str, Any]] | None:
    """The class results of an image (model -> record) with ``prediction``'s classification added:
    ``(model, new results)``, or None for a result that is not a classification. A newer prediction of
    the same model replaces the older one, keeping a class the user chose (when the classes and the
    slice layout are the same) and dropping its review; the same prediction seen again changes nothing
    (the results come back as they were). ``tabular``: the row to keep when it cannot be recovered
    from the prediction with ``tabular_features``. A per-slice classification keeps one chosen
    class per slice."""
    if prediction.task != "classify" or np.ndim(prediction.probabilities) < 1:
        return None
    try:
        record = class_result(prediction, source_name=source_name, tabular_features=tabular_features)
    except ValueError:  # the feature list does not fit the run's vector: keep the row the run was given
        record = class_result(prediction, source_name=source_name)
        record["tabular"] = dict(tabular) if tabular is not None else None
    model = record["model"]
    old = results.get(model)
    if old is not None and old["probabilities"] == record["probabilities"] and old["tabular"] == record["tabular"]:
        return model, results  # the same prediction seen again
    chosen = record["predicted"]
    if (old is not None and old["chosen"] != old["predicted"] and old["class_names"] == record["class_names"]
            and old.get("slice_shape") == record.get("slice_shape")):
        chosen = old["chosen"]
    return model, {**results, model: {**record, "chosen": chosen}}


def choose_class(record: dict[str, Any], class_index: int, slice_index: int = 0) -> dict[str, Any]:
    """A class record with the corrected class set (of one slice, for a per-slice result)."""
    names = record["class_names"]
    if not 0 <= int(class_index) < len(names):
        raise ValueError(f"class index {class_index} is out of range for the classes {names}")
    if not record.get("per_slice"):
        return {**record, "chosen": int(class_index)}
    chosen = list(record["chosen"])
    if not 0 <= int(slice_index) < len(chosen):
        raise ValueError(f"slice {slice_index} is out of range: the result has {len(chosen)} slices")
    chosen[int(slice_index)] = int(class_index)
    return {**record, "chosen": chosen}


def chosen_at(record: dict[str, Any], slice_index: int = 0) -> int:
    """The corrected class index (of slice ``slice_index`` for a per-slice result)."""
    chosen = record["chosen"]
    return int(chosen[slice_index]) if record.get("per_slice") else int(chosen)
