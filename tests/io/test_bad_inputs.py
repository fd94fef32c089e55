"""Bad files get a clear error naming the file and the problem; odd but valid ones open.

Every case goes through the public readers (``read_image``) and the napari reader contribution
(``read_layers``), which must raise :class:`MedVitReadError` before napari sees a layer.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from napari.layers import Layer
from PIL import Image
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from napari_medvit._reader import layer_data_tuple, read_layers
from napari_medvit.io import ImageMeta, MedVitReadError, read_image

DICOM_DATA = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"
CT2_SERIES = DICOM_DATA / "dicomdirtests" / "77654033" / "CT2"


def _raises(path: Path, match: str) -> MedVitReadError:
    """Both entry points raise MedVitReadError naming the file and matching ``match``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MedVitReadError) as direct:
            read_image(path)
        with pytest.raises(MedVitReadError) as napari_path:
            read_layers(str(path))
    for info in (direct, napari_path):
        assert type(info.value) is MedVitReadError, type(info.value)
        message = str(info.value)
        assert str(path) in message and "\n" not in message
        assert match.lower() in message.lower(), message
    return direct.value


# -- NIfTI ---------------------------------------------------------------------------------------
def _nifti(tmp_path: Path, name: str, data: np.ndarray | None = None, **fields: object) -> Path:
    """A small NIfTI with raw header fields overridden (written verbatim: affine=None)."""
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5) if data is None else data
    header = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])).header.copy()
    for key, value in fields.items():
        header[key] = value
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, None, header), path)
    return path


def test_complex_nifti_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = _nifti(tmp_path, "phase.nii", np.ones((3, 4, 5), np.complex64))
    _raises(path, "complex-valued voxels")


@pytest.mark.parametrize("fields", [("R", "G", "B"), ("R", "G", "B", "A")], ids=["RGB24", "RGBA32"])
def test_rgb_nifti_opens_as_an_rgb_layer(fields: tuple[str, ...], tmp_path: Path) -> None:
    data = np.zeros((4, 5, 2), dtype=[(f, "u1") for f in fields])
    data["R"][1, 2, 0] = 200
    data["G"] = 7
    path = _nifti(tmp_path, "colour.nii.gz", data)
    array, meta = read_image(path)
    assert meta.rgb and array.dtype == np.uint8 and array.shape == (2, 5, 4, 3)  # (z, y, x, rgb)
    assert array[0, 2, 1, 0] == 200 and np.all(array[..., 1] == 7)
    (layer_tuple,) = read_layers(str(path))
    layer = Layer.create(*layer_tuple)
    assert layer.rgb and layer.ndim == 3


def test_zero_sized_axis_is_refused(tmp_path: Path) -> None:
    path = _nifti(tmp_path, "empty.nii", np.zeros((3, 0, 5), np.int16))
    _raises(path, "empty axis")


def test_truncated_voxel_data_is_refused(tmp_path: Path) -> None:
    path = _nifti(tmp_path, "cut.nii", np.arange(4000, dtype=np.float32).reshape(10, 20, 20))
    path.write_bytes(path.read_bytes()[:2000])
    _raises(path, "voxel data")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"srow_x": [0, 0, 0, 0], "srow_y": [0, 0, 0, 0], "srow_z": [0, 0, 0, 0], "sform_code": 1}, "singular"),
        ({"srow_x": [np.nan, 0, 0, 0], "sform_code": 1}, "non-finite"),
        ({"srow_x": [1e30, 0, 0, 0], "sform_code": 1}, "absurd"),
    ],
    ids=["singular-sform", "nan-sform", "absurd-sform"],
)
def test_a_broken_sform_falls_back_to_the_qform_with_a_warning_naming_the_file(
    fields: dict[str, object], reason: str, tmp_path: Path
) -> None:
    path = _nifti(tmp_path, "scan.nii", qform_code=1, **fields)  # the qform holds the 2 mm grid
    with pytest.warns(UserWarning, match=reason) as record:
        array, meta = read_image(path)
    assert any(str(path) in str(w.message) and "qform" in str(w.message) for w in record)
    assert meta.spacing == (2.0, 2.0, 2.0) and array.shape == (5, 4, 3)
    assert meta.extra["nifti"]["affine_source"] == "qform"


