"""Dock widget "MedViT corrections": agreement of a corrected result with the model's, accept, export.

Three kinds of results are corrected, each beside the model's own output:

- mask: a Labels layer made by a run, edited with napari's brush, fill and eraser; the model's mask
  is kept in the layer's metadata (``medvit_original``). Agreement: Dice, IoU, HD95 (MONAI), edited
  voxels. Export: nnU-Net layout.
- boxes: a detection run's Shapes layer, edited with napari's shape tools (move, resize, delete,
  draw rectangles); the model's boxes are kept under ``medvit_original``. Agreement: Hungarian
  matched-box IoU, added / removed / moved / unchanged boxes. Export: COCO ``annotations.json``.
- class: a classification of one image (CrossViT or a timm model on a 2D frame, DAFT on a volume
  with its tabular row), kept in the image layer's metadata (``medvit_class_results``); the user
  picks the correct class. Agreement: changed or not, the model's probability of the chosen class.
  Export: ``labels.csv`` (with DAFT's tabular row). A 2D classifier run on a volume gives a class per
  slice: the dock then corrects the class of the slice on screen (it follows napari's slider) and
  counts the changed slices; the export writes each slice as a 2D case ``<case>_sNNN`` with its class.

Agreement is recomputed shortly after each burst of edits and autosaved per source image;
"Accept" marks a result reviewed; :func:`export_accepted` exports every accepted result of the
session (the fine-tune dock trains on them).
"""

from __future__ import annotations

import csv
import datetime as _dt
import re
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton
from napari.layers import Image, Labels, Layer, Shapes
from napari.viewer import Viewer

from napari_medvit._layers import (
    BOX_STYLE,
    CLASS_RESULTS_KEY,
    ORIGINAL_KEY,
    PREDICTION_KEY,
    box_feature_defaults,
    class_result,
    default_box_class,
    layer_transform,
    rectangles_to_boxes,
)
from napari_medvit.io.meta import META_KEY, ImageMeta

REVIEW_KEY = "medvit_review"


def _case_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "case"


@dataclass(frozen=True, eq=False)
class ClassResult:
    """The classification of ``model`` on an image layer; kept in ``layer.metadata[CLASS_RESULTS_KEY]``."""

    layer: Image
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
        results = dict(self.layer.metadata.get(CLASS_RESULTS_KEY, {}))
        results[self.model] = {**results[self.model], **changes}
        self.layer.metadata = {**self.layer.metadata, CLASS_RESULTS_KEY: results}

    @property
    def name(self) -> str:
        per = " (per slice)" if self.per_slice else ""
        return f"{self.metadata.get('display', self.model)} class{per} of {self.layer.name}"

    @property
    def per_slice(self) -> bool:
        """A 2D classifier's result on a volume: one class per slice."""
        return bool(self.metadata.get("per_slice"))

    def slice_index(self, viewer: Viewer) -> int:
        """The (flat, C-order) index of the slice that napari shows of this image (0 if not per slice)."""
        if not self.per_slice:
            return 0
        lead = [int(n) for n in self.metadata["slice_shape"]]
        position = np.asarray(self.layer.world_to_data(viewer.dims.point), dtype=float)
        idx = [int(np.clip(np.round(position[a]), 0, n - 1)) for a, n in enumerate(lead)]
        return int(np.ravel_multi_index(idx, lead))

    def choose(self, class_index: int, slice_index: int = 0) -> None:
        """Set the corrected class (of one slice, for a per-slice result)."""
        if self.per_slice:
            chosen = list(self.metadata["chosen"])
            chosen[slice_index] = int(class_index)
            self.update(chosen=chosen)
        else:
            self.update(chosen=int(class_index))

    def chosen_at(self, slice_index: int = 0) -> int:
        chosen = self.metadata["chosen"]
        return int(chosen[slice_index]) if self.per_slice else int(chosen)


def kind_of(item: Any) -> str:
    """'mask', 'boxes' or 'class'."""
    if isinstance(item, ClassResult):
        return "class"
    return "boxes" if isinstance(item, Shapes) else "mask"


