from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_medvit.io.session import load_corrections, save_correction, session_key


def test_corrections_round_trip_per_source(tmp_path: Path) -> None:
    src = tmp_path / "frame.png"
    src.write_bytes(b"x")
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    save_correction(str(src), "TransFuse mask", labels, labels * 0, {"model": "transfuse_s"}, root=tmp_path / "s")
    save_correction(str(src), "TransFuse mask", labels + 1, labels * 0, {}, root=tmp_path / "s")  # overwritten
    (saved,) = load_corrections(str(src), root=tmp_path / "s")
    np.testing.assert_array_equal(saved.labels, labels + 1)
    assert saved.name == "TransFuse mask" and saved.info["saved"]
    assert load_corrections(str(tmp_path / "other.png"), root=tmp_path / "s") == []
    assert session_key(str(src)) == session_key(str(src.resolve()))
    (tmp_path / "s" / session_key(str(src)) / "broken.npz").write_bytes(b"junk")
    assert len(load_corrections(str(src), root=tmp_path / "s")) == 1
