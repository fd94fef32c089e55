from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from napari_medvit.inference import Predictor
from napari_medvit.models import create_model, get_spec


@pytest.mark.parametrize(("name", "expected"), [
    ("deit_small", 22_050_664), ("resnet34", 21_797_672), ("resnet50", 25_557_032)])
def test_reference_parameter_counts(name: str, expected: int) -> None:
    assert sum(p.numel() for p in create_model(name).parameters()) == expected


def test_torchvision_resnet_checkpoint_loads_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tv = torchvision.models.resnet34(num_classes=2)
    torch.save({"state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}, tmp_path / "r34.pth")
    model = create_model("resnet34", num_classes=2, checkpoint=tmp_path / "r34.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv.eval()(x))


def test_cnn_baseline_classifies_a_frame() -> None:
    model = create_model("resnet34", num_classes=2)
    frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    pred = Predictor(model, device="cpu").predict(frame)
    assert pred.task == "classify" and pred.probabilities.shape == (2,)
    assert get_spec("resnet34").preprocessing["resize"] == (224, 224)
    with pytest.raises(ValueError, match="timm has no model 'resnet_9000'"):
        create_model("resnet34", variant="resnet_9000")
