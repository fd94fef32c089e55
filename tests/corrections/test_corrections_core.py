"""The corrections core without Qt or napari: records from layer-like objects, agreement, export, autosave."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from napari_medvit import corrections as core
from napari_medvit._layers import CLASS_RESULTS_KEY, ORIGINAL_KEY, PREDICTION_KEY
from napari_medvit.io.meta import META_KEY, ImageMeta


def test_the_core_and_the_session_import_no_gui_toolkit() -> None:
    code = ("import sys, napari_medvit.corrections, napari_medvit._session; "
            "print([m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide6', 'magicgui', 'vispy') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


class Layer(SimpleNamespace):
    """A stand-in for a napari layer: name, data, metadata (and features, rgb, multiscale)."""

    multiscale = False
    rgb = False


class Table(dict):
    """A stand-in for a Shapes layer's features table: columns and column access."""

    @property
    def columns(self) -> list[str]:
        return list(self)


def _image(name: str, data: np.ndarray, *, rgb: bool = False, source_path: str | None = None) -> Layer:
    meta = ImageMeta.identity(2, rgb=rgb)
    meta.source_path = source_path
    return Layer(name=name, data=data, rgb=rgb, metadata={META_KEY: meta.to_dict()})


def _mask_layer(image: Layer, original: np.ndarray, corrected: np.ndarray) -> Layer:
    prov = {"model": "transfuse_tiny", "source_layer": image.name, "class_names": ["background", "lesion"]}
    return Layer(name="TransFuse mask", data=corrected,
                 metadata={META_KEY: image.metadata[META_KEY], PREDICTION_KEY: prov, ORIGINAL_KEY: original})


def _boxes_layer(image: Layer, rects: list[np.ndarray], classes: list[str]) -> Layer:
    original = {"boxes": np.array([[4.0, 6.0, 20.0, 30.0], [30.0, 10.0, 50.0, 40.0]]), "classes": ["polyp", "other"],
                "scores": [0.9, 0.6], "queries": [0, 1]}
    prov = {"model": "smca_detr_tiny", "source_layer": image.name, "class_names": ["polyp", "other"],
            "threshold": 0.5}
    features = Table({"class": classes, "query": [0, 1, -1][:len(rects)]})
    return Layer(name="SMCA-DETR boxes", data=rects, features=features,
                 metadata={META_KEY: image.metadata[META_KEY], PREDICTION_KEY: prov, ORIGINAL_KEY: original})


def _rect(y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)


def _classification(probabilities: Any, names: tuple[str, ...] = ("normal", "adenoma", "cancer")) -> Any:
    p = np.asarray(probabilities, dtype=float)
    return SimpleNamespace(task="classify", model_name="deit_small", probabilities=p, labels=p.argmax(-1),
                           class_names=names, provenance={"model": "deit_small", "trained": False}, extras={})


def test_a_mask_record_agreement_and_its_export(tmp_path: Path) -> None:
    frame = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    image = _image("frame 7", frame, rgb=True)
    original = np.zeros((40, 50), np.uint8)
    original[5:20, 5:25] = 1
    corrected = original.copy()
    corrected[20:25, 5:25] = 1
    mask = _mask_layer(image, original, corrected)
    ((label, item),) = core.correction_items([image, mask])
    assert label == "TransFuse mask — mask" and item is mask and core.item_kind(mask) == "mask"
    record = core.record_of(mask, [image, mask])
    assert record.kind == "mask" and record.source.name == "frame 7" and not record.reviewed
    m = core.agreement(record)
    assert m["edited_voxels"] == 100 and m["dice"] == pytest.approx(2 * 300 / 700)
    # a photo's spacing is a pixel: HD95 in px (the issue saw "190 mm" on an endoscopy frame)
    assert core.describe_record(record, m) == f"Dice {m['dice']:.3f} · IoU {m['iou']:.3f} · HD95 5.0 px · 100 edited"
    ct = ImageMeta(spacing=(0.5, 0.5), origin=(0.0, 0.0), direction=((1.0, 0.0), (0.0, 1.0)), axes=("y", "x"))
    assert ct.calibrated and not ImageMeta.identity(2).calibrated
    slice_record = core.record_of(_mask_layer(Layer(name="ct", data=frame[..., 0], rgb=False,
                                                    metadata={META_KEY: ct.to_dict()}), original, corrected),
                                  [image, mask])
    assert slice_record.spacing == (0.5, 0.5)
    assert " HD95 2.5 mm " in core.describe_record(slice_record, core.agreement(slice_record))
    assert core.default_case_id(record) == "frame-7"

    case, exported = core.export_correction(record, tmp_path / "ds", "frame-7")
    assert case == "frame-7"
    prov = json.loads(exported.provenance_file.read_text())
    assert prov["model"] == "transfuse_tiny" and prov["reviewed"] is False
    assert prov["original_vs_corrected"]["edited_voxels"] == 100
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["labels"] == {"background": 0, "lesion": 1}
    mask.data = np.zeros_like(corrected)  # a second correction of the case: a new version, no overwrite
    assert core.export_correction(core.record_of(mask, [image, mask]), tmp_path / "ds", "frame-7")[0] == "frame-7_v2"


