from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from napari_medvit.models import create_model

OFFICIAL_KEYS = Path(__file__).parents[1] / "data" / "daft_official_keys.json"


def test_reference_parameter_count() -> None:
    assert sum(p.numel() for p in create_model("daft").parameters()) == 56_911


def test_official_checkpoint_layout_loads_strictly(tmp_path: Path) -> None:
    layout = json.loads(OFFICIAL_KEYS.read_text())["keys"]
    g = torch.Generator().manual_seed(0)
    state = {k: torch.zeros(s, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g)
             for k, s in layout.items()}
    torch.save(state, tmp_path / "daft.pth")
    model = create_model("daft", checkpoint=tmp_path / "daft.pth")
    torch.testing.assert_close(model.state_dict()["blockX.aux.aux_out.weight"], state["blockX.aux.aux_out.weight"])
    assert "blockX.bn1.weight" not in layout  # the modulated BatchNorm is not affine


def test_affine_transform_is_alpha_times_feature_plus_beta() -> None:
    torch.manual_seed(0)
    model = create_model("daft").eval()
    block = model.blockX
    x, tab = torch.randn(1, 16, 8, 8, 8), torch.randn(1, 14)
    with torch.no_grad():
        f = block.bn1(block.conv1(x))
        a, b = torch.split(block.aux(torch.cat([f.mean((2, 3, 4)), tab], 1)), 32, dim=1)
        _, alpha, beta = block.forward_with_affine(x, tab)
    torch.testing.assert_close(alpha, a)
    torch.testing.assert_close(beta, b)


def test_tabular_width_is_checked() -> None:
    model = create_model("daft").eval()
    with pytest.raises(ValueError, match=r"tabular data of shape \(B, 14\)"):
        model(torch.randn(1, 1, 64, 64, 64), torch.randn(1, 5))


def test_resnet3d_reference_parameter_count_and_forward_shape() -> None:
    model = create_model("resnet3d")
    assert sum(p.numel() for p in model.parameters()) == 56_535
    assert model.num_classes == 3 and model.head_prefixes == ("fc",)
    assert model.config == {"in_channels": 1, "n_outputs": 3, "n_basefilters": 4, "bn_momentum": 0.1}
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 32, 32, 32))
        out = model.forward_all(torch.randn(1, 1, 16, 16, 16))
    assert logits.shape == (2, 3) and out["logits"].shape == (1, 3)
    assert create_model("resnet3d", n_outputs=2)(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2)


def test_resnet3d_differs_from_daft_only_in_the_last_block() -> None:
    resnet, daft = create_model("resnet3d").state_dict(), create_model("daft").state_dict()
    before = {k: v.shape for k, v in resnet.items() if not k.startswith("blockX.")}
    assert before == {k: v.shape for k, v in daft.items() if not k.startswith("blockX.")}
    assert "conv1.conv.weight" in before and "fc.weight" in before
    # the last block: an ordinary ResBlock 16 -> 32 (affine bn1), no DAFT auxiliary network
    assert resnet["blockX.conv1.weight"].shape == daft["blockX.conv1.weight"].shape == (32, 16, 3, 3, 3)
    assert "blockX.bn1.weight" in resnet and not any(k.startswith("blockX.aux.") for k in resnet)
    # so DAFT's layers before the DAFT block load into the baseline unchanged
    model = create_model("resnet3d")
    model.load_state_dict({k: v for k, v in daft.items() if not k.startswith("blockX.")}, strict=False)
    torch.testing.assert_close(model.block3.conv2.weight, daft["block3.conv2.weight"])


def test_resnet3d_loads_the_official_resnet_layout(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    official = {("block4." + k[len("blockX."):] if k.startswith("blockX.") else k):
                (torch.zeros_like(v) if k.endswith("num_batches_tracked") else torch.randn(v.shape, generator=g))
                for k, v in create_model("resnet3d").state_dict().items()}
    torch.save({"module." + k: v for k, v in official.items()}, tmp_path / "resnet.pth")
    model = create_model("resnet3d", checkpoint=tmp_path / "resnet.pth")
    torch.testing.assert_close(model.blockX.conv2.weight, official["block4.conv2.weight"])
