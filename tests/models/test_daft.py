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
