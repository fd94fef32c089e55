from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from napari_medvit.models import create_model, get_spec, list_models
from napari_medvit.models.transfuse import TransFuse, checkpoint_filter_fn, transfuse_tiny

OFFICIAL_KEYS = Path(__file__).parents[1] / "data" / "transfuse_s_official_keys.json"


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "expected"),
    [("transfuse_s", 26_248_725), ("transfuse_l", 143_540_789), ("transfuse_l_384", 143_983_157),
     ("transfuse_demo", 7_835_301)],
)
def test_reference_parameter_counts(name: str, expected: int) -> None:
    # Full-size configurations are only counted, never run, in the test suite.
    assert n_params(create_model(name)) == expected


def test_registry_lists_transfuse_and_rejects_unknown_names() -> None:
    names = list_models()
    assert {"transfuse_s", "transfuse_l", "transfuse_l_384"} <= set(names)
    assert "transfuse_tiny" not in list_models(include_test=False)
    assert get_spec("transfuse_s").task == "segment"
    with pytest.raises(ValueError, match="unknown model 'transfusion'"):
        create_model("transfusion")


@pytest.mark.parametrize("size", [(64, 96), (96, 64), (128, 128)])
def test_tiny_forward_shapes_on_any_size_divisible_by_32(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = transfuse_tiny().eval()
    h, w = size
    with torch.no_grad():
        out = model.forward_all(torch.randn(2, 3, h, w))
        main = model(torch.randn(2, 3, h, w))
    for head in ("map_x", "map_1", "map_2"):
        assert out[head].shape == (2, 1, h, w)
    assert main.shape == (2, 1, h, w)
    assert [tuple(a.shape) for a in out["bifusion_attention"]] == [
        (2, 1, h // 16, w // 16), (2, 1, h // 8, w // 8), (2, 1, h // 4, w // 4)]
    assert [tuple(a.shape) for a in out["gate_attention"]] == [(2, 1, h // 8, w // 8), (2, 1, h // 4, w // 4)]
    for a in out["bifusion_attention"] + out["gate_attention"]:
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_eval_forward_is_map_2_and_deterministic() -> None:
    model = transfuse_tiny().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model.forward_all(x)["map_2"])
        assert torch.equal(model(x), model(x))


def test_rejects_sizes_not_divisible_by_32_and_wrong_channels() -> None:
    model = transfuse_tiny().eval()
    with pytest.raises(ValueError, match="divisible by 32, got 70x96"):
        model(torch.randn(1, 3, 70, 96))
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        model(torch.randn(1, 1, 64, 64))


def test_bifusion_map_is_the_spatial_attention_of_the_cnn_feature() -> None:
    block = transfuse_tiny().eval().up_c_2_1
    g, x = torch.randn(1, 64, 8, 8), torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        _, att = block(g, x)
        pooled = torch.cat([g.amax(1, keepdim=True), g.mean(1, keepdim=True)], 1)
        expected = torch.sigmoid(block.spatial(pooled))
    torch.testing.assert_close(att, expected)


def test_official_checkpoint_layout_loads_strictly(tmp_path: Path) -> None:
    """Keys and shapes recorded from the official TransFuse_S().state_dict() load with strict=True."""
    layout = json.loads(OFFICIAL_KEYS.read_text())["keys"]
    assert len(layout) == 598
    g = torch.Generator().manual_seed(0)
    state = {
        k: (torch.zeros(shape, dtype=torch.long) if k.endswith("num_batches_tracked")
            else torch.randn(shape, generator=g))
        for k, shape in layout.items()
    }
    path = tmp_path / "TransFuse-19_best.pth"
    torch.save(state, path)  # a plain state_dict, as the official training script saves it
    model = create_model("transfuse_s", checkpoint=path)
    loaded = model.state_dict()
    for k in ("transformer.pos_embed", "up_c.spatial.conv.weight", "up_c_2_2.attn_block.psi.0.weight",
              "resnet.layer3.5.bn2.running_var"):
        torch.testing.assert_close(loaded[k], state[k])
    assert model.checkpoint_info.trained
    assert len(model.checkpoint_info.file_sha256) == 64


def test_filter_strips_dataparallel_prefix_and_resamples_pos_embed() -> None:
    model = transfuse_tiny(pos_grid=(2, 3))
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    sd["module.transformer.pos_embed"] = torch.randn(1, 1 + 16, 64)  # ImageNet-style 4x4 grid + CLS slot
    out = checkpoint_filter_fn(sd, model)
    assert not any(k.startswith("module.") for k in out)
    assert out["transformer.pos_embed"].shape == (1, 6, 64)
    model.load_state_dict(out, strict=True)


def test_position_embedding_is_used_unchanged_on_its_reference_grid() -> None:
    model = transfuse_tiny()
    assert model.transformer.pos_embed_for((2, 2)) is model.transformer.pos_embed
    assert model.transformer.pos_embed_for((3, 5)).shape == (1, 15, 64)


def test_config_is_recorded_for_manifests() -> None:
    model = TransFuse(cnn="resnet18", embed_dim=32, depth=1, num_heads=2, pos_grid=(2, 2))
    assert model.config["cnn"] == "resnet18" and model.config["pos_grid"] == [2, 2]
    with pytest.raises(ValueError, match="unknown CNN backbone 'vgg16'"):
        TransFuse(cnn="vgg16")
