"""The demo checkpoints shipped in sample_data/checkpoints: labelled as demo weights, small, and each
reaching the held-out metric its manifest records on its (regenerated) synthetic test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_medvit.models.manifest import bundled_dir, read_manifest

CHECKPOINTS = sorted(bundled_dir().glob("*.safetensors"))
EXPECTED = {"transfuse_demo"}  # grows as the demo checkpoints of issue 5 land


def test_demo_checkpoints_are_shipped_labelled_and_within_100_mb() -> None:
    manifests = {p.name: read_manifest(p) for p in CHECKPOINTS}
    assert EXPECTED <= {m.arch for m in manifests.values()}
    assert sum(p.stat().st_size for p in CHECKPOINTS) <= 100 * 2**20
    for name, m in manifests.items():
        assert m.extra.get("demo") is True and "not for clinical use" in m.description, name
        assert m.trained and {"metric", "value", "cases", "synthetic"} <= set(m.extra["test"]), name


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.stem)
def test_demo_checkpoint_reaches_its_recorded_test_metric(path: Path, tmp_path: Path) -> None:
    from napari_medvit.models import create_model
    from napari_medvit.training.package import evaluate_folder
    from napari_medvit.training.synth import regenerate

    manifest = read_manifest(path)
    test = manifest.extra["test"]
    folder = regenerate(test["synthetic"], tmp_path / "test")  # the same frames, rebuilt from their seeds
    model = create_model(manifest.arch, checkpoint=path)
    got = evaluate_folder(folder, model, size=manifest.extra.get("size"))
    assert (got["metric"], got["cases"]) == (test["metric"], test["cases"])
    assert got["value"] == pytest.approx(test["value"], abs=0.01)


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
    dice = 2 * np.sum(mask & truth) / (mask.sum() + truth.sum())
    assert dice > 0.8, dice


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
    assert 2 * np.sum(pred & truth) / (pred.sum() + truth.sum()) > 0.8
