"""The model's side of box and class corrections, as the napari adapter keeps it in layer metadata."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medvit._layers import (
    ORIGINAL_KEY,
    PREDICTION_KEY,
    class_result,
    default_box_class,
    detection_layers,
    rectangles_to_boxes,
)
from napari_medvit.inference.prediction import PRIOR, Overlay
from napari_medvit.inference.predictor import Prediction
from napari_medvit.transforms import tabular_names, tabular_vector

FEATURES = [{"name": "age", "mean": 70.0, "std": 8.0}, {"name": "MMSE", "missing": "MMSE_MISSING"},
            {"name": "ABETA", "mean": 900.0, "std": 300.0, "missing": "ABETA_MISSING"}]


def _daft(values: dict[str, float | None]) -> Prediction:
    return Prediction(task="classify", model_name="daft", labels=np.array(0), probabilities=np.array([0.6, 0.4]),
                      class_names=("stable", "converter"), provenance={"model": "daft", "trained": True},
                      extras={"tabular": tabular_vector(FEATURES, values),
                              "tabular_names": np.array(tabular_names(FEATURES))})


def test_class_result_recovers_the_tabular_row_the_model_saw() -> None:
    row = {"age": 81.3, "MMSE": 27.0, "ABETA": None}
    record = class_result(_daft(row), source_name="T1", tabular_features=FEATURES)
    assert record["tabular"] == row  # standardisation undone, the missing flag read back
    assert record["class_names"] == ["stable", "converter"] and record["predicted"] == 0
    assert record["probabilities"] == pytest.approx([0.6, 0.4]) and record["source_layer"] == "T1"
    for exact in ({"age": 0.0, "MMSE": 0.0, "ABETA": 0.0}, {"age": 60.0, "MMSE": 1e-3, "ABETA": 1431.8}):
        # zeros and round values standardised in float32 come back exactly (not -1.4e-08 or 60.000004)
        assert class_result(_daft(exact), tabular_features=FEATURES)["tabular"] == exact
    assert class_result(_daft(row))["tabular"] is None  # no feature list: no row
    with pytest.raises(ValueError, match="does not match the feature list"):
        class_result(_daft(row), tabular_features=FEATURES[:2])
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    per_slice = class_result(Prediction(task="classify", model_name="deit_small", labels=probs.argmax(1),
                                        probabilities=probs, class_names=("absent", "present")))
    assert per_slice["per_slice"] and per_slice["slice_shape"] == [3] and per_slice["predicted"] == [0, 1, 0]
    np.testing.assert_allclose(per_slice["probabilities"], probs)
    with pytest.raises(ValueError, match="takes a classification"):
        class_result(Prediction(task="segment", model_name="unet2d", labels=np.zeros((3, 3), int),
                                probabilities=np.zeros((3, 3))))


def test_detection_layer_keeps_the_models_boxes_and_draws_new_boxes_as_the_first_class() -> None:
    boxes = np.array([[4.0, 6.0, 20.0, 30.0], [30.0, 10.0, 50.0, 40.0], [1.0, 1.0, 2.0, 2.0]])
    prior = Overlay(PRIOR, "Gaussian prior", np.zeros((1, 2, 3, 2, 3)), attrs={"image_shape": np.array([60, 70])})
    pred = Prediction(task="detect", model_name="smca_detr_tiny", labels=np.array([1, 0, 0]),
                      probabilities=np.array([0.9, 0.6, 0.1]), class_names=("polyp", "other"), boxes=boxes,
                      overlays=[prior], extras={"image_shape": np.array([60, 70])})
    (rects, kwargs, kind), _ = detection_layers(pred, threshold=0.5, query=0)
    assert kind == "shapes"
    original = kwargs["metadata"][ORIGINAL_KEY]
    np.testing.assert_allclose(original["boxes"], boxes[:2])
    np.testing.assert_allclose(rectangles_to_boxes(rects), boxes[:2])
    assert original["classes"] == ["other", "polyp"] and original["queries"] == [0, 1]
    assert kwargs["feature_defaults"] == {"query": -1, "class": "polyp", "score": 1.0}
    assert kwargs["metadata"][PREDICTION_KEY]["class_names"] == ["polyp", "other"]
    rotated = np.array([[0.0, 5.0], [5.0, 10.0], [10.0, 5.0], [5.0, 0.0]])  # a diamond: its bounding box
    np.testing.assert_allclose(rectangles_to_boxes([rotated]), [[0, 0, 10, 10]])
    assert default_box_class(["background", "lesion"]) == "lesion" and default_box_class(["N/A", "a"]) == "a"
