"""Every bad checkpoint or MONAI bundle fails with a CheckpointError that names the file (and the key).

Never a raw KeyError / TypeError / ValueError from int() / AttributeError: the message says which file,
which entry, and what was expected. The models are tiny (DAFT's 3D ResNet: 56 k parameters, with integer
batch-norm counters; a 2-level MONAI UNet) so the whole module runs in seconds.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from napari_medvit.models import create_model
from napari_medvit.models.checkpoint import CheckpointError, Manifest, load_weights, read_checkpoint, save_checkpoint
from napari_medvit.models.manifest import MANIFEST_KEY, read_manifest

RANDOM_BYTES = random.Random(0).randbytes(4096)  # fixed: a random first byte could be a pickle GLOBAL opcode
INT_KEY = "conv1.bn.num_batches_tracked"  # an int64 buffer of ResNet3D
FLOAT_KEY = "conv1.conv.weight"  # a float32 parameter


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in create_model("resnet3d").state_dict().items()}


def _raises(call: Callable[[], Any], *parts: str) -> str:
    """The CheckpointError message of ``call()``, checked to contain every part (file names, keys)."""
    with pytest.raises(CheckpointError) as err:
        call()
    assert type(err.value) is CheckpointError, type(err.value)  # the exact class, not some subclass
    msg = str(err.value)
    assert "\n" not in msg.split(":", 1)[0]  # the file's name leads the first line
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


# ---- 1. the manifest: not a JSON object, or fields of the wrong type -----------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("[1, 2]", "(a list), expected a JSON object"),
    ('"text"', "(a string), expected a JSON object"),
    ("null", "null, expected a JSON object"),
    ("42", "(a number), expected a JSON object"),
    ("{not json", "not valid JSON"),
    ('{"config": {}}', "has no 'arch' field"),
])
def test_safetensors_manifest_that_is_not_an_object(tmp_path: Path, state: dict, raw: str, expected: str) -> None:
    path = tmp_path / "bad_manifest.safetensors"
    save_file(state, str(path), metadata={MANIFEST_KEY: raw})
    _raises(lambda: read_checkpoint(path), "bad_manifest.safetensors", expected)
    _raises(lambda: read_manifest(path), "bad_manifest.safetensors", expected)  # the widgets' header-only reader
    _raises(lambda: create_model("resnet3d", checkpoint=path), "bad_manifest.safetensors", expected)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("arch", 3, "a non-empty string"),
    ("arch", "", "a non-empty string"),
    ("config", [1, 2], "a JSON object (string keys) of factory arguments"),
    ("config", "n_basefilters=4", "a JSON object (string keys) of factory arguments"),
    ("class_names", "background", "a list of strings"),
    ("class_names", ["CN", 1, None], "a list of strings"),
    ("preprocessing", ["resize"], "a JSON object"),
    ("trained", "yes", "true or false"),
    ("description", None, "a string"),
    ("weights_sha256", "abc", "64 lowercase hex digits"),
    ("plugin_version", 1.0, "a string"),
    ("extra", [], "a JSON object"),
])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_manifest_field_of_the_wrong_type_is_named(tmp_path: Path, state: dict, suffix: str, field: str,
                                                   value: Any, expected: str) -> None:
    manifest = {"arch": "resnet3d", "config": {}, "class_names": ["CN", "MCI", "AD"], field: value}
    path = tmp_path / f"fields{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path), metadata={MANIFEST_KEY: json.dumps(manifest)})
    else:
        torch.save({"state_dict": state, "manifest": manifest}, path)
    _raises(lambda: read_checkpoint(path), path.name, f"field {field!r}", expected)
    _raises(lambda: create_model("resnet3d", checkpoint=path), path.name, f"field {field!r}")


@pytest.mark.parametrize("manifest", [[1, 2], "resnet3d", None, 3])
def test_pt_manifest_entry_that_is_not_a_dict(tmp_path: Path, state: dict, manifest: Any) -> None:
    path = tmp_path / "m.pt"
    torch.save({"state_dict": state, "manifest": manifest}, path)
    _raises(lambda: read_checkpoint(path), "m.pt", "'manifest' entry", "expected a dict")


@pytest.mark.parametrize(("manifest", "expected"), [
    ({1: "x", "b": 2}, "has no 'arch' field"),  # keys of mixed types: not sortable
    ({"arch": "resnet3d", "config": {1: 4}}, "field 'config'"),  # keys that are not strings
    ({"arch": "resnet3d", "class_names": ("CN", 2)}, "field 'class_names'"),
])
def test_pt_manifest_with_non_json_keys_or_values(tmp_path: Path, state: dict, manifest: dict, expected: str) -> None:
    path = tmp_path / "keys.pth"
    torch.save({"state_dict": state, "manifest": manifest}, path)
    _raises(lambda: read_checkpoint(path), "keys.pth", expected)


@pytest.mark.parametrize("config", [{"n_basefilters": "four"}, {"no_such_argument": 1}, {"n_outputs": -3}])
def test_manifest_config_that_does_not_build_the_model_names_the_file(tmp_path: Path, config: dict) -> None:
    path = save_checkpoint(create_model("resnet3d"), tmp_path / "cfg.safetensors", Manifest(arch="resnet3d"))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta[MANIFEST_KEY] = json.dumps({**json.loads(meta[MANIFEST_KEY]), "config": config})
    save_file(tensors, str(path), metadata=meta)
    _raises(lambda: create_model("resnet3d", checkpoint=path), "cfg.safetensors", "configuration in its manifest",
            next(iter(config)))


def test_manifest_for_an_unknown_architecture_names_the_file(tmp_path: Path) -> None:
    path = save_checkpoint(create_model("resnet3d"), tmp_path / "arch.safetensors", Manifest(arch="no_such_net"))
    _raises(lambda: create_model("resnet3d", checkpoint=path), "arch.safetensors", "'no_such_net'")


# ---- 2. tensor dtypes: conversions within a kind load, kind changes are refused ------------------------

@pytest.mark.parametrize(("key", "dtype", "expected"), [
    (INT_KEY, torch.float32, "expected an integer tensor"),
    (INT_KEY, torch.float16, "expected an integer tensor"),
    (INT_KEY, torch.bool, "expected an integer tensor"),
    (FLOAT_KEY, torch.int32, "expected a floating-point tensor"),
    (FLOAT_KEY, torch.int64, "expected a floating-point tensor"),
    (FLOAT_KEY, torch.bool, "expected a floating-point tensor"),
    (FLOAT_KEY, torch.uint8, "expected a floating-point tensor"),
    (FLOAT_KEY, torch.complex64, "expected a floating-point tensor"),
])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_tensor_of_another_dtype_kind_is_refused(tmp_path: Path, state: dict, key: str, dtype: torch.dtype,
                                                 expected: str, suffix: str) -> None:
    if suffix == ".safetensors" and dtype.is_complex:
        pytest.skip("safetensors stores no complex tensors")
    bad = {**state, key: state[key].to(dtype)}
    path = tmp_path / f"dtype{suffix}"
    if suffix == ".safetensors":
        save_file(bad, str(path))
    else:
        torch.save(bad, path)
    want = state[key].dtype
    _raises(lambda: create_model("resnet3d", checkpoint=path), path.name, repr(key), str(dtype), str(want), expected)


def test_several_dtype_problems_are_counted_in_one_line(tmp_path: Path, state: dict) -> None:
    bad = {k: v.float() for k, v in state.items()}  # every integer buffer as float
    path = tmp_path / "all_float.pth"
    torch.save(bad, path)
    n = sum(not v.is_floating_point() for v in state.values())
    msg = _raises(lambda: create_model("resnet3d", checkpoint=path), "all_float.pth", f"and {n - 1} more")
    assert "\n" not in msg


@pytest.mark.parametrize(("floats", "ints"), [
    (torch.float16, torch.int8), (torch.bfloat16, torch.int16), (torch.float64, torch.int32), (None, torch.int64)])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_conversions_within_a_kind_still_load_exactly(tmp_path: Path, state: dict, floats: torch.dtype | None,
                                                      ints: torch.dtype, suffix: str) -> None:
    """How the shipped weights are packed (fp16 floats, compacted integer buffers) keeps loading."""
    packed = {k: (v.to(floats) if floats is not None else v) if v.is_floating_point() else v.to(ints)
              for k, v in state.items()}
    path = tmp_path / f"packed{suffix}"
    if suffix == ".safetensors":
        save_file(packed, str(path))
    else:
        torch.save(packed, path)
    model = create_model("resnet3d", checkpoint=path)
    for key, value in model.state_dict().items():
        assert value.dtype == state[key].dtype, key
        assert torch.equal(value, packed[key].to(value.dtype)), key


def test_packed_checkpoint_from_save_checkpoint_loads(tmp_path: Path) -> None:
    model = create_model("resnet3d")
    path = save_checkpoint(model, tmp_path / "half.safetensors", Manifest(arch="resnet3d", config=model.config),
                           dtype=torch.float16)
    loaded = create_model("resnet3d", checkpoint=path)
    assert all(v.dtype == model.state_dict()[k].dtype for k, v in loaded.state_dict().items())


class _Indexed(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2))
        self.register_buffer("index", torch.zeros(3, dtype=torch.int16))


def test_integers_outside_the_buffer_type_are_refused() -> None:
    given = {"weight": torch.zeros(2), "index": torch.tensor([0, 1, 70_000])}
    _raises(lambda: load_weights(_Indexed(), given, source="wide.pth"), "wide.pth", "'index'", "[0, 70000]",
            "torch.int16")
    load_weights(_Indexed(), {"weight": torch.zeros(2, dtype=torch.float16), "index": torch.tensor([0, 1, 2])})


# ---- 3. MONAI bundles -----------------------------------------------------------------------------------

UNET_DEF = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
            "strides": [2], "num_res_units": 0}
SCALE = "preprocessing#transforms#3"  # the ScaleIntensityRanged entry's MONAI id


def _inference() -> dict[str, Any]:
    return {
        "imports": ["$import glob"],
        "a_max": 250,
        "network_def": dict(UNET_DEF),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [2.0, 2.0, 2.0], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -175, "a_max": "@a_max", "b_min": 0.0,
             "b_max": 1.0, "clip": True},
        ]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 2, "overlap": 0.25},
    }


def _metadata() -> dict[str, Any]:
    return {"name": "tiny", "version": "0.1", "network_data_format": {"outputs": {"pred": {
        "channel_def": {"0": "background", "1": "spleen"}}}}}


@pytest.fixture(scope="module")
def unet_state() -> dict[str, torch.Tensor]:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(**{k: v for k, v in UNET_DEF.items() if k != "_target_"}).state_dict()


def _bundle(root: Path, weights: Any, inference: Any = None, metadata: Any = None) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    for name, content in (("inference.json", _inference() if inference is None else inference),
                          ("metadata.json", _metadata() if metadata is None else metadata)):
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        (root / "configs" / name).write_bytes(data)
    torch.save(weights, root / "models" / "model.pt")
    return root


def test_good_bundle_resolves_references_to_literals_and_executes_nothing(tmp_path: Path, unet_state: dict) -> None:
    marker = tmp_path / "executed"
    inference = _inference()
    inference["consts"] = {"classes": 2}
    inference["network_def"]["out_channels"] = "@consts::classes"
    inference["postprocessing"] = f"$__import__('pathlib').Path({str(marker)!r}).touch()"
    bundle = _bundle(tmp_path / "good", unet_state, inference)
    model = create_model("unet", checkpoint=bundle)
    manifest = model.checkpoint_info.manifest
    assert manifest["config"]["out_channels"] == 2 and manifest["class_names"] == ["background", "spleen"]
    assert manifest["preprocessing"]["intensity"] == {"window": [-175.0, 250.0], "range": [0.0, 1.0], "clip": True}
    assert not marker.exists()


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """An edit of the inference.json dict at a MONAI id (``#``-separated); ``...`` deletes the key."""
    def edit(config: dict) -> None:
        *parents, last = path.split("#")
        node: Any = config
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return edit


@pytest.mark.parametrize(("edit", "key", "expected"), [
    (_set(f"{SCALE}#a_min", "@a_min"), f"{SCALE}#a_min", "refers to an id"),
    (_set(f"{SCALE}#a_min", "$-175"), f"{SCALE}#a_min", "is an expression"),
    (_set(f"{SCALE}#a_min", "%configs/common.json#a_min"), f"{SCALE}#a_min", "is a macro"),
    (_set(f"{SCALE}#a_min", "low"), f"{SCALE}#a_min", "expected a finite number"),
    (_set(f"{SCALE}#a_min", None), f"{SCALE}#a_min", "expected a finite number"),
    (_set(f"{SCALE}#a_min", ...), f"{SCALE}#a_min", "'a_min' is missing"),
    (_set(f"{SCALE}#a_max", ...), f"{SCALE}#a_max", "'a_max' is missing"),
    (_set("a_max", "$250"), "a_max", f"referred to from {SCALE}#a_max"),  # a reference to an expression
    (_set(f"{SCALE}#a_min", 250), f"{SCALE}#a_max", "non-zero width"),
    (_set(f"{SCALE}#b_min", "@b"), f"{SCALE}#b_min", "refers to an id"),
    (_set(f"{SCALE}#b_max", [1]), f"{SCALE}#b_max", "expected a finite number"),
    (_set(f"{SCALE}#clip", "yes"), f"{SCALE}#clip", "expected true or false"),
    (_set("network_def#spatial_dims", "@x"), "network_def#spatial_dims", "refers to an id"),
    (_set("network_def#channels", "$[4, 8]"), "network_def#channels", "is an expression"),
    (_set("network_def#strides", ["@s"]), "network_def#strides#0", "refers to an id"),
    (_set("network_def", ...), "network_def", "is missing"),
    (_set("network_def", [1, 2]), "network_def", "expected an object"),
    (_set("network_def", "@net"), "network_def", "refers to an id"),
    (_set("preprocessing#transforms#1#axcodes", "@axcodes"), "transforms#1#axcodes", "refers to an id"),
    (_set("preprocessing#transforms#1#axcodes", "XYZ"), "transforms#1#axcodes", "orientation codes"),
    (_set("preprocessing#transforms#2#pixdim", ["a", 1, 1]), "transforms#2#pixdim", "positive voxel sizes"),
    (_set("preprocessing#transforms#2#pixdim", "%#pixdim"), "transforms#2#pixdim", "is a macro"),
    (_set("inferer#roi_size", [32, "x", 32]), "inferer#roi_size", "positive integer"),
    (_set("inferer#roi_size", "$@roi"), "inferer#roi_size", "is an expression"),
    (_set("inferer#roi_size", [32, 32.5, 32]), "inferer#roi_size", "positive integer"),
    (_set("inferer#overlap", 1.5), "inferer#overlap", "in [0, 1)"),
    (_set("inferer#overlap", "@o"), "inferer#overlap", "refers to an id"),
    (_set("inferer#sw_batch_size", 0), "inferer#sw_batch_size", "positive integer"),
    (_set("inferer#sw_batch_size", True), "inferer#sw_batch_size", "positive integer"),
    (_set("inferer#mode", "linear"), "inferer#mode", "'constant' or 'gaussian'"),
    (_set("loop", "@loop"), "", "circular"),
])
def test_bundle_value_that_is_not_a_usable_literal_names_file_and_key(tmp_path: Path, unet_state: dict,
                                                                      edit: Callable, key: str, expected: str) -> None:
    inference = _inference()
    edit(inference)
    if key == "":  # a circular reference reached from a value that is needed
        inference["inferer"]["overlap"] = "@loop"
        key = "inferer#overlap"
    bundle = _bundle(tmp_path / "ref_bundle", unet_state, inference)
    _raises(lambda: read_checkpoint(bundle), "MONAI bundle ref_bundle", "configs/inference.json", key, expected)


def test_bundle_error_reaches_create_model(tmp_path: Path, unet_state: dict) -> None:
    inference = _inference()
    inference["preprocessing"]["transforms"][3]["a_min"] = "@a_min"
    bundle = _bundle(tmp_path / "spleen", unet_state, inference)
    _raises(lambda: create_model("unet", checkpoint=bundle), "spleen", "configs/inference.json", f"{SCALE}#a_min")


CHANNELS = "network_data_format#outputs#pred#channel_def"


@pytest.mark.parametrize(("channel_def", "key", "expected"), [
    ({"background": 0, "spleen": 1}, CHANNELS, "key 'background' is not a channel number"),
    ({"a": "background"}, CHANNELS, "key 'a' is not a channel number"),
    ({"-1": "background"}, CHANNELS, "not a channel number"),
    ({"0": 1, "1": "spleen"}, f"{CHANNELS}#0", "expected the label's name"),
    ({"0": None}, f"{CHANNELS}#0", "expected the label's name"),
    ({"0": "background", "2": "spleen"}, CHANNELS, "no entry for channel 1"),
    ({"0": "background", "00": "spleen"}, CHANNELS, "channel 0 is named twice"),
    (["background", "spleen"], CHANNELS, "expected a JSON object"),
])
def test_bundle_channel_def_problems_are_named(tmp_path: Path, unet_state: dict, channel_def: Any, key: str,
                                               expected: str) -> None:
    metadata = _metadata()
    metadata["network_data_format"]["outputs"]["pred"]["channel_def"] = channel_def
    bundle = _bundle(tmp_path / "labels", unet_state, metadata=metadata)
    _raises(lambda: read_checkpoint(bundle), "MONAI bundle labels", "configs/metadata.json", key, expected)


@pytest.mark.parametrize(("metadata", "expected"), [
    ({"network_data_format": [1]}, "network_data_format: is a list"),
    ({"network_data_format": {"outputs": "pred"}}, "network_data_format#outputs: is a string"),
])
def test_bundle_metadata_sections_of_the_wrong_type(tmp_path: Path, unet_state: dict, metadata: dict,
                                                    expected: str) -> None:
    bundle = _bundle(tmp_path / "meta", unet_state, metadata=metadata)
    _raises(lambda: read_checkpoint(bundle), "MONAI bundle meta", "configs/metadata.json", expected)


@pytest.mark.parametrize("file", ["inference.json", "metadata.json"])
@pytest.mark.parametrize(("content", "expected"), [
    (b"{not json", "cannot read"),
    (b"", "cannot read"),
    (b"\xff\xfe\x00garbage\x9c", "cannot read"),
    (b"[1, 2]", "holds a list, expected a JSON object"),
    (b'"text"', "holds a string, expected a JSON object"),
    (b"null", "holds null, expected a JSON object"),
])
def test_bundle_config_file_that_is_not_a_json_object(tmp_path: Path, unet_state: dict, file: str, content: bytes,
                                                      expected: str) -> None:
    kwargs = {"inference" if file == "inference.json" else "metadata": content}
    bundle = _bundle(tmp_path / "cfg", unet_state, **kwargs)
    _raises(lambda: read_checkpoint(bundle), "MONAI bundle cfg", f"configs/{file}", expected)


@pytest.mark.parametrize(("weights", "expected"), [
    ([1, 2], "expected a dict of tensors, found list"),
    ({}, "contains no tensors"),
    ({"state_dict": "weights"}, "'state_dict' entry is a str"),
    ({"model.0.conv.weight": torch.zeros(1), "epoch": 3}, "holds an int under 'epoch'"),
    ({"state_dict": {"a.weight": torch.zeros(1), "b.weight": [1.0]}},
     "'state_dict' entry holds a list under 'b.weight'"),
])
def test_bundle_weights_that_are_not_a_state_dict(tmp_path: Path, weights: Any, expected: str) -> None:
    bundle = _bundle(tmp_path / "w", weights)
    _raises(lambda: read_checkpoint(bundle), "w/models/model.pt", expected)


def test_bundle_weights_that_are_unreadable_or_missing(tmp_path: Path, unet_state: dict) -> None:
    bundle = _bundle(tmp_path / "b", unet_state)
    (bundle / "models" / "model.pt").write_bytes(RANDOM_BYTES[:64])
    _raises(lambda: read_checkpoint(bundle), "b/models/model.pt", "not a readable PyTorch checkpoint")
    (bundle / "models" / "model.pt").unlink()
    _raises(lambda: read_checkpoint(bundle), "MONAI bundle b", "models/model.pt is missing")
    (bundle / "models" / "model.pt").mkdir()
    _raises(lambda: read_checkpoint(bundle), "MONAI bundle b", "models/model.pt is missing or not a file")


def test_bundle_without_its_inference_config_is_named(tmp_path: Path, unet_state: dict) -> None:
    bundle = _bundle(tmp_path / "noconf", unet_state)
    (bundle / "configs" / "inference.json").unlink()
    _raises(lambda: read_checkpoint(bundle), "MONAI bundle noconf", "configs/inference.json is missing")
    (bundle / "configs" / "inference.yaml").write_text("network_def: {}\n")
    _raises(lambda: read_checkpoint(bundle), "noconf", "YAML configs are not read")


def test_bundle_weights_of_another_network_list_the_keys(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "other", {"encoder.weight": torch.zeros(2, 2)})
    _raises(lambda: create_model("unet", checkpoint=bundle), "other does not fit", "unexpected keys", "encoder.weight")


# ---- 4. unreadable files, state_dicts that are not dicts of tensors, wrong architecture -----------------

def _valid(tmp_path: Path, state: dict, suffix: str) -> bytes:
    path = tmp_path / f"valid{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    return path.read_bytes()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
@pytest.mark.parametrize("damage", ["empty", "truncated", "random", "text"])
def test_unreadable_file_is_named(tmp_path: Path, state: dict, suffix: str, damage: str) -> None:
    good = _valid(tmp_path, state, suffix)
    data = {"empty": b"", "truncated": good[: len(good) // 2], "random": RANDOM_BYTES,
            "text": b"hello, this is not a checkpoint\n"}[damage]
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(data)
    msg = _raises(lambda: read_checkpoint(path), f"damaged{suffix}", "not a readable")
    assert "refused" not in msg and "\n" not in msg  # unreadable, not "needs code"


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("this would run code",))


def test_pickled_code_is_still_refused_and_named(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": collections.OrderedDict(), "hook": _Evil()}, path)
    msg = _raises(lambda: read_checkpoint(path), "evil.pth", "refused", "unpickle code", "print")
    assert "\n" not in msg


@pytest.mark.parametrize(("payload", "expected"), [
    pytest.param(lambda s: {**s, "epoch": 3}, "the checkpoint holds an int under 'epoch'", id="int-entry"),
    pytest.param(lambda s: {"state_dict": {**s, "optimizer": {"lr": 0.1}}},
                 "its 'state_dict' entry holds a dict under 'optimizer'", id="dict-inside-wrapper"),
    pytest.param(lambda s: {"model": {**s, FLOAT_KEY: s[FLOAT_KEY].tolist()}},
                 f"its 'model' entry holds a list under {FLOAT_KEY!r}", id="list-for-a-parameter"),
    pytest.param(lambda s: {**s, 0: s[FLOAT_KEY]}, "has the key 0 (int)", id="int-key"),
    pytest.param(lambda s: {"state_dict": [1, 2]}, "'state_dict' entry is a list", id="wrapper-not-a-dict"),
    pytest.param(lambda s: [s[FLOAT_KEY]], "expected a dict of tensors, found list", id="list"),
    pytest.param(lambda s: s[FLOAT_KEY], "expected a dict of tensors, found Tensor", id="tensor"),
    pytest.param(lambda s: {}, "contains no tensors", id="empty"),
    pytest.param(lambda s: {"state_dict": {}, "epoch": 1}, "contains no tensors", id="empty-wrapper"),
    pytest.param(lambda s: {**s, FLOAT_KEY: s[FLOAT_KEY].to_sparse()}, f"sparse_coo tensor under {FLOAT_KEY!r}",
                 id="sparse", marks=pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")),
])
def test_pt_whose_state_dict_is_not_a_dict_of_tensors(tmp_path: Path, state: dict, payload: Callable,
                                                      expected: str) -> None:
    path = tmp_path / "odd.pth"
    torch.save(payload(state), path)
    _raises(lambda: create_model("resnet3d", checkpoint=path), "odd.pth", expected)


def test_official_wrappers_with_other_entries_still_load(tmp_path: Path, state: dict) -> None:
    for wrapper in ("state_dict", "model_state_dict", "model", "net"):
        torch.save({wrapper: state, "epoch": 5, "optimizer": {"lr": 0.1}}, tmp_path / "w.pth")
        model = create_model("resnet3d", checkpoint=tmp_path / "w.pth")
        assert torch.equal(model.state_dict()[FLOAT_KEY], state[FLOAT_KEY]), wrapper


def test_load_weights_names_the_source_for_non_tensor_entries() -> None:
    _raises(lambda: load_weights(_Indexed(), {"weight": [0.0, 0.0], "index": torch.zeros(3)}, source="given.pt"),
            "given.pt", "holds a list under 'weight'")


def test_checkpoint_of_another_architecture_names_file_and_keys(tmp_path: Path, state: dict) -> None:
    path = tmp_path / "resnet3d_weights.pth"
    torch.save(state, path)
    msg = _raises(lambda: create_model("daft", checkpoint=path), "resnet3d_weights.pth does not fit DAFT",
                  "missing keys", "unexpected keys")
    assert re.search(r"blockX\.\S+", msg)


def test_filter_function_failure_is_named(tmp_path: Path) -> None:
    """TransFuse's filter resamples the position embedding; a malformed one is reported, not an IndexError."""
    model = create_model("transfuse_tiny")
    bad = {**model.state_dict(), "transformer.pos_embed": torch.zeros(5)}
    torch.save(bad, tmp_path / "pos.pth")
    _raises(lambda: create_model("transfuse_tiny", checkpoint=tmp_path / "pos.pth"), "pos.pth", "TransFuse")


def test_truenet_folder_with_unreadable_plane_files_names_the_file(tmp_path: Path) -> None:
    source = create_model("truenet", init_channels=4)
    for plane in ("axial", "sagittal", "coronal"):
        torch.save({"model_state_dict": getattr(source, plane).state_dict()}, tmp_path / f"T_{plane}.pth")
    (tmp_path / "T_sagittal.pth").write_bytes(b"\x00" * 10)
    _raises(lambda: read_checkpoint(tmp_path), "T_sagittal.pth", "not a readable")
    torch.save([1, 2], tmp_path / "T_sagittal.pth")
    _raises(lambda: read_checkpoint(tmp_path), "T_sagittal.pth", "expected a dict of tensors")


def test_missing_files_directories_and_empty_safetensors(tmp_path: Path, state: dict) -> None:
    _raises(lambda: read_checkpoint(tmp_path / "nope.safetensors"), "nope.safetensors", "does not exist")
    _raises(lambda: create_model("resnet3d", checkpoint=tmp_path / "nope.pth"), "nope.pth", "does not exist")
    folder = tmp_path / "weights.safetensors"
    folder.mkdir()  # a directory where a file is expected
    _raises(lambda: read_checkpoint(folder), "weights.safetensors", "a folder checkpoint must be")
    _raises(lambda: read_manifest(folder), "weights.safetensors", "cannot read its manifest")
    save_file({}, str(tmp_path / "empty.safetensors"))
    _raises(lambda: read_checkpoint(tmp_path / "empty.safetensors"), "empty.safetensors", "contains no tensors")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files without permission")
def test_unreadable_permissions_name_the_file(tmp_path: Path, state: dict) -> None:
    path = tmp_path / "locked.pth"
    torch.save(state, path)
    path.chmod(0)
    try:
        _raises(lambda: read_checkpoint(path), "locked.pth", "cannot be read")
    finally:
        path.chmod(0o600)
