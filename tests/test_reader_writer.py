"""The napari adapters: npe2 reader and label writers."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from napari.layers import Labels, Layer

from layer_checks import data_to_world_matrix
from napari_medvit._reader import get_reader
from napari_medvit._writer import write_labels_nifti, write_labels_png
from napari_medvit.io import META_KEY, ImageMeta, MedVitReadError

NIB_DATA = Path(os.path.dirname(nib.__file__)) / "tests" / "data"
DICOM_DATA = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"


@pytest.fixture
def oblique_nifti(tmp_path: Path) -> Path:
    src = nib.load(NIB_DATA / "example4d.nii.gz")
    out = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(src.dataobj)[..., 0], None, src.header.copy()), out)
    return out


def _read_one(path: Path) -> tuple[Layer, ImageMeta]:
    reader = get_reader(str(path))
    assert reader is not None
    (layer_tuple,) = reader(str(path))
    layer = Layer.create(*layer_tuple)
    return layer, ImageMeta.from_dict(layer.metadata[META_KEY])


@pytest.mark.parametrize("name", ["oblique", "example4d.nii.gz", "CT2", "CT_small.dcm"])
def test_reader_layer_transform_equals_meta_affine(name: str, oblique_nifti: Path) -> None:
    path = {
        "oblique": oblique_nifti,
        "example4d.nii.gz": NIB_DATA / "example4d.nii.gz",
        "CT2": DICOM_DATA / "dicomdirtests" / "77654033" / "CT2",
        "CT_small.dcm": DICOM_DATA / "CT_small.dcm",
    }[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CT2's irregular spacing
        layer, meta = _read_one(path)
    expected = np.eye(layer.ndim + 1)
    expected[-meta.ndim - 1 :, -meta.ndim - 1 :] = meta.affine  # identity for a leading t axis
    np.testing.assert_allclose(data_to_world_matrix(layer), expected, atol=1e-5)
    lo, hi = layer.contrast_limits
    assert lo < hi and layer.colormap.name == "gray"


def test_reader_names_and_multi_series_folder(tmp_path: Path, oblique_nifti: Path) -> None:
    shutil.copytree(DICOM_DATA / "dicomdirtests" / "77654033" / "CT2", tmp_path / "study" / "CT2")
    shutil.copytree(DICOM_DATA / "dicomdirtests" / "77654033" / "CR1", tmp_path / "study" / "CR1")
    reader = get_reader([str(tmp_path / "study"), str(oblique_nifti), str(tmp_path / "notes.txt")])
    assert reader is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layers = reader([str(tmp_path / "study"), str(oblique_nifti), str(tmp_path / "notes.txt")])
    assert [kw["name"] for _, kw, _ in layers] == ["Routine Brain", "oblique"]
    assert "other_series" in layers[0][1]["metadata"][META_KEY]["extra"]


def test_get_reader_rejects_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "table.csv").write_text("a,b")
    (tmp_path / "empty").mkdir()
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "missing.nii.gz")) is None
    assert get_reader(str(tmp_path / "empty")) is None
    assert get_reader(str(tmp_path)) is None  # a folder without DICOM
    assert get_reader([str(tmp_path / "notes.txt"), str(tmp_path / "table.csv")]) is None


def test_reader_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(np.random.default_rng(3).bytes(1000))
    reader = get_reader(str(bad))
    assert reader is not None
    with pytest.raises(MedVitReadError, match="garbage.nii.gz"):
        reader(str(bad))


@pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")  # oblique volume
def test_labels_layer_with_image_metadata_writes_source_geometry(oblique_nifti: Path, tmp_path: Path) -> None:
    image, meta = _read_one(oblique_nifti)
    labels = Labels(
        (np.asarray(image.data) > 500).astype(np.int32),
        metadata=dict(image.metadata),
        scale=image.scale,
        translate=image.translate,
        rotate=image.rotate,
        shear=image.shear,
    )
    data, attributes, _ = labels.as_layer_data_tuple()
    (written,) = write_labels_nifti(str(tmp_path / "seg"), data, attributes)
    assert written.endswith("seg.nii.gz")
    img = nib.load(written)
    assert np.array_equal(img.affine, nib.load(oblique_nifti).affine)
    assert np.array_equal(np.asanyarray(img.dataobj), labels.data.transpose(2, 1, 0))

    # without our metadata the geometry comes from napari's transform
    attributes["metadata"] = {}
    (plain,) = write_labels_nifti(str(tmp_path / "plain.nii"), data, attributes)
    np.testing.assert_allclose(nib.load(plain).affine, nib.load(oblique_nifti).affine, atol=1e-5)


def test_png_labels_writer_round_trip(tmp_path: Path) -> None:
    labels = Labels(np.arange(12, dtype=np.int32).reshape(3, 4))
    data, attributes, _ = labels.as_layer_data_tuple()
    (written,) = write_labels_png(str(tmp_path / "mask"), data, attributes)
    reader = get_reader(written)
    assert reader is not None
    (back, kwargs, kind), = reader(written)
    assert written.endswith("mask.png") and kind == "image" and kwargs["name"] == "mask"
    assert np.array_equal(back, labels.data)


def test_2d_labels_without_metadata_become_a_single_slice_nifti(tmp_path: Path) -> None:
    labels = Labels(np.eye(4, 6, dtype=np.uint8) * 3, scale=(0.5, 0.7), translate=(10.0, -4.0))
    data, attributes, _ = labels.as_layer_data_tuple()
    (written,) = write_labels_nifti(str(tmp_path / "slice.nii.gz"), data, attributes)
    img = nib.load(written)
    assert img.shape == (6, 4, 1)
    assert img.header.get_zooms() == pytest.approx((0.7, 0.5, 1.0))
    assert np.array_equal(np.asanyarray(img.dataobj)[:, :, 0], labels.data.T)
