from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from napari_medvit.cli import main


def test_infer_writes_a_mask_with_the_image_geometry(tmp_path: Path, capsys) -> None:
    affine = np.array([[0.0, 0, -2, 30], [0, 1.5, 0, -10], [1.2, 0, 0, 5], [0, 0, 0, 1]])
    data = np.random.default_rng(0).normal(size=(40, 36, 3)).astype(np.float32)
    src = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), src)
    out = tmp_path / "mask.nii.gz"
    assert main(["infer", str(src), "-o", str(out), "--model", "transfuse_tiny", "--device", "cpu", "-q"]) == 2
    assert "--model transfuse_tiny: no weights on this machine" in capsys.readouterr().err and not out.exists()
    assert main(["infer", str(src), "-o", str(out), "--model", "transfuse_tiny", "--untrained", "--device", "cpu",
                 "-q"]) == 0
    mask = nib.load(out)
    assert mask.shape == data.shape
    np.testing.assert_array_equal(mask.affine, nib.load(src).affine)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    output = capsys.readouterr()
    assert "untrained weights" in output.out and "UNTRAINED (random) weights" in output.err


def test_bad_input_is_a_message_and_exit_code_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti")
    assert main(["infer", str(bad), "-o", str(tmp_path / "m.nii.gz"), "--model", "transfuse_tiny", "--untrained"]) == 2
    assert "broken.nii.gz" in capsys.readouterr().err
    assert main(["models"]) == 0
    assert "transfuse_s" in capsys.readouterr().out


def test_finetune_from_an_export_folder(tmp_path: Path, capsys) -> None:
    from napari_medvit.io import ImageMeta
    from napari_medvit.synthetic import generate_endoscopy_frame
    from napari_medvit.training.export import export_case

    for seed in range(4):
        f = generate_endoscopy_frame(seed, shape=(64, 96), n_polyps=1)
        export_case(tmp_path / "ds", f"f{seed}", f.image, ImageMeta.identity(2, rgb=True), f.mask,
                    label_names={"background": 0, "polyp": 1})
    assert main(["finetune", str(tmp_path / "ds"), "--out", str(tmp_path / "run"), "--model", "transfuse_tiny",
                 "--epochs", "1", "--size", "64", "64"]) == 0
    out = capsys.readouterr().out
    assert "base model: validation Dice" in out and "epoch 1: train loss" in out
    assert ("promoted v1" in out) or ("not promoted" in out)
    assert (tmp_path / "run" / "epoch_001.pt").is_file()
    assert main(["finetune", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2"),
                 "--model", "transfuse_tiny"]) == 2
    assert "no dataset.json" in capsys.readouterr().err


# -- medvit export -------------------------------------------------------------------------------
def frame_files(folder: Path, seed: int = 0) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """An endoscopy frame and its polyp mask as PNG files (what a user has on disk)."""
    import skimage.io

    from napari_medvit.synthetic import generate_endoscopy_frame

    f = generate_endoscopy_frame(seed, shape=(64, 80), n_polyps=1)
    image, mask = folder / f"frame {seed}.png", folder / f"mask{seed}.png"
    skimage.io.imsave(image, f.image, check_contrast=False)
    skimage.io.imsave(mask, f.mask.astype(np.uint8), check_contrast=False)
    return image, mask, f.image, f.mask.astype(np.uint8)


