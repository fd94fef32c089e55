"""A new model family needs one model module, one registry entry and one adapter (docs/ARCHITECTURE.md).

tests/toy_family.py is that module; registered here, it runs through the predictor, the napari layers
and a fine-tuning run, and its promoted version loads and runs again, without any other file knowing it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medvit._layers import prediction_layers
from napari_medvit.inference import Predictor
from napari_medvit.io import ImageMeta
from napari_medvit.models import create_model, list_models, register_model, unregister_model
from napari_medvit.models.config import config_of
from napari_medvit.training.export import export_case
from napari_medvit.training.finetune import FinetuneConfig, finetune
from napari_medvit.training.seg2d import Segment2DTask
from napari_medvit.training.tasks import task_class
from toy_family import SPEC, ToyAdapter


@pytest.fixture
def toy():
    register_model(SPEC)
    yield SPEC.name
    unregister_model(SPEC.name)


def _frame(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A dark RGB frame with a bright square lesion, and its mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (40, 48, 3), dtype=np.uint8)
    mask = np.zeros((40, 48), np.uint8)
    y, x = rng.integers(4, 20), rng.integers(4, 28)
    mask[y:y + 14, x:x + 14] = 1
    image[mask > 0] = rng.integers(180, 255, (int(mask.sum()), 3), dtype=np.uint8)
    return image, mask


def test_a_family_from_one_module_one_entry_one_adapter(toy: str, tmp_path: Path) -> None:
    assert toy in list_models()
    with pytest.raises(ValueError, match="already registered"):
        register_model(SPEC)
    torch.manual_seed(0)
    model = create_model(toy)
    config = config_of(model)
    assert isinstance(config.adapter, ToyAdapter) and config.class_names == ("background", "lesion")
    assert config.preprocessing.resize == (32, 32)

    # the predictor: the runner of a 2D segmentation, the adapter's map as a typed overlay on the image grid
    image, mask = _frame(0)
    prediction = Predictor(model, device="cpu").predict(image, ImageMeta.identity(2, rgb=True))
    assert [o.kind for o in prediction.overlays] == ["mask", "attention"]
    assert {o.kind for o in prediction.overlays} <= set(config.outputs)
    assert prediction.labels.shape == (40, 48) and prediction.attention["saliency 1/2"].shape == (40, 48)

    # the napari layers, rendered by overlay kind
    layers = prediction_layers(prediction, source_name="frame")
    assert [(kwargs["name"], kind) for _, kwargs, kind in layers] == [
        ("Toy mask [untrained]", "labels"), ("Toy saliency 1/2 [untrained]", "image")]
    assert layers[1][1]["visible"] is True

    # fine-tuning: the 2D segmentation task with the adapter's loss variant, and a promoted version
    dataset = tmp_path / "export"
    for seed in range(8):
        frame, truth = _frame(seed)
        export_case(dataset, f"c{seed}", frame, ImageMeta.identity(2, rgb=True), truth,
                    label_names={"background": 0, "lesion": 1})
    assert task_class(SPEC) is Segment2DTask
    cfg = FinetuneConfig(dataset=str(dataset), out_dir=str(tmp_path / "run"), model=toy, epochs=6, lr=0.01,
                         batch_size=2, val_fraction=0.25, augment="none", patience=6)
    events = []
    gen = finetune(cfg)
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert [e.kind for e in events if e.kind != "step"][:2] == ["baseline", "epoch"]
    assert result.promoted, result.message  # a bright square is learnt in a few epochs
    assert result.best_metric > result.base_metric

    # the promoted version loads with its manifest and runs through the same predictor
    tuned = create_model(toy, checkpoint=result.version)
    assert config_of(tuned).trained and config_of(tuned).class_names == ("background", "lesion")
    again = Predictor(tuned, device="cpu").predict(image, ImageMeta.identity(2, rgb=True))
    dice = 2 * np.sum((again.labels > 0) & (mask > 0)) / (np.sum(again.labels > 0) + np.sum(mask > 0))
    assert dice > 0.5
