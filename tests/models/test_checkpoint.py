from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch

from napari_medvit.models import create_model
from napari_medvit.models.checkpoint import CheckpointError, Manifest, read_checkpoint, save_checkpoint


def _tiny(**kw):
    return create_model("transfuse_tiny", **kw)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_round_trip_with_manifest_rebuilds_the_configuration(tmp_path: Path, suffix: str) -> None:
    model = _tiny(embed_dim=32, depth=1)
    path = save_checkpoint(model, tmp_path / f"m{suffix}",
                           Manifest(arch="transfuse_tiny", config=model.config, class_names=["background", "polyp"]))
    state, manifest, digest = read_checkpoint(path)
    assert manifest is not None
    assert manifest.arch == "transfuse_tiny" and manifest.class_names == ["background", "polyp"]
    assert len(digest) == 64 and len(manifest.weights_sha256) == 64
    again = create_model("transfuse_tiny", checkpoint=path)  # config comes from the manifest
    assert again.config["embed_dim"] == 32
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)
    assert again.checkpoint_info.trained and again.checkpoint_info.manifest["arch"] == "transfuse_tiny"


def test_mismatched_checkpoint_lists_missing_unexpected_and_misshaped_keys(tmp_path: Path) -> None:
    state = _tiny().state_dict()
    state.pop("final_2.1.conv.weight")
    state["extra.head.weight"] = torch.zeros(3)
    state["up1.conv.identity.0.weight"] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        _tiny(checkpoint=path)
    msg = str(err.value)
    assert "bad.pth does not fit TransFuse" in msg
    assert "1 missing keys" in msg and "final_2.1.conv.weight" in msg
    assert "1 unexpected keys" in msg and "extra.head.weight" in msg
    assert "1 mis-shaped keys" in msg and "up1.conv.identity.0.weight: checkpoint (1, 1, 1, 1)" in msg


def test_checkpoint_of_another_size_is_refused_not_silently_loaded(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save(_tiny().state_dict(), path)  # no manifest: the small tiny weights into TransFuse-S
    with pytest.raises(CheckpointError, match="mis-shaped keys"):
        create_model("transfuse_s", checkpoint=path)


def test_manifest_for_another_architecture_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(_tiny(), tmp_path / "x.safetensors", Manifest(arch="crossvit_15_240"))
    with pytest.raises(CheckpointError, match="architecture 'crossvit_15_240'"):
        create_model("transfuse_s", checkpoint=path)


def test_altered_weights_fail_the_manifest_digest(tmp_path: Path) -> None:
    model = _tiny()
    path = save_checkpoint(model, tmp_path / "m.pt", Manifest(arch="transfuse_tiny", config=model.config))
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["final_2.1.conv.bias"] += 1.0
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not match the digest"):
        read_checkpoint(path)


class _Evil:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_checkpoint_that_needs_unpickling_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": collections.OrderedDict(), "hook": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused .* unpickle code"):
        read_checkpoint(path)


def test_missing_corrupt_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable safetensors file"):
        read_checkpoint(junk)
    other = tmp_path / "weights.h5"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported checkpoint extension '.h5'"):
        read_checkpoint(other)
    with pytest.raises(CheckpointError, match="unsupported checkpoint extension"):
        save_checkpoint(_tiny(), tmp_path / "m.onnx", Manifest(arch="transfuse_tiny"))


def test_untrained_models_say_so() -> None:
    info = _tiny().checkpoint_info
    assert not info.trained and info.label == "untrained weights"


def test_fp16_storage_compacts_integer_buffers_and_loads_back_exactly(tmp_path: Path) -> None:
    """Swin's relative-position indices (int64 buffers) take less room; loading restores their type."""
    torch.manual_seed(0)
    model = create_model("swin_unetr_tiny_test")
    manifest = Manifest(arch="swin_unetr_tiny_test", config=model.config, class_names=["a", "b", "c"], trained=True)
    full = save_checkpoint(model, tmp_path / "fp32.safetensors", manifest)
    half = save_checkpoint(model, tmp_path / "fp16.safetensors", manifest, dtype=torch.float16)
    state, _, _ = read_checkpoint(half)
    index = [k for k in state if k.endswith("relative_position_index")]
    assert index and all(state[k].dtype == torch.int16 for k in index)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded = create_model("swin_unetr_tiny_test", checkpoint=half)
    for key, value in model.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.dtype == value.dtype, key
        if not value.is_floating_point():
            assert torch.equal(got, value), key
