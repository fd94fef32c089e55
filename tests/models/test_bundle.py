from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import UNETR, SwinUNETR

from napari_medvit.inference import Predictor
from napari_medvit.io import read_image
from napari_medvit.models import create_model
from napari_medvit.models.checkpoint import CheckpointError

UNETR_DEF = {"_target_": "UNETR", "in_channels": 1, "out_channels": 3, "img_size": [32, 32, 32], "feature_size": 8,
             "hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "norm_name": "instance"}


def make_bundle(root: Path, network_def: dict, model: torch.nn.Module) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    inference = {
        "imports": ["$import glob"],
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [2.0, 2.0, 2.0], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -175, "a_max": 250, "b_min": 0.0,
             "b_max": 1.0, "clip": True},
        ]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 2, "overlap": 0.25},
    }
    (root / "configs" / "inference.json").write_text(json.dumps(inference))
    metadata = {"name": "test bundle", "version": "0.1", "network_data_format": {"outputs": {"pred": {
        "channel_def": {"0": "background", "1": "liver", "2": "spleen"}}}}}
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata))
    torch.save(model.state_dict(), root / "models" / "model.pt")
    return root


def test_bundle_loads_with_its_labels_and_preprocessing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = UNETR(**{k: v for k, v in UNETR_DEF.items() if k != "_target_"})
    bundle = make_bundle(tmp_path / "spleen_bundle", UNETR_DEF, net)
    model = create_model("unetr", checkpoint=bundle)
    for k, v in net.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    manifest = model.checkpoint_info.manifest
    assert manifest["class_names"] == ["background", "liver", "spleen"]
    assert manifest["preprocessing"] == {"axcodes": "RAS", "pixdim": [2.0, 2.0, 2.0],
                                         "intensity": {"window": [-175.0, 250.0], "range": [0.0, 1.0], "clip": True},
                                         "roi_size": [32, 32, 32], "overlap": 0.25, "sw_batch_size": 2}

    # a CT-like volume stored LPS-ish (flipped axes) at 1 x 1 x 3 mm: the result comes back on its grid
    data = np.random.default_rng(0).normal(0, 120, (80, 36, 12)).astype(np.float32)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([-1.0, -1.0, 3.0, 1.0])), path)
    image, meta = read_image(path)
    pred = Predictor(model, device="cpu").predict(image, meta)
    assert pred.labels.shape == image.shape == (12, 36, 80)
    assert pred.class_names == ("background", "liver", "spleen")
    # RAS at 2 mm is a 40 x 18 x 18 grid: two 32^3 windows (overlap 0.25) along the first axis
    assert pred.provenance["windows"] == 2


def test_swin_bundle_that_passes_img_size_loads_on_monai_1_5(tmp_path: Path) -> None:
    definition = {"_target_": "SwinUNETR", "spatial_dims": 3, "img_size": 96, "in_channels": 1, "out_channels": 2,
                  "feature_size": 12, "depths": [1, 1, 1, 1], "use_checkpoint": False}
    net = SwinUNETR(spatial_dims=3, in_channels=1, out_channels=2, feature_size=12, depths=(1, 1, 1, 1))
    bundle = make_bundle(tmp_path / "swin", definition, net)
    model = create_model("swin_unetr", checkpoint=bundle)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("arch", ["UNet", "SwinUNETR"])
def test_arguments_a_bundle_leaves_out_take_monais_defaults(arch: str, tmp_path: Path) -> None:
    """MONAI built the bundle's network with its own defaults (UNet num_res_units 0, SwinUNETR
    feature_size 24), not the plugin's reference configurations (2 and 48)."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    if arch == "UNet":
        args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8, 16], "strides": [2, 2]}
        net, name = UNet(**args), "unet"
    else:
        args = {"in_channels": 1, "out_channels": 2, "depths": [1, 1, 1, 1]}
        net, name = SwinUNETR(**args), "swin_unetr"
    model = create_model(name, checkpoint=make_bundle(tmp_path / arch, {"_target_": arch, **args}, net))
    model.eval()
    net.eval()
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-5)


def test_broken_bundles_are_named(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", {"_target_": "DynUNet"}, torch.nn.Linear(1, 1))
    with pytest.raises(CheckpointError, match="network_def 'DynUNet' is not one of"):
        create_model("unetr", checkpoint=bundle)
    (tmp_path / "b" / "configs" / "inference.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read .*inference.json"):
        create_model("unetr", checkpoint=bundle)
