"""Every orientation a scanner writes displays on its own geometry, and masks go back onto the
same voxels: all 48 signed axis permutations (NIfTI), sagittal and coronal DICOM series, in
napari's 2D and 3D views (see napari_medvit/io/orientation.py for the design)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from napari.layers import Image, Labels

from layer_checks import data_to_world_matrix
from napari_medvit._layers import layer_transform
from napari_medvit._reader import read_layers, transform_kwargs
from napari_medvit._writer import write_labels_nifti
from napari_medvit.io import META_KEY, ImageMeta, read_image, write_nifti_labels
from napari_medvit.io.nifti import nifti_image_like, nifti_to_world_affine
from napari_medvit.io.orientation import display_permutation, stored_affine, to_display_order, to_stored

DICOM_DATA = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"
STORED_SHAPE = (4, 5, 6)  # (i, j, k) as nibabel indexes the file
SPACING = (1.5, 2.0, 3.0)
SIGNED_PERMUTATIONS = [(p, s) for p in itertools.permutations(range(3)) for s in itertools.product((1, -1), repeat=3)]


def _ras_affine(perm: tuple[int, ...], signs: tuple[int, ...]) -> np.ndarray:
    """(i, j, k) -> RAS: voxel axis a runs along RAS axis perm[a] with sign signs[a]."""
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for a in range(3):
        affine[perm[a], a] = signs[a] * SPACING[a]
    affine[:3, 3] = (-10.0, 20.0, 5.0)
    return affine


def _write_case(tmp_path: Path, perm: tuple[int, ...], signs: tuple[int, ...], name: str = "scan") -> Path:
    data = np.arange(np.prod(STORED_SHAPE), dtype=np.int16).reshape(STORED_SHAPE)
    path = tmp_path / f"{name}.nii.gz"
    img = nib.Nifti1Image(data, _ras_affine(perm, signs))
    img.header.set_xyzt_units("mm")
    nib.save(img, path)
    return path


def _world_of_values(path: Path) -> dict[int, np.ndarray]:
    """For every voxel value of the file, the world (S, P, L) position of its voxel."""
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    ijk = np.indices(data.shape).reshape(3, -1)
    world = nifti_to_world_affine(img.affine) @ np.vstack([ijk[::-1], np.ones(ijk.shape[1])])
    return dict(zip(data.reshape(-1).tolist(), world[:3].T, strict=True))


def _check_display_grid(array: np.ndarray, meta: ImageMeta, path: Path) -> None:
    expected = _world_of_values(path)
    idx = np.indices(array.shape).reshape(3, -1)
    world = (meta.affine @ np.vstack([idx, np.ones(idx.shape[1])]))[:3].T
    got = np.asarray([expected[v] for v in array.reshape(-1).tolist()])
    np.testing.assert_allclose(world, got, atol=1e-6)
    # display order: every array axis runs along "its" world axis
    assert display_permutation(np.asarray(meta.direction)) == (0, 1, 2)
    assert np.allclose(np.abs(np.asarray(meta.direction)), np.eye(3))


@pytest.mark.parametrize(("perm", "signs"), SIGNED_PERMUTATIONS)
def test_nifti_in_any_axis_order_reads_in_display_order_and_writes_back_exactly(
    perm: tuple[int, ...], signs: tuple[int, ...], tmp_path: Path
) -> None:
    path = _write_case(tmp_path, perm, signs)
    array, meta = read_image(path)
    _check_display_grid(array, meta, path)
    stored_direction = nifti_to_world_affine(nib.load(path).affine)[:3, :3]
    assert ("reorient" in meta.extra) == (display_permutation(stored_direction) != (0, 1, 2))

    labels = (array % 7 == 3).astype(np.uint8) * 2  # drawn on the displayed grid
    out = write_nifti_labels(tmp_path / "mask.nii.gz", labels, meta)
    src, back = nib.load(path), nib.load(out)
    assert np.array_equal(back.affine, src.affine)
    assert np.array_equal(back.header.get_qform(), src.header.get_qform())
    assert np.array_equal(back.header.get_sform(), src.header.get_sform())
    stored = np.asarray(src.dataobj)
    assert np.array_equal(np.asarray(back.dataobj), (stored % 7 == 3).astype(np.uint8) * 2)
    # and the mask read again lands on the same display voxels
    again, again_meta = read_image(out)
    assert np.array_equal(again, labels) and np.allclose(again_meta.affine, meta.affine)


def test_exported_images_and_4d_series_keep_the_stored_voxel_order(tmp_path: Path) -> None:
    perm, signs = (2, 0, 1), (1, -1, 1)
    data = np.random.default_rng(0).normal(size=STORED_SHAPE + (3,)).astype(np.float32)
    path = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(data, _ras_affine(perm, signs)), path)
    array, meta = read_image(path)
    assert array.shape[0] == 3 and "reorient" in meta.extra  # (t, z, y, x) with t first
    assert np.array_equal(to_stored(array, meta).transpose(3, 2, 1, 0), data)
    nib.save(nifti_image_like(array[0], meta), tmp_path / "image.nii.gz")  # as the export writes images
    image = nib.load(tmp_path / "image.nii.gz")
    assert np.array_equal(image.affine, nib.load(path).affine)
    assert np.array_equal(np.asarray(image.dataobj), data[..., 0])
    labels = np.zeros((1,) + array.shape[1:], np.uint8)  # a mask on one time point
    labels[0, 1, 2, 3] = 1
    back = nib.load(write_nifti_labels(tmp_path / "m.nii", labels, meta))
    assert np.asarray(back.dataobj).sum() == 1 and np.array_equal(back.affine, nib.load(path).affine)


def test_to_display_order_is_a_no_op_for_axial_and_oblique_scans() -> None:
    angle = np.deg2rad(20)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    for direction in (np.eye(3), np.diag([1.0, -1.0, -1.0]), rotation):
        meta = ImageMeta(spacing=(1, 1, 1), origin=(0, 0, 0), direction=direction, axes=("z", "y", "x"))
        array = np.zeros((2, 3, 4))
        out, out_meta = to_display_order(array, meta)
        assert out is array and out_meta is meta
    # an oblique close to sagittal is reordered; the residual 20-degree rotation stays in the affine
    sagittal = np.eye(3)[:, [2, 0, 1]] @ rotation
    meta = ImageMeta(spacing=(1, 2, 3), origin=(0, 0, 0), direction=sagittal, axes=("z", "y", "x"))
    out, out_meta = to_display_order(np.zeros((2, 3, 4)), meta)
    assert out.shape == (3, 4, 2)
    assert np.allclose(stored_affine(out_meta), meta.affine)
    assert np.all(np.abs(np.diag(np.asarray(out_meta.direction))) > 0.9)


def test_transform_kwargs_compose_to_the_affine_for_every_flip_and_order() -> None:
    """napari's own decomposition loses reflections (a flipped scan was shown mirrored)."""
    from napari.utils.transforms import Affine

    for perm, signs in SIGNED_PERMUTATIONS:
        direction = np.eye(3)[:, list(perm)] * np.asarray(signs)
        meta = ImageMeta(spacing=SPACING, origin=(1, 2, 3), direction=direction, axes=("z", "y", "x"))
        kw = transform_kwargs(meta, 3)
        composed = Affine(scale=kw["scale"], translate=kw["translate"], rotate=kw["rotate"], shear=kw["shear"])
        np.testing.assert_allclose(composed.affine_matrix, meta.affine, atol=1e-9)
        assert np.isclose(np.linalg.det(kw["rotate"]), 1.0)
    with pytest.raises(ValueError, match="singular"):
        transform_kwargs(ImageMeta(spacing=(1, 1), origin=(0, 0), direction=((1, 0), (1, 0)), axes=("y", "x")), 2)


