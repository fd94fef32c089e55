"""Seeded byte mutations of a NIfTI, a DICOM and a PNG: only the project's error types escape.

Each mutated file goes through the napari reader contribution (``read_layers``: read, validate,
layer data); it either opens as valid layer data or raises :class:`MedVitReadError`. The memory
budget is small so that a mutated header declaring gigabytes is refused, never allocated.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from napari.layers import Layer
from PIL import Image

from napari_medvit._reader import read_layers
from napari_medvit.io import MedVitReadError, set_memory_budget

DICOM_DATA = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"
CASES_PER_FORMAT = 200
TIME_LIMIT_S = 60.0  # per format: the loop stops early rather than let the suite run long


def _base_files(folder: Path) -> dict[str, tuple[Path, int]]:
    """Each format's seed file and the size of its header region (where mutations matter most)."""
    nifti = folder / "seed.nii"
    img = nib.Nifti1Image(np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8), np.diag([1.5, 2.0, 2.5, 1.0]))
    img.header.set_qform(img.affine, code=1)
    nib.save(img, nifti)
    png = folder / "seed.png"
    Image.fromarray((np.arange(24 * 32).reshape(24, 32) % 251).astype(np.uint8)).convert("RGB").save(png)
    return {"nifti": (nifti, 352), "dicom": (DICOM_DATA / "CT_small.dcm", 2048), "png": (png, 64)}


def _mutate(data: bytes, header: int, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:  # truncate
        return bytes(out[: int(rng.integers(0, len(out)))])
    n = int(rng.integers(1, 9))
    region = header if rng.random() < 0.8 else len(out)
    for _ in range(n):
        i = int(rng.integers(0, min(region, len(out))))
        if kind == 1:
            out[i] = int(rng.integers(256))  # random byte
        elif kind == 2:
            out[i] ^= 1 << int(rng.integers(8))  # bit flip
        else:
            out[i] = int(rng.choice([0x00, 0xFF, 0x7F, 0x80]))  # boundary values
    return bytes(out)


@pytest.mark.parametrize("fmt", ["nifti", "dicom", "png"])
def test_mutated_files_raise_only_the_projects_errors(fmt: str, tmp_path: Path) -> None:
    seed, header = _base_files(tmp_path)[fmt]
    original = seed.read_bytes()
    rng = np.random.default_rng({"nifti": 11, "dicom": 12, "png": 13}[fmt])
    set_memory_budget("64M")
    outcomes = {"opened": 0, "refused": 0}
    start = time.perf_counter()
    try:
        for n in range(CASES_PER_FORMAT):
            if time.perf_counter() - start > TIME_LIMIT_S:
                break
            path = tmp_path / f"case{n}{seed.suffix}"
            path.write_bytes(_mutate(original, header, rng))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    layers = read_layers(str(path))
                except MedVitReadError as exc:
                    assert str(path) in str(exc), f"case {n}: the message does not name the file: {exc}"
                    outcomes["refused"] += 1
                    continue
                except Exception as exc:  # any other exception: the point of the test
                    pytest.fail(f"case {n} ({path.name}): {type(exc).__name__} escaped: {exc}")
                for data, kwargs, kind in layers:  # what opened is layer data napari accepts
                    layer = Layer.create(data, kwargs, kind)
                    assert np.all(np.isfinite(layer._data_to_world.affine_matrix))
                    assert data.size > 0 and data.dtype.kind in "biuf"
                    if not layer.rgb:
                        lo, hi = layer.contrast_limits
                        assert np.isfinite(lo) and np.isfinite(hi) and lo < hi
            outcomes["opened"] += 1
            path.unlink()
    finally:
        set_memory_budget(None)
    assert sum(outcomes.values()) >= 150, outcomes  # the budget did not cut the run short
    assert outcomes["refused"] > 0, outcomes  # the mutations do reach the error paths
