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


# -- boxes and class labels --------------------------------------------------------------------------
def _shift(rect: np.ndarray, dy: float, dx: float) -> np.ndarray:
    return np.asarray(rect, dtype=float) + [dy, dx]


def _free_spot(boxes: np.ndarray, shape: tuple[int, int], size: int) -> np.ndarray:
    """A size x size box inside the image that overlaps none of ``boxes`` (y0, x0, y1, x1)."""
    for y in range(0, shape[0] - size, 2):
        for x in range(0, shape[1] - size, 2):
            c = np.array([y, x, y + size, x + size], dtype=float)
            if all(min(c[2], b[2]) <= max(c[0], b[0]) or min(c[3], b[3]) <= max(c[1], b[1]) for b in boxes):
                return c
    raise AssertionError(f"the model's boxes cover the whole image: {boxes}")


def test_box_corrections_agreement_and_coco_export(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    import torch
    from napari.layers import Shapes

    from napari_medvit._layers import rectangles_to_boxes

    torch.manual_seed(0)  # the untrained model's boxes: the same every run
    viewer = make_napari_viewer()
    frame = np.random.default_rng(3).integers(0, 255, (96, 120, 3), dtype=np.uint8)
    image = viewer.add_image(frame, rgb=True, scale=(0.5, 0.5), name="frame 3")
    runner = InferenceWidget(viewer, model="smca_detr_tiny")
    runner.threshold.value = 0.0  # untrained scores are low: keep every query's box
    runner.run(layer=image)
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    boxes = viewer.layers["SMCA-DETR boxes [untrained]"]
    original = boxes.metadata[ORIGINAL_KEY]
    np.testing.assert_allclose(original["boxes"], rectangles_to_boxes(boxes.data))
    assert original["classes"] == list(boxes.features["class"]) and len(original["boxes"]) == 10

    widget = CorrectionsWidget(viewer)
    assert widget.layer.value is boxes and widget.kind == "boxes" and widget.case.value == "frame-3"
    assert widget.last_metrics["unchanged"] == 10 and widget.last_metrics["mean_iou"] == pytest.approx(1.0)

    # the clinician moves the last box by a third of its size (napari's move ends in a data change) ...
    rects = [np.asarray(r, dtype=float) for r in boxes.data]
    y0, x0, y1, x1 = rectangles_to_boxes(rects[-1:])[0]
    rects[-1] = _shift(rects[-1], (y1 - y0) / 3, (x1 - x0) / 3)
    boxes.data = rects
    qtbot.waitUntil(lambda: widget.last_metrics.get("moved") == 1, timeout=5_000)
    m = widget.last_metrics
    assert m["mean_iou"] < 1.0 and m["unchanged"] == 9 and m["added"] == m["removed"] == 0
    assert "1 moved" in widget.metrics.value
    # ... deletes the first (the query whose prior is shown) and draws one where the model found nothing
    boxes.selected_data = {0}
    boxes.remove_selected()
    qtbot.waitUntil(lambda: widget.last_metrics.get("removed") == 1, timeout=5_000)
    assert widget.last_metrics["added"] == 0 and widget.last_metrics["moved"] == 1 and len(boxes.data) == 9
    drawn = _free_spot(original["boxes"], (96, 120), size=10)
    boxes.add_rectangles(np.array([drawn[:2], drawn[2:]]))
    qtbot.waitUntil(lambda: widget.last_metrics.get("added") == 1, timeout=5_000)
    assert boxes.features["class"].iloc[-1] == "polyp"  # a drawn box: the first non-background class

    widget.accept()
    widget.folder.value = tmp_path / "det"
    path = widget.export()
    assert path is not None and path.name == "frame-3.png", widget.message.value
    coco = json.loads((tmp_path / "det" / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["polyp", "other"]
    (entry,) = coco["images"]
    assert (entry["height"], entry["width"]) == (96, 120)
    prov = entry["medvit_provenance"]
    assert prov["model"] == "smca_detr_tiny" and prov["reviewed"] is True
    assert prov["original_vs_corrected"]["moved"] == 1 and prov["original_vs_corrected"]["removed"] == 1
    got = np.array([[a["bbox"][1], a["bbox"][0], a["bbox"][1] + a["bbox"][3], a["bbox"][0] + a["bbox"][2]]
                    for a in coco["annotations"]])
    np.testing.assert_allclose(got, np.clip(rectangles_to_boxes(boxes.data), 0, [96, 120, 96, 120]),
                               atol=1e-4)  # pixels, not world (scale 0.5); clipped to the frame
    np.testing.assert_allclose(got[-2], [y0 + (y1 - y0) / 3, x0 + (x1 - x0) / 3, y1 + (y1 - y0) / 3,
                                         x1 + (x1 - x0) / 3], atol=1e-4)
    np.testing.assert_allclose(got[-1], drawn)
    assert coco["annotations"][-1]["category_id"] == 1
    assert isinstance(boxes, Shapes)


def _dock(viewer, widget) -> None:
    viewer.window.add_dock_widget(widget, name=f"dock {id(widget)}")


def test_class_label_correction_from_a_crossvit_run_exports_a_csv_row(make_napari_viewer, qtbot,
                                                                      tmp_path: Path) -> None:
    import csv

    from napari_medvit.io import read_image

    viewer = make_napari_viewer()
    frame = np.random.default_rng(4).integers(0, 255, (64, 72, 3), dtype=np.uint8)
    image = viewer.add_image(frame, rgb=True, name="frame 9")
    runner = InferenceWidget(viewer, model="crossvit_tiny_test")
    _dock(viewer, runner)
    widget = CorrectionsWidget(viewer)
    runner.run(layer=image)
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    qtbot.waitUntil(lambda: widget.kind == "class", timeout=5_000)  # found in the inference dock
    pred = runner.last_prediction
    predicted = int(np.argmax(pred.probabilities))
    assert not widget.class_choice.native.isHidden() and widget.class_choice.value == predicted
    assert widget.metrics.value.startswith("unchanged")

    chosen = int(np.argsort(pred.probabilities)[0])  # the least probable class is the right one
    widget.class_choice.value = chosen
    m = widget.last_metrics
    assert m["changed"] and m["chosen"] == pred.class_names[chosen]
    assert m["probability"] == pytest.approx(float(pred.probabilities[chosen]))
    assert widget.metrics.value.startswith("changed")

    widget.folder.value = tmp_path / "cls"
    assert widget.export() is not None, widget.message.value
    (row,) = list(csv.DictReader((tmp_path / "cls" / "labels.csv").open()))
    assert row["case_id"] == "frame-9" and row["label"] == pred.class_names[chosen]
    np.testing.assert_array_equal(read_image(tmp_path / "cls" / row["image"])[0], frame)
    prov = json.loads(row["provenance"])
    assert prov["predicted"] == pred.class_names[predicted] and prov["changed"] is True
    assert prov["model"] == "crossvit_tiny_test" and prov["reviewed"] is False


def test_daft_correction_keeps_the_tabular_row_of_the_run(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    import csv

    viewer = make_napari_viewer()
    vol = np.random.default_rng(5).normal(100, 20, (20, 24, 22)).astype(np.float32)
    image = viewer.add_image(vol, name="T1 sub-02")
    runner = InferenceWidget(viewer, model="daft")
    _dock(viewer, runner)
    runner.tabular.fields["age"].value = 81.5
    runner.tabular.missing["TAU"].value = True
    runner.run(layer=image)
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    widget = CorrectionsWidget(viewer)  # opened after the run: it finds the result at once
    assert widget.kind == "class" and widget.layer.value.name == "DAFT class of T1 sub-02"
    record = widget.layer.value.metadata
    assert record["class_names"] == ["CN", "MCI", "Dementia"]
    assert record["tabular"]["age"] == 81.5 and record["tabular"]["TAU"] is None and record["tabular"]["ABETA"] == 1000

    runner.tabular.fields["age"].value = 60.0  # "what if": a new prediction replaces the result
    qtbot.waitUntil(lambda: widget.layer.value.metadata["tabular"]["age"] == 60.0, timeout=5_000)
    widget.class_choice.value = 2
    widget.accept()
    assert widget.review.value.startswith("accepted")
    widget.folder.value = tmp_path / "daft"
    widget.export()
    (row,) = list(csv.DictReader((tmp_path / "daft" / "labels.csv").open()))
    assert row["label"] == "Dementia" and row["image"] == "images/T1-sub-02.nii.gz"
    assert float(row["age"]) == 60.0 and row["TAU"] == "" and float(row["APOE4"]) == 0.0
    assert (tmp_path / "daft" / row["image"]).exists()
    assert json.loads(row["provenance"])["reviewed"] is True


def _segment_prediction(shape: tuple[int, int]):
    from napari_medvit.inference.prediction import MASK, Overlay
    from napari_medvit.inference.predictor import Prediction

    labels = np.zeros(shape, np.uint8)
    labels[5:20, 5:25] = 1
    return Prediction(task="segment", model_name="transfuse_tiny", labels=labels,
                      probabilities=labels.astype(np.float32), class_names=("background", "lesion"),
                      overlays=[Overlay(MASK, "mask", labels, attrs={"class_names": ["background", "lesion"]})],
                      provenance={"model": "transfuse_tiny", "trained": False})


def _detect_prediction(shape: tuple[int, int]):
    from napari_medvit.inference.prediction import PRIOR, Overlay
    from napari_medvit.inference.predictor import Prediction

    boxes = np.array([[4.0, 6.0, 20.0, 30.0], [30.0, 10.0, 50.0, 40.0]])
    prior = Overlay(PRIOR, "Gaussian prior", np.zeros((1, 2, 2, 2, 3)), attrs={"image_shape": np.array(shape)})
    return Prediction(task="detect", model_name="smca_detr_tiny", labels=np.array([0, 1]),
                      probabilities=np.array([0.9, 0.6]), class_names=("polyp", "other"), boxes=boxes,
                      overlays=[prior], extras={"image_shape": np.array(shape)},
                      provenance={"model": "smca_detr_tiny", "trained": False})


def _classify_prediction():
    from napari_medvit.inference.predictor import Prediction

    return Prediction(task="classify", model_name="deit_small", labels=np.array(1),
                      probabilities=np.array([0.2, 0.7, 0.1]), class_names=("normal", "adenoma", "cancer"),
                      provenance={"model": "deit_small", "trained": False})


def _add(viewer, tuples):
    from napari.layers import Layer

    return [viewer.add_layer(Layer.create(*t)) for t in tuples]


def test_export_accepted_exports_only_the_accepted_corrections(make_napari_viewer, tmp_path: Path) -> None:
    import csv

    from napari_medvit._layers import detection_layers, layer_transform, prediction_layers
    from napari_medvit.corrections import accepted_records, correction_items, export_accepted, record_class_result

    viewer = make_napari_viewer()
    rng = np.random.default_rng(6)
    frames = [viewer.add_image(rng.integers(0, 255, (60, 70, 3), dtype=np.uint8), rgb=True, name=f"case {i}")
              for i in range(3)]
    kw = [{"transform": layer_transform(f), "source_metadata": f.metadata, "source_name": f.name} for f in frames]
    mask_a, mask_b = (_add(viewer, prediction_layers(_segment_prediction((60, 70)), **kw[i]))[0] for i in (0, 1))
    mask_b.name = "second mask"
    boxes, _ = _add(viewer, detection_layers(_detect_prediction((60, 70)), threshold=0.5, query=0, **kw[2]))
    record_class_result(frames[2], _classify_prediction())
    items = correction_items(viewer.layers)
    assert sorted(label.rsplit(" — ", 1)[1] for label, _ in items) == ["boxes", "class", "mask", "mask"]
    ((label, class_item),) = [(label, item) for label, item in items if label.endswith("— class")]
    assert label == "DeiT-S class of case 2 — class"
    widget = CorrectionsWidget(viewer)

    assert export_accepted(accepted_records(viewer.layers), tmp_path / "none") == []
    for item in (mask_a, class_item):
        widget.layer.value = item
        widget.accept()
    errors: list[str] = []
    cases = export_accepted(accepted_records(viewer.layers), tmp_path / "session", errors=errors)
    assert sorted(cases) == ["case-0", "case-2"] and errors == []
    out = tmp_path / "session"
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["case-0.png"]
    (row,) = list(csv.DictReader((out / "labels.csv").open()))
    assert row["case_id"] == "case-2" and row["label"] == "adenoma" and row["image"] == "images/case-2.png"
    assert not (out / "annotations.json").exists()

    viewer.layers.remove(frames[0])  # an accepted mask whose image was closed is named, not exported
    errors = []
    assert export_accepted(accepted_records(viewer.layers), tmp_path / "again", errors=errors) == ["case-2"]
    assert len(errors) == 1 and "case 0" in errors[0] and "no longer open" in errors[0]
    assert boxes.metadata[ORIGINAL_KEY]["classes"] == ["polyp", "other"]


def test_boxes_and_class_choices_are_autosaved_and_restored(make_napari_viewer, qtbot, tmp_path: Path,
                                                            monkeypatch) -> None:
    from napari.layers import Image, Shapes

    from napari_medvit._layers import CLASS_RESULTS_KEY, detection_layers, layer_transform
    from napari_medvit.io.meta import META_KEY, ImageMeta
    from napari_medvit.widgets.corrections import ClassResult, record_class_result

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    viewer = make_napari_viewer()
    meta = ImageMeta.identity(2, rgb=True)
    meta.source_path = str(tmp_path / "frame.png")
    frame = np.random.default_rng(7).integers(0, 255, (60, 70, 3), dtype=np.uint8)
    image = viewer.add_image(frame, rgb=True, name="frame", metadata={META_KEY: meta.to_dict()})
    boxes, _ = _add(viewer, detection_layers(_detect_prediction((60, 70)), threshold=0.5, query=0,
                                             transform=layer_transform(image), source_metadata=image.metadata,
                                             source_name=image.name))
    widget = CorrectionsWidget(viewer)
    widget.layer.value = boxes
    boxes.data = [_shift(boxes.data[0], 3, 4), boxes.data[1]]
    qtbot.waitUntil(lambda: widget.autosave.value.startswith("saved"), timeout=5_000)
    edited = [np.asarray(r) for r in boxes.data]

    record_class_result(image, _classify_prediction())
    widget.layer.reset_choices()
    widget.layer.value = ClassResult(image, "deit_small")
    widget.class_choice.value = 2
    widget.accept()

    data, kwargs = image.data, {"metadata": {META_KEY: image.metadata[META_KEY]}, "rgb": True, "name": "reopened"}
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    reopened = viewer.add_image(data, **kwargs)
    restored = [layer for layer in viewer.layers if isinstance(layer, Shapes)]
    assert len(restored) == 1 and "autosaved" in restored[0].name
    for a, b in zip(restored[0].data, edited, strict=True):
        np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(restored[0].metadata[ORIGINAL_KEY]["boxes"], [[4, 6, 20, 30], [30, 10, 50, 40]])
    record = reopened.metadata[CLASS_RESULTS_KEY]["deit_small"]
    assert record["chosen"] == 2 and record["medvit_review"]["accepted"] and record["source_layer"] == "reopened"
    assert isinstance(reopened, Image)


def test_per_slice_classes_of_a_volume_are_corrected_slice_by_slice(make_napari_viewer, qtbot, tmp_path: Path,
                                                                    monkeypatch) -> None:
    """A 2D classifier on a volume: the dock corrects the class of the slice on screen, counts the changed
    slices, autosaves the choices, and exports every slice as a 2D case a classifier can be fine-tuned on."""
    import csv

    import skimage.io

    from napari_medvit.corrections import (
        ClassResult,
        accepted_records,
        correction_items,
        export_accepted,
        record_class_result,
    )
    from napari_medvit.inference.predictor import Prediction
    from napari_medvit.io.meta import META_KEY, ImageMeta
    from napari_medvit.models import get_spec
    from napari_medvit.training.classify import ClassifyTask
    from napari_medvit.transforms import scale_to_unit

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    viewer = make_napari_viewer()
    volume = np.random.default_rng(3).normal(300.0, 80.0, (6, 40, 50)).astype(np.float32)
    meta = ImageMeta.identity(3)
    meta.source_path = str(tmp_path / "volume.nii.gz")
    image = viewer.add_image(volume, name="MR", metadata={META_KEY: meta.to_dict()})
    probs = np.tile([[0.8, 0.2]], (6, 1))
    probs[4] = [0.3, 0.7]
    pred = Prediction(task="classify", model_name="crossvit_tiny_test", labels=probs.argmax(1), probabilities=probs,
                      class_names=("absent", "present"), provenance={"model": "crossvit_tiny_test"})
    result = record_class_result(image, pred)
    assert result.per_slice and result.metadata["chosen"] == [0, 0, 0, 0, 1, 0]
    ((label, _),) = correction_items(viewer.layers)
    assert label == "CrossViT class (per slice) of MR — class"

    widget = CorrectionsWidget(viewer)
    widget.layer.value = result
    viewer.dims.set_current_step(0, 2)
    assert result.slice_index(viewer.dims.point) == 2 and widget.class_choice.value == 0
    assert widget.class_choice.label == "correct class of this slice"
    widget.class_choice.value = 1  # slice 2 shows the finding the model missed
    assert result.metadata["chosen"] == [0, 0, 1, 0, 1, 0]
    assert widget.metrics.value.startswith("slice 2: changed: absent → present")
    assert "1 of 6 slices changed" in widget.metrics.value
    viewer.dims.set_current_step(0, 4)  # the slider moves: the dock shows slice 4's class
    assert widget.class_choice.value == 1 and widget.metrics.value.startswith("slice 4: unchanged")
    widget.class_choice.value = 0  # and the model's false positive on slice 4
    assert result.metadata["chosen"] == [0, 0, 1, 0, 0, 0]
    widget.accept()
    assert widget.autosave.value.startswith("saved")

    out = tmp_path / "export"
    assert export_accepted(accepted_records(viewer.layers), out) == ["MR"]
    rows = list(csv.DictReader((out / "labels.csv").open()))
    assert [r["case_id"] for r in rows] == [f"MR_s{i:03d}" for i in range(6)]
    assert [r["label"] for r in rows] == ["absent", "absent", "present", "absent", "absent", "absent"]
    assert json.loads(rows[4]["provenance"])["changed"] and json.loads(rows[4]["provenance"])["slice"] == 4
    plane = skimage.io.imread(out / rows[2]["image"])
    expected = np.round(scale_to_unit(volume) * 255).astype(np.uint8)[2]  # as the model saw it
    np.testing.assert_array_equal(plane, expected)
    assert ClassifyTask.model_overrides(out, get_spec("crossvit_tiny_test")) == {"num_classes": 2}

    # reopening the volume restores the per-slice choices
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    reopened = viewer.add_image(volume, name="MR again", metadata={META_KEY: meta.to_dict()})
    restored = ClassResult(reopened, "crossvit_tiny_test")
    assert restored.per_slice and restored.metadata["chosen"] == [0, 0, 1, 0, 0, 0]


def test_a_closed_dock_gets_no_more_session_events(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    """The docks hear of each other through the viewer's session; once a dock's widget is destroyed
    (napari closing it with its window), the session drops it: later events reach no deleted widget."""
    from qtpy.QtCore import QCoreApplication, QEvent

    from napari_medvit._session import RunInputs, session_for

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((30, 40, 3), np.uint8), rgb=True, name="frame 1")
    session = session_for(viewer)
    added, promoted = len(session.prediction_added), len(session.promoted)
    widget, runner = CorrectionsWidget(viewer), InferenceWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="corrections under test")
    assert (len(session.prediction_added), len(session.promoted)) == (added + 1, promoted + 1)
    session.add_prediction(_classify_prediction(), image, RunInputs())
    assert widget.kind == "class" and widget.layer.value.name == "DeiT-S class of frame 1"
    version = tmp_path / "v1.safetensors"
    session.promoted.emit("transfuse_tiny", str(version))  # the fine-tune dock promoted a version
    assert runner.model.value == "transfuse_tiny" and runner._checkpoint_path() == str(version)

    viewer.window.remove_dock_widget(dock)  # the user closes the dock ...
    for native in (widget.native, runner.native):  # ... and Qt deletes the widgets, the Python objects live on
        native.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    qtbot.waitUntil(lambda: (len(session.prediction_added), len(session.promoted)) == (added, promoted),
                    timeout=5_000)
    session.add_prediction(_classify_prediction(), image, RunInputs())  # no callback into a deleted widget
    session.promoted.emit("transfuse_tiny", str(tmp_path / "v2.safetensors"))
