"""One-click commands: "Run TransFuse" from the Layers > Segment menu and the Plugins menu."""

from __future__ import annotations

from napari.layers import Image
from napari.viewer import Viewer

from napari_medvit._layers import PREDICTION_KEY
from napari_medvit.widgets.inference import InferenceWidget

PLUGIN = "napari-medvit"
INFERENCE_WIDGET = "MedViT inference"


def selected_image(viewer: Viewer) -> Image | None:
    """The active image layer, else the top-most image that is not one of our outputs."""
    active = viewer.layers.selection.active
    if isinstance(active, Image) and PREDICTION_KEY not in active.metadata:
        return active
    for layer in reversed(viewer.layers):
        if isinstance(layer, Image) and PREDICTION_KEY not in layer.metadata:
            return layer
    return None


def one_click_transfuse() -> str:
    """The TransFuse the one-click commands run: the best configuration with weights on this machine (the
    user's official-configuration weights, else the shipped demo weights; :mod:`napari_medvit.models.weights`),
    TransFuse-S untrained only when there are none at all."""
    from napari_medvit.models.weights import best_weights

    best = best_weights()
    return best.model if best is not None else "transfuse_s"


def run_transfuse(viewer: Viewer) -> InferenceWidget:
    """Dock (or reuse) the inference widget and run the best TransFuse on the selected image in the background;
    the dock shows which model and weights ran, and so does the mask's name (``TransFuse mask (demo)``)."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, INFERENCE_WIDGET)
    widget.run(layer=selected_image(viewer), model=one_click_transfuse())
    return widget


class RunTransFuseWidget(InferenceWidget):
    """Plugins > MedViT > Run TransFuse: the inference widget, preset to the best TransFuse, started at once.

    A class rather than a factory function: napari hands the viewer to dock widgets by
    inspecting ``__init__``.
    """

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__(napari_viewer, model=one_click_transfuse(), autorun=True)
