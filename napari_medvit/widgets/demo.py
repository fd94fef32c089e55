"""The README's first command: napari with the sample endoscopy frame and TransFuse run on it.

    python -m napari_medvit.widgets.demo                      # interactive
    python -m napari_medvit.widgets.demo --screenshot out.png # headless check: waits, saves, quits
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medvit-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="registered model name (default: the best TransFuse with weights here, as Run TransFuse "
                             "chooses: yours, else the shipped demo weights)")
    parser.add_argument("--checkpoint", default="", help="checkpoint file for the model (default: the model's "
                                                         "weights: yours, else shipped; else untrained)")
    parser.add_argument("--screenshot", default="", help="save a screenshot of the window here once done, then quit")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the run with --screenshot")
    args = parser.parse_args(argv)
    if args.model is None:  # as the one-click command: the best TransFuse with weights here
        from napari_medvit.widgets.commands import one_click_transfuse

        args.model = one_click_transfuse()

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-medvit demo")
    viewer.window.resize(1400, 900)
    layers = viewer.open_sample("napari-medvit", "endoscopy_polyp")
    image = next(layer for layer in layers if isinstance(layer, napari.layers.Image))
    viewer.layers.selection.active = image
    _, widget = viewer.window.add_plugin_dock_widget("napari-medvit", "MedViT inference")
    if args.checkpoint:
        widget.use_checkpoint(args.checkpoint)
    widget.run(layer=image, model=args.model)
    viewer.reset_view()

    if not args.screenshot:
        napari.run()
        return 0
    deadline = time.monotonic() + args.timeout
    while widget.running and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.05)
    if widget.running:
        print(f"medvit-demo: the run did not finish within {args.timeout:.0f} s", file=sys.stderr)
        return 1
    viewer.reset_view()  # fit the image to the canvas of the resized window
    for _ in range(20):  # let the canvas draw the new layers
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.screenshot(args.screenshot, canvas_only=False)
    print(f"medvit-demo: {widget.status.value}; layers: {[layer.name for layer in viewer.layers]}")
    print(f"medvit-demo: screenshot saved to {args.screenshot}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
