from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from napari_medvit.io import read_image
from napari_medvit.transforms import scale_intensity_range
from napari_medvit.transforms.spatial import from_model_grid, to_model_grid


def test_reorienting_our_array_to_ras_recovers_the_nifti_voxel_order(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((10, 12, 14)).astype(np.float32)
    for affine in (np.diag([2.0, 3.0, 4.0, 1.0]), np.diag([-2.0, 3.0, -4.0, 1.0])):
        path = tmp_path / "v.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), path)
        arr, meta = read_image(path)
        ras, undo = to_model_grid(arr, meta.affine, "RAS", None)
        expected = nib.as_closest_canonical(nib.load(path)).get_fdata(dtype=np.float32)
        np.testing.assert_array_equal(ras, expected)
        np.testing.assert_array_equal(from_model_grid(ras, undo), arr)


def test_resampling_to_a_spacing_and_back_keeps_the_grid(tmp_path: Path) -> None:
    labels = np.zeros((10, 12, 14), np.uint8)
    labels[2:8, 3:9, 4:10] = 1
    path = tmp_path / "l.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.diag([1.0, 1.0, 2.0, 1.0])), path)
    arr, meta = read_image(path)
    model_grid, undo = to_model_grid(arr.astype(np.float32), meta.affine, "RAS", (0.5, 0.5, 1.0), order=0)
    assert model_grid.shape == (20, 24, 28)
    back = from_model_grid(model_grid.astype(np.uint8), undo, order=0)
    np.testing.assert_array_equal(back, arr)


def test_intensity_range_like_monai() -> None:
    x = np.array([-300.0, -175.0, 37.5, 250.0, 400.0])
    np.testing.assert_allclose(scale_intensity_range(x, -175, 250, 0, 1, clip=True), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(scale_intensity_range(x, -175, 250)[[0, 4]], [-125 / 425, 575 / 425], rtol=1e-6)
