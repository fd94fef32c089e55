"""napari adapter: a Prediction -> layer data tuples on the source image's grid.

Output layers copy the source layer's whole data-to-world transform (scale, translate, rotate,
shear, affine) and its ImageMeta, so a mask lands on the same voxels as the image and is saved
later with the image's geometry.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_medvit.io.meta import META_KEY
from napari_medvit.models import get_spec
from napari_medvit.models.adapters import ATTENTION, MASK, PRIOR

if TYPE_CHECKING:
    from napari_medvit.inference.predictor import Prediction

PREDICTION_KEY = "medvit_prediction"
ORIGINAL_KEY = "medvit_original"  # the model's own output, kept beside the layer the user corrects
CLASS_RESULTS_KEY = "medvit_class_results"  # on an image layer: model name -> its classification (class_result)
TABULAR_KEY = "medvit_tabular"  # on an image layer: the subject's tabular row (DAFT's inputs), name -> value
BINARY_MASK_COLOR = "#39ff88"  # the foreground of binary masks: green, visible on endoscopy and MRI
BOX_STYLE: dict[str, Any] = {  # detection boxes: yellow rectangles labelled with class and score
    "shape_type": "rectangle", "edge_color": "yellow", "face_color": "transparent", "edge_width": 2,
    "text": {"string": "{class} {score:.2f}", "color": "yellow", "anchor": "upper_left", "size": 10},
}
_BACKGROUND_NAMES = {"background", "__background__", "n/a", "no object", "none"}
# Attention maps over the image: inferno's colours (matplotlib's control points), transparent where the map
# is low and opaque only near its maximum, drawn translucently: the tissue stays visible (an additive
# inferno at half opacity turned the whole mucosa orange)
_INFERNO = ((0.001, 0.000, 0.014), (0.258, 0.039, 0.406), (0.578, 0.148, 0.404), (0.865, 0.317, 0.226),
            (0.988, 0.645, 0.040), (0.988, 0.998, 0.645))
_HEAT_ALPHA = (0.0, 0.0, 0.35, 0.6, 0.8, 0.9)
HEAT_COLORMAP: dict[str, Any] = {"name": "medvit heat (transparent when low)",
                                 "colors": [[*rgb, a] for rgb, a in zip(_INFERNO, _HEAT_ALPHA, strict=True)]}

LayerDataTuple = tuple[Any, dict[str, Any], str]


def layer_transform(layer: Any) -> dict[str, Any]:
    """The transform attributes of a napari layer, as keyword arguments for a new layer."""
    return {
        "scale": tuple(layer.scale),
        "translate": tuple(layer.translate),
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "affine": np.asarray(layer.affine.affine_matrix),
    }


def labels_digest(labels: np.ndarray) -> str:
    """Digest of a label array, used to tell whether the user edited a predicted mask."""
    a = np.ascontiguousarray(labels)
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()


def _prefix(prediction: Prediction) -> str:
    spec = get_spec(prediction.model_name)
    return spec.short_name or spec.display_name


def mask_layer_name(prediction: Prediction) -> str:
    return f"{_prefix(prediction)} mask{weights_tag(prediction, result=True)}"


def weights_tag(prediction: Prediction, *, result: bool = False) -> str:
    """What a layer name says about the weights: `` [untrained]`` on every layer of a run with random
    weights; `` (demo)`` on the result layers (mask, boxes) of shipped demo weights (trained on synthetic
    data only), kept short so that the layer list still shows which layer is which; else nothing."""
    if not prediction.provenance.get("trained", False):
        return " [untrained]"
    return " (demo)" if result and prediction.provenance.get("demo_weights") else ""


def prediction_layers(prediction: Prediction, *, transform: dict[str, Any] | None = None,
                      source_metadata: dict[str, Any] | None = None, source_name: str = "") -> list[LayerDataTuple]:
    """Layers for a prediction's overlays, all on the source image's grid and transform, by overlay kind:

    mask: a Labels layer (class names shown on hover; binary masks in one bright colour), drawn
    over the heat maps; attention: one Image per map (head-mean, :data:`HEAT_COLORMAP`: transparent where the
    map is low, so the image stays visible;
    visible as the overlay says: TransFuse's finest BiFusion map, CrossViT's last S-CLS→L
    cross-attention). Class probabilities and DAFT's affine go to the dock's charts, boxes and
    priors to :func:`detection_layers`; they give no layer here.
    """
    transform = dict(transform or {})
    meta_entry = {}
    if source_metadata and META_KEY in source_metadata:
        meta_entry[META_KEY] = source_metadata[META_KEY]
    elif prediction.meta is not None:
        meta_entry[META_KEY] = prediction.meta.to_dict()
    provenance = {**prediction.provenance, "source_layer": source_name}
    if prediction.task == "segment":
        provenance["labels_sha256"] = labels_digest(prediction.labels)
        provenance["class_names"] = list(prediction.class_names)
    else:
        provenance["top_class"] = _top_class(prediction)
    layers: list[LayerDataTuple] = []
    for overlay in prediction.overlays:
        if overlay.kind == MASK:
            layers.append(_mask_layer(prediction, overlay, {**meta_entry, PREDICTION_KEY: provenance}, transform))
        elif overlay.kind == ATTENTION:
            layers.append(_attention_layer(prediction, overlay, {**meta_entry, PREDICTION_KEY: {
                **provenance, "map": overlay.name}}, transform))
    return layers


def _mask_layer(prediction: Prediction, overlay: Any, metadata: dict[str, Any],
                transform: dict[str, Any]) -> LayerDataTuple:
    kwargs: dict[str, Any] = {"name": mask_layer_name(prediction), "opacity": 0.5,
                              "metadata": {**metadata, ORIGINAL_KEY: overlay.data.copy()}, **transform}
    names = list(overlay.attrs.get("class_names") or prediction.class_names)
    if names:  # shown in the status bar on hover
        kwargs["features"] = {"index": list(range(len(names))), "class": names}
    if len(names) <= 2:  # binary: one colour that stands out on red mucosa and grey MRI
        kwargs["colormap"] = {None: "transparent", 0: "transparent", 1: BINARY_MASK_COLOR}
    return overlay.data, kwargs, "labels"


def _attention_layer(prediction: Prediction, overlay: Any, metadata: dict[str, Any],
                     transform: dict[str, Any]) -> LayerDataTuple:
    return (overlay.data, {
        "name": f"{_prefix(prediction)} {overlay.name}{weights_tag(prediction)}",
        "colormap": HEAT_COLORMAP,
        "blending": "translucent",
        "opacity": 0.8,
        "contrast_limits": attention_limits(overlay.data),
        "visible": bool(overlay.visible),
        "metadata": metadata,
        **transform,
    }, "image")


def attention_limits(data: np.ndarray) -> tuple[float, float]:
    """Contrast limits of a heat map: from its median to its maximum, so that the half of the image the
    model attends to least is transparent (:data:`HEAT_COLORMAP`) and the rest is graded."""
    finite = np.asarray(data, dtype=float)[np.isfinite(data)] if np.size(data) else np.zeros(1)
    lo, hi = (float(v) for v in np.percentile(finite, (50, 100))) if finite.size else (0.0, 1.0)
    return (lo, hi) if hi > lo else (lo, lo + 1e-6)


def class_name(prediction: Prediction, index: int) -> str:
    """The name of class ``index``, or "class N" when the model has no names for it."""
    names = prediction.class_names
    return names[index] if 0 <= index < len(names) else f"class {index}"


def _top_class(prediction: Prediction) -> str:
    p = np.asarray(prediction.probabilities)
    if p.ndim != 1:
        return ""
    i = int(p.argmax())
    return f"{class_name(prediction, i)} ({p[i]:.1%})"


def top_k(prediction: Prediction, k: int = 5, index: tuple[int, ...] = ()) -> list[tuple[str, float]]:
    """The k most probable classes (name, probability) of a classification, at ``index`` for volumes."""
    p = np.asarray(prediction.probabilities)[index]
    order = np.argsort(p)[::-1][:k]
    return [(class_name(prediction, int(i)), float(p[i])) for i in order]


def box_rectangles(prediction: Prediction, threshold: float) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Rectangles (4 corners, data coordinates) and features of the queries scoring >= threshold,
    best first."""
    scores = np.asarray(prediction.probabilities)
    keep = [int(i) for i in np.argsort(scores)[::-1] if scores[i] >= threshold]
    rects = []
    for i in keep:
        if prediction.boxes is None:
            raise ValueError("box_rectangles needs a detection's prediction: this one has no boxes")
        y0, x0, y1, x1 = (float(v) for v in prediction.boxes[i])
        rects.append(np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=np.float32))
    features = {  # typed columns: with no box above the threshold, pandas would make them all float
        "query": np.asarray(keep, dtype=int),
        "class": np.asarray([class_name(prediction, int(prediction.labels[i])) for i in keep], dtype=object),
        "score": np.asarray([float(scores[i]) for i in keep], dtype=float),
    }
    return rects, features


