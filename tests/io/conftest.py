"""Real test images shipped with nibabel and pydicom."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

NIB_DATA = Path(os.path.dirname(nib.__file__)) / "tests" / "data"
DICOM_DATA = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"
CT2_SERIES = DICOM_DATA / "dicomdirtests" / "77654033" / "CT2"


@pytest.fixture
def nib_data() -> Path:
    return NIB_DATA


@pytest.fixture
def dicom_data() -> Path:
    return DICOM_DATA


@pytest.fixture
def ct2_series() -> Path:
    return CT2_SERIES


@pytest.fixture
def oblique_nifti(tmp_path: Path) -> Path:
    """First frame of nibabel's oblique 4D example, saved as 3D with the same header geometry."""
    src = nib.load(NIB_DATA / "example4d.nii.gz")
    vol = nib.Nifti1Image(np.asanyarray(src.dataobj)[..., 0], None, src.header.copy())
    out = tmp_path / "oblique.nii.gz"
    nib.save(vol, out)
    return out


@pytest.fixture
def anatomical_nifti() -> Path:
    return NIB_DATA / "anatomical.nii"