def test_a_broken_sform_without_qform_is_placed_by_pixdim_and_says_position_is_unknown(tmp_path: Path) -> None:
    path = _nifti(tmp_path, "scan.nii", qform_code=0, srow_x=[np.nan, 0, 0, 0], sform_code=1)
    with pytest.warns(UserWarning, match="position and orientation are unknown"):
        _, meta = read_image(path)
    assert meta.extra["nifti"]["affine_source"] == "pixdim"


def test_nan_pixdim_with_no_usable_form_is_refused_naming_every_problem(tmp_path: Path) -> None:
    pixdim = np.ones(8, np.float32)
    pixdim[1:4] = np.nan
    path = _nifti(tmp_path, "scan.nii", qform_code=1, sform_code=1, pixdim=pixdim, srow_x=[np.nan, 0, 0, 0])
    error = _raises(path, "cannot place the image")
    assert "sform" in str(error) and "qform" in str(error) and "pixdim" in str(error)


def test_the_written_mask_of_a_fallback_scan_is_placed_as_the_image_was(tmp_path: Path) -> None:
    """The broken sform is kept but switched off (code 0): any viewer places the mask by the qform."""
    from napari_medvit.io import write_nifti_labels

    path = _nifti(tmp_path, "scan.nii", qform_code=1, srow_x=[np.nan, 0, 0, 0], sform_code=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array, meta = read_image(path)
        out = write_nifti_labels(tmp_path / "mask.nii", (array > 30).astype(np.uint8), meta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the mask itself reads without any fallback
        again, again_meta = read_image(out)
    src, back = nib.load(path).header, nib.load(out).header
    for key in ("srow_y", "srow_z", "qform_code", "pixdim", "quatern_b", "qoffset_x"):
        np.testing.assert_array_equal(back[key], src[key])
    assert int(back["sform_code"]) == 0 and int(src["sform_code"]) == 1
    np.testing.assert_allclose(nib.load(out).affine, src.get_qform())
    assert np.array_equal(again, array > 30) and np.allclose(again_meta.affine, meta.affine)


# -- DICOM ---------------------------------------------------------------------------------------
def _ct_with_raw(tmp_path: Path, keyword: str, value: str, name: str = "ct.dcm") -> Path:
    """CT_small with one element's raw bytes replaced (pydicom cannot build such values)."""
    ds = pydicom.dcmread(DICOM_DATA / "CT_small.dcm")
    tag = Tag(keyword)
    raw = value.encode() + (b" " if len(value) % 2 else b"")
    ds._dict[tag] = RawDataElement(tag, pydicom.datadict.dictionary_VR(tag), len(raw), raw, 0, False, True)
    out = tmp_path / name
    ds.save_as(out)
    return out


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("RescaleSlope", "abc"), ("RescaleIntercept", "-L024"), ("NumberOfFrames", "many"), ("RescaleSlope", "nan")],
)
def test_dicom_text_in_numeric_tags_is_an_error_naming_file_and_tag(keyword: str, value: str, tmp_path: Path) -> None:
    path = _ct_with_raw(tmp_path, keyword, value)
    error = _raises(path, keyword)
    assert value in str(error)


@pytest.mark.parametrize(("keyword", "value", "default"), [("PixelSpacing", "abc\\1", True),
                                                      ("PixelSpacing", "0\\0", True),
                                                      ("SliceThickness", "abc", False)])
def test_dicom_spacing_tags_that_are_not_numbers_are_named_in_a_warning(
        keyword: str, value: str, default: bool, tmp_path: Path) -> None:
    path = _ct_with_raw(tmp_path, keyword, value)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _, meta = read_image(path)
    messages = [str(w.message) for w in record]
    assert any(str(path) in m and keyword in m for m in messages), messages
    assert any("1 mm per pixel is assumed" in m for m in messages) == default
    assert (meta.extra["spacing_source"] == "default") == default


