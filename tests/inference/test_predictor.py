from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medvit.inference import Cancelled, Predictor, resolve_device
from napari_medvit.io.meta import ImageMeta
from napari_medvit.models import create_model
from napari_medvit.models._registry import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("transfuse_tiny")


def test_rgb_frame_gives_mask_and_attention_on_the_image_grid(tiny) -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    events = []
    pred = Predictor(tiny, device="cpu").predict(frame, ImageMeta.identity(2, rgb=True), progress=events.append)
    assert pred.labels.shape == (90, 120) and pred.labels.dtype == np.uint8
    assert pred.probabilities.shape == (90, 120)
    assert set(np.unique(pred.labels)) <= {0, 1}
    np.testing.assert_array_equal(pred.labels, (pred.probabilities > 0.5).astype(np.uint8))
    assert sorted(pred.attention) == [
        "BiFusion attention 1/16", "BiFusion attention 1/4", "BiFusion attention 1/8",
        "attention gate 1/4", "attention gate 1/8"]
    for m in pred.attention.values():
        assert m.shape == (90, 120) and m.min() >= 0 and m.max() <= 1
    assert events[0].message == "preparing image" and events[-1].done == events[-1].total
    assert pred.provenance["trained"] is False and pred.provenance["device"] == "cpu"


def test_probabilities_match_the_model_on_a_model_sized_input(tiny) -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)  # the tiny config's input size: no resampling
    pred = Predictor(tiny, device="cpu").predict(frame)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.sigmoid(tiny(x))[0, 0].numpy()
    np.testing.assert_allclose(pred.probabilities, expected, atol=1e-5)


def test_grey_volume_runs_slice_by_slice_with_progress(tiny) -> None:
    vol = np.random.default_rng(2).integers(0, 255, (5, 40, 50), dtype=np.uint8)
    events = []
    predictor = Predictor(tiny, device="cpu", batch_size=2)
    pred = predictor.predict(vol, progress=events.append)
    assert pred.labels.shape == (5, 40, 50)
    assert pred.attention["BiFusion attention 1/4"].shape == (5, 40, 50)
    running = [e for e in events if e.message.startswith("running")]
    assert [e.done for e in running] == [0, 1, 2] and running[0].total == 3
    # slice 3 alone gives the same result as inside the volume (8-bit: scaling is per type, not per slice)
    single = predictor.predict(vol[3])
    np.testing.assert_allclose(single.probabilities, pred.probabilities[3], atol=1e-5)


def test_volume_intensity_scaling_is_shared_by_all_slices() -> None:
    from napari_medvit.transforms import scale_to_unit

    vol = np.random.default_rng(5).normal(100, 30, (4, 20, 20)).astype(np.float32)
    vol[0] += 500  # a bright slice must not change how the other slices are scaled
    unit = scale_to_unit(vol)
    assert unit.dtype == np.float32 and unit.min() == 0.0 and unit.max() == 1.0
    assert unit[0].mean() > 0.9 and unit[1:].mean() < 0.3


def test_native_resolution_mode_pads_to_32_and_crops_back(tiny) -> None:
    frame = np.random.default_rng(3).integers(0, 255, (70, 100, 3), dtype=np.uint8)
    pred = Predictor(tiny, device="cpu", resize=None).predict(frame)
    assert pred.labels.shape == (70, 100)
    assert pred.provenance["input_size"] == "native"


def test_cancel_stops_between_steps(tiny) -> None:
    vol = np.zeros((6, 32, 32), dtype=np.float32)
    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        Predictor(tiny, device="cpu", batch_size=1).predict(vol, should_stop=stop_after_three)


def test_reduced_precision_stays_close_to_fp32(tiny) -> None:
    frame = np.random.default_rng(4).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    ref = Predictor(tiny, device="cpu").predict(frame).probabilities
    low = Predictor(tiny, device="cpu", precision="bf16").predict(frame).probabilities
    assert np.abs(ref - low).max() < 0.1


def test_bad_device_precision_and_input_are_named() -> None:
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    model = create_model("transfuse_tiny")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Predictor(model, precision="fp8")
    with pytest.raises(ValueError, match="at least 2 spatial axes"):
        Predictor(model, device="cpu").predict(np.zeros(10))
    with pytest.raises(ValueError, match="create_model"):
        Predictor(torch.nn.Linear(2, 2))