def test_2d_models_segment_the_acquired_slices_of_a_reordered_volume(tmp_path: Path, monkeypatch) -> None:
    """Not the reformatted strips of the display order: the slices the scanner acquired."""
    import torch

    from napari_medvit.inference import Predictor
    from napari_medvit.models import create_model

    data = np.random.default_rng(0).normal(size=(64, 32, 3)).astype(np.float32)  # 3 sagittal slices of 32 x 64
    path = tmp_path / "sagittal.nii.gz"
    nib.save(nib.Nifti1Image(data, _ras_affine((1, 2, 0), (1, 1, 1))), path)  # i -> A, j -> S, k -> R
    array, meta = read_image(path)
    assert array.shape == (32, 64, 3) and "reorient" in meta.extra  # (S, P, L): sagittal slices along L
    torch.manual_seed(0)
    predictor = Predictor(create_model("transfuse_tiny"), device="cpu")
    seen: list[tuple[int, ...]] = []
    from napari_medvit.inference.frames import FrameRunner

    run_batch = FrameRunner._batch
    monkeypatch.setattr(FrameRunner, "_batch", lambda self, b, rgb, maps: (seen.append(b.shape),
                                                                            run_batch(self, b, rgb, maps))[1])
    prediction = predictor.predict(array, meta)
    assert {s[1:] for s in seen} == {(32, 64)} and sum(s[0] for s in seen) == 3  # the 3 acquired slices
    assert prediction.labels.shape == array.shape and prediction.probabilities.shape == array.shape
    direct = predictor.predict(to_stored(array, meta), None)  # the same slices without any geometry
    assert np.array_equal(to_stored(prediction.labels, meta, rgb=False), direct.labels)
    for name, amap in prediction.attention.items():
        assert amap.shape == array.shape and np.allclose(to_stored(amap, meta, rgb=False), direct.attention[name])


