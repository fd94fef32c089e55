"""How long does napari's event loop stall while a model runs? (needs a display: use xvfb-run -a)

    xvfb-run -a .venv/bin/python benchmarks/bench_ui_stall.py [--model transfuse_s] [--volume]

A 5 ms QTimer records when the event loop gets to run; the longest gap between ticks while the
worker builds the model and predicts is the worst stall a user would feel. Prints the figures.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="transfuse_s")
    parser.add_argument("--volume", action="store_true", help="run on the MNI152 volume (slice by slice)")
    args = parser.parse_args()

    import napari
    import numpy as np
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer()
    sample = "brain_mri" if args.volume else "endoscopy_polyp"
    layers = viewer.open_sample("napari-medvit", sample)
    image = next(layer for layer in layers if isinstance(layer, napari.layers.Image))
    if args.volume:  # every 4th axial slice keeps the run under a minute on 2 cores
        image = viewer.add_image(np.asarray(image.data)[::4], name="MNI152 T1 (every 4th slice)")
    _, widget = viewer.window.add_plugin_dock_widget("napari-medvit", "MedViT inference")

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()

    def report(label: str, seconds: float) -> None:
        gaps = np.diff(ticks) * 1000
        print(f"{label}: {seconds:.2f} s")
        print(f"  event-loop gaps ms: median {np.median(gaps):.1f}, p99 {np.percentile(gaps, 99):.1f}, "
              f"max {gaps.max():.1f}; gaps > 50 ms: {(gaps > 50).sum()} of {len(gaps)}")

    ticks.clear()
    t0 = time.perf_counter()
    while widget.prewarm_worker.is_running:  # torch/timm imported in the background when the dock opened
        QApplication.processEvents()
        time.sleep(0.001)
    report("background import of torch/timm after the dock opened", time.perf_counter() - t0)
    for label in ("first run (builds the model)", "second run (model kept by the widget)"):
        for _ in range(50):
            QApplication.processEvents()
            time.sleep(0.005)
        ticks.clear()
        t0 = time.perf_counter()
        widget.run(layer=image, model=args.model)
        while widget.running:
            QApplication.processEvents()
            time.sleep(0.001)
        report(f"{label}, {args.model} on {image.name} {tuple(image.data.shape)}, {widget.status.value}",
               time.perf_counter() - t0)
    timer.stop()
    viewer.close()


if __name__ == "__main__":
    main()
