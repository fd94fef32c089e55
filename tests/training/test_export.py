from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_medvit.io import read_image
from napari_medvit.training.export import export_case, mask_metrics


@pytest.fixture()
def oblique_volume(tmp_path: Path):
    affine = np.array([[0.9, 0.1, 0.0, -20.0], [-0.1, 0.9, 0.2, 10.0], [0.0, -0.2, 1.9, 5.0], [0, 0, 0, 1]])
    data = np.random.default_rng(0).normal(100, 20, (24, 20, 12)).astype(np.float32)
    path = tmp_path / "flair.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return read_image(path)


def test_3d_export_is_nnunet_layout_with_source_geometry_and_provenance(tmp_path: Path, oblique_volume) -> None:
    image, meta = oblique_volume
    original = (image > 110).astype(np.uint8)
    corrected = original.copy()
    corrected[:3] = 0
    out = tmp_path / "Dataset001_WMH"
    case = export_case(out, "sub-01", image, meta, corrected, label_names={"background": 0, "WMH": 1},
                       channel_names={"0": "FLAIR"}, original=original,
                       provenance={"model": "vosht", "checkpoint_sha256": "ab" * 32})
    assert case.image_files == [out / "imagesTr" / "sub-01_0000.nii.gz"] and case.supersedes is None
    info = json.loads((out / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "FLAIR"} and info["labels"] == {"background": 0, "WMH": 1}
    assert info["numTraining"] == 1 and info["file_ending"] == ".nii.gz"
    src = nib.load(meta.source_path)
    for f in (case.image_files[0], case.label_file):
        np.testing.assert_array_equal(nib.load(f).affine, src.affine)
    np.testing.assert_array_equal(read_image(case.label_file)[0], corrected)
    np.testing.assert_allclose(read_image(case.image_files[0])[0], image)
    record = json.loads(case.provenance_file.read_text())
    assert record["model"] == "vosht" and record["plugin_version"] and record["exported"].endswith("+00:00")
    metrics = record["original_vs_corrected"]
    assert metrics["edited_voxels"] == int((original[:3] != 0).sum()) and 0 < metrics["dice"] < 1
    assert metrics["hd95_unit"] == "mm"  # a NIfTI volume's spacing is physical

    # the same case again with other labels: a new version, the first one untouched
    again = export_case(out, "sub-01", image, meta, original, label_names={"background": 0, "WMH": 1})
    assert again.case_id == "sub-01_v2" and again.supersedes == "sub-01"
    np.testing.assert_array_equal(read_image(case.label_file)[0], corrected)
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2
    with pytest.raises(ValueError, match="already exported with exactly these labels"):
        export_case(out, "sub-01", image, meta, corrected, label_names={"background": 0, "WMH": 1})


def test_2d_frames_export_as_png_and_bad_input_is_named(tmp_path: Path) -> None:
    from napari_medvit._sample_data import ENDOSCOPY_FILE, sample_path

    frame, meta = read_image(sample_path(ENDOSCOPY_FILE))
    mask = np.zeros(frame.shape[:2], np.uint8)
    mask[100:150, 100:200] = 1
    case = export_case(tmp_path / "polyps", "frame-0001", frame, meta, mask, label_names={"background": 0, "polyp": 1},
                       original=np.roll(mask, 5, axis=0))
    assert case.label_file.name == "frame-0001.png"
    metrics = json.loads(case.provenance_file.read_text())["original_vs_corrected"]
    assert metrics["hd95_unit"] == "pixels" and metrics["hd95"] == pytest.approx(5.0)  # a photo: no millimetres
    np.testing.assert_array_equal(read_image(case.image_files[0])[0], frame)
    np.testing.assert_array_equal(read_image(case.label_file)[0], mask)
    info = json.loads((tmp_path / "polyps" / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "R", "1": "G", "2": "B"} and info["file_ending"] == ".png"
    with pytest.raises(ValueError, match="do not match the image's spatial shape"):
        export_case(tmp_path / "polyps", "frame-0002", frame, meta, mask[:10], label_names={"polyp": 1})
    with pytest.raises(ValueError, match="case id 'a/b'"):
        export_case(tmp_path / "polyps", "a/b", frame, meta, mask, label_names={"polyp": 1})


def test_mask_metrics_against_known_values() -> None:
    a = np.zeros((10, 10), np.uint8)
    b = np.zeros((10, 10), np.uint8)
    a[2:6, 2:6] = 1  # 16 pixels
    b[2:6, 4:8] = 1  # 16 pixels, 8 shared
    m = mask_metrics(a, b, spacing=(1.0, 1.0))
    assert m["dice"] == pytest.approx(0.5) and m["iou"] == pytest.approx(8 / 24)
    assert m["edited_voxels"] == 16 and m["hd95"] == pytest.approx(2.0)
    assert mask_metrics(a * 0, b * 0)["dice"] == 1.0


def test_boxes_go_to_coco_and_classes_to_csv(tmp_path: Path) -> None:
    import csv

    from napari_medvit.io import ImageMeta
    from napari_medvit.training.export import export_boxes_coco, export_class_label

    frame = np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    meta = ImageMeta.identity(2, rgb=True)
    boxes = np.array([[10.0, 20.0, 30.0, 50.0]])  # y0, x0, y1, x1
    export_boxes_coco(tmp_path / "det", "frame-1", frame, meta, boxes, ["polyp"], [0], provenance={"model": "smca"})
    second = export_boxes_coco(tmp_path / "det", "frame-1", frame, meta, np.empty((0, 4)), ["polyp"], [])
    coco = json.loads((tmp_path / "det" / "annotations.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["frame-1.png", "frame-1_v2.png"] and second.exists()
    assert coco["annotations"] == [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20.0, 10.0, 30.0, 20.0],
                                    "area": 600.0, "iscrowd": 0}]
    with pytest.raises(ValueError, match="categories"):
        export_boxes_coco(tmp_path / "det", "frame-2", frame, meta, boxes, ["lesion"], [0])
    export_boxes_coco(tmp_path / "det", "frame-3", frame, meta, np.array([[50.0, -5.0, 70.0, 30.0]]), ["polyp"], [0])
    coco = json.loads((tmp_path / "det" / "annotations.json").read_text())
    assert coco["annotations"][-1]["bbox"] == [0.0, 50.0, 30.0, 10.0]  # clipped to the 60x80 frame
    with pytest.raises(ValueError, match=r"box\(es\) \[0\] lie outside the 60x80 image"):
        export_boxes_coco(tmp_path / "det", "frame-4", frame, meta, np.array([[61.0, 0, 70, 5]]), ["polyp"], [0])
    assert not (tmp_path / "det" / "images" / "frame-4.png").exists()  # refused before anything is written

    export_class_label(tmp_path / "cls", "case-1", "MCI", tabular={"age": 71.0, "ABETA": None})
    export_class_label(tmp_path / "cls", "case-1", "CN", image=frame, meta=meta, tabular={"age": 71.0, "ABETA": 900.0})
    rows = list(csv.DictReader((tmp_path / "cls" / "labels.csv").open()))
    assert [(r["case_id"], r["label"], r["ABETA"], r["image"]) for r in rows] == [
        ("case-1", "MCI", "", ""), ("case-1_v2", "CN", "900.0", "images/case-1_v2.png")]
    from napari_medvit.io import read_image

    assert np.array_equal(read_image(tmp_path / "cls" / "images" / "case-1_v2.png")[0], frame)


def test_box_agreement_pairs_boxes_by_hungarian_iou() -> None:
    from napari_medvit.training.export import box_agreement

    original = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], float)  # (y0, x0, y1, x1)
    corrected = np.array([[80, 80, 90, 90],    # drawn by the user
                          [20, 25, 30, 35],    # the second box moved 5 px right: IoU 50 / 150
                          [0, 0, 10, 10.5]])   # the first resized a little: IoU 100 / 105
    m = box_agreement(original, corrected, original_classes=["polyp", "polyp", "other"],
                      corrected_classes=["polyp", "other", "polyp"])
    assert (m["original"], m["corrected"], m["matched"]) == (3, 3, 2)
    assert (m["added"], m["removed"], m["moved"], m["unchanged"], m["relabelled"]) == (1, 1, 1, 1, 1)
    assert m["mean_iou"] == pytest.approx((1 / 3 + 100 / 105) / 2)
    assert box_agreement(original, original)["unchanged"] == 3 and box_agreement(original, original)["mean_iou"] == 1.0
    assert "relabelled" not in box_agreement(original, original)

    # a box moved off every original box is a removed one and an added one, not a match
    far = box_agreement(original[:1], np.array([[40, 0, 48, 10]]))
    assert (far["matched"], far["added"], far["removed"], far["mean_iou"]) == (0, 1, 1, None)
    empty = box_agreement(np.empty((0, 4)), np.empty((0, 4)))
    assert empty["matched"] == empty["added"] == empty["removed"] == 0 and empty["mean_iou"] is None
    assert box_agreement(original, np.empty((0, 4)))["removed"] == 3

    with pytest.raises(ValueError, match=r"corrected boxes must have shape \(N, 4\)"):
        box_agreement(original, np.zeros(4))
    with pytest.raises(ValueError, match="y1 >= y0"):
        box_agreement(original, np.array([[10, 0, 0, 10]]))
    with pytest.raises(ValueError, match="3 original boxes but 1 original classes"):
        box_agreement(original, original, original_classes=["polyp"], corrected_classes=["polyp"] * 3)