def test_export_mask_writes_the_nnunet_layout_with_provenance(tmp_path: Path, capsys) -> None:
    import hashlib
    import json

    import skimage.io

    image_file, mask_file, image, mask = frame_files(tmp_path)
    original = mask.copy()
    original[:8] = 1  # the model's mask had a band of false positives
    skimage.io.imsave(tmp_path / "orig.png", original, check_contrast=False)
    ckpt = tmp_path / "weights.pt"
    ckpt.write_bytes(b"some checkpoint bytes")
    ds = tmp_path / "Dataset001"
    assert main(["export", str(image_file), str(mask_file), "--dataset", str(ds),
                 "--original", str(tmp_path / "orig.png"), "--labels", "background,polyp",
                 "--model", "transfuse_tiny", "--checkpoint", str(ckpt)]) == 0
    assert "exported case frame-0 " in capsys.readouterr().out  # the default id: the file name, made safe
    info = json.loads((ds / "dataset.json").read_text())
    assert info["labels"] == {"background": 0, "polyp": 1} and info["file_ending"] == ".png"
    assert info["numTraining"] == 1 and info["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    np.testing.assert_array_equal(skimage.io.imread(ds / "labelsTr" / "frame-0.png"), mask)
    np.testing.assert_array_equal(skimage.io.imread(ds / "imagesTr" / "frame-0_0000.png"), image)
    prov = json.loads((ds / "provenance" / "frame-0.json").read_text())
    assert prov["model"] == "transfuse_tiny" and prov["weights"] == "weights.pt"
    assert prov["checkpoint_sha256"] == hashlib.sha256(b"some checkpoint bytes").hexdigest()
    metrics = prov["original_vs_corrected"]
    assert metrics["edited_voxels"] == int(np.count_nonzero(original != mask)) and 0 < metrics["dice"] < 1


def test_export_of_an_existing_case_is_versioned_not_overwritten(tmp_path: Path, capsys) -> None:
    import json

    import skimage.io

    image_file, mask_file, _, mask = frame_files(tmp_path)
    ds = tmp_path / "ds"
    assert main(["export", str(image_file), str(mask_file), "--dataset", str(ds), "--case", "c1"]) == 0
    before = {p: p.read_bytes() for p in (ds / "labelsTr" / "c1.png", ds / "imagesTr" / "c1_0000.png",
                                          ds / "provenance" / "c1.json")}
    assert main(["export", str(image_file), str(mask_file), "--dataset", str(ds), "--case", "c1"]) == 2
    assert "already exported with exactly these labels" in capsys.readouterr().err
    edited = mask.copy()
    edited[10:20, 10:20] = 1
    skimage.io.imsave(tmp_path / "edited.png", edited, check_contrast=False)
    assert main(["export", str(image_file), str(tmp_path / "edited.png"), "--dataset", str(ds), "--case", "c1"]) == 0
    assert "exported case c1_v2 (a new version of c1)" in capsys.readouterr().out
    assert all(p.read_bytes() == data for p, data in before.items())  # the first version is untouched
    np.testing.assert_array_equal(skimage.io.imread(ds / "labelsTr" / "c1_v2.png"), edited)
    assert json.loads((ds / "provenance" / "c1_v2.json").read_text())["supersedes"] == "c1"
    info = json.loads((ds / "dataset.json").read_text())
    assert info["numTraining"] == 2 and info["labels"] == {"background": 0, "foreground": 1}  # the viewer's default


def test_export_boxes_to_coco_from_csv_and_json(tmp_path: Path, capsys) -> None:
    import json

    import skimage.io

    image_file, _, image, _ = frame_files(tmp_path)
    (tmp_path / "boxes.csv").write_text("y0,x0,y1,x1,class\n4,6,30,40,polyp\n10,50,20,70,adenoma\n")
    ds = tmp_path / "coco"
    assert main(["export", str(image_file), "--boxes", str(tmp_path / "boxes.csv"), "--dataset", str(ds),
                 "--case", "img"]) == 0
    coco = json.loads((ds / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["polyp", "adenoma"]  # the order of first appearance
    assert coco["images"][0]["file_name"] == "img.png"
    assert (coco["images"][0]["height"], coco["images"][0]["width"]) == (64, 80)
    assert [a["bbox"] for a in coco["annotations"]] == [[6.0, 4.0, 34.0, 26.0], [50.0, 10.0, 20.0, 10.0]]
    assert [a["category_id"] for a in coco["annotations"]] == [1, 2]
    np.testing.assert_array_equal(skimage.io.imread(ds / "images" / "img.png"), image)

    (tmp_path / "boxes.json").write_text(json.dumps([{"y0": 1, "x0": 2, "y1": 11, "x1": 12, "class": "adenoma"}]))
    assert main(["export", str(image_file), "--boxes", str(tmp_path / "boxes.json"), "--dataset", str(ds),
                 "--case", "img"]) == 0  # the folder's categories; the same id gets a new version
    coco = json.loads((ds / "annotations.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["img.png", "img_v2.png"]
    assert coco["annotations"][-1] == {"id": 3, "image_id": 2, "category_id": 2, "bbox": [2.0, 1.0, 10.0, 10.0],
                                       "area": 100.0, "iscrowd": 0}
    assert "exported 1 box(es) of image img_v2" in capsys.readouterr().out


def test_export_class_label_with_a_tabular_row(tmp_path: Path) -> None:
    import csv

    import skimage.io

    image_file, _, image, _ = frame_files(tmp_path)
    ds = tmp_path / "cls"
    assert main(["export", str(image_file), "--class-label", "adenoma", "--tabular", "age=71,sex=", "--dataset",
                 str(ds), "--case", "p1"]) == 0
    assert main(["export", str(image_file), "--class-label", "normal", "--dataset", str(ds), "--case", "p1"]) == 0
    rows = list(csv.DictReader((ds / "labels.csv").open(newline="")))
    assert [(r["case_id"], r["label"], r["image"]) for r in rows] == [("p1", "adenoma", "images/p1.png"),
                                                                     ("p1_v2", "normal", "images/p1_v2.png")]
    assert float(rows[0]["age"]) == 71.0 and rows[0]["sex"] == "" and rows[1]["age"] == ""
    np.testing.assert_array_equal(skimage.io.imread(ds / "images" / "p1.png"), image)


def test_export_bad_inputs_are_messages_with_exit_code_2(tmp_path: Path, capsys) -> None:
    import skimage.io

    image_file, mask_file, _, mask = frame_files(tmp_path)
    ds = str(tmp_path / "ds")
    (tmp_path / "far.csv").write_text("y0,x0,y1,x1,class\n0,0,65,10,polyp\n")
    (tmp_path / "cols.csv").write_text("top,left,bottom,right\n0,0,5,5\n")
    (tmp_path / "b.txt").write_text("")
    skimage.io.imsave(tmp_path / "three.png", (mask * 3).astype(np.uint8), check_contrast=False)
    skimage.io.imsave(tmp_path / "small.png", mask[:32], check_contrast=False)
    cases = [
        (["export", str(image_file), "--dataset", ds], "give exactly one of LABELS"),
        (["export", str(image_file), str(mask_file), "--class-label", "x", "--dataset", ds],
         "got LABELS and --class-label"),
        (["export", str(image_file), "--boxes", str(tmp_path / "far.csv"), "--dataset", ds], "box 1"),
        (["export", str(image_file), "--boxes", str(tmp_path / "cols.csv"), "--dataset", ds], "the header lacks"),
        (["export", str(image_file), "--boxes", str(tmp_path / "b.txt"), "--dataset", ds], "use a .csv"),
        (["export", str(image_file), "--boxes", str(tmp_path / "far.csv"), "--categories", "a", "--dataset", ds],
         "box 1"),
        (["export", str(image_file), str(tmp_path / "three.png"), "--dataset", ds], "holds the value 3"),
        (["export", str(image_file), str(tmp_path / "small.png"), "--dataset", ds], "do not fit IMAGE"),
        (["export", str(image_file), str(image_file), "--dataset", ds], "an RGB image, not a label image"),
        (["export", str(image_file), str(mask_file), "--checkpoint", str(mask_file), "--dataset", ds], "needs --model"),
        (["export", str(image_file), str(mask_file), "--model", "transfuse_tiny", "--checkpoint",
          str(tmp_path / "none.pt"), "--dataset", ds], "no such file"),
        (["export", str(image_file), str(mask_file), "--model", "no_such_net", "--dataset", ds], "unknown model"),
        (["export", str(image_file), "--class-label", "x", "--tabular", "age=old", "--dataset", ds], "not a number"),
        (["export", str(image_file), "--class-label", "x", "--original", str(mask_file), "--dataset", ds],
         "--original goes with LABELS"),
        (["export", str(tmp_path / "missing.png"), str(mask_file), "--dataset", ds], "missing.png"),
        (["export", str(image_file), str(mask_file), "--case", "a b", "--dataset", ds], "case id 'a b'"),
        (["finetune", ds, "--out", str(tmp_path / "r"), "--config", "channels"], "expected KEY=VALUE"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.startswith(f"medvit {argv[0]}: "), (argv, err)
    (tmp_path / "polyp.csv").write_text("y0,x0,y1,x1,class\n1,1,5,5,polyp\n")
    assert main(["export", str(image_file), "--boxes", str(tmp_path / "polyp.csv"), "--categories", "adenoma",
                 "--dataset", ds]) == 2
    assert "['polyp'] not among the categories ['adenoma']" in capsys.readouterr().err
    assert not (tmp_path / "ds" / "annotations.json").exists()  # nothing was written by a refused export


def test_infer_without_a_model_runs_the_best_transfuse_here_and_segments_the_sample(tmp_path: Path, capsys,
                                                                                   monkeypatch) -> None:
    """No --model, no --checkpoint: the weights the viewer's one-click path uses (no untrained network)."""
    from napari_medvit.io import read_image
    from napari_medvit.models.manifest import bundled_dir

    monkeypatch.setenv("MEDVIT_WEIGHTS_DIR", str(tmp_path / "no-weights-of-yours"))
    frame = bundled_dir().parent / "endoscopy_polyp.png"
    out = tmp_path / "mask.png"
    assert main(["infer", str(frame), "-o", str(out), "--device", "cpu"]) == 0
    output = capsys.readouterr()
    assert "transfuse_demo with bundled: DEMO" in output.err and "untrained" not in output.out + output.err
    mask = read_image(out)[0] > 0
    truth = read_image(bundled_dir().parent / "endoscopy_polyp_mask.png")[0] > 0
    dice = 2 * np.sum(mask & truth) / (np.sum(mask) + np.sum(truth))
    assert dice >= 0.9, dice


def test_a_checkpoint_without_model_runs_the_model_its_manifest_names(tmp_path: Path, capsys) -> None:
    from napari_medvit.models import create_model
    from napari_medvit.models.checkpoint import Manifest, save_checkpoint

    model = create_model("transfuse_tiny")
    ckpt = save_checkpoint(model, tmp_path / "mine.safetensors", Manifest(arch="transfuse_tiny", config=model.config))
    frame = tmp_path / "f.png"
    from napari_medvit.io import write_png_labels

    write_png_labels(frame, (np.random.default_rng(0).random((40, 48)) * 255).astype(np.uint8))
    assert main(["infer", str(frame), "-o", str(tmp_path / "m.png"), "--checkpoint", str(ckpt), "--device", "cpu",
                 "-q"]) == 0
    assert "transfuse_tiny (weights mine.safetensors" in capsys.readouterr().out
    import argparse

    from napari_medvit.cli._commands import _choose_weights

    official = argparse.Namespace(model=None, checkpoint="TransFuse-19_best.pth", untrained=False, quiet=True)
    assert _choose_weights(official) == ("transfuse_s", "TransFuse-19_best.pth")  # no manifest: the paper's S
