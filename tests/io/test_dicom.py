from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from napari_medvit.io import MedVitReadError, is_supported, read_dicom, read_image, write_nifti_labels


def test_ct_small_single_slice_values_and_spacing(dicom_data: Path) -> None:
    path = dicom_data / "CT_small.dcm"
    ds = pydicom.dcmread(path)
    array, meta = read_dicom(path)
    assert array.shape == (128, 128) and meta.axes == ("y", "x") and meta.modality == "CT"
    assert meta.spacing == tuple(float(v) for v in ds.PixelSpacing)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert array.dtype == np.int16 and np.array_equal(array, expected)
    assert meta.extra["dicom"]["ImagePositionPatient"] == [float(v) for v in ds.ImagePositionPatient]


def test_mr_small_without_rescale_keeps_values(dicom_data: Path) -> None:
    array, meta = read_image(dicom_data / "MR_small.dcm")
    assert meta.modality == "MR" and meta.spacing == (0.3125, 0.3125)
    assert np.array_equal(array, pydicom.dcmread(dicom_data / "MR_small.dcm").pixel_array)


def test_ct2_series_is_sorted_and_irregular_spacing_warns(ct2_series: Path) -> None:
    with pytest.warns(UserWarning, match=r"not uniform.*202\.50 mm"):
        array, meta = read_dicom(ct2_series)
    assert array.shape == (4, 16, 16)
    assert meta.spacing[1:] == pytest.approx((0.488281, 0.488281))
    assert meta.spacing[0] == pytest.approx(1.25)  # the median step
    assert meta.extra["slice_positions"] == pytest.approx([-99.48, 103.02, 104.27, 105.52])
    assert "202.50 mm" in meta.extra["warnings"][0]
    # slice 0 is the file whose ImagePositionPatient z is lowest; world is (S, P, L)
    first = pydicom.dcmread(ct2_series / "17106")
    assert np.array_equal(array[0], first.pixel_array.astype(np.int32) - 1024)
    np.testing.assert_allclose(meta.origin, [float(v) for v in first.ImagePositionPatient][::-1])


def test_folder_with_several_series_opens_the_largest(dicom_data: Path, ct2_series: Path, tmp_path: Path) -> None:
    shutil.copytree(ct2_series, tmp_path / "CT2")
    shutil.copytree(dicom_data / "dicomdirtests" / "77654033" / "CR1", tmp_path / "CR1")
    (tmp_path / "notes.txt").write_text("not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array, meta = read_dicom(tmp_path)
    assert array.shape == (4, 16, 16) and meta.extra["series_description"] == "Routine Brain"
    (other,) = meta.extra["other_series"]
    assert other["Modality"] == "CR" and other["number_of_files"] == 1
    assert "Cervical LAT" in meta.extra["other_series_message"]


def test_truncated_dicom_raises_read_error_naming_the_file(dicom_data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cut_short.dcm"
    bad.write_bytes((dicom_data / "CT_small.dcm").read_bytes()[:2000])
    with pytest.raises(MedVitReadError, match="cut_short.dcm"):
        read_dicom(bad)


def test_folder_without_dicom_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(MedVitReadError, match="no DICOM image"):
        read_dicom(tmp_path)


def test_ct_slice_labels_export_to_the_slice_position(dicom_data: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(dicom_data / "CT_small.dcm")
    array, meta = read_dicom(dicom_data / "CT_small.dcm")
    write_nifti_labels(tmp_path / "ct.nii.gz", (array > 0).astype(np.uint8), meta)
    img = nib.load(tmp_path / "ct.nii.gz")
    assert img.shape == (128, 128, 1)
    x, y, z = (float(v) for v in ds.ImagePositionPatient)  # LPS of the first pixel
    np.testing.assert_allclose(img.affine[:3, 3], [-x, -y, z], atol=1e-4)  # RAS
    with pytest.raises(ValueError, match=r"\(64, 64\).*\(128, 128\)"):
        write_nifti_labels(tmp_path / "bad.nii.gz", np.zeros((64, 64), np.uint8), meta)


def test_extension_less_file_is_recognised_by_its_preamble(ct2_series: Path) -> None:
    assert is_supported(ct2_series / "17106") and is_supported(ct2_series)
    array, meta = read_image(ct2_series / "17106")
    assert array.shape == (16, 16) and meta.modality == "CT"
