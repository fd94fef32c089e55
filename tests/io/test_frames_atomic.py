from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.io

from napari_medvit.io import MedVitReadError, atomic_write, is_supported, read_frame, read_image, write_png_labels


def test_rgba_frame_drops_alpha_and_grey_stays_2d(tmp_path: Path) -> None:
    rgba = np.random.default_rng(1).integers(0, 255, (6, 8, 4), dtype=np.uint8)
    skimage.io.imsave(tmp_path / "f.png", rgba, check_contrast=False)
    array, meta = read_frame(tmp_path / "f.png")
    assert array.shape == (6, 8, 3) and meta.rgb and meta.axes == ("y", "x")
    assert np.array_equal(array, rgba[..., :3]) and meta.spacing == (1.0, 1.0)

    skimage.io.imsave(tmp_path / "g.tif", rgba[..., 0], check_contrast=False)
    grey, gmeta = read_image(tmp_path / "g.tif")
    assert grey.shape == (6, 8) and not gmeta.rgb


@pytest.mark.parametrize(("top", "dtype"), [(7, np.uint8), (300, np.uint16)])
def test_png_labels_round_trip_exact_values(tmp_path: Path, top: int, dtype: type) -> None:
    labels = np.zeros((5, 9), dtype=np.int64)
    labels[1:3, 2:6] = top
    labels[4, 8] = 1
    write_png_labels(tmp_path / "m.png", labels)
    back = skimage.io.imread(tmp_path / "m.png")
    assert back.dtype == dtype and np.array_equal(back, labels)


def test_png_labels_reject_3d_and_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"2D.*\(2, 3, 4\)"):
        write_png_labels(tmp_path / "m.png", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(ValueError, match="negative"):
        write_png_labels(tmp_path / "m.png", -np.ones((3, 3), np.int32))


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "labels.nii.gz"
    target.write_bytes(b"old content")
    seen: list[str] = []

    def failing(tmp: str) -> None:
        seen.append(tmp)
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing)
    assert seen[0].endswith(".nii.gz") and Path(seen[0]).parent == tmp_path
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz"]

    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"new"))
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


def test_unsupported_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert not is_supported(tmp_path / "notes.txt")
    assert not is_supported(tmp_path / "missing.nii.gz")
    assert not is_supported(tmp_path)
    with pytest.raises(MedVitReadError, match="notes.txt"):
        read_image(tmp_path / "notes.txt")
