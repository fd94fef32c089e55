from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_medvit.models import create_model, get_spec, list_models
from napari_medvit.models.checkpoint import CheckpointError

# Parameter counts of the official code (= timm), REFERENCE.md; the 408 variants differ from their
# 240 twins only by the larger position embeddings: (34^2 + 1 - 401) * d_S + (24^2 + 1 - 197) * d_L.
REFERENCE_COUNTS = {
    "crossvit_tiny_240": 7_014_800,
    "crossvit_small_240": 26_856_272,
    "crossvit_base_240": 105_025_232,
    "crossvit_9_240": 8_553_296,
    "crossvit_15_240": 27_528_464,
    "crossvit_18_240": 43_271_408,
    "crossvit_9_dagger_240": 8_776_592,
    "crossvit_15_dagger_240": 28_209_008,
    "crossvit_18_dagger_240": 44_266_976,
    "crossvit_15_dagger_408": 28_209_008 + 756 * 192 + 380 * 384,
    "crossvit_18_dagger_408": 44_266_976 + 756 * 224 + 380 * 448,
}


@pytest.mark.parametrize(("name", "expected"), sorted(REFERENCE_COUNTS.items()))
def test_reference_parameter_counts(name: str, expected: int) -> None:
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_registry_entries_are_classifiers_with_their_input_size() -> None:
    assert set(REFERENCE_COUNTS) <= set(list_models(task="classify"))
    assert get_spec("crossvit_15_dagger_408").preprocessing["resize"] == (408, 408)
    assert get_spec("crossvit_15_dagger_240").display_name == "CrossViT-15†"
    assert get_spec("crossvit_9_240").short_name == "CrossViT"


def test_tiny_forward_averages_the_two_branch_heads() -> None:
    torch.manual_seed(0)
    model = create_model("crossvit_tiny_test", num_classes=3)
    x = torch.randn(2, 3, 240, 240)
    with torch.no_grad():
        logits = model(x)
        xs = model.forward_features(x)
        per_branch = [head(t[:, 0]) for head, t in zip(model.head, xs, strict=True)]
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, (per_branch[0] + per_branch[1]) / 2)
    assert [t.shape[1] for t in xs] == [401, 197]  # S: 20x20 + CLS, L: 14x14 + CLS


@pytest.mark.parametrize("layout", ["ibm", "timm"])
def test_both_checkpoint_layouts_load_strictly(tmp_path: Path, layout: str) -> None:
    torch.manual_seed(1)
    source = create_model("crossvit_tiny_test", num_classes=2)
    state = source.state_dict()
    if layout == "ibm":  # IBM/CrossViT names the per-branch parameters pos_embed.0, cls_token.1, ...
        state = {k.replace("pos_embed_", "pos_embed.").replace("cls_token_", "cls_token."): v for k, v in state.items()}
        assert "pos_embed.0" in state and "cls_token.1" in state
        torch.save({"model": state, "epoch": 300}, tmp_path / "ckpt.pth")  # as the IBM training script saves
    else:
        torch.save(state, tmp_path / "ckpt.pth")
    loaded = create_model("crossvit_tiny_test", num_classes=2, checkpoint=tmp_path / "ckpt.pth")
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_wrong_class_count_is_reported(tmp_path: Path) -> None:
    torch.save(create_model("crossvit_tiny_test", num_classes=2).state_dict(), tmp_path / "two.pth")
    with pytest.raises(CheckpointError, match=r"head\.0\.weight: checkpoint \(2, 32\) vs model \(1000, 32\)"):
        create_model("crossvit_tiny_test", checkpoint=tmp_path / "two.pth")