def correction_items(viewer: Viewer) -> list[tuple[str, Any]]:
    """(label, item) for every correctable result in the viewer: masks and boxes layers made by a
    run (or restored from autosave), and the classification results kept on image layers."""
    items: list[tuple[str, Any]] = []
    for layer in viewer.layers:
        if isinstance(layer, Labels | Shapes) and ORIGINAL_KEY in layer.metadata:
            items.append((f"{layer.name} — {kind_of(layer)}", layer))
        if isinstance(layer, Image):
            for model in layer.metadata.get(CLASS_RESULTS_KEY, {}):
                result = ClassResult(layer, model)
                items.append((f"{result.name} — class", result))
    return items


def _review(item: Any) -> dict[str, Any] | None:
    return item.metadata.get(REVIEW_KEY)  # a layer's metadata, or a class result's record


def record_class_result(layer: Image, prediction: Any, *, tabular_features: Any = (),
                        tabular: dict[str, float | None] | None = None) -> ClassResult | None:
    """Keep a classification of ``layer`` in its metadata (one result per model; a newer prediction of
    the same model replaces the older one, keeping a class the user chose, dropping its review).
    ``tabular``: the row to use when it cannot be recovered from the prediction. None for a
    result that is not a classification. A per-slice classification (a 2D classifier on a volume)
    keeps one chosen class per slice."""
    if prediction.task != "classify" or np.ndim(prediction.probabilities) < 1:
        return None
    try:
        record = class_result(prediction, source_name=layer.name, tabular_features=tabular_features)
    except ValueError:
        record = class_result(prediction, source_name=layer.name)
        record["tabular"] = dict(tabular) if tabular is not None else None
    results = dict(layer.metadata.get(CLASS_RESULTS_KEY, {}))
    old = results.get(record["model"])
    if old is not None and old["probabilities"] == record["probabilities"] and old["tabular"] == record["tabular"]:
        return ClassResult(layer, record["model"])  # the same prediction seen again
    chosen = record["predicted"]
    if (old is not None and old["chosen"] != old["predicted"] and old["class_names"] == record["class_names"]
            and old.get("slice_shape") == record.get("slice_shape")):
        chosen = old["chosen"]
    results[record["model"]] = {**record, "chosen": chosen}
    layer.metadata = {**layer.metadata, CLASS_RESULTS_KEY: results}
    return ClassResult(layer, record["model"])


# -- agreement --------------------------------------------------------------------------------
def _meta(layer: Layer) -> ImageMeta | None:
    entry = layer.metadata.get(META_KEY)
    return ImageMeta.from_dict(entry) if entry else None


def _box_classes(layer: Shapes, categories: list[str]) -> list[str]:
    """The class of each rectangle: its 'class' feature when it names a category, else the first
    non-background category (a rectangle drawn without one)."""
    default = default_box_class(categories)
    if "class" not in layer.features or len(layer.features) != len(layer.data):
        return [default] * len(layer.data)
    return [c if c in categories else default for c in (str(v) for v in layer.features["class"])]


def _categories(layer: Shapes) -> list[str]:
    prov = layer.metadata.get(PREDICTION_KEY, {})
    names = prov.get("class_names")
    if not names and prov.get("model"):
        from napari_medvit.models import get_spec

        names = list(get_spec(prov["model"]).class_names)
    if not names:
        names = sorted({str(c) for c in layer.metadata[ORIGINAL_KEY].get("classes", [])})
    return [str(n) for n in names] or ["object"]


def _torch_safely() -> None:
    """The agreement and export functions import torch, torchvision and MONAI: keep Triton out first
    (it crashes a process that has napari's OpenGL canvas; see models._compat)."""
    from napari_medvit.models._compat import keep_triton_out_without_cuda

    keep_triton_out_without_cuda()


