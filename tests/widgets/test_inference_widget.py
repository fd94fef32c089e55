from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from napari.layers import Image, Labels

from napari_medvit._layers import PREDICTION_KEY
from napari_medvit.io.meta import META_KEY
from napari_medvit.widgets import InferenceWidget, run_transfuse

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def wait_done(qtbot, widget: InferenceWidget, timeout: int = 120_000) -> None:
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def outputs(viewer):
    return [layer for layer in viewer.layers if PREDICTION_KEY in layer.metadata]


def first_mask(viewer):
    """The first Labels layer a run made (the masks are moved above the attention maps)."""
    from napari.layers import Labels

    return next(layer for layer in outputs(viewer) if isinstance(layer, Labels))


def test_run_transfuse_command_on_the_sample_frame(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medvit", "endoscopy_polyp")
    image = next(layer for layer in viewer.layers if isinstance(layer, Image))
    viewer.layers.selection.active = image

    widget = run_transfuse(viewer)
    assert widget.running, "the run must go to a background worker, not block the event loop"
    wait_done(qtbot, widget)
    # no TransFuse weights of the user's here: the shipped demo weights, never an untrained network
    assert widget.model.value == "transfuse_demo" and widget.weights.value.endswith("transfuse_demo.safetensors")
    assert widget.status.value.startswith("done"), widget.status.value
    assert "TransFuse (demo config), weights transfuse_demo.safetensors" in widget.status.value
    assert "demo weights" in widget.status.value

    mask = viewer.layers["TransFuse mask (demo)"]
    assert isinstance(mask, Labels)
    assert viewer.layers.selection.active is mask  # ready for the brush
    assert mask.data.shape == image.data.shape[:2]
    assert set(np.unique(mask.data)) <= {0, 1}
    truth = viewer.layers["polyp ground truth"].data > 0
    dice = 2 * np.sum((mask.data > 0) & truth) / (np.sum(mask.data > 0) + np.sum(truth))
    assert dice >= 0.9, dice
    attention = [layer for layer in outputs(viewer) if isinstance(layer, Image)]
    assert sorted(layer.name for layer in attention) == [
        "TransFuse BiFusion attention 1/16",
        "TransFuse BiFusion attention 1/4",
        "TransFuse BiFusion attention 1/8",
        "TransFuse attention gate 1/4",  # the decoder's attention gates, hidden by default
        "TransFuse attention gate 1/8",
    ]
    assert [layer.name for layer in attention if layer.visible] == ["TransFuse BiFusion attention 1/4"]
    for layer in [mask, *attention]:
        assert layer.data.shape[:2] == image.data.shape[:2]
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
        assert layer.metadata[META_KEY] == image.metadata[META_KEY]
        assert layer.metadata[PREDICTION_KEY]["model"] == "transfuse_demo"
    for layer in attention:
        assert layer.blending == "translucent" and layer.colormap.colors[0][3] == 0.0 and layer.colorbar.visible
        assert 0.0 <= float(layer.data.min()) and float(layer.data.max()) <= 1.0


def test_outputs_follow_a_scaled_translated_volume(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    vol = np.random.default_rng(0).normal(0, 1, (3, 48, 40)).astype(np.float32)
    image = viewer.add_image(vol, scale=(2.0, 0.5, 0.75), translate=(5.0, -3.0, 8.0), name="ct")
    widget = InferenceWidget(viewer)
    widget.run(layer=image, model="transfuse_tiny")
    wait_done(qtbot, widget)
    mask = first_mask(viewer)
    assert mask.data.shape == vol.shape
    np.testing.assert_allclose(mask.scale, image.scale)
    np.testing.assert_allclose(mask.translate, image.translate)
    np.testing.assert_allclose(mask.affine.affine_matrix, image.affine.affine_matrix)


def test_model_is_kept_between_runs_and_edited_masks_are_never_overwritten(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8), rgb=True)
    widget = InferenceWidget(viewer, model="transfuse_tiny")
    widget.run(layer=image)
    wait_done(qtbot, widget)
    predictor = widget.predictor
    n_layers = len(viewer.layers)

    widget.run(layer=image)  # unedited outputs are refreshed in place, the model is reused
    wait_done(qtbot, widget)
    assert widget.predictor is predictor
    assert len(viewer.layers) == n_layers

    mask = first_mask(viewer)
    edited = mask.data.copy()
    edited[:10, :10] = 1 - edited[:10, :10]
    mask.data = edited  # a correction with the brush
    widget.run(layer=image)
    wait_done(qtbot, widget)
    assert np.array_equal(viewer.layers[mask.name].data, edited), "a corrected mask must survive a re-run"
    assert len(viewer.layers) == n_layers + 1  # the new prediction went to a new layer beside it

    widget.precision.value = "bf16"  # a different setting builds a new predictor
    widget.run(layer=image)
    wait_done(qtbot, widget)
    assert widget.predictor is not predictor and widget.predictor.precision == "bf16"


def test_cancel_stops_the_worker_and_adds_nothing(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((400, 64, 64), dtype=np.float32))
    widget = InferenceWidget(viewer, model="transfuse_tiny")
    assert widget.run(layer=image) is None  # a 2D frame model over 400 slices: said first
    widget.run(layer=image)  # Run anyway
    qtbot.waitUntil(lambda: widget.status.value.startswith("running"), timeout=60_000)
    widget.cancel()
    wait_done(qtbot, widget)
    assert widget.status.value == "cancelled"
    assert outputs(viewer) == []
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_a_bad_checkpoint_is_reported_and_napari_stays_up(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((64, 64), dtype=np.float32))
    bad = tmp_path / "wrong.pth"
    torch.save({"final_2.1.conv.weight": torch.zeros(1)}, bad)
    widget = InferenceWidget(viewer, model="transfuse_tiny")
    widget.use_checkpoint(bad)
    assert not widget.checkpoint.native.isHidden() and "wrong.pth" in widget.weights_info.value
    widget.run(layer=image)
    wait_done(qtbot, widget)
    assert widget.status.value.startswith("failed") and "missing keys" in widget.status.value
    assert outputs(viewer) == []
    assert widget.run_button.enabled


def test_bundled_checkpoints_are_offered_per_model_and_used(make_napari_viewer, qtbot, tmp_path: Path,
                                                            monkeypatch) -> None:
    from napari_medvit.models import checkpoint as ckpt
    from napari_medvit.models import create_model
    from napari_medvit.models import manifest as manifest_module

    torch.manual_seed(3)
    trained = create_model("transfuse_tiny")
    ckpt.save_checkpoint(trained, tmp_path / "tiny_demo.safetensors",
                         ckpt.Manifest(arch="transfuse_tiny", config=trained.config, description="tiny demo"))
    ckpt.save_checkpoint(trained, tmp_path / "other.safetensors", ckpt.Manifest(arch="transfuse_l"))
    (tmp_path / "broken.safetensors").write_bytes(b"junk")
    monkeypatch.setattr(manifest_module, "bundled_dir", lambda: tmp_path)

    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8), rgb=True)
    widget = InferenceWidget(viewer, model="transfuse_tiny")
    labels = [c for c in widget.weights.choices]
    assert labels[0] == str(tmp_path / "tiny_demo.safetensors")  # bundled weights come first and are the default
    assert len(labels) == 3 and widget.checkpoint.native.isHidden()
    widget.run(layer=image)
    wait_done(qtbot, widget)
    mask = first_mask(viewer)
    assert mask.name == "TransFuse mask"  # trained weights: no [untrained] suffix
    assert mask.metadata[PREDICTION_KEY]["checkpoint"].endswith("tiny_demo.safetensors")
    widget.model.value = "transfuse_s"
    assert [c for c in widget.weights.choices][0] == ""  # nothing shipped for TransFuse-S: untrained first
    widget.model.value = "transfuse_tiny"  # back to a model with shipped weights: they are chosen again
    assert widget.weights.value == str(tmp_path / "tiny_demo.safetensors")