def rectangles_to_boxes(rectangles: Any) -> np.ndarray:
    """(y0, x0, y1, x1) per Shapes rectangle (the inverse of :func:`box_rectangles`): the extent of its
    vertices in data coordinates, so a rectangle the user rotated becomes its bounding box."""
    rects = [np.asarray(r, dtype=float) for r in rectangles]
    if any(r.ndim != 2 or r.shape[1] != 2 for r in rects):
        raise ValueError(f"rectangles must be 2D vertex arrays (n, 2); got shapes {[r.shape for r in rects]}")
    return np.array([[*r.min(axis=0), *r.max(axis=0)] for r in rects], dtype=float).reshape(-1, 4)


def default_box_class(class_names: Any) -> str:
    """The class a box drawn by the user gets: the first class that is not background."""
    names = [str(n) for n in class_names]
    return next((n for n in names if n.lower() not in _BACKGROUND_NAMES), names[0] if names else "object")


def class_result(prediction: Prediction, *, source_name: str = "",
                 tabular_features: Any = None) -> dict[str, Any]:
    """The model's side of a classification correction, for an image layer's metadata under
    ``CLASS_RESULTS_KEY``: class names, probabilities, predicted class, provenance and, for image +
    tabular models (DAFT), the tabular row the run used (name -> value, None = missing), recovered
    exactly from the model's input vector with the run's feature list (``tabular_features``; None
    leaves ``tabular`` None; a list that does not fit the vector raises ValueError).

    A 2D classifier run on a volume classifies each slice (probabilities of shape (*lead, K)): the
    record then has ``per_slice`` True, ``slice_shape`` (the leading axes, e.g. [Z]), and
    ``probabilities`` (one row per slice, C order) and ``predicted`` (one index per slice) as lists."""
    p = np.asarray(prediction.probabilities, dtype=float)
    if prediction.task != "classify" or p.ndim < 1:
        raise ValueError(f"class_result takes a classification (probabilities of shape (K,) or (*slices, K)); "
                         f"got a {prediction.task} result with probabilities of shape {p.shape}")
    names = [class_name(prediction, i) for i in range(p.shape[-1])]
    record: dict[str, Any] = {
        "model": prediction.model_name,
        "display": _prefix(prediction),
        "source_layer": source_name,
        "class_names": names,
        "probabilities": [float(v) for v in p] if p.ndim == 1 else [[float(v) for v in row]
                                                                     for row in p.reshape(-1, p.shape[-1])],
        "predicted": int(p.argmax()) if p.ndim == 1 else [int(i) for i in p.reshape(-1, p.shape[-1]).argmax(1)],
        "tabular": None,
        "provenance": {k: v for k, v in prediction.provenance.items() if not isinstance(v, np.ndarray)},
    }
    if p.ndim > 1:
        record.update(per_slice=True, slice_shape=[int(n) for n in p.shape[:-1]])
    if "tabular" in prediction.extras and tabular_features is not None:
        record["tabular"] = _tabular_row(list(tabular_features), prediction.extras)
    return record


