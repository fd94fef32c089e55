"""The window never grows past the screen: docks keep a modest width, long messages wrap (and are cut,
their whole text in the tooltip), stacked docks scroll; the canvas keeps most of the width."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication, QLabel

from napari_medvit.widgets import CorrectionsWidget, FinetuneWidget, InferenceWidget, _layout
from napari_medvit.widgets._layout import MESSAGE_CHARS

# an error message of the kind torch gives (705 characters), and a checkpoint's long description
LONG = "MedViT: " + "Given groups=1, weight of size [12, 2, 2, 2, 2], expected input[1, 1, 96, 96, 96] to have 2 " \
       "channels, but got 1 channels instead " * 6


def _settle() -> None:
    for _ in range(5):
        QApplication.processEvents()


@pytest.mark.parametrize("size", [(1920, 1080), (1366, 768)])
def test_three_docks_and_long_messages_keep_the_window_on_screen(make_napari_viewer, qtbot, monkeypatch,
                                                                  size) -> None:
    width, height = size
    # the docks size themselves to the screen: a screen of this size, whatever the virtual display's is
    monkeypatch.setattr(_layout, "dock_width", lambda: int(min(_layout.MAX_DOCK_WIDTH, max(
        _layout.MIN_DOCK_WIDTH, _layout.SCREEN_FRACTION * width))))
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(width, height)
    viewer.add_image(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8), rgb=True, name="f")
    inference = InferenceWidget(viewer, model="smca_detr_demo")  # the longest weights description shipped
    corrections, finetune = CorrectionsWidget(viewer), FinetuneWidget(viewer)
    for name, dock in (("inference", inference), ("corrections", corrections), ("fine-tune", finetune)):
        viewer.window.add_dock_widget(dock, name=name, area="right")
    canvas = viewer.window._qt_viewer.canvas.native
    for label in (inference.status, corrections.message, finetune.status):
        label.value = LONG
        _settle()
        assert window.width() <= width and window.height() <= height, (window.width(), window.height())
        assert canvas.width() >= 0.55 * window.width(), (canvas.width(), window.width())
        assert label.value == LONG and label.native.toolTip() == LONG  # all of it kept
        assert len(QLabel.text(label.native)) == MESSAGE_CHARS  # on screen: cut, ending in "…"
    for dock in (inference, corrections, finetune):
        assert dock.native.width() <= 0.25 * width + 1