def agreement(item: Any, slice_index: int = 0) -> dict[str, Any]:
    """The agreement of a corrected result with the model's (see the module docstring); for a
    per-slice classification, of slice ``slice_index``, plus the count of changed slices."""
    _torch_safely()
    from napari_medvit.training.export import box_agreement, mask_metrics

    kind = kind_of(item)
    if kind == "mask":
        meta = _meta(item)
        spacing = meta.spacing if meta is not None and meta.ndim == item.ndim else None
        return mask_metrics(item.metadata[ORIGINAL_KEY], np.asarray(item.data), spacing)
    if kind == "boxes":
        original = item.metadata[ORIGINAL_KEY]
        return box_agreement(original["boxes"], rectangles_to_boxes(item.data),
                             original_classes=list(original.get("classes", [])),
                             corrected_classes=_box_classes(item, _categories(item)))
    record = item.metadata
    names, p = record["class_names"], record["probabilities"]
    if record.get("per_slice"):
        chosen_all, predicted_all = record["chosen"], record["predicted"]
        i = int(slice_index)
        chosen, predicted, p = int(chosen_all[i]), int(predicted_all[i]), p[i]
        extra = {"slice": i, "n_slices": len(predicted_all),
                 "changed_slices": int(sum(int(c) != int(q) for c, q in zip(chosen_all, predicted_all)))}
    else:
        chosen, predicted, extra = int(record["chosen"]), int(record["predicted"]), {}
    return {"predicted": names[predicted], "chosen": names[chosen], "changed": chosen != predicted,
            "probability": float(p[chosen]), "predicted_probability": float(p[predicted]), **extra}


def describe(kind: str, m: dict[str, Any], spacing: bool = False) -> str:
    if kind == "mask":
        hd = "–" if m["hd95"] is None else f"{m['hd95']:.1f}{' mm' if spacing else ' px'}"
        return f"Dice {m['dice']:.3f} · IoU {m['iou']:.3f} · HD95 {hd} · {m['edited_voxels']} edited"
    if kind == "boxes":
        iou = "–" if m["mean_iou"] is None else f"{m['mean_iou']:.3f}"
        return (f"matched IoU {iou} ({m['matched']} pairs) · {m['moved']} moved · {m['added']} added · "
                f"{m['removed']} removed · {m['unchanged']} unchanged"
                + (f" · {m['relabelled']} relabelled" if m.get("relabelled") else ""))
    change = f"changed: {m['predicted']} → {m['chosen']}" if m["changed"] else "unchanged"
    text = f"{change} · model's P({m['chosen']}) {m['probability']:.1%}"
    if "slice" in m:
        text = f"slice {m['slice']}: {text} · {m['changed_slices']} of {m['n_slices']} slices changed"
    return text


# -- export -----------------------------------------------------------------------------------
def _source_image(viewer: Viewer, item: Any) -> Layer:
    if isinstance(item, ClassResult):
        if item.layer not in viewer.layers:
            raise ValueError(f"the image '{item.layer.name}' is no longer open: cannot export it")
        return item.layer
    source = item.metadata.get(PREDICTION_KEY, {}).get("source_layer")
    if source not in viewer.layers:
        raise ValueError(f"the source image '{source}' is no longer open: cannot export its image")
    return viewer.layers[source]


def _image_meta(layer: Layer, image_layer: Layer) -> ImageMeta:
    return _meta(layer) or _meta(image_layer) or ImageMeta.identity(min(image_layer.ndim, 3),
                                                                    rgb=bool(getattr(image_layer, "rgb", False)))


def _provenance(prov: dict[str, Any], reviewed: bool) -> dict[str, Any]:
    return {"model": prov.get("model"), "weights": prov.get("weights"),
            "checkpoint_sha256": prov.get("checkpoint_sha256"), "reviewed": reviewed}


def default_case_id(item: Any) -> str:
    review = _review(item)
    if review and review.get("case_id"):
        return str(review["case_id"])
    if isinstance(item, ClassResult):
        return _case_id(item.layer.name)
    return _case_id(item.metadata.get(PREDICTION_KEY, {}).get("source_layer") or item.name)


