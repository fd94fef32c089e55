"""Screenshots of each demo checkpoint on its matching sample, through the inference dock (the user's path).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/demo/screenshots.py [MODEL ...] [--out docs]

Writes ``docs/demo_<model>.png``: napari with the sample open (Plugins > Open Sample), the dock's bundled
weights chosen by itself, and the overlay the run adds (mask, boxes or class probabilities).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SAMPLES = {
    "transfuse_demo": "endoscopy_polyp",
    "crossvit_demo": "endoscopy_polyp",
    "smca_detr_demo": "endoscopy_polyp",
    "swin_unetr_demo": "brain_flair_t1",
    "unetr_demo": "brain_flair_t1",
    "vosht_demo": "brain_flair_t1",
    "truenet_demo": "brain_flair_t1",
    "unet_demo": "brain_flair_t1",
    "daft": "dementia_subject",
    "resnet3d": "dementia_subject",
}


def shoot(model: str, out: Path) -> str:
    import napari
    from napari.layers import Image
    from qtpy.QtWidgets import QApplication

    from napari_medvit.models.manifest import bundled_checkpoints
    from napari_medvit.widgets import InferenceWidget

    if not bundled_checkpoints(model):
        return f"{model}: no demo weights shipped, skipped"
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    viewer.open_sample("napari-medvit", SAMPLES[model])
    images = {layer.name.split(" ")[0]: layer for layer in viewer.layers if isinstance(layer, Image)}
    widget = InferenceWidget(viewer, model=model)
    viewer.window.add_dock_widget(widget, name="MedViT inference", area="right")
    layer = images.get("FLAIR") or next(iter(images.values()))
    widget.image.value = layer
    if widget.channels:
        widget.channels[0].value = images["T1"]
    widget.run(layer=layer)
    app = QApplication.instance()
    while widget.running:
        app.processEvents()
    if layer.ndim == 3:  # the axial slice with the most mask voxels (else the middle one)
        import numpy as np
        from napari.layers import Labels

        from napari_medvit._layers import PREDICTION_KEY

        masks = [la for la in viewer.layers if isinstance(la, Labels) and PREDICTION_KEY in la.metadata]
        z = (int(np.argmax((np.asarray(masks[0].data) > 0).sum(axis=(1, 2)))) if masks
             else layer.data.shape[0] // 2)
        viewer.dims.set_point(0, float(layer.data_to_world((z, 0, 0))[0]))
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
    path = out / f"demo_{model}.png"
    viewer.screenshot(str(path), canvas_only=False)
    status = widget.status.value
    viewer.close()
    return f"{path}: {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(SAMPLES))
    parser.add_argument("--out", default="docs")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_API", "pyqt6")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        if model not in SAMPLES:
            print(f"unknown demo model {model!r}; choose from {', '.join(SAMPLES)}", file=sys.stderr)
            return 2
        print(shoot(model, out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
