from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medvit.inference import Predictor
from napari_medvit.models import create_model
from napari_medvit.models.checkpoint import CheckpointError
from napari_medvit.models.truenet import TrUENet


@pytest.mark.parametrize(("plane", "expected"), [("axial", 8_563_211), ("sagittal", 8_631_819), ("coronal", 8_631_819)])
def test_plane_networks_have_the_official_parameter_counts(plane: str, expected: int) -> None:
    assert sum(p.numel() for p in TrUENet(2, 2, 64, plane).parameters()) == expected


def test_published_weight_files_load_from_a_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_model("truenet", init_channels=8)
    for plane in ("axial", "sagittal", "coronal"):  # as truenet saves them: DataParallel, under model_state_dict
        net = getattr(source, plane)
        state = {f"module.{k}": v for k, v in net.state_dict().items()}
        torch.save({"model_state_dict": state, "epoch": 60}, tmp_path / f"Truenet_MWSC_FLAIR_T1_{plane}.pth")
    loaded = create_model("truenet", init_channels=8, checkpoint=tmp_path)
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    (tmp_path / "Truenet_MWSC_FLAIR_T1_coronal.pth").unlink()
    with pytest.raises(CheckpointError,
                       match="a folder checkpoint must be a MONAI bundle .* or TrUE-Net's three files"):
        create_model("truenet", init_channels=8, checkpoint=tmp_path)


def test_ensemble_averages_the_three_planes() -> None:
    torch.manual_seed(1)
    model = create_model("truenet", init_channels=4).eval()
    vol = torch.randn(1, 2, 12, 20, 16)
    with torch.no_grad():
        log_mean = model(vol)
        planes = [model.plane_probabilities(vol, p) for p in ("axial", "coronal", "sagittal")]
        # the axial net sees (y, x) slices: slice 5 of the volume alone gives the same probabilities
        single = torch.softmax(model.axial(vol[:, :, 5]), dim=1)
    torch.testing.assert_close(planes[0][:, :, 5], single)
    torch.testing.assert_close(log_mean.exp(), sum(planes) / 3, atol=1e-6, rtol=1e-5)

    volume = np.random.default_rng(0).normal(size=(2, 12, 20, 16)).astype(np.float32)
    pred = Predictor(model, device="cpu").predict(volume)
    assert pred.labels.shape == (12, 20, 16) and pred.provenance["windows"] == 1


def test_too_thin_volumes_are_refused_with_the_reason() -> None:
    model = create_model("truenet", init_channels=4)
    with pytest.raises(ValueError, match=r"at least 8 voxels along each axis, got \(6, 24, 20\)"):
        Predictor(model, device="cpu").predict(np.zeros((2, 6, 24, 20), np.float32))
