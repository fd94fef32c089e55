"""The demo checkpoints shipped in sample_data/checkpoints: labelled as demo weights, small, and each
reaching the held-out metric its manifest records on its (regenerated) synthetic test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_medvit.models.manifest import bundled_dir, read_manifest

CHECKPOINTS = sorted(bundled_dir().glob("*.safetensors"))
EXPECTED = {"transfuse_demo", "crossvit_demo", "smca_detr_demo", "swin_unetr_demo", "unetr_demo", "vosht_demo",
            "truenet_demo", "unet_demo", "daft", "resnet3d"}
_REGENERATED: dict[str, Path] = {}  # one regenerated test set per recipe, shared by the checkpoints tested on it


def regenerated(recipe: dict, tmp_path_factory: pytest.TempPathFactory, cases: list[int] | None = None) -> Path:
    """The recorded synthetic test folder (or only its cases ``cases``), rebuilt from the seeds; once per
    recipe and cases in this test session."""
    import json

    from napari_medvit.training.synth import regenerate

    key = json.dumps([{k: v for k, v in recipe.items() if k != "part"}, cases], sort_keys=True)
    if key not in _REGENERATED:
        _REGENERATED[key] = regenerate({**recipe, "part": ""}, tmp_path_factory.mktemp("synth"), cases=cases)
    return _REGENERATED[key] / recipe.get("part", "")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return 2 * np.sum(pred & truth) / (pred.sum() + truth.sum())


def test_demo_checkpoints_are_shipped_labelled_and_within_100_mb() -> None:
    manifests = {p.name: read_manifest(p) for p in CHECKPOINTS}
    assert EXPECTED <= {m.arch for m in manifests.values()}
    assert sum(p.stat().st_size for p in CHECKPOINTS) <= 100 * 2**20
    for name, m in manifests.items():
        assert m.extra.get("demo") is True and "not for clinical use" in m.description, name
        assert m.trained and {"metric", "value", "cases", "synthetic"} <= set(m.extra["test"]), name


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.stem)
def test_demo_checkpoint_reaches_its_recorded_test_metric(path: Path, tmp_path_factory) -> None:
    """On the recorded held-out cases, rebuilt from their seeds: all of them, or the fixed share that
    ``medvit package --check-fraction`` scored too (a few cases, for the slower 3D models)."""
    from napari_medvit.models import create_model
    from napari_medvit.training.package import evaluate_folder
    from napari_medvit.training.synth import case_index

    manifest = read_manifest(path)
    test = manifest.extra["test"]
    expected = test.get("check", test)
    cases = [case_index(c) for c in expected["case_ids"]] if "case_ids" in expected else None
    folder = regenerated(test["synthetic"], tmp_path_factory, cases)
    model = create_model(manifest.arch, checkpoint=path)
    got = evaluate_folder(folder, model, size=manifest.extra.get("size"))
    assert (got["metric"], got["cases"]) == (expected["metric"], expected["cases"])
    assert got["value"] == pytest.approx(expected["value"], abs=0.01)
    assert test["value"] > manifest.extra["base_val_metric"]  # trained: better than the untrained model


def test_the_demo_transfuse_mask_covers_the_sample_polyp() -> None:
    """What the README's first command shows: TransFuse's demo weights on the sample frame."""
    import skimage.io

    from napari_medvit.inference import Predictor
    from napari_medvit.io import read_image
    from napari_medvit.models import create_model
    from napari_medvit.models.manifest import bundled_checkpoints

    ((path, _),) = bundled_checkpoints("transfuse_demo")
    frame, meta = read_image(bundled_dir().parent / "endoscopy_polyp.png")
    truth = skimage.io.imread(bundled_dir().parent / "endoscopy_polyp_mask.png") > 0
    mask = Predictor(create_model("transfuse_demo", checkpoint=path)).predict(frame, meta).labels > 0
    score = dice(mask, truth)
    assert score > 0.8, score


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_inference_dock_runs_transfuse_demo_with_its_shipped_weights(make_napari_viewer, qtbot) -> None:
    """The viewer path of the README's first command: the dock picks the shipped weights by itself."""
    import skimage.io
    from napari.layers import Image, Labels

    from napari_medvit._layers import PREDICTION_KEY
    from napari_medvit.widgets import InferenceWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-medvit", "endoscopy_polyp")
    image = next(layer for layer in viewer.layers if isinstance(layer, Image))
    widget = InferenceWidget(viewer, model="transfuse_demo")
    assert widget.weights.value.endswith(".safetensors") and "DEMO" in widget.weights.current_choice
    widget.run(layer=image)
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    (mask,) = [layer for layer in viewer.layers if isinstance(layer, Labels) and PREDICTION_KEY in layer.metadata]
    assert "untrained" not in mask.name
    truth = skimage.io.imread(bundled_dir().parent / "endoscopy_polyp_mask.png") > 0
    pred = np.asarray(mask.data) > 0
    assert dice(pred, truth) > 0.8