def test_coco_and_class_exports_in_one_folder_keep_their_own_images(tmp_path: Path) -> None:
    import csv

    from napari_medvit.io import ImageMeta
    from napari_medvit.training.export import export_boxes_coco, export_class_label

    meta = ImageMeta.identity(2, rgb=True)
    rng = np.random.default_rng(2)
    a, b = (rng.integers(0, 255, (20, 30, 3), dtype=np.uint8) for _ in range(2))
    first = export_boxes_coco(tmp_path, "frame-1", a, meta, np.array([[1.0, 2.0, 5.0, 9.0]]), ["polyp"], [0])
    export_class_label(tmp_path, "frame-1", "adenoma", image=b, meta=meta)
    (row,) = list(csv.DictReader((tmp_path / "labels.csv").open()))
    assert row["case_id"] == "frame-1_v2" and row["image"] == "images/frame-1_v2.png"
    np.testing.assert_array_equal(read_image(first)[0], a)  # the COCO image is not overwritten
    np.testing.assert_array_equal(read_image(tmp_path / row["image"])[0], b)
    second = export_boxes_coco(tmp_path, "frame-1", b, meta, np.empty((0, 4)), ["polyp"], [])
    assert second.name == "frame-1_v3.png"  # the class export's frame-1_v2.png is taken
