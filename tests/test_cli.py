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