def export_correction(viewer: Viewer, item: Any, folder: str | Path, case_id: str) -> tuple[str, Any]:
    """Export one corrected result into ``folder``; returns (the exported case id, what the exporter
    returned: an ExportedCase for a mask, the image path for boxes, labels.csv for a class).
    Raises ValueError (or OSError) naming the problem."""
    _torch_safely()
    from napari_medvit.training import export as ex

    kind = kind_of(item)
    image_layer = _source_image(viewer, item)
    image = np.asarray(image_layer.data[0] if image_layer.multiscale else image_layer.data)
    reviewed = bool(_review(item))
    if kind == "mask":
        prov = dict(item.metadata.get(PREDICTION_KEY, {}))
        names = prov.get("class_names") or ["background", "foreground"]
        case = ex.export_case(folder, case_id, image, _image_meta(item, image_layer), np.asarray(item.data),
                              label_names={n: i for i, n in enumerate(names)}, original=item.metadata[ORIGINAL_KEY],
                              provenance=_provenance(prov, reviewed))
        return case.case_id, case
    if kind == "boxes":
        prov = dict(item.metadata.get(PREDICTION_KEY, {}))
        categories = _categories(item)
        classes = _box_classes(item, categories)
        record = {**_provenance(prov, reviewed), "score_threshold": prov.get("threshold"),
                  "source": prov.get("source_layer"), "original_vs_corrected": agreement(item)}
        path = ex.export_boxes_coco(folder, case_id, image, _image_meta(item, image_layer),
                                    rectangles_to_boxes(item.data), categories,
                                    [categories.index(c) for c in classes], provenance=record)
        return path.stem, path
    record = item.metadata
    if record.get("per_slice"):
        return _export_slices(item, image, _image_meta(image_layer, image_layer), folder, case_id, reviewed)
    m = agreement(item)
    prov = {**_provenance(record.get("provenance", {}), reviewed), "predicted": m["predicted"],
            "predicted_probability": m["predicted_probability"], "chosen_probability": m["probability"],
            "changed": m["changed"]}
    path = ex.export_class_label(folder, case_id, m["chosen"], image=image, meta=_image_meta(image_layer, image_layer),
                                 tabular=record.get("tabular"), provenance=prov)
    with path.open(newline="") as f:
        exported = list(csv.DictReader(f))[-1]["case_id"]  # versioned (_v2 ...) when the id was taken
    return exported, path


def _export_slices(item: ClassResult, image: np.ndarray, meta: ImageMeta, folder: str | Path, case_id: str,
                   reviewed: bool) -> tuple[str, Path]:
    """A per-slice classification: every slice as a 2D case ``<case_id>_sNNN`` with its chosen class.

    Each slice is written as the model saw it: the predictor scales the whole volume to 0..1 (its
    0.5/99.5 percentiles) before slicing, so a slice is exported as 8-bit of that scaling (a slice
    scaled on its own would look different to the model in training than at inference)."""
    from napari_medvit.training import export as ex
    from napari_medvit.transforms import scale_to_unit

    record = item.metadata
    lead = tuple(int(n) for n in record["slice_shape"])
    if not (meta.rgb or image.dtype == np.uint8):
        image = np.round(scale_to_unit(image) * 255).astype(np.uint8)
    planes = image.reshape(-1, *image.shape[len(lead):])
    if len(planes) != len(record["predicted"]):
        raise ValueError(f"the image has {len(planes)} slices but the classification has {len(record['predicted'])}")
    plane_meta = ImageMeta.identity(2, rgb=meta.rgb)
    if len(meta.spacing) >= 2:  # keep the in-plane pixel size
        plane_meta = replace(plane_meta, spacing=tuple(meta.spacing[-2:]))
    names = record["class_names"]
    width = max(3, len(str(len(planes) - 1)))
    path = Path(folder) / "labels.csv"
    for i, plane in enumerate(planes):
        m = agreement(item, i)
        prov = {**_provenance(record.get("provenance", {}), reviewed), "source_case": case_id, "slice": i,
                "predicted": m["predicted"], "predicted_probability": m["predicted_probability"],
                "chosen_probability": m["probability"], "changed": m["changed"]}
        path = ex.export_class_label(folder, f"{case_id}_s{i:0{width}d}", names[int(record["chosen"][i])],
                                     image=plane, meta=plane_meta, provenance=prov)
    return case_id, path


def accepted_items(viewer: Viewer) -> list[Any]:
    return [item for _, item in correction_items(viewer) if _review(item)]


