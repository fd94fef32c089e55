"""Declared sizes are refused from the header, against the memory budget, before any large
allocation (a 125 KB file declaring 100 GB; a deflate TIFF of 66000 x 66000)."""

from __future__ import annotations

import gzip
import os
import struct
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image

from napari_medvit._reader import read_layers
from napari_medvit.io import ImageTooLargeError, MedVitReadError, read_image, set_memory_budget
from napari_medvit.io.limits import memory_budget, parse_size

DICOM_DATA = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"


@pytest.fixture(autouse=True)
def _default_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDVIT_MEMORY_BUDGET", raising=False)
    monkeypatch.delenv("MEDVIT_MEMORY_FRACTION", raising=False)
    set_memory_budget(None)
    yield
    set_memory_budget(None)


def _refused(path: Path, *needles: str) -> str:
    """Refused by both entry points with ImageTooLargeError, allocating at most a few MB."""
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError) as direct:
            read_image(path)
        with pytest.raises(ImageTooLargeError):
            read_layers(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(direct.value)
    assert isinstance(direct.value, MedVitReadError) and str(path) in message
    for needle in needles:
        assert needle in message, message
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MB allocated before refusing"
    return message


def test_a_small_nifti_declaring_100_gb_is_refused_from_its_header(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape((3000, 3000, 2800))  # 100.6 GB of float32
    path = tmp_path / "huge.nii.gz"
    with gzip.open(path, "wb") as f:  # the header and a few voxels: a file of a few hundred bytes
        f.write(header.binaryblock + b"\0" * 4 + b"\0" * 125_000)
    assert path.stat().st_size < 125_000
    message = _refused(path, "3000 x 3000 x 2800", "GB", "memory budget", "MEDVIT_MEMORY_BUDGET")
    assert "187.8 GB" in message  # the decoded voxels plus the reordered copy: 2 x 4 bytes a voxel


def _deflate_tiff_declaring(path: Path, height: int, width: int) -> None:
    """A real deflate TIFF whose header then declares height x width (the strip stays small)."""
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), compression="zlib", metadata=None)
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        fields = [(tags["ImageLength"], height), (tags["ImageWidth"], width), (tags["RowsPerStrip"], height)]
        patches = [(t.valueoffset, t.dtype, v) for t, v in fields]
    data = bytearray(path.read_bytes())
    for offset, dtype, value in patches:
        fmt = "<H" if int(dtype) == 3 else "<I"  # SHORT or LONG
        if fmt == "<H" and value > 0xFFFF:
            data[offset - 4 : offset - 2] = struct.pack("<H", 4)  # the type field becomes LONG
            fmt = "<I"
        struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


def test_a_deflate_tiff_of_66000_squared_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.tif"
    _deflate_tiff_declaring(path, 66000, 66000)
    assert path.stat().st_size < 125_000
    _refused(path, "66000 x 66000", "decompression bomb")


def test_a_tiff_within_the_pixel_limit_is_still_held_to_the_memory_budget(tmp_path: Path) -> None:
    path = tmp_path / "big.tif"
    _deflate_tiff_declaring(path, 8000, 8000)  # 61 MB of uint8
    set_memory_budget("16M")
    _refused(path, "8000 x 8000", "61.0 MB", "16.0 MB")


def test_png_decompression_bombs_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (20000, 20000)).save(path, optimize=True)  # 400 M pixels, a few hundred KB
    _refused(path, "decompression bomb", "400000000 pixels")


def test_a_dicom_declaring_many_frames_is_refused_before_decoding(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DICOM_DATA / "CT_small.dcm")
    ds.NumberOfFrames = 400000  # 128 x 128 x 400000 voxels as float64: 48.8 GB
    path = tmp_path / "frames.dcm"
    ds.save_as(path)
    _refused(path, "400000 x 128 x 128", "48.8 GB")


def test_the_budget_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 64), np.float32), np.eye(4)), path)  # 1 MB, 2 MB peak
    read_image(path)
    monkeypatch.setenv("MEDVIT_MEMORY_BUDGET", "1M")
    assert memory_budget() == 1 << 20
    _refused(path, "64 x 64 x 64", "1.0 MB")
    monkeypatch.setenv("MEDVIT_MEMORY_BUDGET", "4M")
    read_image(path)
    monkeypatch.delenv("MEDVIT_MEMORY_BUDGET")
    monkeypatch.setenv("MEDVIT_MEMORY_FRACTION", "1e-9")
    _refused(path, "64 x 64 x 64")
    set_memory_budget(10 << 20)  # in-process override wins over the environment
    read_image(path)


@pytest.mark.parametrize("text", ["lots", "-1G", "", "8X"])
def test_bad_budget_values_name_the_value(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="memory size"):
        parse_size(text)
    monkeypatch.setenv("MEDVIT_MEMORY_FRACTION", "two")
    with pytest.raises(ValueError, match="MEDVIT_MEMORY_FRACTION"):
        memory_budget()


@pytest.mark.parametrize(("text", "expected"), [("8G", 8 << 30), ("512 MB", 512 << 20), ("1.5g", 3 << 29),
                                                 ("1000", 1000), ("2KiB", 2048)])
def test_budget_sizes_parse(text: str, expected: int) -> None:
    assert parse_size(text) == expected
