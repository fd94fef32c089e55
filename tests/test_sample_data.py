"""The npe2 sample-data contributions: layer types, shapes, geometry and metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_medvit import _sample_data
from napari_medvit.io import META_KEY, ImageMeta

REPO_SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"


def _meta(kwargs: dict) -> ImageMeta:
    assert META_KEY in kwargs["metadata"]
    return ImageMeta.from_dict(kwargs["metadata"][META_KEY])


def test_sample_dir_is_the_repository_folder() -> None:
    assert _sample_data.SAMPLE_DIR.resolve() == REPO_SAMPLE_DIR.resolve()


def test_endoscopy_frame_layers() -> None:
    layers = _sample_data.endoscopy_frame()
    assert [t for _, _, t in layers] == ["image", "labels"]
    (image, ikw, _), (labels, lkw, _) = layers
    assert image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8
    assert ikw["rgb"] is True
    assert ikw["name"] == "endoscopy polyp (synthetic)"
    meta = _meta(ikw)
    assert meta.rgb and meta.ndim == 2
    # the ground truth is aligned with the frame
    assert labels.shape == image.shape[:2]
    assert labels.dtype.kind in "iu"
    assert set(np.unique(labels).tolist()) == {0, 1}
    assert lkw["name"] == "polyp ground truth"
    assert lkw["visible"] is False
    assert 0.3 <= lkw["opacity"] <= 0.5
    assert lkw["metadata"][META_KEY] == ikw["metadata"][META_KEY]
    for key in ("scale", "translate", "rotate", "shear", "affine"):
        if key in ikw:
            np.testing.assert_allclose(np.asarray(lkw[key]), np.asarray(ikw[key]))


def test_endoscopy_labels_match_the_generator() -> None:
    from napari_medvit.synthetic import SAMPLE_FRAME_SEED, SAMPLE_FRAME_SHAPE, generate_endoscopy_frame

    (_, _, _), (labels, _, _) = _sample_data.endoscopy_frame()
    frame = generate_endoscopy_frame(SAMPLE_FRAME_SEED, SAMPLE_FRAME_SHAPE, n_polyps=1)
    np.testing.assert_array_equal(labels, frame.mask)


def test_brain_mri_layer() -> None:
    nib = pytest.importorskip("nibabel")
    layers = _sample_data.brain_mri()
    assert len(layers) == 1
    data, kwargs, layer_type = layers[0]
    assert layer_type == "image"
    assert kwargs["name"] == "MNI152 T1"
    assert data.ndim == 3
    header = nib.load(_sample_data.SAMPLE_DIR / _sample_data.BRAIN_MRI_FILE).header
    assert sorted(data.shape) == sorted(header.get_data_shape())
    meta = _meta(kwargs)
    assert meta.ndim == 3 and not meta.rgb
    np.testing.assert_allclose(meta.spacing, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(np.abs(np.asarray(kwargs["scale"], dtype=float)), (1.0, 1.0, 1.0))
    lo, hi = kwargs["contrast_limits"]
    assert hi > lo


def test_ct_slice_layer() -> None:
    pydicom = pytest.importorskip("pydicom")
    layers = _sample_data.ct_slice()
    assert len(layers) == 1
    data, kwargs, layer_type = layers[0]
    assert layer_type == "image"
    assert kwargs["name"] == "CT_small"
    assert data.shape == (128, 128)
    ds = pydicom.dcmread(_sample_data.SAMPLE_DIR / _sample_data.CT_FILE, stop_before_pixels=True)
    row, col = (float(v) for v in ds.PixelSpacing)
    meta = _meta(kwargs)
    assert meta.ndim == 2
    np.testing.assert_allclose(meta.spacing, (row, col), rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.asarray(kwargs["scale"], dtype=float)), (row, col), rtol=1e-6)


@pytest.mark.parametrize("function", ["endoscopy_frame", "brain_mri", "ct_slice", "synthetic_brain_flair_t1",
                                      "synthetic_dementia_subject"])
def test_layers_build_in_napari(function: str) -> None:
    layers_mod = pytest.importorskip("napari.layers")
    built = [layers_mod.Layer.create(*t) for t in getattr(_sample_data, function)()]
    ref = built[0]._data_to_world.affine_matrix
    for layer in built:
        assert META_KEY in layer.metadata
        np.testing.assert_allclose(layer._data_to_world.affine_matrix, ref)


@pytest.mark.parametrize("function, missing", [
    ("endoscopy_frame", "endoscopy_polyp.png"),
    ("brain_mri", "mni152_t1_1mm.nii.gz"),
    ("ct_slice", "CT_small.dcm"),
])
def test_missing_file_names_it(function: str, missing: str, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sample_data, "SAMPLE_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        getattr(_sample_data, function)()


def test_missing_mask_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "endoscopy_polyp.png").write_bytes((REPO_SAMPLE_DIR / "endoscopy_polyp.png").read_bytes())
    monkeypatch.setattr(_sample_data, "SAMPLE_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"endoscopy_polyp_mask\.png"):
        _sample_data.endoscopy_frame()


def test_manifest_sample_commands_resolve() -> None:
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(Path(_sample_data.__file__).with_name("napari.yaml"))
    commands = {c.id: c.python_name for c in manifest.contributions.commands or []}
    keys = set()
    for sample in manifest.contributions.sample_data or []:
        module, _, attr = commands[sample.command].partition(":")
        assert module == "napari_medvit._sample_data"
        assert callable(getattr(_sample_data, attr))
        keys.add(sample.key)
    assert keys == {"endoscopy_polyp", "brain_mri", "ct_slice", "brain_flair_t1", "dementia_subject"}


def test_synthetic_flair_t1_sample_is_the_generators_subject_on_its_mni_geometry() -> None:
    from napari_medvit.synthetic import generate_brain_case

    t1, flair, truth = _sample_data.synthetic_brain_flair_t1()
    case = generate_brain_case(_sample_data.BRAIN_SAMPLE_SEED, spacing=2.0)
    assert [t[2] for t in (t1, flair, truth)] == ["image", "image", "labels"]
    np.testing.assert_array_equal(flair[0], case.flair)
    np.testing.assert_array_equal(t1[0], case.t1)
    np.testing.assert_array_equal(truth[0], case.mask)
    assert flair[1].get("visible", True) and t1[1]["visible"] is False and truth[1]["visible"] is False
    meta = _meta(flair[1])
    np.testing.assert_allclose(meta.spacing, (2.0, 2.0, 2.0))
    centre = np.array(case.mask.shape) // 2  # the voxel -> MNI152 RAS mm of the generator, as LPS world (S, P, L)
    ras = case.affine @ np.r_[centre, 1.0]
    world = meta.affine @ np.r_[centre, 1.0]
    np.testing.assert_allclose(world[:3], [ras[2], -ras[1], -ras[0]], atol=1e-6)
    assert truth[1]["metadata"]["medvit_ground_truth"]["lesion_volume_ml"] > 1.0


def test_synthetic_dementia_sample_carries_its_tabular_row_and_diagnosis() -> None:
    from napari_medvit.synthetic import generate_dementia_case

    ((data, kwargs, layer_type),) = _sample_data.synthetic_dementia_subject()
    case = generate_dementia_case(_sample_data.DEMENTIA_SAMPLE_SEED)
    assert layer_type == "image" and data.shape == (64, 64, 64)
    np.testing.assert_array_equal(data, case.image)
    assert kwargs["metadata"]["medvit_tabular"] == case.tabular
    assert kwargs["metadata"]["medvit_ground_truth"]["diagnosis"] == case.label in kwargs["name"]