# each demo model's matching sample (Open Sample) and what its demo weights must show there
DEMO_SAMPLES = {
    "crossvit_demo": "endoscopy_polyp",
    "smca_detr_demo": "endoscopy_polyp",
    "swin_unetr_demo": "brain_flair_t1",
    "unetr_demo": "brain_flair_t1",
    "vosht_demo": "brain_flair_t1",
    "truenet_demo": "brain_flair_t1",
    "unet_demo": "brain_flair_t1",
    "daft": "dementia_subject",
    "resnet3d": "dementia_subject",
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("model", sorted(DEMO_SAMPLES))
def test_each_demo_checkpoint_runs_from_the_dock_on_its_sample(model: str, make_napari_viewer, qtbot) -> None:
    """The dock picks the shipped weights by itself and gives a meaningful overlay on the matching sample."""
    from napari.layers import Image, Labels

    from napari_medvit._layers import PREDICTION_KEY
    from napari_medvit._sample_data import GROUND_TRUTH_KEY
    from napari_medvit.widgets import InferenceWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-medvit", DEMO_SAMPLES[model])
    images = {layer.name.split(" ")[0]: layer for layer in viewer.layers if isinstance(layer, Image)}
    widget = InferenceWidget(viewer, model=model)
    assert widget.weights.value.endswith(".safetensors") and "DEMO" in widget.weights.current_choice
    layer = images.get("FLAIR") or next(iter(images.values()))
    widget.image.value = layer
    if widget.channels:  # FLAIR + T1
        widget.channels[0].value = images["T1"]
    widget.run(layer=layer)
    qtbot.waitUntil(lambda: not widget.running, timeout=180_000)
    assert widget.status.value.startswith("done"), widget.status.value
    prediction = widget.last_prediction
    if model == "smca_detr_demo":  # the best box above the score threshold sits on the polyp
        import torch
        from torchvision.ops import box_iou

        truth = next(la for la in viewer.layers if GROUND_TRUTH_KEY in la.metadata).data > 0
        ys, xs = np.nonzero(truth)
        gt = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], dtype=float)
        keep = prediction.probabilities >= 0.3
        assert keep.any()
        box = prediction.boxes[keep][np.argmax(prediction.probabilities[keep])]
        iou = float(box_iou(torch.as_tensor(box[None], dtype=torch.float64), torch.as_tensor(gt[None]))[0, 0])
        assert iou > 0.5, (box, gt)
    elif DEMO_SAMPLES[model] == "brain_flair_t1":
        truth = next(la for la in viewer.layers if GROUND_TRUTH_KEY in la.metadata).data > 0
        (mask,) = [la for la in viewer.layers if isinstance(la, Labels) and PREDICTION_KEY in la.metadata]
        pred = np.asarray(mask.data) > 0
        assert dice(pred, truth) > 0.5
    else:
        names = list(prediction.class_names)
        top = names[int(np.argmax(prediction.probabilities))]
        if model == "crossvit_demo":
            assert top == "present"  # the sample frame shows a polyp
        elif model == "daft":
            assert widget.tabular.values()["age"] == pytest.approx(layer.metadata["medvit_tabular"]["age"])
            assert top == layer.metadata[GROUND_TRUTH_KEY]["diagnosis"]
        else:  # the image-only baseline: a diagnosis, right or not (it is the weaker model, see the README)
            assert top in ("CN", "MCI", "Dementia")