def test_classifier_gives_probabilities_and_attention_on_the_image_grid() -> None:
    from napari_medvit.explain import explainer_for

    torch.manual_seed(0)
    model = create_model("crossvit_tiny_test", num_classes=3)
    frame = np.random.default_rng(6).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    predictor = Predictor(model, device="cpu", explainer=explainer_for(model.medvit_spec))
    pred = predictor.predict(frame)
    assert pred.task == "classify"
    assert pred.probabilities.shape == (3,) and abs(float(pred.probabilities.sum()) - 1) < 1e-5
    assert pred.labels.shape == () and int(pred.labels) == int(pred.probabilities.argmax())
    assert pred.class_names == ("class 0", "class 1", "class 2")
    assert len(pred.attention) == 8
    for name, m in pred.attention.items():
        assert m.shape == (96, 128)
        assert pred.attention_heads[name].shape == (2, 96, 128)
        np.testing.assert_allclose(pred.attention_heads[name].mean(axis=0), m, atol=1e-6)
    # the probabilities are the model's softmax on the 240x240 resized, normalised image
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = torch.nn.functional.interpolate(x, size=(240, 240), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        expected = torch.softmax(model(x), -1)[0].numpy()
    np.testing.assert_allclose(pred.probabilities, expected, atol=1e-5)


def test_classifier_on_a_volume_gives_one_vector_per_slice_and_imagenet_names() -> None:
    model = create_model("crossvit_tiny_test")  # 1000 classes: ImageNet's names (shipped with timm)
    vol = np.random.default_rng(7).integers(0, 255, (3, 50, 60), dtype=np.uint8)
    pred = Predictor(model, device="cpu", batch_size=2).predict(vol)
    assert pred.probabilities.shape == (3, 1000) and pred.labels.shape == (3,)
    assert len(pred.class_names) == 1000 and pred.class_names[0] != "class 0"
    assert pred.attention == {}  # no explainer given: no maps


def test_detector_gives_boxes_in_pixels_and_gaussian_priors() -> None:
    torch.manual_seed(0)
    model = create_model("smca_detr_tiny")
    frame = np.random.default_rng(8).integers(0, 255, (96, 120, 3), dtype=np.uint8)
    pred = Predictor(model, device="cpu").predict(frame, ImageMeta.identity(2, rgb=True))
    assert pred.task == "detect" and pred.boxes.shape == (10, 4)
    assert pred.labels.shape == (10,) and set(pred.labels.tolist()) <= {0, 1}
    assert pred.class_names == ("polyp", "other")
    assert np.all((pred.probabilities > 0) & (pred.probabilities < 1))
    # boxes are the normalised (cx, cy, w, h) of the model scaled to the 96x120 frame
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = torch.nn.functional.interpolate(x, size=(128, 160), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        cx, cy, w, h = model(x)["pred_boxes"][0].unbind(-1)
    np.testing.assert_allclose(pred.boxes[:, 0], ((cy - h / 2) * 96).numpy(), atol=1e-3)
    np.testing.assert_allclose(pred.boxes[:, 3], ((cx + w / 2) * 120).numpy(), atol=1e-3)
    assert [o.kind for o in pred.overlays] == ["boxes", "prior"]
    assert pred.log_gaussians.shape == (2, 4, 10, 4, 5)  # (decoder layers, heads, queries, h/32, w/32)
    boxes = pred.overlay("boxes")
    np.testing.assert_array_equal(boxes.data, pred.boxes)
    assert boxes.attrs["score_threshold"] == 0.3  # the registry's, which the dock's slider starts at
    with pytest.raises(ValueError, match="single 2D images"):
        Predictor(model, device="cpu").predict(np.zeros((3, 64, 64), np.float32))


def test_daft_uses_image_and_tabular_and_reruns_only_the_cheap_part() -> None:
    torch.manual_seed(0)
    model = create_model("daft")
    vol = np.random.default_rng(9).normal(100, 20, (40, 48, 44)).astype(np.float32)
    predictor = Predictor(model, device="cpu")
    values = {"age": 70.0, "APOE4": 1.0, "ABETA": None}
    pred = predictor.predict(vol, tabular=values)
    assert pred.class_names == ("CN", "MCI", "Dementia") and pred.probabilities.shape == (3,)
    alpha, beta = pred.affine
    assert alpha.shape == (32,) and beta.shape == (32,)
    assert [o.kind for o in pred.overlays] == ["class_probabilities", "affine"]
    assert list(pred.extras["tabular_names"][-5:]) == ["ABETA_MISSING", "TAU_MISSING", "PTAU_MISSING", "FDG_MISSING",
                                                       "AV45_MISSING"]
    assert pred.extras["tabular"][9] == 1.0  # ABETA missing flag
    # the same as the full model on the resized, scaled volume
    from napari_medvit.transforms import scale_to_unit, tabular_vector

    x = torch.nn.functional.interpolate(torch.from_numpy(scale_to_unit(vol))[None, None], size=(64, 64, 64),
                                        mode="trilinear", align_corners=False)
    tab = torch.from_numpy(tabular_vector(predictor.tabular_features, values))[None]
    with torch.no_grad():
        expected = torch.softmax(model(x, tab), -1)[0].numpy()
    np.testing.assert_allclose(pred.probabilities, expected, atol=1e-6)
    # "what if age were 80?": only the DAFT block and the head run again
    older = predictor.retabulate({**values, "age": 80.0})
    tab80 = torch.from_numpy(tabular_vector(predictor.tabular_features, {**values, "age": 80.0}))[None]
    with torch.no_grad():
        np.testing.assert_allclose(older.probabilities, torch.softmax(model(x, tab80), -1)[0].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="unknown tabular feature"):
        predictor.retabulate({"weight": 3.0})
    with pytest.raises(ValueError, match="'age' is required"):
        predictor.retabulate({"age": None})


def test_image_only_3d_classifier_gives_one_probability_vector_for_the_volume() -> None:
    from napari_medvit.transforms import scale_to_unit

    torch.manual_seed(0)
    model = create_model("resnet3d")
    vol = np.random.default_rng(10).normal(100, 20, (20, 24, 18)).astype(np.float32)
    events = []
    pred = Predictor(model, device="cpu").predict(vol, ImageMeta.identity(3), progress=events.append)
    assert pred.task == "classify" and pred.class_names == ("CN", "MCI", "Dementia")
    assert pred.probabilities.shape == (3,) and abs(float(pred.probabilities.sum()) - 1) < 1e-5
    assert pred.labels.shape == () and int(pred.labels) == int(pred.probabilities.argmax())
    assert [e.message for e in events] == ["preparing volume", f"running {model.medvit_spec.display_name}",
                                           "post-processing"] and events[-1].done == events[-1].total
    assert pred.provenance["model"] == "resnet3d" and pred.provenance["input_size"] == [64, 64, 64]
    # the model's softmax on the volume prepared as DAFT's image input: scaled to 0..1, resampled to 64^3
    x = torch.nn.functional.interpolate(torch.from_numpy(scale_to_unit(vol))[None, None], size=(64, 64, 64),
                                        mode="trilinear", align_corners=False)
    with torch.no_grad():
        np.testing.assert_allclose(pred.probabilities, torch.softmax(model(x), -1)[0].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="3D single-channel volume"):
        Predictor(model, device="cpu").predict(np.zeros((24, 24), np.float32))


def test_classifier_class_names_come_from_the_checkpoint_manifest(tmp_path) -> None:
    from napari_medvit.models.checkpoint import Manifest, save_checkpoint

    model = create_model("crossvit_tiny_test", num_classes=2)
    path = save_checkpoint(model, tmp_path / "polyp.safetensors", Manifest(
        arch="crossvit_tiny_test", config=model.config, class_names=["no polyp", "polyp"]))
    loaded = create_model("crossvit_tiny_test", checkpoint=path)
    pred = Predictor(loaded, device="cpu").predict(np.zeros((60, 80, 3), np.uint8))
    assert pred.class_names == ("no polyp", "polyp") and pred.provenance["trained"] is True
