from __future__ import annotations

import pytest
import torch

from napari_medvit.explain.crossvit import CrossViTAttention
from napari_medvit.models import create_model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("crossvit_tiny_test", num_classes=2)


def test_captures_three_blocks_times_two_cross_maps_and_two_self_maps(model) -> None:
    x = torch.randn(2, 3, 240, 240)
    with torch.no_grad(), CrossViTAttention(model) as cap:
        model(x)
    maps = cap.maps()
    names = [m.name for m in maps]
    assert names[:6] == [
        "cross-attention block 1 S-CLS→L", "cross-attention block 1 L-CLS→S",
        "cross-attention block 2 S-CLS→L", "cross-attention block 2 L-CLS→S",
        "cross-attention block 3 S-CLS→L", "cross-attention block 3 L-CLS→S",
    ]
    assert names[6:] == ["self-attention S-CLS (last block)", "self-attention L-CLS (last block)"]
    by_name = {m.name: m for m in maps}
    assert by_name["cross-attention block 1 S-CLS→L"].heads.shape == (2, 2, 14, 14)  # over the L patches
    assert by_name["cross-attention block 1 L-CLS→S"].heads.shape == (2, 2, 20, 20)  # over the S patches
    assert by_name["self-attention S-CLS (last block)"].heads.shape == (2, 2, 20, 20)
    assert by_name["self-attention L-CLS (last block)"].mean.shape == (2, 14, 14)
    for m in maps:  # softmax rows: the patch part sums to at most 1 (the rest went to the CLS token)
        sums = m.heads.flatten(2).sum(-1)
        assert torch.all(sums <= 1 + 1e-5) and torch.all(sums > 0)


def test_cross_map_equals_softmax_of_q_k(model) -> None:
    """The captured S-CLS→L map is softmax(q k^T / sqrt(d)) of the fusion's own projections."""
    x = torch.randn(1, 3, 240, 240)
    fusion = model.blocks[0].fusion[0]
    seen = {}
    handle = fusion.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0].detach()))
    with torch.no_grad(), CrossViTAttention(model) as cap:
        model(x)
    handle.remove()
    tokens = fusion.norm1(seen["x"])
    attn = fusion.attn
    b, n, c = tokens.shape
    h = attn.num_heads
    q = attn.wq(tokens[:, :1]).reshape(b, 1, h, c // h).transpose(1, 2)
    k = attn.wk(tokens).reshape(b, n, h, c // h).transpose(1, 2)
    expected = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(-1)[:, :, 0, 1:].reshape(b, h, 14, 14)
    torch.testing.assert_close(cap.maps()[0].heads, expected)


def test_hooks_are_removed_and_fused_attention_restored(model) -> None:
    attn = model.blocks[-1].blocks[0][-1].attn
    before = attn.fused_attn
    x = torch.randn(1, 3, 240, 240)
    with torch.no_grad():
        ref = model(x)
        with CrossViTAttention(model):
            out = model(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)  # the explicit path gives the same logits
    assert attn.fused_attn == before
    assert not model.blocks[0].fusion[0].attn.attn_drop._forward_pre_hooks
    with pytest.raises(RuntimeError, match="no attention captured"):
        CrossViTAttention(model).maps()
    with pytest.raises(ValueError, match="not a timm CrossViT"):
        CrossViTAttention(torch.nn.Linear(2, 2))
