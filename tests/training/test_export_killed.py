"""An export killed with SIGKILL while it writes leaves the folder's previous files intact.

A child process runs ``medvit export`` into a folder that already holds a case; a wrapper around
``atomic_write`` (the real one still does the work) lets the chosen file's writer put half of its
bytes into the temporary file, tells the parent, and blocks there. The parent kills the child
with SIGKILL — no handler, no cleanup runs — and checks that every file that existed is
byte-identical and that nothing partial appeared under a final name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

CHILD = r"""
import sys, time
from pathlib import Path
import napari_medvit.io.frames as frames
import napari_medvit.training.export as export
from napari_medvit.io import _atomic
from napari_medvit.cli import main

target, ready = sys.argv[1], Path(sys.argv[2])
real = _atomic.atomic_write

def blocking(path, write_fn):
    if Path(path).name != target:
        return real(path, write_fn)
    def half_then_block(tmp):
        write_fn(tmp)
        data = Path(tmp).read_bytes()
        with open(tmp, "r+b") as f:  # interrupted midway: half of the bytes are on disk
            f.truncate(len(data) // 2)
            f.flush()
        ready.write_text(tmp)
        time.sleep(600)
    return real(path, half_then_block)

export.atomic_write = frames.atomic_write = blocking
sys.exit(main(["export", *sys.argv[3:]]))
"""


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def exported(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A folder with case ``c1`` exported, and a corrected mask to export again as ``c1``."""
    import skimage.io

    from napari_medvit.cli import main
    from napari_medvit.synthetic import generate_endoscopy_frame

    f = generate_endoscopy_frame(3, shape=(64, 80), n_polyps=1)
    image, mask, edited = tmp_path / "frame.png", tmp_path / "mask.png", tmp_path / "edited.png"
    skimage.io.imsave(image, f.image, check_contrast=False)
    skimage.io.imsave(mask, f.mask.astype(np.uint8), check_contrast=False)
    changed = f.mask.astype(np.uint8)
    changed[5:25, 5:25] = 1
    skimage.io.imsave(edited, changed, check_contrast=False)
    ds = tmp_path / "ds"
    assert main(["export", str(image), str(mask), "--dataset", str(ds), "--case", "c1"]) == 0
    return ds, image, edited


def kill_during(target: str, ds: Path, image: Path, edited: Path, tmp_path: Path) -> Path:
    """Export ``edited`` as case c1 in a child process, SIGKILLed while it writes ``target``;
    returns the interrupted write's temporary file."""
    ready = tmp_path / f"ready-{target}.txt"
    child = subprocess.Popen([sys.executable, "-c", CHILD, target, str(ready), str(image), str(edited),
                              "--dataset", str(ds), "--case", "c1"],
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), child.communicate(timeout=5) if child.poll() is not None else "child never got there"
        partial = Path(ready.read_text())
        assert partial.is_file() and partial.stat().st_size > 0  # the child is writing right now
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return partial


@pytest.mark.parametrize("target", ["c1_v2.png", "dataset.json"])
def test_a_killed_export_leaves_the_previous_files_intact(exported: tuple[Path, Path, Path], tmp_path: Path,
                                                          target: str) -> None:
    ds, image, edited = exported
    before = snapshot(ds)
    assert {"dataset.json", "labelsTr/c1.png", "imagesTr/c1_0000.png", "provenance/c1.json"} <= set(before)
    partial = kill_during(target, ds, image, edited, tmp_path)

    after = snapshot(ds)
    for name, data in before.items():  # every earlier file byte for byte, dataset.json included
        assert after[name] == data, name
    new = set(after) - set(before)
    # what the killed export finished before the kill is complete (written atomically, in this order) ...
    done = {"c1_v2.png": {"imagesTr/c1_v2_0000.png"},
            "dataset.json": {"imagesTr/c1_v2_0000.png", "labelsTr/c1_v2.png", "provenance/c1_v2.json"}}[target]
    assert done <= new
    # ... and the only other thing is the hidden temporary file of the interrupted write, never a final name
    leftovers = new - done
    assert leftovers == {str(partial.relative_to(ds))}
    assert partial.name.startswith(f".{target}.") and ".tmp" in partial.name
    if target == "c1_v2.png":
        import skimage.io

        assert not (ds / "labelsTr" / "c1_v2.png").exists()
        np.testing.assert_array_equal(skimage.io.imread(ds / "labelsTr" / "c1.png"),
                                      skimage.io.imread(image.parent / "mask.png"))


def test_the_next_export_ignores_the_leftover_temporary_file(exported: tuple[Path, Path, Path],
                                                             tmp_path: Path) -> None:
    import json

    from napari_medvit.cli import main

    ds, image, edited = exported
    kill_during("c1_v2.png", ds, image, edited, tmp_path)
    assert main(["export", str(image), str(edited), "--dataset", str(ds), "--case", "c2"]) == 0
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 2  # c1 and c2
    from napari_medvit.training.seg2d import load_cases

    assert [c[0] for c in load_cases(ds)] == ["c1", "c2"]  # training does not read the leftover either