def _tabular_row(features: list[dict[str, Any]], extras: dict[str, Any]) -> dict[str, float | None]:
    """Invert transforms.tabular_vector: standardised values, then missing-value indicators."""
    from napari_medvit.transforms import tabular_names

    vec = np.asarray(extras["tabular"], dtype=float).reshape(-1)
    names = [str(n) for n in np.asarray(extras.get("tabular_names", []))]
    if not features or tabular_names(features) != names or vec.size != len(names):
        raise ValueError(f"the run's tabular vector ({vec.size} values: {names}) does not match the feature list "
                         f"{[f.get('name') for f in features]}")
    flags = {f["missing"]: float(vec[len(features) + k])
             for k, f in enumerate(f for f in features if f.get("missing"))}
    row: dict[str, float | None] = {}
    for i, f in enumerate(features):
        if f.get("missing") and flags[f["missing"]] >= 0.5:
            row[f["name"]] = None
            continue
        mean, std = float(f.get("mean", 0.0)), float(f.get("std", 1.0)) or 1.0
        value = vec[i] * std + mean
        # float32 input: 6 significant digits of the larger of the value, its mean and its std are exact
        # (a 0 standardised with mean 0.6 comes back as 0.0, not -1.4e-08)
        scale = max(abs(value), abs(mean), abs(std))
        row[f["name"]] = float(round(value, 6 - int(np.floor(np.log10(scale))))) + 0.0 if scale > 0 else 0.0
    return row