def test_torch_runtime_errors_end_the_run_with_a_message(make_napari_viewer, qtbot, monkeypatch) -> None:
    """superqt's worker swallows RuntimeError silently; the widget must still end the run and say why."""
    from napari_medvit.inference import predictor as predictor_module

    def broken(self, image, meta=None, *, tabular=None):
        yield predictor_module.Progress(0, 1, "preparing image", 0.0)
        raise RuntimeError("Given input size: (256x1x5). Output size is too small")

    monkeypatch.setattr(predictor_module.Predictor, "predict_iter", broken)
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((64, 64), np.float32))
    widget = InferenceWidget(viewer, model="transfuse_tiny")
    widget.run(layer=image)
    wait_done(qtbot, widget, timeout=60_000)
    assert widget.status.value == "failed: Given input size: (256x1x5). Output size is too small"
    assert widget.run_button.enabled


def test_no_image_gives_a_message_not_a_crash(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    widget = InferenceWidget(viewer)
    assert widget.run() is None and not widget.running


def test_plugins_menu_run_transfuse_starts_by_itself(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(4).integers(0, 255, (96, 128, 3), dtype=np.uint8), rgb=True, name="frame")
    _, widget = viewer.window.add_plugin_dock_widget("napari-medvit", "Run TransFuse")
    assert widget.model.value == "transfuse_demo"  # the best TransFuse with weights here
    qtbot.waitUntil(lambda: len(outputs(viewer)) == 6, timeout=120_000)  # mask, 3 BiFusion and 2 gate maps
    wait_done(qtbot, widget)
    assert first_mask(viewer).data.shape == (96, 128)


def test_crossvit_shows_probabilities_and_cls_attention_per_head(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    frame = np.random.default_rng(5).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    image = viewer.add_image(frame, rgb=True, scale=(0.5, 0.5), translate=(3.0, 4.0), name="frame")
    widget = InferenceWidget(viewer, model="crossvit_tiny_test")
    widget.run(layer=image)
    wait_done(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value

    layers = outputs(viewer)
    assert len(layers) == 8 and all(isinstance(layer, Image) for layer in layers)
    assert [layer.name for layer in layers if layer.visible] == ["CrossViT cross-attention block 3 S-CLS→L [untrained]"]
    for layer in layers:
        assert layer.data.shape == (96, 128)
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
        assert layer.metadata[PREDICTION_KEY]["top_class"]

    chart = widget.chart.items
    assert len(chart) == 5 and chart[0][1] >= chart[-1][1]
    top = widget.last_prediction.probabilities.max()
    assert abs(chart[0][1] - float(top)) < 1e-6

    assert widget.head.choices == ("mean", "1", "2")
    name = "cross-attention block 3 S-CLS→L"
    layer = viewer.layers[f"CrossViT {name} [untrained]"]
    widget.head.value = "2"
    np.testing.assert_allclose(layer.data, widget.last_prediction.attention_heads[name][1])
    widget.head.value = "mean"
    np.testing.assert_allclose(layer.data, widget.last_prediction.attention[name])


def test_3d_model_segments_a_volume_on_its_grid_with_class_names(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    vol = np.random.default_rng(6).normal(0, 1, (36, 40, 34)).astype(np.float32)
    image = viewer.add_image(vol, scale=(2.0, 0.8, 0.8), translate=(-10.0, 5.0, 0.0), name="volume")
    widget = InferenceWidget(viewer, model="unetr_tiny_test")
    widget.run(layer=image)
    wait_done(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value
    (mask,) = outputs(viewer)
    assert isinstance(mask, Labels) and mask.name == "UNETR mask [untrained]"
    assert mask.data.shape == vol.shape
    np.testing.assert_allclose(mask.scale, image.scale)
    np.testing.assert_allclose(mask.translate, image.translate)
    assert list(mask.features["class"]) == ["background", "class 1", "class 2"]
    assert mask.metadata[PREDICTION_KEY]["windows"] >= 8


def test_smca_detr_boxes_threshold_and_gaussian_of_the_clicked_query(make_napari_viewer, qtbot) -> None:
    from napari.layers import Shapes

    from napari_medvit._layers import gaussian_map

    viewer = make_napari_viewer()
    frame = np.random.default_rng(9).integers(0, 255, (96, 120, 3), dtype=np.uint8)
    image = viewer.add_image(frame, rgb=True, scale=(0.5, 0.5), translate=(2.0, 1.0), name="frame")
    widget = InferenceWidget(viewer, model="smca_detr_tiny")
    assert widget.threshold.value == 0.3  # the model's own score_threshold (its preprocessing)
    widget.threshold.value = 0.0  # untrained scores are low: show every query
    widget.run(layer=image)
    wait_done(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value
    pred = widget.last_prediction

    boxes = viewer.layers["SMCA-DETR boxes [untrained]"]
    prior = viewer.layers["SMCA-DETR Gaussian prior [untrained]"]
    assert isinstance(boxes, Shapes) and len(boxes.data) == 10
    np.testing.assert_allclose(boxes.scale, image.scale)
    np.testing.assert_allclose(prior.translate, image.translate)
    best = int(np.argmax(pred.probabilities))
    assert widget.query.value == best and int(boxes.features["query"].iloc[0]) == best
    y0, x0, y1, x1 = pred.boxes[best]
    np.testing.assert_allclose(boxes.data[0][0], [y0, x0], atol=1e-3)
    assert prior.data.shape == (96, 120) and 0.95 < float(prior.data.max()) <= 1.0
    np.testing.assert_allclose(prior.data, gaussian_map(pred, best))

    widget.threshold.value = float(np.sort(pred.probabilities)[-3])  # keep the 3 best
    assert len(boxes.data) == 3 and list(boxes.features["score"]) == sorted(boxes.features["score"], reverse=True)

    other = int(boxes.features["query"].iloc[2])
    boxes.selected_data = {2}  # the user clicks the third box
    boxes.events.highlight()
    assert widget.query.value == other
    np.testing.assert_allclose(prior.data, gaussian_map(pred, other))
    widget.head.value = "2"
    np.testing.assert_allclose(prior.data, gaussian_map(pred, other, head=1))

    # the user's box edits survive clicking another box and moving the threshold
    moved = [np.asarray(r) + np.array([5.0, 7.0]) if i == 0 else np.asarray(r) for i, r in enumerate(boxes.data)]
    boxes.data = moved
    boxes.selected_data = {1}
    boxes.events.highlight()
    assert widget.query.value == int(boxes.features["query"].iloc[1])
    widget.threshold.value = 0.0
    assert len(boxes.data) == 3 and np.allclose(boxes.data[0], moved[0])
    assert "boxes were edited" in widget.status.value

    # re-runs on the same image update the layers in place; edited boxes are kept beside the new run's
    names = [layer.name for layer in viewer.layers]
    widget.run(layer=image)
    wait_done(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == [*names, "SMCA-DETR boxes [untrained] [1]"]
    assert np.allclose(viewer.layers["SMCA-DETR boxes [untrained]"].data[0], moved[0])  # the correction survives
    names = [layer.name for layer in viewer.layers]
    widget.run(layer=image)  # nothing edited since: the same layers again
    wait_done(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == names


def test_daft_tabular_panel_what_if_and_csv_row(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    vol = np.random.default_rng(10).normal(100, 20, (30, 36, 32)).astype(np.float32)
    image = viewer.add_image(vol, name="T1")
    widget = InferenceWidget(viewer, model="daft")
    panel = widget.tabular
    assert panel is not None and len(panel.fields) == 9 and len(panel.missing) == 5
    panel.fields["age"].value = 70.0
    widget.run(layer=image)
    wait_done(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value
    first = widget.last_prediction
    assert [name for name, _ in widget.chart.items] and len(widget.chart.items) == 3
    assert len(widget.affine_plot.alpha) == 32

    predictor = widget.predictor
    panel.fields["age"].value = 95.0  # "what if the patient were 95?": no new worker, the model is reused
    assert not widget.running and widget.predictor is predictor
    assert widget.status.value.startswith("updated from the tabular values")
    expected = predictor.retabulate(panel.values()).probabilities
    np.testing.assert_allclose(widget.last_prediction.probabilities, expected)
    assert not np.allclose(widget.last_prediction.extras["tabular"], first.extras["tabular"])

    csv_path = tmp_path / "cases.csv"
    csv_path.write_text("id,age,APOE4,TAU\ncase-1,64,2,NA\ncase-2,81,0,300\n")
    panel.csv_file.value = csv_path
    panel.csv_row.value = 0
    panel.load_csv_row()
    assert panel.fields["age"].value == 64.0 and panel.fields["APOE4"].value == 2.0 and panel.missing["TAU"].value
    assert "loaded 3 of 9 features" in panel.message.value
    panel.csv_row.value = 7
    panel.load_csv_row()
    assert "row 7 does not exist" in panel.message.value

    widget.model.value = "transfuse_tiny"
    assert widget.tabular is None and widget.affine_plot.alpha  # the panel goes with the model


def test_two_modalities_from_two_layers(make_napari_viewer, qtbot, monkeypatch) -> None:
    from napari_medvit.models import _registry

    # a small U-Net 3D in the registry's WMH layout (FLAIR + T1 -> 2 classes) keeps the test fast
    spec = _registry.get_spec("unet")
    small = type(spec)(**{**spec.__dict__, "name": "unet3d_small",
                          "factory_args": {**spec.factory_args, "channels": (4, 8), "strides": (2,)},
                          "preprocessing": {**spec.preprocessing, "roi_size": (32, 32, 32)}})
    monkeypatch.setitem(_registry._MODELS, "unet3d_small", small)

    viewer = make_napari_viewer()
    rng = np.random.default_rng(11)
    flair = viewer.add_image(rng.normal(300, 40, (20, 30, 26)).astype(np.float32), name="FLAIR", scale=(3, 1, 1))
    t1 = viewer.add_image(rng.normal(1, 0.2, (20, 30, 26)).astype(np.float32), name="T1", scale=(3, 1, 1))
    other = viewer.add_image(np.zeros((5, 5, 5), np.float32), name="other")
    widget = InferenceWidget(viewer, model="unet3d_small")
    assert len(widget.channels) == 1 and widget.image.label == "channel 1"

    widget.channels[0].value = other
    assert widget.run(layer=flair) is None and "must be co-registered" in widget.status.value

    widget.channels[0].value = t1
    widget.run(layer=flair)
    wait_done(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value
    (mask,) = outputs(viewer)
    assert mask.data.shape == (20, 30, 26)
    assert list(mask.features["class"]) == ["background", "white-matter hyperintensity"]
    np.testing.assert_allclose(mask.scale, flair.scale)

    widget.model.value = "transfuse_tiny"
    assert widget.channels == [] and widget.image.label == "image"


# Families whose tiny or small configurations run through the widget in the tests above and below.
WIDGET_TESTED_FAMILIES = {"transfuse", "crossvit", "smca_detr", "monai3d", "daft", "timm", "monai2d", "truenet"}


def test_every_registered_family_has_a_widget_overlay_test() -> None:
    from napari_medvit.models import get_spec, list_models

    assert {get_spec(n).family for n in list_models()} <= WIDGET_TESTED_FAMILIES


@pytest.mark.parametrize("name", ["resnet34", "unet2d", "truenet"])
def test_baselines_run_in_the_widget(make_napari_viewer, qtbot, name: str) -> None:
    viewer = make_napari_viewer()
    rng = np.random.default_rng(12)
    if name == "truenet":
        flair = viewer.add_image(rng.normal(size=(10, 24, 20)).astype(np.float32), name="FLAIR", scale=(3, 1, 1))
        t1 = viewer.add_image(rng.normal(size=(10, 24, 20)).astype(np.float32), name="T1", scale=(3, 1, 1))
        image = flair
    else:
        image = viewer.add_image(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8), rgb=True, name="frame",
                                 translate=(5, 5))
    widget = InferenceWidget(viewer, model=name)
    if name == "truenet":
        widget.channels[0].value = t1
    widget.run(layer=image)
    wait_done(qtbot, widget, timeout=240_000)
    assert widget.status.value.startswith("done"), widget.status.value
    if name == "resnet34":
        assert len(widget.chart.items) == 5 and outputs(viewer) == []  # a plain classifier: the chart only
    else:
        (mask,) = outputs(viewer)
        assert isinstance(mask, Labels) and mask.data.shape == image.data.shape[: mask.ndim]
        np.testing.assert_allclose(mask.translate, image.translate)
        np.testing.assert_allclose(mask.scale, image.scale)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_daft_panel_follows_the_checkpoint_feature_list(make_napari_viewer, qtbot, tmp_path: Path, suffix: str) -> None:
    from napari_medvit.models import checkpoint as ckpt
    from napari_medvit.models import create_model

    features = [{"name": "age", "unit": "years", "default": 70.0, "mean": 70.0, "std": 8.0},
                {"name": "MMSE", "unit": "points", "default": 27.0, "missing": "MMSE_MISSING"}]
    model = create_model("daft", n_tabular=3, n_outputs=2)
    path = ckpt.save_checkpoint(model, tmp_path / f"daft{suffix}", ckpt.Manifest(
        arch="daft", config=model.config, class_names=["stable", "converter"], preprocessing={"tabular": features}))

    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(13).normal(size=(24, 28, 26)).astype(np.float32))
    widget = InferenceWidget(viewer, model="daft")
    widget.tabular.fields["age"].value = 81.0
    widget.use_checkpoint(path)
    if suffix == ".safetensors":  # read from the file's header at once
        assert list(widget.tabular.fields) == ["age", "MMSE"] and widget.tabular.fields["age"].value == 81.0
    widget.run(layer=image)
    wait_done(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value
    assert list(widget.tabular.fields) == ["age", "MMSE"]
    assert [name for name, _ in widget.chart.items] and {n for n, _ in widget.chart.items} == {"stable", "converter"}
    np.testing.assert_allclose(widget.last_prediction.extras["tabular"], [(81.0 - 70.0) / 8.0, 27.0, 0.0])


def test_a_runs_mask_is_drawn_above_its_attention_maps(make_napari_viewer, qtbot) -> None:
    from napari.layers import Image as ImageLayer
    from napari.layers import Labels

    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(4).integers(0, 255, (64, 80, 3), dtype=np.uint8), rgb=True)
    widget = InferenceWidget(viewer, model="transfuse_tiny")
    widget.run(layer=image)
    wait_done(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    mask = first_mask(viewer)
    maps = [layer for layer in outputs(viewer) if isinstance(layer, ImageLayer)]
    assert maps and all(names.index(mask.name) > names.index(m.name) for m in maps)  # later = drawn on top
    assert isinstance(mask, Labels) and tuple(mask.colormap.map(np.array([1]))[0][:3]) != (0.0, 0.0, 0.0)


def test_a_model_that_does_not_fit_the_image_is_said_before_it_is_built(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    frame = viewer.add_image(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8), rgb=True,
                             name="frame")
    widget = InferenceWidget(viewer, model="unetr_tiny_test")
    assert widget.run(layer=frame) is None and widget.predictor is None and not widget.running  # nothing built
    assert widget.status.value == ("UNETR (tiny test config) segments a 3D volume (CT or MRI); the image is a "
                                   "colour 64x80 photo")
    volume = viewer.add_image(np.random.default_rng(1).normal(size=(12, 32, 32)).astype(np.float32), name="vol")
    widget.model.value = "transfuse_tiny"
    assert widget.run(layer=volume) is None and widget.run_button.text == "Run anyway"  # a caution: the user decides
    assert "each of its 12 slices in turn" in widget.status.value
    widget.run(layer=volume)  # insisted: it runs
    wait_done(qtbot, widget)
    assert widget.status.value.startswith("done") and widget.run_button.text == "Run"
    assert first_mask(viewer).data.shape == (12, 32, 32)
