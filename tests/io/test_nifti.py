from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_medvit.io import ImageMeta, MedVitReadError, read_nifti, write_nifti_labels
from napari_medvit.io.orientation import stored_affine, to_stored


def _threshold_labels(array: np.ndarray) -> np.ndarray:
    labels = np.zeros(array.shape, dtype=np.int32)
    labels[array > np.percentile(array, 50)] = 1
    labels[array > np.percentile(array, 90)] = 2
    return labels


@pytest.mark.parametrize("source", ["oblique_nifti", "anatomical_nifti"])
def test_label_round_trip_keeps_header_geometry(source: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    path = request.getfixturevalue(source)
    array, meta = read_nifti(path)
    labels = _threshold_labels(array)
    out = tmp_path / "labels.nii.gz"
    write_nifti_labels(out, labels, meta)

    src, written = nib.load(path), nib.load(out)
    assert np.array_equal(written.affine, src.affine)
    for getter in ("get_qform", "get_sform"):
        (src_m, src_code), (out_m, out_code) = (getattr(img.header, getter)(coded=True) for img in (src, written))
        assert np.array_equal(out_m, src_m) and out_code == src_code
    assert written.header.get_zooms() == src.header.get_zooms()[:3]
    assert written.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(written.dataobj), labels.transpose(2, 1, 0))

    again, again_meta = read_nifti(out)
    assert np.array_equal(again_meta.affine, meta.affine)
    assert np.array_equal(again, labels)


def test_oblique_world_mapping_matches_nibabel(oblique_nifti: Path) -> None:
    img = nib.load(oblique_nifti)
    array, meta = read_nifti(oblique_nifti)
    assert array.shape == img.shape[::-1]
    i, j, k = 5, 7, 3
    assert array[k, j, i] == np.asanyarray(img.dataobj)[i, j, k]
    r, a, s = (img.affine @ [i, j, k, 1])[:3]
    # RAS -> LPS = (-r, -a, s), reversed to (S, P, L)
    np.testing.assert_allclose((meta.affine @ [k, j, i, 1])[:3], [s, -a, -r], atol=1e-9)
    assert not np.allclose(meta.direction, np.eye(3))  # really oblique


def test_4d_source_reads_time_first_and_writes_spatial_labels(nib_data: Path, tmp_path: Path) -> None:
    array, meta = read_nifti(nib_data / "example4d.nii.gz")
    assert array.shape == (2, 24, 96, 128) and meta.ndim == 3
    out = tmp_path / "lab.nii"
    write_nifti_labels(out, (array[0] > 0).astype(np.uint8), meta)
    written = nib.load(out)
    assert written.shape == (128, 96, 24)
    assert np.array_equal(written.affine, nib.load(nib_data / "example4d.nii.gz").affine)


def test_mismatched_labels_shape_names_both_shapes(anatomical_nifti: Path, tmp_path: Path) -> None:
    array, meta = read_nifti(anatomical_nifti)
    with pytest.raises(ValueError, match=r"\(25, 41, 30\).*\(25, 41, 33\)"):
        write_nifti_labels(tmp_path / "x.nii.gz", np.zeros((25, 41, 30), np.uint8), meta)


def test_meta_without_nifti_header_is_written_from_its_affine(tmp_path: Path) -> None:
    affine = np.array([[0, 0, 2.5, -10], [0, 0.7, 0, 20], [0.7, 0, 0, 30], [0, 0, 0, 1]], dtype=float)
    meta = ImageMeta.from_affine(affine, axes=("z", "y", "x"))
    labels = np.arange(24, dtype=np.int64).reshape(2, 3, 4) * 100  # needs int16
    out = tmp_path / "x.nii.gz"
    write_nifti_labels(out, labels, meta)
    img = nib.load(out)
    assert img.header.get_qform(coded=True)[1] == 1 and img.header.get_sform(coded=True)[1] == 1
    assert img.get_data_dtype() == np.int16
    again, again_meta = read_nifti(out)
    # a permuted (sagittal-like) affine comes back in display order; undone it is the written grid
    np.testing.assert_allclose(stored_affine(again_meta), affine, atol=1e-5)
    assert np.array_equal(to_stored(again, again_meta), labels)
    assert again.shape == (4, 3, 2)


def test_corrupt_nifti_raises_read_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken_scan.nii.gz"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(MedVitReadError, match="broken_scan.nii.gz"):
        read_nifti(bad)
