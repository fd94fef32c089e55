"""Qt/magicgui widgets and viewer commands: the only package that imports qtpy, magicgui or napari.qt."""

from napari_medvit.widgets.commands import RunTransFuseWidget, run_transfuse
from napari_medvit.widgets.corrections import CorrectionsWidget
from napari_medvit.widgets.finetune import FinetuneWidget
from napari_medvit.widgets.inference import InferenceWidget

__all__ = ["CorrectionsWidget", "FinetuneWidget", "InferenceWidget", "RunTransFuseWidget", "run_transfuse"]
