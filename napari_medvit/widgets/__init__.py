"""Qt/magicgui widgets and viewer commands: the only package that imports qtpy, magicgui or napari.qt."""

from napari_medvit.widgets.commands import run_transfuse, run_transfuse_widget
from napari_medvit.widgets.inference import InferenceWidget

__all__ = ["InferenceWidget", "run_transfuse", "run_transfuse_widget"]
