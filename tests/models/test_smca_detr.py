from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from napari_medvit.models import create_model
from napari_medvit.models.smca_detr import smca_detr_tiny

OFFICIAL_KEYS = Path(__file__).parents[1] / "data" / "smca_detr_r50_official_keys.json"


def test_reference_parameter_count() -> None:
    assert sum(p.numel() for p in create_model("smca_detr_r50").parameters()) == 41_760_482


def test_official_checkpoint_layout_loads_strictly(tmp_path: Path) -> None:
    """Keys and shapes recorded from the official build() (500 entries) load with strict=True."""
    layout = json.loads(OFFICIAL_KEYS.read_text())["keys"]
    assert len(layout) == 500
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g) for k, shape in layout.items()}
    torch.save({"model": state, "epoch": 49}, tmp_path / "checkpoint.pth")  # the official main.py layout
    model = create_model("smca_detr_r50", checkpoint=tmp_path / "checkpoint.pth")
    for k in ("transformer.decoder.layers.0.point1.layers.2.weight", "transformer.decoder.layers.5.point3.bias",
              "backbone.0.body.layer4.2.bn3.running_var", "query_embed.weight"):
        torch.testing.assert_close(model.state_dict()[k], state[k])


@pytest.mark.parametrize("dynamic_scale", ["type1", "type2", "type3", "type4"])
def test_tiny_forward_for_every_dynamic_scale(dynamic_scale: str) -> None:
    torch.manual_seed(0)
    model = smca_detr_tiny(dynamic_scale=dynamic_scale).eval()
    with torch.no_grad():
        out = model.forward_all(torch.randn(2, 3, 128, 160))
    assert out["pred_logits"].shape == (2, 10, 3)
    assert out["pred_boxes"].shape == (2, 10, 4)
    assert float(out["pred_boxes"].min()) >= 0 and float(out["pred_boxes"].max()) <= 1
    assert len(out["aux_outputs"]) == 1
    assert [tuple(g.shape) for g in out["log_gaussians"]] == [(2, 4, 10, 4, 5)] * 2
    assert float(max(g.max() for g in out["log_gaussians"])) <= 0.0
    assert hasattr(model.transformer.decoder.layers[0], "point3") == (dynamic_scale != "type1")


def test_gaussian_prior_peaks_at_the_query_reference_point() -> None:
    """With offsets zeroed and unit scales, log G of layer 0 is -|c - grid|^2 / beta around the centre."""
    torch.manual_seed(1)
    model = smca_detr_tiny().eval()
    layer = model.transformer.decoder.layers[0]
    torch.nn.init.zeros_(layer.point2.weight)
    torch.nn.init.zeros_(layer.point2.bias)
    with torch.no_grad():
        out = model.forward_all(torch.randn(1, 3, 128, 160))
    log_g = out["log_gaussians"][0][0, 0]  # (Q, h, w) of head 0
    centre = out["reference"][0] * torch.tensor([160 / 32, 128 / 32])  # (Q, 2) in cells (x, y)
    gy, gx = torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="ij")
    expected = -((gx - centre[:, :1, None]) ** 2 + (gy - centre[:, 1:, None]) ** 2) / 8.0
    torch.testing.assert_close(log_g, expected, atol=1e-5, rtol=1e-5)


def test_box_centres_are_offsets_from_the_reference() -> None:
    model = smca_detr_tiny().eval()
    torch.nn.init.zeros_(model.bbox_embed.layers[2].weight)
    torch.nn.init.zeros_(model.bbox_embed.layers[2].bias)
    with torch.no_grad():
        out = model.forward_all(torch.randn(1, 3, 128, 160))
    torch.testing.assert_close(out["pred_boxes"][..., :2], out["reference"])
    torch.testing.assert_close(out["pred_boxes"][..., 2:], torch.full_like(out["pred_boxes"][..., 2:], 0.5))


def test_gaussian_off_is_plain_co_attention_with_everything_else_equal() -> None:
    import torch

    from napari_medvit.models import create_model

    torch.manual_seed(0)
    smca = create_model("smca_detr_tiny", dropout=0.0).eval()
    detr = create_model("smca_detr_tiny", dropout=0.0, gaussian=False).eval()
    detr.load_state_dict(smca.state_dict())  # the same parameters: only the modulation differs
    assert detr.config["gaussian"] is False
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = smca(x), detr(x)
        assert not torch.allclose(a["pred_boxes"], b["pred_boxes"])
        for layer in detr.transformer.decoder.layers:  # the Gaussian's offsets and scales no longer matter
            layer.point2.weight.add_(1.0)
            layer.point3.weight.add_(1.0)
        torch.testing.assert_close(detr(x)["pred_logits"], b["pred_logits"])
