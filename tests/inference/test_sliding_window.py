from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from napari_medvit.inference import Cancelled, Predictor
from napari_medvit.inference.segment3d import _count_windows
from napari_medvit.models import create_model, get_spec
from napari_medvit.transforms import scale_to_unit


@pytest.fixture(scope="module")
def unetr_tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("unetr_tiny_test")


def test_volume_segmentation_equals_monai_sliding_window(unetr_tiny) -> None:
    vol = np.random.default_rng(0).normal(0, 1, (40, 50, 36)).astype(np.float32)
    events = []
    pred = Predictor(unetr_tiny, device="cpu").predict(vol, progress=events.append)
    assert pred.labels.shape == vol.shape and pred.labels.dtype == np.uint8
    assert pred.probabilities.shape == vol.shape
    assert pred.class_names == ("background", "class 1", "class 2")

    x = torch.from_numpy(scale_to_unit(vol))[None, None]
    with torch.no_grad():
        logits = sliding_window_inference(x, (32, 32, 32), 1, unetr_tiny, overlap=0.5, mode="gaussian")[0]
    probs = torch.softmax(logits, 0)
    np.testing.assert_array_equal(pred.labels, probs.argmax(0).numpy())
    np.testing.assert_allclose(pred.probabilities, probs.max(0).values.numpy(), atol=1e-5)

    windows = [e for e in events if e.message.endswith(": window")]
    assert "12 windows in 1 slab(s), output buffer about" in events[1].message
    assert len(windows) == pred.provenance["windows"] == _count_windows(vol.shape, (32, 32, 32), 0.5)
    assert [e.done for e in windows] == list(range(1, len(windows) + 1))
    assert windows[-1].eta_s == 0.0


def test_tall_volumes_run_in_slabs_that_bound_the_output_buffer(unetr_tiny) -> None:
    from napari_medvit.inference.segment3d import _slabs

    assert _slabs(100, 32, 1) == [(0, 48, 0, 32), (16, 80, 32, 64), (48, 100, 64, 96), (80, 100, 96, 100)]
    assert _slabs(100, 32, 4) == [(0, 100, 0, 100)]
    vol = np.random.default_rng(4).normal(0, 1, (100, 36, 36)).astype(np.float32)
    one = Predictor(unetr_tiny, device="cpu")
    one.pre = replace(one.pre, slab_windows=8)  # the whole volume in one pass
    whole = one.predict(vol)
    predictor = Predictor(unetr_tiny, device="cpu")
    predictor.pre = replace(predictor.pre, slab_windows=1)
    slabbed = predictor.predict(vol)
    assert slabbed.provenance["slabs"] == 4 and whole.provenance["slabs"] == 1
    assert slabbed.provenance["output_buffer_mb"] < 0.7 * whole.provenance["output_buffer_mb"]  # 64 vs 100 slices
    # every kept slice had half a window of context: the labels agree with the whole-volume pass
    assert (slabbed.labels == whole.labels).mean() > 0.98
    np.testing.assert_allclose(slabbed.probabilities.mean(), whole.probabilities.mean(), atol=5e-3)


def test_small_volumes_are_padded_to_the_window(unetr_tiny) -> None:
    pred = Predictor(unetr_tiny, device="cpu").predict(np.zeros((8, 20, 12), np.float32))
    assert pred.labels.shape == (8, 20, 12)


def test_cancel_stops_the_window_thread(unetr_tiny) -> None:
    vol = np.zeros((96, 96, 64), np.float32)
    seen = {"n": 0}

    def stop() -> bool:
        seen["n"] += 1
        return seen["n"] > 4

    with pytest.raises(Cancelled):
        Predictor(unetr_tiny, device="cpu").predict(vol, should_stop=stop)
    assert not any(t.name == "medvit-sliding-window" for t in threading.enumerate())


def test_swin_unetr_runs_and_rejects_2d_input() -> None:
    model = create_model("swin_unetr_tiny_test")
    pred = Predictor(model, device="cpu").predict(np.random.default_rng(1).normal(size=(64, 70, 64)).astype(np.float32))
    assert pred.labels.shape == (64, 70, 64) and pred.labels.max() <= 2
    with pytest.raises(ValueError, match="segments 3D single-channel volumes"):
        Predictor(model, device="cpu").predict(np.zeros((64, 64), np.float32))


@pytest.mark.parametrize(("name", "expected"), [("swin_unetr", 62_187_296), ("unetr", 92_802_478)])
def test_reference_parameter_counts(name: str, expected: int) -> None:
    assert sum(p.numel() for p in create_model(name).parameters()) == expected


@pytest.mark.parametrize(("name", "expected"), [("swin_unetr_demo", 3_911_636), ("vosht_demo", 3_911_636),
                                              ("unetr_demo", 2_839_410), ("unet_demo", 1_203_225)])
def test_wmh_demo_configurations(name: str, expected: int) -> None:
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.config["in_channels"] == 2 and model.config["out_channels"] == 2
    spec = get_spec(name)
    assert "demo" in spec.tags and "(demo config)" in spec.display_name and spec.preprocessing["roi_size"] == (64,) * 3
    if "swin" in type(model).__name__.lower():  # 4^3 windows divide each Swin stage of a 64^3 input
        assert model.config["window_size"] == 4 and model.swinViT.window_size == (4, 4, 4)
    # the official BTCV scripts' 4 patches per volume for the transformers; only the VoSHT approximation asks
    # fine-tuning for its weighted loss
    expected_training = {} if name == "unet_demo" else {"patches_per_case": 4}
    if name == "vosht_demo":
        expected_training["class_weights"] = "inverse_sqrt_frequency"
    assert spec.training == expected_training
    assert get_spec("vosht").training == get_spec("vosht_demo").training
    assert get_spec("swin_unetr").training == get_spec("unetr").training == {"patches_per_case": 4}


def test_swin_unetr_feature_size_24_and_bundles_that_still_pass_img_size() -> None:
    model = create_model("swin_unetr", feature_size=24, img_size=96)  # MONAI < 1.5 bundles pass img_size
    assert sum(p.numel() for p in model.parameters()) == 15_703_304
    assert model.dropped_config == {"img_size": 96} and "img_size" not in model.config


def test_two_channel_models_take_stacked_modalities_scaled_per_channel() -> None:
    torch.manual_seed(0)
    model = create_model("unet", channels=(4, 8), strides=(2,), num_res_units=1)
    flair = np.random.default_rng(2).normal(300, 50, (20, 24, 22)).astype(np.float32)
    t1 = np.random.default_rng(3).normal(0.5, 0.1, (20, 24, 22)).astype(np.float32)
    pred = Predictor(model, device="cpu").predict(np.stack([flair, t1]))
    assert pred.labels.shape == (20, 24, 22)
    assert pred.class_names == ("background", "white-matter hyperintensity")
    x = torch.from_numpy(np.stack([scale_to_unit(flair), scale_to_unit(t1)]))[None]
    with torch.no_grad():
        logits = sliding_window_inference(x, (96, 96, 96), 1, model, overlap=0.5, mode="gaussian")[0]
    np.testing.assert_array_equal(pred.labels, logits.argmax(0).numpy())
    with pytest.raises(ValueError, match=r"takes 2 co-registered volumes stacked as \(channel, z, y, x\)"):
        Predictor(model, device="cpu").predict(flair)


def test_vosht_is_labelled_an_approximation() -> None:
    from napari_medvit.models import get_spec

    spec = get_spec("vosht")
    assert "approximation" in spec.display_name.lower() and spec.description.startswith("APPROXIMATION")
    assert spec.in_chans == 2
