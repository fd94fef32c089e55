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

if TYPE_CHECKING:
    from napari_medvit.inference.predictor import Prediction

PREDICTION_KEY = "medvit_prediction"

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
    name = f"{_prefix(prediction)} mask"
    if not prediction.provenance.get("trained", False):
        name += " [untrained]"
    return name


def prediction_layers(prediction: Prediction, *, transform: dict[str, Any] | None = None,
                      source_metadata: dict[str, Any] | None = None, source_name: str = "") -> list[LayerDataTuple]:
    """Labels for the mask, and one Image per attention map (only the finest visible).

    Attention maps are shown with an additive colormap at half opacity over the image.
    """
    transform = dict(transform or {})
    meta_entry = {}
    if source_metadata and META_KEY in source_metadata:
        meta_entry[META_KEY] = source_metadata[META_KEY]
    elif prediction.meta is not None:
        meta_entry[META_KEY] = prediction.meta.to_dict()
    provenance = {**prediction.provenance, "source_layer": source_name, "labels_sha256": labels_digest(prediction.labels)}
    untrained = "" if prediction.provenance.get("trained", False) else " [untrained]"
    prefix = _prefix(prediction)

    layers: list[LayerDataTuple] = [(
        prediction.labels,
        {
            "name": mask_layer_name(prediction),
            "opacity": 0.5,
            "metadata": {**meta_entry, PREDICTION_KEY: provenance},
            **transform,
        },
        "labels",
    )]

    bifusion = sorted(
        (k for k in prediction.attention if k.startswith("BiFusion spatial attention")),
        key=lambda k: -int(k.rsplit("/", 1)[1]),  # coarse (1/16) first: the finest ends on top
    )
    finest = bifusion[-1] if bifusion else None
    for key in bifusion:
        layers.append((
            prediction.attention[key],
            {
                "name": f"{prefix} {key.replace('spatial attention', 'attention')}{untrained}",
                "colormap": "inferno",
                "blending": "additive",
                "opacity": 0.5,
                "contrast_limits": (0.0, 1.0),
                "visible": key == finest,
                "metadata": {**meta_entry, PREDICTION_KEY: {**provenance, "map": key}},
                **transform,
            },
            "image",
        ))
    return layers