def export_accepted(viewer: Viewer, folder: str | Path, *, errors: list[str] | None = None) -> list[str]:
    """Export every accepted (reviewed) correction of the viewer into ``folder``: masks in the nnU-Net
    layout, boxes to COCO ``annotations.json``, classes to ``labels.csv``. Returns the exported
    case ids. A correction that cannot be exported (its image was closed, ...) is left out with
    its reason appended to ``errors``, or shown as a napari warning when no list is given."""
    exported, problems = [], []
    for item in accepted_items(viewer):
        name = item.name
        try:
            case, _ = export_correction(viewer, item, folder, default_case_id(item))
        except (ValueError, OSError) as exc:
            problems.append(f"{name}: {exc}")
            continue
        exported.append(case)
    if errors is not None:
        errors.extend(problems)
    elif problems:
        from napari.utils.notifications import show_warning

        show_warning("MedViT: not exported — " + "; ".join(problems))
    return exported


# -- the dock ---------------------------------------------------------------------------------
class CorrectionsWidget(Container):
    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__(labels=True)
        from qtpy.QtCore import QTimer

        self.viewer = napari_viewer
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
        # classification runs add no layer to watch (DAFT, timm): look for new ones in the inference docks
        self._seen: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._poll = QTimer(self.native)
        self._poll.setInterval(1000)
        self._poll.timeout.connect(self._collect_quietly)
        self._poll.start()
        self._connections: list[tuple[Any, Any]] = []
        self.layer.changed.connect(self._watch)
        self.class_choice.changed.connect(self._on_class_chosen)
        self.accept_button.changed.connect(self.accept)
        self.export_button.changed.connect(self.export)
        self.export_all_button.changed.connect(self.export_all)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._refresh)
        napari_viewer.layers.events.inserted.connect(self._offer_restore)
        self.collect_class_results()
        self._refresh()
        self._watch()

    @property
    def kind(self) -> str | None:
        """The kind of the chosen result: 'mask', 'boxes', 'class' or None."""
        return None if self.layer.value is None else kind_of(self.layer.value)

    # -- the list of results ----------------------------------------------------------------------
    def _choices(self, *_: Any) -> list[tuple[str, Any]]:
        return correction_items(self.viewer)

    def _refresh(self, *_: Any) -> None:
        self.layer.reset_choices()
        if self.layer.value is None and self.layer.choices:
            self.layer.value = self.layer.choices[-1]  # the newest result

    def _inference_widgets(self) -> list[Any]:
        from napari_medvit.widgets.inference import InferenceWidget

        try:
            docks = dict(getattr(self.viewer.window, "dock_widgets", {}))
        except RuntimeError:  # the window is closing
            return []
        return [w for w in docks.values() if isinstance(w, InferenceWidget)]

    def collect_class_results(self) -> list[ClassResult]:
        """Keep each inference dock's newest classification in its image layer's metadata."""
        found = []
        for runner in self._inference_widgets():
            prediction = runner.last_prediction
            if prediction is None or self._seen.get(runner) is prediction:
                continue
            self._seen[runner] = prediction
            source = getattr(runner, "source", None) or runner.image.value
            if not isinstance(source, Image) or source not in self.viewer.layers:
                continue
            panel = getattr(runner, "tabular", None)
            result = record_class_result(source, prediction,
                                         tabular_features=getattr(runner.predictor, "tabular_features", ()),
                                         tabular=panel.values() if panel is not None else None)
            if result is not None:
                found.append(result)
        if found:
            self._refresh()
            self.layer.value = found[-1]
            self._watch()  # the record may have changed under the same item
        return found

    def _collect_quietly(self) -> None:
        try:
            self.collect_class_results()
        except Exception as exc:  # a timer callback: report, never take napari down
            self.message.value = f"could not read the inference dock's result: {exc}"

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
            record = item.metadata
            with self.class_choice.changed.blocked():
                self.class_choice.reset_choices()
                self.class_choice.value = item.chosen_at(item.slice_index(self.viewer))
            self.class_choice.label = "correct class of this slice" if item.per_slice else "correct class"
            if item.per_slice:  # the slider picks the slice whose class is corrected
                self._connect(self.viewer.dims.events.current_step, self._on_slice)
        self.case.value = default_case_id(item)
        review = _review(item)
        self.review.value = f"accepted {review['time']}" if review else "not reviewed"
        self.update_metrics()

    def _keep_box_defaults(self, layer: Shapes) -> None:
        """A rectangle the user draws gets the first non-background class (napari resets the defaults
        to the first row whenever the features are replaced, e.g. by a new score threshold)."""
        wanted = box_feature_defaults(_categories(layer))
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
        item = self.layer.value
        if isinstance(item, ClassResult) and self.class_choice.choices:
            with self.class_choice.changed.blocked():
                self.class_choice.value = item.chosen_at(item.slice_index(self.viewer))

    def _on_slice(self, *_: Any) -> None:
        item = self.layer.value
        if isinstance(item, ClassResult) and item.per_slice:
            with self.class_choice.changed.blocked():
                self.class_choice.value = item.chosen_at(item.slice_index(self.viewer))
            self.update_metrics()

    def _on_class_chosen(self, *_: Any) -> None:
        item = self.layer.value
        if not isinstance(item, ClassResult) or self.class_choice.value is None:
            return
        index = item.slice_index(self.viewer)
        if int(self.class_choice.value) != item.chosen_at(index):
            item.choose(int(self.class_choice.value), index)
        self._after_edits()

    def update_metrics(self) -> dict[str, Any]:
        item = self.layer.value
        if item is None:
            return {}
        try:
            m = agreement(item, item.slice_index(self.viewer) if isinstance(item, ClassResult) else 0)
        except (ValueError, KeyError) as exc:
            self.metrics.value = f"cannot compare: {exc}"
            return {}
        meta = _meta(item) if kind_of(item) == "mask" else None
        self.metrics.value = describe(kind_of(item), m, spacing=meta is not None and meta.ndim == item.ndim)
        tabular = item.metadata.get("tabular") if isinstance(item, ClassResult) else None
        self.metrics.tooltip = ("tabular row of the run (exported with the class): " + ", ".join(
            f"{k} {'missing' if v is None else v}" for k, v in tabular.items())) if tabular else ""
        self.last_metrics = m
        return m

    # -- autosave and restore -------------------------------------------------------------------
    def _after_edits(self) -> None:
        self.update_metrics()
        try:
            self.save_now()
        except (OSError, ValueError) as exc:
            self.autosave.value = f"failed: {exc}"

    def _source_path(self, layer: Any) -> str | None:
        entry = layer.metadata.get(META_KEY) or {}
        return entry.get("source_path") or None

    def save_now(self) -> Any:
        """Write the chosen correction to the session folder of its source image (atomic)."""
        from napari_medvit.io.session import save_correction

        item = self.layer.value
        if item is None:
            return None
        kind = kind_of(item)
        source = self._source_path(item.layer if kind == "class" else item)
        if source is None:
            self.autosave.value = "off: the image was not opened from a file"
            return None
        if kind == "class":
            record = {k: v for k, v in item.metadata.items() if k != REVIEW_KEY}
            path = save_correction(source, f"{item.model} class", np.zeros(0), np.asarray(record["probabilities"]),
                                   {"kind": "class", "record": record, "review": _review(item)})
        else:
            prov = {k: v for k, v in item.metadata.get(PREDICTION_KEY, {}).items() if not isinstance(v, np.ndarray)}
            info: dict[str, Any] = {"kind": kind, "provenance": prov, "review": _review(item)}
            if kind == "mask":
                labels, original = np.asarray(item.data), item.metadata[ORIGINAL_KEY]
            else:  # the rectangles' vertices, their features and the model's boxes
                labels = np.asarray([np.asarray(r, dtype=float) for r in item.data]).reshape(-1, 4, 2)
                original = item.metadata[ORIGINAL_KEY]["boxes"]
                info["features"] = {k: list(item.features[k]) for k in item.features.columns}
                info["original"] = {k: v for k, v in item.metadata[ORIGINAL_KEY].items() if k != "boxes"}
            path = save_correction(source, item.name, labels, original, info)
        self.autosave.value = f"saved {_dt.datetime.now():%H:%M:%S}"
        return path

    def _offer_restore(self, event: Any) -> None:
        """Reopening an image brings back its autosaved corrections: masks and boxes as layers,
        class choices into the image's metadata."""
        from napari.utils.notifications import show_info

        from napari_medvit.io.session import load_corrections

        layer = event.value
        source = self._source_path(layer) if isinstance(layer, Image) else None
        if source is None:
            return
        existing = {lay.name for lay in self.viewer.layers}
        restored = False
        for saved in load_corrections(source):
            kind = saved.info.get("kind", "mask")
            name = f"{saved.name} (autosaved {saved.info.get('saved', '')})"
            prov = {**(saved.info.get("provenance") or {}), "source_layer": layer.name}
            metadata: dict[str, Any] = {META_KEY: layer.metadata[META_KEY], PREDICTION_KEY: prov}
            if saved.info.get("review"):
                metadata[REVIEW_KEY] = saved.info["review"]
            if kind == "class":
                record = dict(saved.info["record"], source_layer=layer.name)
                results = dict(layer.metadata.get(CLASS_RESULTS_KEY, {}))
                if record["model"] in results:
                    continue
                if saved.info.get("review"):
                    record[REVIEW_KEY] = saved.info["review"]
                layer.metadata = {**layer.metadata, CLASS_RESULTS_KEY: {**results, record["model"]: record}}
            elif name in existing:
                continue
            elif kind == "boxes":
                original = {**saved.info.get("original", {}), "boxes": saved.original.reshape(-1, 4)}
                self.viewer.add_shapes(list(saved.labels), name=name, ndim=2, features=saved.info.get("features"),
                                       metadata={**metadata, ORIGINAL_KEY: original},
                                       **BOX_STYLE, **layer_transform(layer))
            elif saved.labels.shape == layer.data.shape[: saved.labels.ndim]:
                self.viewer.add_labels(saved.labels, name=name, opacity=0.5,
                                       metadata={**metadata, ORIGINAL_KEY: saved.original}, **layer_transform(layer))
            else:
                continue
            restored = True
            show_info(f"MedViT: restored corrections '{saved.name}' saved {saved.info.get('saved', '')}")
        if restored:
            self._refresh()

    # -- accept and export -----------------------------------------------------------------------
    def accept(self, *_: Any) -> None:
        item = self.layer.value
        if item is None:
            return
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        review = {"accepted": True, "time": stamp, "case_id": self.case.value or default_case_id(item),
                  **self.update_metrics()}
        if isinstance(item, ClassResult):
            item.update(**{REVIEW_KEY: review})
        else:
            item.metadata = {**item.metadata, REVIEW_KEY: review}
        self.review.value = f"accepted {stamp}"
        try:
            self.save_now()
        except (OSError, ValueError) as exc:
            self.autosave.value = f"failed: {exc}"

    def _folder(self) -> str:
        folder = str(self.folder.value or "")
        return "" if folder in ("", ".") else folder

    def export(self, *_: Any) -> Any:
        """Export the chosen correction (image + corrected result + provenance); returns what the
        exporter returned (see :func:`export_correction`) or None."""
        item, folder = self.layer.value, self._folder()
        if item is None or not folder:
            self.message.value = "choose a corrected result and an export folder first"
            return None
        try:
            case, result = export_correction(self.viewer, item, folder, self.case.value)
        except (ValueError, OSError) as exc:
            self.message.value = f"not exported: {exc}"
            return None
        supersedes = getattr(result, "supersedes", None)
        self.message.value = f"exported {kind_of(item)} as {case} to {folder}" + (
            f" (new version of {supersedes})" if supersedes else "")
        return result

    def export_all(self, *_: Any) -> list[str]:
        """Export every accepted correction of the session to the export folder."""
        folder = self._folder()
        if not folder:
            self.message.value = "choose an export folder first"
            return []
        errors: list[str] = []
        cases = export_accepted(self.viewer, folder, errors=errors)
        text = f"exported {len(cases)} accepted correction(s) to {folder}" if cases else "nothing exported"
        self.message.value = text + (f"; not exported: {'; '.join(errors)}" if errors else "")
        return cases
