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
    assert main(["infer", str(src), "-o", str(out), "--model", "transfuse_tiny", "--device", "cpu", "-q"]) == 0
    mask = nib.load(out)
    assert mask.shape == data.shape
    np.testing.assert_array_equal(mask.affine, nib.load(src).affine)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    assert "untrained weights" in capsys.readouterr().out


def test_bad_input_is_a_message_and_exit_code_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti")
    assert main(["infer", str(bad), "-o", str(tmp_path / "m.nii.gz"), "--model", "transfuse_tiny"]) == 2
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
    assert main(["finetune", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2"), "--model", "transfuse_tiny"]) == 2
    assert "no dataset.json" in capsys.readouterr().err
