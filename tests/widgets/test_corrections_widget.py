from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_medvit._layers import ORIGINAL_KEY
from napari_medvit.widgets import CorrectionsWidget, InferenceWidget

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_correct_accept_and_export(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    frame = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    image = viewer.add_image(frame, rgb=True, name="frame 7")
    runner = InferenceWidget(viewer, model="transfuse_tiny")
    runner.run(layer=image)
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    mask = next(layer for layer in viewer.layers if ORIGINAL_KEY in layer.metadata)

    widget = CorrectionsWidget(viewer)
    assert widget.layer.value is mask and widget.case.value == "frame-7"
    assert widget.last_metrics["edited_voxels"] == 0

    corrected = np.zeros_like(mask.data)
    corrected[10:30, 20:50] = 1  # the clinician repaints the lesion
    mask.data = corrected
    qtbot.waitUntil(lambda: widget.last_metrics.get("edited_voxels", 0) > 0, timeout=5_000)
    expected = int(np.count_nonzero(mask.metadata[ORIGINAL_KEY] != corrected))
    assert widget.last_metrics["edited_voxels"] == expected and "Dice" in widget.metrics.value

    widget.accept()
    assert widget.review.value.startswith("accepted")

    widget.folder.value = tmp_path / "export"
    case = widget.export()
    assert case is not None and case.case_id == "frame-7", widget.message.value
    record = json.loads(case.provenance_file.read_text())
    assert record["model"] == "transfuse_tiny" and record["reviewed"] is True
    assert record["original_vs_corrected"]["edited_voxels"] == expected
    info = json.loads((tmp_path / "export" / "dataset.json").read_text())
    assert info["labels"] == {"background": 0, "lesion": 1} and info["numTraining"] == 1

    mask.data = np.zeros_like(corrected)  # a second correction of the same case becomes a new version
    assert widget.export().case_id == "frame-7_v2"


def test_edits_are_autosaved_and_restored_when_the_image_is_reopened(make_napari_viewer, qtbot, tmp_path: Path,
                                                                     monkeypatch) -> None:
    from napari.layers import Image, Labels

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medvit", "endoscopy_polyp")
    image = next(layer for layer in viewer.layers if isinstance(layer, Image))
    runner = InferenceWidget(viewer, model="transfuse_tiny")
    runner.run(layer=image)
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    widget = CorrectionsWidget(viewer)
    mask = widget.layer.value
    corrected = np.zeros_like(mask.data)
    corrected[100:160, 120:220] = 1
    mask.data = corrected
    qtbot.waitUntil(lambda: widget.autosave.value.startswith("saved"), timeout=5_000)

    # napari is closed and the image opened again: the correction comes back, aligned with it
    data, kwargs = image.data, {"metadata": image.metadata, "rgb": True, "name": "reopened"}
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    reopened = viewer.add_image(data, **kwargs)
    restored = [layer for layer in viewer.layers if isinstance(layer, Labels) and "autosaved" in layer.name]
    assert len(restored) == 1
    np.testing.assert_array_equal(restored[0].data, corrected)
    np.testing.assert_allclose(restored[0].scale, reopened.scale)
    assert restored[0].metadata[ORIGINAL_KEY].shape == corrected.shape
    assert widget.layer.value is restored[0]  # ready to go on correcting and exporting
