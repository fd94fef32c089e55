"""Typed overlays: a run's layers follow the overlays' kinds and default visibility, never their names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medvit._layers import prediction_layers
from napari_medvit.explain import explainer_for
from napari_medvit.inference import Overlay, Prediction, Predictor
from napari_medvit.io import ImageMeta
from napari_medvit.models import create_model


def test_transfuse_shows_its_attention_gates_hidden_beside_the_bifusion_maps() -> None:
    torch.manual_seed(0)
    frame = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    prediction = Predictor(create_model("transfuse_tiny"), device="cpu").predict(frame, ImageMeta.identity(2, rgb=True))
    layers = prediction_layers(prediction, source_name="frame")
    shown = [(kwargs["name"], kind, kwargs.get("visible", True)) for _, kwargs, kind in layers]
    assert shown == [
        ("TransFuse mask [untrained]", "labels", True),
        ("TransFuse BiFusion attention 1/16 [untrained]", "image", False),
        ("TransFuse BiFusion attention 1/8 [untrained]", "image", False),
        ("TransFuse BiFusion attention 1/4 [untrained]", "image", True),  # the finest, on top of the other maps
        ("TransFuse attention gate 1/8 [untrained]", "image", False),
        ("TransFuse attention gate 1/4 [untrained]", "image", False),
    ]
    for data, kwargs, _ in layers[1:]:
        assert data.shape == (64, 80) and kwargs["blending"] == "translucent"
        colors = np.asarray(kwargs["colormap"]["colors"])
        assert colors[0, 3] == 0.0 and colors[-1, 3] > 0.8  # transparent where low: the image stays visible
        assert kwargs["metadata"]["medvit_prediction"]["map"] == kwargs["name"][len("TransFuse "):-len(" [untrained]")]
        assert 0.0 <= data.min() and data.max() <= 1.0  # sigmoid maps


def test_crossvit_shows_the_last_small_to_large_cross_attention() -> None:
    torch.manual_seed(0)
    model = create_model("crossvit_tiny_test", num_classes=3)
    frame = np.random.default_rng(1).integers(0, 255, (60, 70, 3), dtype=np.uint8)
    prediction = Predictor(model, device="cpu", explainer=explainer_for(model.medvit_spec)).predict(
        frame, ImageMeta.identity(2, rgb=True))
    assert [o.kind for o in prediction.overlays][:1] == ["class_probabilities"]
    visible = [kwargs["name"] for _, kwargs, _ in prediction_layers(prediction) if kwargs["visible"]]
    assert visible == ["CrossViT cross-attention block 3 S-CLS→L [untrained]"]


def test_layers_follow_the_kind_not_the_name() -> None:
    probs = np.full((20, 30), 0.2, np.float32)
    labels = np.zeros((20, 30), np.uint8)
    prediction = Prediction(task="segment", model_name="unet2d", labels=labels, probabilities=probs,
                            class_names=("background", "lesion"), provenance={"trained": True}, overlays=[
                                Overlay("attention", "any name at all", probs, visible=False),
                                Overlay("mask", "mask", labels),
                                Overlay("class_probabilities", "chart", np.array([0.5, 0.5]))])  # a chart: no layer
    layers = prediction_layers(prediction)
    assert [(kwargs["name"], kind) for _, kwargs, kind in layers] == [("U-Net any name at all", "image"),
                                                                      ("U-Net mask", "labels")]
    with pytest.raises(ValueError, match="unknown overlay kind 'heatmap'"):
        Overlay("heatmap", "x", probs)


def test_a_detection_with_no_box_above_the_threshold_still_makes_a_shapes_layer() -> None:
    from napari.layers import Layer

    from napari_medvit._layers import detection_layers
    from napari_medvit.inference.prediction import boxes_overlay

    boxes = np.array([[2.0, 3.0, 20.0, 30.0], [5.0, 5.0, 9.0, 9.0]])
    scores, labels = np.array([0.2, 0.1]), np.array([0, 0])
    log_g = np.zeros((1, 2, 2, 2, 3))
    prediction = Prediction(task="detect", model_name="smca_detr_tiny", labels=labels, probabilities=scores,
                            boxes=boxes, class_names=("polyp", "other"), overlays=[
                                boxes_overlay(boxes, scores, labels, 0.3),
                                Overlay("prior", "Gaussian prior", log_g, attrs={"image_shape": (40, 60)})])
    (rects, kwargs, kind), (prior, _, _) = detection_layers(prediction, threshold=0.3, query=0)
    assert rects == [] and kind == "shapes" and prior.shape == (40, 60)
    layer = Layer.create(rects, kwargs, kind)  # typed empty columns: a drawn box gets class "polyp"
    assert len(layer.data) == 0 and layer.feature_defaults["class"][0] == "polyp"