def test_3d_models_see_the_same_volume_whatever_the_storage_order(tmp_path: Path) -> None:
    """The display order is the same for a subject stored axial or sagittal: so is the 3D model's input
    and result, and the written mask is in each file's own voxel order."""
    import torch

    from napari_medvit.inference import Predictor
    from napari_medvit.models import create_model

    xyz = np.random.default_rng(1).normal(size=(24, 32, 16)).astype(np.float32)  # (i, j, k) -> RAS x, y, z
    axial = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(xyz, axial), tmp_path / "axial.nii.gz")
    nib.save(nib.Nifti1Image(np.ascontiguousarray(xyz.transpose(1, 2, 0)), axial[:, [1, 2, 0, 3]]),
             tmp_path / "sagittal.nii.gz")  # stored (y, z, x): sagittal slices along x
    torch.manual_seed(0)
    predictor = Predictor(create_model("unetr_tiny_test"), device="cpu")
    results = {}
    for kind in ("axial", "sagittal"):
        array, meta = read_image(tmp_path / f"{kind}.nii.gz")
        prediction = predictor.predict(array, meta)
        results[kind] = (array, meta, prediction.labels)
        write_nifti_labels(tmp_path / f"{kind}_mask.nii.gz", prediction.labels, meta)
    (a_img, a_meta, a_lab), (s_img, s_meta, s_lab) = results["axial"], results["sagittal"]
    assert np.array_equal(a_img, s_img) and np.allclose(a_meta.affine, s_meta.affine)
    assert np.array_equal(a_lab, s_lab)
    a_file = np.asarray(nib.load(tmp_path / "axial_mask.nii.gz").dataobj)
    s_file = np.asarray(nib.load(tmp_path / "sagittal_mask.nii.gz").dataobj)
    assert s_file.shape == (32, 16, 24) and np.array_equal(s_file, a_file.transpose(1, 2, 0))


def test_a_mask_on_an_rgb_volume_stored_sagittal_writes_back(tmp_path: Path) -> None:
    rgb = np.zeros((5, 4, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"] = np.arange(60).reshape(5, 4, 3)
    path = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, _ras_affine((2, 0, 1), (1, -1, 1))), path)
    array, meta = read_image(path)
    assert meta.rgb and "reorient" in meta.extra and array.shape[-1] == 3
    labels = (array[..., 1] % 5 == 1).astype(np.uint8)
    back = nib.load(write_nifti_labels(tmp_path / "mask.nii.gz", labels, meta))
    assert np.array_equal(back.affine, nib.load(path).affine)
    assert np.array_equal(np.asarray(back.dataobj), (rgb["G"] % 5 == 1).astype(np.uint8))


# -- DICOM series stored sagittal and coronal ---------------------------------------------------
def _dicom_series(folder: Path, iop: list[float], n: int = 5) -> list[np.ndarray]:
    """n slices of CT_small with the given orientation, stacked along the slice normal."""
    folder.mkdir()
    r, c = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(r, c)
    base = pydicom.dcmread(DICOM_DATA / "CT_small.dcm")
    uid = pydicom.uid.generate_uid()
    positions = []
    for s in range(n):
        ds = base.copy()
        ipp = np.array([10.0, -20.0, 30.0]) + 2.5 * s * normal
        ds.ImageOrientationPatient = [f"{v:g}" for v in iop]
        ds.ImagePositionPatient = [f"{v:g}" for v in ipp]
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = s + 1
        ds.SliceThickness = "2.5"
        pixels = ds.pixel_array.copy()
        pixels[0, 0] = s  # a slice marker
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"slice{(s * 3) % n:03d}.dcm")  # file names in another order than positions
        positions.append(ipp)
    return positions


@pytest.mark.parametrize("iop", [[0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1], [0, -1, 0, 0, 0, -1]],
                         ids=["sagittal", "coronal", "sagittal-flipped"])
