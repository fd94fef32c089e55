"""The resolved model configuration: registry + manifest merged once, every key checked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from napari_medvit.models import ModelSpec, create_model, get_spec, list_models
from napari_medvit.models.adapters import OVERLAY_KINDS, ModelAdapter, load_adapter
from napari_medvit.models.checkpoint import CheckpointError, Manifest, save_checkpoint
from napari_medvit.models.config import ConfigError, TrainingSettings, config_of, resolve, resolve_checkpoint
from napari_medvit.transforms.preprocessing import _CHECKS, IntensityWindow, Preprocessing


def test_every_registry_entry_resolves_with_its_adapter() -> None:
    assert set(_CHECKS) == set(Preprocessing.keys())  # no key without its check
    for name in list_models():
        config = resolve(name)
        assert isinstance(config.adapter, ModelAdapter) and config.name == name
        assert set(config.outputs) <= set(OVERLAY_KINDS) and config.outputs, name
        assert config.class_names == get_spec(name).class_names
    assert resolve("smca_detr_demo").preprocessing.score_threshold == 0.3
    assert resolve("vosht").training == TrainingSettings(4, "inverse_sqrt_frequency")
    assert resolve("daft").tabular_features[0]["name"] == "age"


@pytest.mark.parametrize(("values", "message"), [
    ({"treshold": 0.4}, "unknown preprocessing key 'treshold'; did you mean 'threshold'"),
    ({"roi": [1, 2, 3]}, "unknown preprocessing key 'roi'; did you mean 'roi_size'"),
    ({"zzz": 1}, "unknown preprocessing key 'zzz'; known keys: resize, "),
    ({"mean": "abc"}, "preprocessing 'mean' is 'abc', expected a list of numbers"),
    ({"std": [0.2, 0.0]}, "preprocessing 'std' is \\[0.2, 0.0\\], expected a list of positive numbers"),
    ({"resize": [64]}, "preprocessing 'resize' is \\[64\\], expected 2 positive whole numbers or null"),
    ({"overlap": 1.0}, "'overlap' is 1.0, expected a number from 0 up to \\(not including\\) 1"),
    ({"threshold": True}, "'threshold' is True, expected a number from 0 to 1"),
    ({"color": "grey"}, "'color' is 'grey', expected one of None, 'rgb'"),
    ({"intensity": {"window": [5, 5]}}, "'intensity' window is \\[5, 5\\], expected two different numbers"),
    ({"intensity": "zscore"}, "'intensity' is 'zscore', expected \"percentile\" or"),
    ({"axcodes": "RAR"}, "'axcodes' is 'RAR', expected orientation letters"),
    ({"tabular": [{"name": "age", "mena": 70}]}, "feature 1 \\('age'\\): unknown field\\(s\\) \\['mena'\\]"),
    ({"tabular": [{"name": "age"}, {"name": "age"}]}, "the name 'age' is used twice"),
    ({"sw_batch_size": 0}, "'sw_batch_size' is 0, expected a whole number >= 1"),
])
def test_a_bad_key_or_value_is_an_error_naming_it(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Preprocessing.from_dict(values, where="somewhere")


def test_values_are_typed_and_the_checkpoint_wins() -> None:
    pre = Preprocessing.from_dict({"resize": [32, 48], "mean": 0.5, "intensity": {"window": [-175, 250], "clip": True},
                                   "axcodes": "ras", "pixdim": [1.5, 1.5, 2]})
    assert pre.resize == (32, 48) and pre.mean == (0.5,) and pre.channel_stats(3) == ((0.5,) * 3, (1.0,) * 3)
    assert pre.intensity == IntensityWindow((-175.0, 250.0), (0.0, 1.0), True) and pre.pixdim == (1.5, 1.5, 2.0)
    assert Preprocessing.from_dict(pre.to_dict()) == pre  # round trip through JSON values
    config = resolve("swin_unetr", {"preprocessing": {"roi_size": [64, 64, 64], "overlap": 0.25}}, source="b.pt")
    assert config.preprocessing.roi_size == (64, 64, 64) and config.preprocessing.overlap == 0.25
    assert config.preprocessing.sw_batch_size == 1 and config.checkpoint_preprocessing == {
        "roi_size": [64, 64, 64], "overlap": 0.25}
    with pytest.raises(ConfigError, match="b.pt \\(its manifest\\): unknown preprocessing key 'overlapp'"):
        resolve("swin_unetr", {"preprocessing": {"overlapp": 0.25}}, source="b.pt")


def test_a_misspelled_key_in_a_registry_entry_names_the_entry() -> None:
    spec = dataclasses.replace(get_spec("unet2d"), preprocessing={"resize": (64, 64), "size_multple": 16})
    with pytest.raises(ConfigError, match="registry entry 'unet2d': unknown preprocessing key 'size_multple'; did "
                                          "you mean 'size_multiple'"):
        resolve(spec)
    bad = dataclasses.replace(get_spec("vosht"), training={"patches_per_cases": 2})
    with pytest.raises(ConfigError, match="unknown training key 'patches_per_cases'; did you mean 'patches_per_case'"):
        resolve(bad)
    with pytest.raises(ValueError, match="cannot be imported"):
        load_adapter("napari_medvit.models.adapters:NoSuchAdapter")


def test_a_checkpoint_with_a_bad_manifest_key_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(create_model("unet2d", channels=(4, 8), strides=(2,), num_res_units=0), path,
                    Manifest(arch="unet2d", config={"channels": [4, 8], "strides": [2], "num_res_units": 0},
                             preprocessing={"mean": [0.5, 0.5, 0.5], "tresh": 0.3}))
    with pytest.raises(CheckpointError, match="tiny.safetensors \\(its manifest\\): unknown preprocessing key 'tresh'"):
        create_model("unet2d", checkpoint=path)
    with pytest.raises(ConfigError, match="'tresh'"):
        resolve_checkpoint("unet2d", str(path))  # read from the header only, as the widgets do


def test_class_names_follow_the_head() -> None:
    assert config_of(create_model("smca_detr_tiny")).class_names == ("polyp", "other")
    three = config_of(create_model("smca_detr_tiny", num_classes=3))
    assert three.class_names == ("class 0", "class 1", "class 2")  # the registry's two do not name three outputs
    assert config_of(create_model("transfuse_tiny")).class_names == ("background", "lesion")  # one logit: binary
    assert resolve("resnet50", n_outputs=1000).class_names[0].startswith("tench")  # ImageNet's names
    assert resolve("daft", {"class_names": ["a", "b"]}).class_names == ("a", "b")
    assert resolve("daft", {"class_names": ["a", "b"]}, new_head=("fc",)).class_names == ()  # the data's decide


def test_config_of_refuses_a_model_not_made_by_create_model() -> None:
    import torch

    with pytest.raises(ValueError, match="Linear was not made by napari_medvit.models.create_model"):
        config_of(torch.nn.Linear(2, 2))
    assert isinstance(get_spec("daft"), ModelSpec)
