"""Qt/magicgui widgets and viewer commands: the only package that imports qtpy, magicgui or napari.qt."""

from napari_medvit.widgets.commands import RunTransFuseWidget, run_transfuse
from napari_medvit.widgets.corrections import CorrectionsWidget
from napari_medvit.widgets.inference import InferenceWidget

__all__ = ["CorrectionsWidget", "InferenceWidget", "RunTransFuseWidget", "run_transfuse"]