def gaussian_map(prediction: Prediction, query: int, head: str | int = "mean", decoder_layer: int = -1) -> np.ndarray:
    """SMCA's spatial prior G = exp(log G) of one query (one head or the mean over heads) on the
    image grid, scaled to a maximum of 1."""
    from napari_medvit.transforms import resize_map

    prior = prediction.overlay(PRIOR)
    if prior is None:
        raise ValueError(f"the {prediction.model_name} prediction has no spatial priors")
    log_g = prior.data[decoder_layer]  # (heads, Q, h, w)
    g = np.exp(log_g[:, query])
    g = g.mean(axis=0) if head == "mean" else g[int(head)]
    g = g / max(float(g.max()), 1e-12)
    return resize_map(g, tuple(int(v) for v in prior.attrs["image_shape"]))


def box_feature_defaults(class_names: Any) -> dict[str, Any]:
    """Features of a rectangle the user draws: no query, the first non-background class, score 1."""
    return {"query": -1, "class": default_box_class(class_names), "score": 1.0}


def detection_layers(prediction: Prediction, *, threshold: float, query: int, head: str | int = "mean",
                     transform: dict[str, Any] | None = None, source_metadata: dict[str, Any] | None = None,
                     source_name: str = "") -> list[LayerDataTuple]:
    """A Shapes layer of the boxes above ``threshold`` (text: class and score) and an Image layer of
    the chosen query's Gaussian prior, both on the source image's transform.

    The boxes layer keeps the model's boxes under ``ORIGINAL_KEY`` (``boxes`` (N, 4) as
    (y0, x0, y1, x1), ``classes``, ``scores``, ``queries``) while the user moves, resizes, deletes
    or draws rectangles; a drawn rectangle gets query -1 and the first non-background class."""
    transform = dict(transform or {})
    meta_entry = {META_KEY: source_metadata[META_KEY]} if source_metadata and META_KEY in source_metadata else {}
    untrained = weights_tag(prediction)
    result = weights_tag(prediction, result=True)
    prefix = _prefix(prediction)
    provenance = {**prediction.provenance, "source_layer": source_name, "class_names": list(prediction.class_names)}
    rects, features = box_rectangles(prediction, threshold)
    original = {"boxes": rectangles_to_boxes(rects), "classes": [str(c) for c in features["class"]],
                "scores": [float(v) for v in features["score"]], "queries": [int(q) for q in features["query"]]}
    shapes = (
        rects,
        {
            "name": f"{prefix} boxes{result}",
            "ndim": 2,
            **BOX_STYLE,
            "features": features,
            "feature_defaults": box_feature_defaults(prediction.class_names),
            "metadata": {**meta_entry, PREDICTION_KEY: {**provenance, "threshold": threshold}, ORIGINAL_KEY: original},
            **transform,
        },
        "shapes",
    )
    prior = (
        gaussian_map(prediction, query, head),
        {
            "name": f"{prefix} Gaussian prior{untrained}",
            "colormap": "magma",
            "blending": "additive",
            "opacity": 0.6,
            "contrast_limits": (0.0, 1.0),
            "metadata": {**meta_entry, PREDICTION_KEY: {**provenance, "query": int(query), "head": str(head)}},
            **transform,
        },
        "image",
    )
    return [shapes, prior]
