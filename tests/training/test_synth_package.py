"""Synthetic export folders (``medvit synth``), held-out scoring (``medvit evaluate``) and demo packaging."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medvit.cli import main
from napari_medvit.models import create_model
from napari_medvit.models.checkpoint import Manifest, read_checkpoint, save_checkpoint
from napari_medvit.synthetic import generate_endoscopy_dataset
from napari_medvit.training.package import evaluate_folder, package
from napari_medvit.training.synth import write_synthetic


@pytest.fixture(scope="module")
def endo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "endo"
    assert main(["synth", "endoscopy", "--out", str(root), "--n", "6", "--seed", "3", "--shape", "64", "80"]) == 0
    return root


def test_synth_endoscopy_writes_three_export_folders_of_the_same_frames(endo: Path) -> None:
    import skimage.io

    frames = generate_endoscopy_dataset(6, 3, (64, 80))
    info = json.loads((endo / "segmentation" / "dataset.json").read_text())
    assert info["numTraining"] == 6 and info["labels"] == {"background": 0, "polyp": 1}
    mask = skimage.io.imread(endo / "segmentation" / "labelsTr" / "synth-3-0002.png")
    np.testing.assert_array_equal(mask, frames[2].mask)
    coco = json.loads((endo / "detection" / "annotations.json").read_text())
    assert len(coco["images"]) == 6 and len(coco["annotations"]) == sum(len(f.boxes) for f in frames)
    assert coco["images"][2]["medvit_provenance"]["seed"] == frames[2].seed
    rows = list(csv.DictReader((endo / "classification" / "labels.csv").open()))
    assert [r["label"] for r in rows] == ["present" if f.present else "absent" for f in frames]
    with pytest.raises(ValueError, match="not empty"):
        write_synthetic("endoscopy", endo, 4, 3, shape=(64, 80))
    with pytest.raises(ValueError, match="unknown synthetic dataset"):
        write_synthetic("xray", endo / "x", 4)


def test_evaluate_scores_every_case_of_a_folder(endo: Path, capsys) -> None:
    torch.manual_seed(0)
    model = create_model("transfuse_tiny")
    record = evaluate_folder(endo / "segmentation", model, size=(64, 64))
    assert record["metric"] == "Dice" and record["cases"] == 6 and 0.0 <= record["value"] <= 1.0
    assert main(["evaluate", str(endo / "classification"), "--model", "crossvit_tiny_test"]) == 2  # no weights
    assert "--model crossvit_tiny_test: no weights on this machine" in capsys.readouterr().err
    assert main(["evaluate", str(endo / "classification"), "--model", "crossvit_tiny_test", "--untrained"]) == 2
    assert "num_classes=2" in capsys.readouterr().err  # 1000 outputs


def _tiny_version(tmp_path: Path) -> Path:
    """What a fine-tuning run promotes: a seeded transfuse_tiny with its manifest (trained at 64x64)."""
    torch.manual_seed(0)
    model = create_model("transfuse_tiny")
    return save_checkpoint(model, tmp_path / "v1.safetensors", Manifest(
        arch="transfuse_tiny", config=model.config, class_names=["background", "polyp"], trained=True,
        extra={"size": [64, 64]}))


def test_package_writes_fp16_demo_weights_with_the_metric_a_user_gets(endo: Path, tmp_path: Path) -> None:
    source = _tiny_version(tmp_path)
    out = tmp_path / "demo.safetensors"
    test = package(source, endo / "segmentation", out)
    assert test["weights"] == "fp16" and test["cases"] == 6 and test["metric"] == "Dice"
    state, manifest, _ = read_checkpoint(out)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert out.stat().st_size < 0.55 * source.stat().st_size
    assert manifest.extra["demo"] and "not for clinical use" in manifest.description
    assert manifest.extra["test"]["value"] == test["value"]
    recipe = manifest.extra["test"]["synthetic"]  # how to rebuild the test folder exactly
    assert (recipe["kind"], recipe["n"], recipe["seed"], recipe["part"]) == ("endoscopy", 6, 3, "segmentation")
    assert recipe["options"] == {"shape": [64, 80]}
    from napari_medvit.training.synth import regenerate

    again = regenerate(recipe, tmp_path / "again")
    for a, b in zip(sorted((endo / "segmentation" / "labelsTr").iterdir()), sorted((again / "labelsTr").iterdir()),
                    strict=True):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()
    loaded = create_model("transfuse_tiny", checkpoint=out)  # what the viewer loads: the recorded metric exactly
    assert evaluate_folder(endo / "segmentation", loaded, size=(64, 64))["value"] == pytest.approx(test["value"],
                                                                                                    abs=1e-6)
    with pytest.raises(ValueError, match="no active.json"):
        package(tmp_path, endo / "segmentation", tmp_path / "x.safetensors")


def test_package_records_a_check_on_a_fixed_share_of_the_test_cases(endo: Path, tmp_path: Path) -> None:
    source = _tiny_version(tmp_path)
    test = package(source, endo / "segmentation", tmp_path / "demo.safetensors", check_fraction=0.5)
    check = test["check"]
    assert (check["metric"], check["cases"], check["fraction"]) == ("Dice", 3, 0.5) and test["cases"] == 6
    loaded = create_model("transfuse_tiny", checkpoint=tmp_path / "demo.safetensors")
    again = evaluate_folder(endo / "segmentation", loaded, size=(64, 64), fraction=0.5)  # the same 3 cases
    assert again["cases"] == 3 and again["value"] == pytest.approx(check["value"], abs=1e-6)
    with pytest.raises(ValueError, match="fraction"):
        evaluate_folder(endo / "segmentation", loaded, fraction=0.0)


def test_synth_workers_write_the_same_frames_as_one_process(endo: Path, tmp_path: Path) -> None:
    assert main(["synth", "endoscopy", "--out", str(tmp_path / "par"), "--n", "6", "--seed", "3", "--shape", "64", "80",
                 "--workers", "2"]) == 0
    for a, b in zip(sorted((endo / "segmentation" / "imagesTr").iterdir()),
                    sorted((tmp_path / "par" / "segmentation" / "imagesTr").iterdir()), strict=True):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="workers"):
        generate_endoscopy_dataset(2, 0, (64, 80), workers=0)


def test_a_part_of_a_synthetic_dataset_is_rebuilt_exactly(endo: Path, tmp_path: Path) -> None:
    from napari_medvit.training.synth import case_index, regenerate, synth_recipe

    part = regenerate(synth_recipe(endo / "segmentation"), tmp_path / "part", cases=[4, 1])
    names = sorted(p.name for p in (part / "labelsTr").iterdir())
    assert names == ["synth-3-0001.png", "synth-3-0004.png"] and [case_index(n[:-4]) for n in names] == [1, 4]
    for name in names:
        assert (part / "labelsTr" / name).read_bytes() == (endo / "segmentation" / "labelsTr" / name).read_bytes()
    assert synth_recipe(part)["cases"] == [4, 1]  # the folder says it is a part, not the whole dataset
    for wrong in ([6], [1, 1]):
        with pytest.raises(ValueError, match="case indices"):
            generate_endoscopy_dataset(6, 3, (64, 80), cases=wrong)
    with pytest.raises(ValueError, match="not a synthetic case id"):
        case_index("frame-7")


def test_synth_brain_writes_flair_t1_and_lesions_with_the_subjects_geometry(tmp_path: Path) -> None:
    import nibabel as nib

    from napari_medvit.io import read_image
    from napari_medvit.synthetic import generate_brain_dataset

    root = tmp_path / "brain"
    assert main(["synth", "brain", "--out", str(root), "--n", "2", "--seed", "4", "--spacing", "4"]) == 0
    info = json.loads((root / "segmentation" / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "FLAIR", "1": "T1"} and info["labels"] == {"background": 0, "lesion": 1}
    case = generate_brain_dataset(2, 4, spacing=4.0)[1]
    flair, meta = read_image(root / "segmentation" / "imagesTr" / "synth-4-0001_0000.nii.gz")
    labels, _ = read_image(root / "segmentation" / "labelsTr" / "synth-4-0001.nii.gz")
    np.testing.assert_allclose(flair, case.flair, rtol=1e-6)
    np.testing.assert_array_equal(labels, case.mask)
    assert meta.spacing == (4.0, 4.0, 4.0)
    img = nib.load(root / "segmentation" / "imagesTr" / "synth-4-0001_0001.nii.gz")
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")  # MNI152's RAS+ orientation kept
    np.testing.assert_allclose(img.affine, np.asarray(case.affine)[:, [2, 1, 0, 3]], atol=1e-5)
    with pytest.raises(ValueError, match="--spacing applies to the brain dataset only"):
        main_raising(["synth", "endoscopy", "--out", str(tmp_path / "e"), "--n", "2", "--spacing", "2"])


def main_raising(argv: list[str]) -> None:
    from napari_medvit.cli import build_parser

    args = build_parser().parse_args(argv)
    args.func(args)


def test_synth_dementia_writes_daft_rows_a_daft_task_reads(tmp_path: Path) -> None:
    from napari_medvit.models import get_spec
    from napari_medvit.synthetic import generate_dementia_dataset
    from napari_medvit.training.classify import ClassifyTask, read_labels

    root = tmp_path / "dementia"
    assert main(["synth", "dementia", "--out", str(root), "--n", "3", "--seed", "2"]) == 0
    cases = generate_dementia_dataset(3, 2)
    rows = read_labels(root / "classification")
    assert [r["label"] for r in rows] == [c.label for c in cases]
    for row, case in zip(rows, cases, strict=True):
        for name, value in case.tabular.items():
            assert row[name] == ("" if value is None else str(value))
    assert ClassifyTask.model_overrides(root / "classification", get_spec("daft")) == {}  # DAFT's own 3 classes