def test_the_napari_writer_never_replaces_the_source_image(tmp_path: Path) -> None:
    from napari_medvit._writer import write_labels_nifti, write_labels_png

    scan = _nifti(tmp_path, "scan.nii.gz")
    before = scan.read_bytes()
    (data, kwargs, _), = read_layers(str(scan))
    with pytest.raises(ValueError, match="source image"):
        write_labels_nifti(str(scan), np.zeros(data.shape, np.uint8), kwargs)
    (tmp_path / "link.nii.gz").symlink_to(scan)
    with pytest.raises(ValueError, match="source image"):
        write_labels_nifti(str(tmp_path / "link.nii.gz"), np.zeros(data.shape, np.uint8), kwargs)
    assert scan.read_bytes() == before
    frame = tmp_path / "frame.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(frame)
    (fdata, fkwargs, _), = read_layers(str(frame))
    with pytest.raises(ValueError, match="source image"):
        write_labels_png(str(frame), np.ones(fdata.shape, np.uint8), fkwargs)
    assert write_labels_nifti(str(tmp_path / "mask.nii.gz"), np.zeros(data.shape, np.uint8), kwargs)


def test_text_file_renamed_dcm_says_not_a_dicom_file(tmp_path: Path) -> None:
    path = tmp_path / "report.dcm"
    path.write_text("Findings: no acute abnormality.\n" * 20)
    _raises(path, "not a DICOM file")


def test_series_folder_names_the_files_it_skips(tmp_path: Path) -> None:
    folder = tmp_path / "CT2"
    shutil.copytree(CT2_SERIES, folder)
    (folder / "notes.txt").write_text("scanned on 2026-11-30")
    (folder / "broken.dcm").write_text("not dicom at all")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        array, meta = read_image(folder)
    messages = [str(w.message) for w in record]
    assert any("non-DICOM" in m and "notes.txt" in m and str(folder) in m for m in messages), messages
    assert any("unreadable DICOM" in m and "broken.dcm" in m and "not a DICOM file" in m for m in messages), messages
    assert meta.extra["ignored_files"] == ["notes.txt"] and meta.extra["skipped_files"] == ["broken.dcm"]
    assert array.shape[0] == 4


def test_folder_of_only_other_files_names_one(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    (folder / "x.dcm").write_text("not dicom")  # makes napari hand us the folder
    _raises(folder, "no DICOM image files")


# -- frames --------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_frames_are_converted_to_rgb(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"print{suffix}"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    array, meta = read_image(path)
    assert meta.rgb and array.shape == (30, 40, 3) and meta.extra["converted_from"] == "CMYK"
    red, green, blue = (float(array[..., c].mean()) for c in range(3))
    assert red > 240 and green < 15 and blue < 15  # not C, M, Y shown as R, G, B


def test_corrupt_png_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "frame.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:40])
    _raises(path, "not a readable image")


# -- what napari receives ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("array", "meta", "match"),
    [
        (np.zeros((4, 4), object), ImageMeta.identity(2), "cannot be displayed"),
        (np.zeros((4, 4), np.complex64), ImageMeta.identity(2), "cannot be displayed"),
        (np.zeros((0, 4)), ImageMeta.identity(2), "empty"),
        (np.zeros((4, 4, 2)), ImageMeta.identity(2, rgb=True), "RGB"),
        (np.zeros((4,)), ImageMeta.identity(2), "does not fit"),
        (np.zeros((4, 4)), ImageMeta(spacing=(1, 1), origin=(0, 0), direction=((1, 0), (1, 0)), axes=("y", "x")),
         "singular"),
    ],
    ids=["object", "complex", "empty", "rgb-2-channels", "1d", "singular-direction"],
)
def test_layer_data_napari_cannot_display_never_reaches_napari(array: np.ndarray, meta: ImageMeta, match: str) -> None:
    with pytest.raises(MedVitReadError, match=match) as info:
        layer_data_tuple("/data/scan.nii", array, meta)
    assert "/data/scan.nii" in str(info.value)