def test_boxes_agreement_counts_moves_and_drawn_boxes_and_export_to_coco(tmp_path: Path) -> None:
    image = _image("frame 3", np.zeros((60, 70, 3), np.uint8), rgb=True)
    moved = _rect(4.0, 6.0, 20.0, 30.0) + [5.0, 8.0]
    boxes = _boxes_layer(image, [moved, _rect(30.0, 10.0, 50.0, 40.0), _rect(50, 50, 58, 66)], ["polyp", "other", ""])
    record = core.record_of(boxes, [image, boxes])
    assert record.kind == "boxes" and record.box_classes() == ["polyp", "other", "polyp"]  # drawn: first class
    m = core.agreement(record)
    assert (m["moved"], m["unchanged"], m["added"], m["removed"]) == (1, 1, 1, 0)
    assert "1 moved · 1 added" in core.describe(record.kind, m)
    image_path = core.export_correction(record, tmp_path / "det", "frame-3")[1]
    assert image_path.name == "frame-3.png"
    coco = json.loads((tmp_path / "det" / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["polyp", "other"] and len(coco["annotations"]) == 3
    assert coco["images"][0]["medvit_provenance"]["original_vs_corrected"]["added"] == 1


def test_class_results_are_merged_keeping_the_users_choice_and_exported_as_csv(tmp_path: Path) -> None:
    frame = np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    image = _image("case 2", frame, rgb=True)
    result = core.record_class_result(image, _classification([0.2, 0.7, 0.1]))
    assert result is not None and result.name == "DeiT-S class of case 2" and result.chosen_at() == 1
    result.choose(2)
    stored = image.metadata
    assert core.record_class_result(image, _classification([0.2, 0.7, 0.1])) == result
    assert image.metadata is stored  # the same prediction again changes nothing
    core.record_class_result(image, _classification([0.3, 0.6, 0.1]))  # a new run keeps the user's class
    assert result.metadata["chosen"] == 2 and result.metadata["probabilities"] == pytest.approx([0.3, 0.6, 0.1])
    assert core.record_class_result(image, SimpleNamespace(task="segment", probabilities=np.zeros((3, 3)))) is None
    with pytest.raises(ValueError, match="out of range"):
        result.choose(3)

    ((label, item),) = core.correction_items([image])
    assert label == "DeiT-S class of case 2 — class" and item == result
    record = core.record_of(result, [image])
    m = core.agreement(record)
    assert m["changed"] and m["chosen"] == "cancer" and m["probability"] == pytest.approx(0.1)
    assert core.describe("class", m) == "changed: adenoma → cancer · model's P(cancer) 10.0%"
    case, path = core.export_correction(record, tmp_path / "cls", core.default_case_id(record))
    (row,) = list(csv.DictReader(path.open()))
    assert case == "case-2" and row["label"] == "cancer" and row["image"] == "images/case-2.png"
    assert json.loads(row["provenance"])["predicted"] == "adenoma"
    closed = core.record_of(result, [])
    with pytest.raises(ValueError, match="'case 2' is no longer open"):
        core.export_correction(closed, tmp_path / "cls", "x")


def test_per_slice_classes_are_compared_and_exported_slice_by_slice(tmp_path: Path) -> None:
    volume = np.random.default_rng(3).normal(300.0, 80.0, (4, 20, 24)).astype(np.float32)
    image = Layer(name="MR", data=volume, metadata={META_KEY: ImageMeta.identity(3).to_dict()},
                  world_to_data=lambda point: np.asarray(point))
    probs = np.tile([[0.8, 0.2]], (4, 1))
    probs[3] = [0.3, 0.7]
    result = core.record_class_result(image, _classification(probs, ("absent", "present")))
    assert result.per_slice and result.metadata["chosen"] == [0, 0, 0, 1]
    assert result.name == "DeiT-S class (per slice) of MR" and result.slice_index([2.2, 0.0, 0.0]) == 2
    result.choose(1, 2)
    m = core.agreement(core.record_of(result, [image]), 2)
    assert m["changed"] and m["changed_slices"] == 1 and m["n_slices"] == 4
    assert core.describe("class", m).startswith("slice 2: changed: absent → present")
    with pytest.raises(ValueError, match="slice 9 is out of range"):
        core.agreement(core.record_of(result, [image]), 9)
    result.update(**{core.REVIEW_KEY: core.make_review("MR", m)})
    assert core.export_accepted(core.accepted_records([image]), tmp_path / "out") == ["MR"]
    rows = list(csv.DictReader((tmp_path / "out" / "labels.csv").open()))
    assert [r["case_id"] for r in rows] == [f"MR_s{i:03d}" for i in range(4)]
    assert [r["label"] for r in rows] == ["absent", "absent", "present", "present"]


def test_export_accepted_leaves_out_the_unaccepted_and_names_what_it_cannot_export(tmp_path: Path) -> None:
    image = _image("case 0", np.zeros((20, 20, 3), np.uint8), rgb=True)
    labels = np.zeros((20, 20), np.uint8)
    labels[2:8, 2:8] = 1
    accepted = _mask_layer(image, labels, labels)
    accepted.metadata[core.REVIEW_KEY] = core.make_review("case-0", {})
    other = _mask_layer(image, labels, labels)
    other.name = "not accepted"
    assert [r.name for r in core.accepted_records([image, accepted, other])] == ["TransFuse mask"]
    assert core.export_accepted(core.accepted_records([image, accepted, other]), tmp_path / "a") == ["case-0"]
    errors: list[str] = []
    assert core.export_accepted(core.accepted_records([accepted]), tmp_path / "b", errors=errors) == []
    assert len(errors) == 1 and "TransFuse mask" in errors[0] and "'case 0' is no longer open" in errors[0]
    with pytest.warns(UserWarning, match="not exported"):
        core.export_accepted(core.accepted_records([accepted]), tmp_path / "c")


def test_autosave_writes_each_kind_and_restorable_brings_it_back(tmp_path: Path) -> None:
    source = str(tmp_path / "frame.png")
    image = _image("frame", np.zeros((60, 70, 3), np.uint8), rgb=True, source_path=source)
    original = np.zeros((60, 70), np.uint8)
    corrected = original.copy()
    corrected[10:20, 10:30] = 1
    mask = _mask_layer(image, original, corrected)
    boxes = _boxes_layer(image, [_rect(7, 10, 23, 34), _rect(30.0, 10.0, 50.0, 40.0)], ["polyp", "other"])
    result = core.record_class_result(image, _classification([0.2, 0.7, 0.1]))
    result.choose(0)
    result.update(**{core.REVIEW_KEY: core.make_review("frame", {})})
    root = tmp_path / "sessions"
    for item in (mask, boxes, result):
        assert core.autosave(core.record_of(item, [image, mask, boxes]), root=root) is not None
    unsaved = core.layer_correction(_mask_layer(_image("x", image.data), original, corrected), None)
    assert core.autosave(unsaved, root=root) is None  # not opened from a file: nothing to key it by

    found = core.restorable(source, "reopened", image.metadata[META_KEY], (60, 70, 3), root=root)
    assert [r.kind for r in found] == ["mask", "boxes", "class"]
    restored_mask, restored_boxes, restored_class = found
    np.testing.assert_array_equal(restored_mask.data, corrected)
    assert restored_mask.name.startswith("TransFuse mask (autosaved ")
    assert restored_mask.metadata[PREDICTION_KEY]["source_layer"] == "reopened"
    np.testing.assert_array_equal(restored_mask.metadata[ORIGINAL_KEY], original)
    np.testing.assert_allclose(restored_boxes.data[0], _rect(7, 10, 23, 34))
    np.testing.assert_allclose(restored_boxes.metadata[ORIGINAL_KEY]["boxes"], boxes.metadata[ORIGINAL_KEY]["boxes"])
    assert restored_boxes.features["class"] == ["polyp", "other"]
    assert restored_class.record["chosen"] == 0 and restored_class.record[core.REVIEW_KEY]["accepted"]
    assert restored_class.record["source_layer"] == "reopened"
    again = core.restorable(source, "reopened", image.metadata[META_KEY], (60, 70, 3), root=root,
                            existing_layers={restored_mask.name}, class_models={"deit_small"})
    assert [r.kind for r in again] == ["boxes"]  # what the viewer has already is not restored twice
    assert [r.kind for r in core.restorable(source, "small", {}, (10, 10), root=root)] == ["boxes", "class"]


def test_records_refuse_what_is_not_a_correction() -> None:
    with pytest.raises(ValueError, match="kind is one of"):
        core.Correction("polygon", "x", None, None)
    with pytest.raises(ValueError, match="no model result to correct"):
        core.layer_correction(Layer(name="image", data=np.zeros(3), metadata={}), None)
    with pytest.raises(ValueError, match="has no classification by 'daft'"):
        core.class_correction(Layer(name="T1", data=np.zeros(3), metadata={CLASS_RESULTS_KEY: {}}), "daft")
    with pytest.raises(ValueError, match="describe takes"):
        core.describe("polygon", {})
    assert core.case_id_of("frame 7 (2)") == "frame-7-2" and core.case_id_of("  ") == "case"