def test_sagittal_and_coronal_dicom_series_display_order_and_write_back(iop: list[float], tmp_path: Path) -> None:
    positions = _dicom_series(tmp_path / "series", iop)
    array, meta = read_image(tmp_path / "series")
    assert "reorient" in meta.extra
    assert np.allclose(np.abs(np.asarray(meta.direction)), np.eye(3))
    stored = to_stored(array, meta)  # (slice, row, col) sorted along the normal
    intercept = float(pydicom.dcmread(DICOM_DATA / "CT_small.dcm").RescaleIntercept)
    assert stored.shape[0] == 5 and [int(v - intercept) for v in stored[:, 0, 0]] == [0, 1, 2, 3, 4]
    r, c = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    row_sp, col_sp = (float(v) for v in pydicom.dcmread(DICOM_DATA / "CT_small.dcm").PixelSpacing)
    for s, row, col in [(0, 0, 0), (3, 7, 11), (4, 60, 2)]:
        lps = positions[s] + row * row_sp * c + col * col_sp * r
        idx = np.asarray([s, row, col])[np.asarray(meta.extra["reorient"]["permutation"])]
        assert array[tuple(int(i) for i in idx)] == stored[s, row, col]
        np.testing.assert_allclose((meta.affine @ np.append(idx, 1.0))[:3], lps[::-1], atol=1e-4)
    labels = np.zeros(array.shape, np.uint8)
    labels[tuple(int(i) for i in idx)] = 1
    back = nib.load(write_nifti_labels(tmp_path / "mask.nii.gz", labels, meta))
    (i, j, k), = np.argwhere(np.asarray(back.dataobj) == 1)
    ras = back.affine @ np.array([i, j, k, 1.0])
    np.testing.assert_allclose(ras[:3] * np.array([-1, -1, 1]), lps, atol=1e-3)  # RAS -> LPS
    assert (k, j, i) == (4, 60, 2)  # the file's voxel order is the series' own (slice, row, col)


# -- napari: 2D and 3D views, and the writer contribution ----------------------------------------
def test_every_signed_axis_permutation_displays_in_2d_and_3d_and_a_painted_voxel_writes_back(
    make_napari_viewer, tmp_path: Path
) -> None:
    viewer = make_napari_viewer(show=True)  # the canvas renders only when shown (Xvfb)
    cases = [("nifti", p, s) for p, s in SIGNED_PERMUTATIONS]
    _dicom_series(tmp_path / "sagittal", [0, 1, 0, 0, 0, -1], n=4)
    cases.append(("dicom", None, None))
    for n, (kind, perm, signs) in enumerate(cases):
        path = _write_case(tmp_path, perm, signs, name=f"case{n}") if kind == "nifti" else tmp_path / "sagittal"
        (data, kwargs, _), = read_layers(str(path))
        # drawn: every axis order, with no flip and with all three (a singular displayed block of the
        # transform aborted vispy; flips only change signs, which the transform check covers for all 48)
        drawn = kind == "dicom" or signs in ((1, 1, 1), (-1, -1, -1))
        image = viewer.add_image(data, **kwargs) if drawn else Image(data, **kwargs)
        meta = ImageMeta.from_dict(image.metadata[META_KEY])
        np.testing.assert_allclose(data_to_world_matrix(image), meta.affine, atol=1e-6)
        if drawn:
            for ndisplay in (2, 3):
                viewer.dims.ndisplay = ndisplay
                viewer.reset_view()
                shot = viewer.screenshot(canvas_only=True, flash=False)
                assert shot[..., :3].max() > 0, f"{path}: nothing drawn in {ndisplay}D"
            viewer.dims.ndisplay = 2
        # a correction painted in the viewer (the plugin's own label layers copy the image transform)
        labels = Labels(np.zeros(data.shape, np.uint8), metadata=dict(image.metadata), **layer_transform(image))
        voxel = tuple(s // 2 for s in data.shape)
        labels.data[voxel] = 5
        out = write_labels_nifti(str(tmp_path / f"mask{n}"), labels.data, {"metadata": labels.metadata})[0]
        back = nib.load(out)
        if kind == "nifti":
            src = nib.load(path)
            assert np.array_equal(back.affine, src.affine)
            (hit,) = np.argwhere(np.asarray(back.dataobj) == 5)
            assert np.asarray(src.dataobj)[tuple(hit)] == data[voxel]
        world_painted = image.data_to_world(voxel)
        (hit,) = np.argwhere(np.asarray(back.dataobj) == 5)
        x, y, z = (back.affine @ np.append(hit, 1.0))[:3]
        np.testing.assert_allclose((z, -y, -x), world_painted, atol=1e-4)  # RAS -> (S, P, L)
        viewer.layers.clear()
