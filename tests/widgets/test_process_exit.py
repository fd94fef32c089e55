"""Every run leaves a clean process exit: finished or cancelled, inference (2D, 3D sliding window) and
fine-tuning, and also napari closed while a run is still going.

Each case runs napari in a child process (on the display pytest-xvfb gives this one) and checks its
exit code and stderr: a worker thread still inside torch when Python exits aborts the process
("terminate called without an active exception", exit code 134).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import napari_medvit

CHILD = r'''
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1)
import napari  # noqa: E402
from qtpy.QtCore import QTimer  # noqa: E402

scenario, ending, workdir = sys.argv[1], sys.argv[2], sys.argv[3]
viewer = napari.Viewer(show=False)
app = napari.qt.get_qapp()
seen = []


def pump(cond, what, timeout=90.0):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            print(f"CHILD TIMEOUT waiting for {what}", flush=True)
            sys.exit(3)
        app.processEvents()
        time.sleep(0.005)


if scenario.startswith("finetune"):
    from pathlib import Path

    from napari_medvit.io import ImageMeta
    from napari_medvit.synthetic import generate_endoscopy_frame
    from napari_medvit.training.export import export_case
    from napari_medvit.widgets import FinetuneWidget

    ds = Path(workdir) / "ds"
    for seed in range(4):
        f = generate_endoscopy_frame(seed, shape=(64, 96), n_polyps=1)
        export_case(ds, f"f{seed}", f.image, ImageMeta.identity(2, rgb=True), f.mask,
                    label_names={"background": 0, "polyp": 1})
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.dataset.value, widget.out.value = ds, Path(workdir) / "run"
    widget.model.value, widget.epochs.value, widget.batch.value = "transfuse_tiny", 50, 2
    widget.device.value, widget.augment.value, widget.val.value = "cpu", "none", 0.5  # 2 cases validate
    worker = widget.start()
else:
    from napari_medvit.widgets import InferenceWidget

    if scenario == "finish2d":
        image = viewer.add_image(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8), rgb=True)
        model = "transfuse_tiny"
    else:  # 3D sliding window: 27 windows of 32^3
        image = viewer.add_image(np.random.default_rng(0).normal(size=(64, 64, 64)).astype(np.float32))
        model = "unetr_tiny_test"
    widget = InferenceWidget(viewer, model=model)
    viewer.window.add_dock_widget(widget)
    worker = widget.run(layer=image)
assert worker is not None, widget.status.value
worker.yielded.connect(seen.append)


def under_way():  # a training step or a sliding window is done: the run is in torch now
    return any(getattr(e, "kind", "") == "step" or (getattr(e, "message", "").endswith("window") and e.done >= 1)
               for e in seen)


if scenario.endswith(("cancel", "running")):
    pump(lambda: under_way() or not widget.running, "the first step or window")
    if not under_way():
        print(f"CHILD the run ended before its first step or window: {widget.status.value!r}", flush=True)
        sys.exit(4)
if scenario.endswith("cancel"):
    widget.cancel()
    pump(lambda: not widget.running, "the cancelled run to end")
elif not scenario.endswith("running"):
    pump(lambda: not widget.running, "the run to finish")
print(f"CHILD running={widget.running} status={widget.status.value!r}", flush=True)
if ending == "close":
    viewer.close()
elif ending == "quit":  # the event loop ends, as in napari.run() when the last window is closed
    QTimer.singleShot(0, app.quit)
    app.exec()
# "exit": the interpreter exits with the viewer (and a run, perhaps) still there
print("CHILD end", flush=True)
'''

# what a clean exit never prints: an abort, a Qt thread destroyed while running, an error, or a
# worker that was still running while Python tore its Qt objects down
FORBIDDEN = ("terminate called", "Aborted", "QThread: Destroyed", "Traceback", "has been deleted",
             "did not stop within")

CASES = {
    "cancelled 3D run, then viewer.close()": ("3d-cancel", "close", "status='cancelled'"),
    "cancelled 3D run, then the event loop quits": ("3d-cancel", "quit", "status='cancelled'"),
    "finished 2D run, then viewer.close()": ("finish2d", "close", "status='done in"),
    "viewer.close() while a 3D run is still running": ("3d-running", "close", "running=True"),
    "Python exits while a 3D run is still running": ("3d-running", "exit", "running=True"),
    "cancelled fine-tuning, then viewer.close()": ("finetune-cancel", "close", "status='cancelled"),
    "viewer.close() while fine-tuning is still running": ("finetune-running", "close", "running=True"),
}


TIMEOUT_S = 240  # per child; they run side by side (start-up is most of a child's ~8 s)
PARALLEL = 4


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int | None, str, str]]:
    """Every case's (exit code, stdout, stderr), the children run side by side to keep the suite short."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        pytest.skip("needs a display (run under pytest-xvfb, as scripts/test.sh does)")
    root = tmp_path_factory.mktemp("exit")
    script = root / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ)  # the display (pytest-xvfb's), QT_API, the temporary settings folders
    package_root = str(Path(napari_medvit.__file__).resolve().parents[1])  # the child imports this same copy
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    pending = list(CASES.items())
    running: dict[str, tuple[subprocess.Popen[str], float]] = {}
    results: dict[str, tuple[int | None, str, str]] = {}
    while pending or running:
        while pending and len(running) < PARALLEL:
            case, (scenario, ending, _) = pending.pop(0)
            work = root / f"case{len(results) + len(running)}"
            work.mkdir()
            proc = subprocess.Popen([sys.executable, str(script), scenario, ending, str(work)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            running[case] = (proc, time.monotonic())
        for case, (proc, started) in list(running.items()):
            try:
                out, err = proc.communicate(timeout=0.2)
            except subprocess.TimeoutExpired:
                if time.monotonic() - started < TIMEOUT_S:
                    continue
                proc.kill()
                out, err = proc.communicate()
                results[case] = (None, out, err)
            else:
                results[case] = (proc.returncode, out, err)
            del running[case]
    return results


@pytest.mark.parametrize("case", list(CASES))
def test_the_process_exits_cleanly(case: str, outcomes: dict[str, tuple[int | None, str, str]]) -> None:
    _, _, expected = CASES[case]
    code, stdout, stderr = outcomes[case]
    report = f"{case}: exit code {code}\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
    assert code is not None, f"the process did not end within {TIMEOUT_S} s\n{report}"
    assert expected in stdout, report  # the run was in the state the case is about when napari closed
    assert "CHILD end" in stdout, report
    assert code == 0, report
    found = [text for text in FORBIDDEN if text in stderr]
    assert not found, f"{found} on stderr\n{report}"
