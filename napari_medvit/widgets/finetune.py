"""Dock widget "MedViT fine-tune": train on exported or accepted corrections with live curves, promote safely.

Every registered model can be fine-tuned; the task kind (2D/3D segmentation, classification with
or without DAFT's tabular rows, detection) and its validation metric (Dice, balanced accuracy,
AP50) follow from the model. The data is an export folder, or the corrections accepted in this
session, which are exported into ``<run folder>/session_data`` first (by the corrections core). A
promoted version is announced on the viewer's session (``promoted``): the inference docks use it.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import pyqtgraph as pg
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, Label, PushButton, SpinBox
from napari.utils.notifications import show_warning
from napari.viewer import Viewer

from napari_medvit._session import session_for
from napari_medvit.corrections import accepted_records, export_accepted
from napari_medvit.inference.options import AUGMENTATIONS, DEVICES, PRECISIONS
from napari_medvit.models import get_spec, list_models
from napari_medvit.widgets._layout import ScrollingDock, fit_dock
from napari_medvit.widgets._workers import Runs, start_generator_run

FROM_FOLDER = "an export folder"
FROM_SESSION = "accepted corrections of this session"
_TASK_NAMES = {"segment": "segmentation", "classify": "classification", "detect": "detection"}


class TrainingCurves(pg.PlotWidget):
    """The validation metric per epoch on the left axis (0-1: Dice, balanced accuracy, AP50), the base
    model's figure as a dashed line, and the mean training loss on its own right axis, since a loss
    (e.g. SMCA-DETR's set loss of ~10) would flatten a 0-1 metric on a shared one."""

    def __init__(self) -> None:
        super().__init__(background=None)
        self.setMinimumHeight(180)
        plot = self.getPlotItem()
        self.legend = self.addLegend(offset=(5, 5))
        plot.setLabel("bottom", "epoch")
        plot.setLabel("left", "validation metric")
        plot.setYRange(0.0, 1.0, padding=0.03)
        plot.enableAutoRange(axis="y", enable=False)
        plot.showAxis("right")
        plot.setLabel("right", "train loss")
        self.loss_view = pg.ViewBox()
        plot.scene().addItem(self.loss_view)
        plot.getAxis("right").linkToView(self.loss_view)
        self.loss_view.setXLink(plot)
        plot.vb.sigResized.connect(self._sync_views)
        self.loss = pg.PlotDataItem([], [], pen=pg.mkPen(230, 140, 60, width=2), symbol="s", symbolSize=5,
                                    symbolBrush=(230, 140, 60), name="train loss")
        self.loss_view.addItem(self.loss)
        self.score = self.plot([], [], pen=pg.mkPen(80, 160, 230, width=2), symbol="o", symbolSize=6,
                               symbolBrush=(80, 160, 230), name="validation metric")
        self.base = self.plot([], [], pen=pg.mkPen(150, 150, 150, style=pg.QtCore.Qt.PenStyle.DashLine),
                              name="base model")
        self.legend.clear()
        for curve, label in ((self.loss, "train loss"), (self.score, "validation metric"), (self.base, "base model")):
            self.legend.addItem(curve, label)
        self.metric = ""
        self.epochs: list[tuple[int, float, float]] = []

    def _sync_views(self) -> None:
        plot = self.getPlotItem()
        self.loss_view.setGeometry(plot.vb.sceneBoundingRect())
        self.loss_view.linkedViewChanged(plot.vb, self.loss_view.XAxis)

    def reset(self) -> None:
        self.epochs = []
        for curve in (self.loss, self.score, self.base):
            curve.setData([], [])

    def set_metric(self, name: str) -> None:
        """Name the validation curves after the task's metric (Dice, balanced accuracy, AP50)."""
        self.metric = name
        self.getPlotItem().setLabel("left", f"validation {name}")
        self.legend.clear()
        for curve, label in ((self.loss, "train loss"), (self.score, f"validation {name}"),
                             (self.base, f"base model's {name}")):
            self.legend.addItem(curve, label)

    def add_epoch(self, epoch: int, score: float, loss: float) -> None:
        self.epochs.append((epoch, score, loss))
        xs = [e[0] for e in self.epochs]
        self.score.setData(xs, [e[1] for e in self.epochs])
        self.loss.setData(xs, [e[2] for e in self.epochs])
        self.loss_view.enableAutoRange(axis=pg.ViewBox.YAxis)
        self.getPlotItem().setXRange(0, max(max(xs), 1), padding=0.03)

    def set_base(self, score: float, epochs: int) -> None:
        self.base.setData([0, max(epochs, 1)], [score, score])
        self.getPlotItem().setXRange(0, max(epochs, 1), padding=0.03)


def _model_choices() -> list[tuple[str, str]]:
    choices = []
    for name in list_models():
        spec = get_spec(name)
        choices.append((f"{spec.display_name} — {spec.dims}D {_TASK_NAMES.get(spec.task, spec.task)}", name))
    return choices


class FinetuneWidget(ScrollingDock):
    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.source = ComboBox(label="data", choices=[FROM_FOLDER, FROM_SESSION], value=FROM_FOLDER)
        self.dataset = FileEdit(label="export folder", mode="d", value="")
        self.out = FileEdit(label="run folder", mode="d", value="")
        self.model = ComboBox(label="model", choices=_model_choices(), value="transfuse_s")
        self.base = FileEdit(label="base checkpoint", mode="r", filter="*.safetensors *.pt *.pth", value="")
        self.epochs = SpinBox(label="epochs", min=1, max=1000, value=10)
        self.lr = FloatSpinBox(label="learning rate", min=0.0, max=1.0, step=1e-5, value=0.0)
        self.lr.native.setDecimals(7)
        self.lr.native.setSpecialValueText("the paper's")  # shown at 0: the task's default rate
        self.batch = SpinBox(label="batch size", min=1, max=256, value=4)
        self.val = FloatSpinBox(label="validation fraction", min=0.05, max=0.9, step=0.05, value=0.25)
        self.seed = SpinBox(label="split seed", min=0, max=10_000, value=0)
        self.patience = SpinBox(label="early stopping after", min=1, max=1000, value=5,
                                tooltip="epochs without a better validation figure")
        self.augment = ComboBox(label="augmentation", choices=list(AUGMENTATIONS), value="standard",
                                tooltip="none; flips; standard = flips, rotation/scaling and intensity jitter")
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto")
        self.precision = ComboBox(label="precision", choices=list(PRECISIONS), value="fp32",
                                  tooltip="bf16/fp16 train under autocast; fp16 needs a CUDA device")
        self.resume = CheckBox(text="resume the run in the run folder", value=False)
        self.start_button = PushButton(text="Start fine-tuning")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(label="status", value="idle")
        self.status.native.setWordWrap(True)  # promotion messages carry both figures: never cut them off
        self.extend([self.source, self.dataset, self.out, self.model, self.base, self.epochs, self.lr, self.batch,
                     self.val, self.seed, self.patience, self.augment, self.device, self.precision, self.resume,
                     self.start_button, self.cancel_button, self.status])
        self.curves = TrainingCurves()
        self.body.layout().addWidget(self.curves)
        self.source.changed.connect(self._on_source)
        self.start_button.changed.connect(lambda: self.start())
        self.cancel_button.changed.connect(self.cancel)
        self.worker: Any = None
        self.result: Any = None
        self._run_model = ""  # the model of the run going on (the menu may change meanwhile)
        self._steps = 0
        self._runs = Runs(self.native)  # cancelled and waited for when the dock or napari closes
        self.end_form()
        fit_dock(self)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def _path(self, edit: FileEdit) -> str:
        value = str(edit.value or "")
        return "" if value in ("", ".") else value

    def _on_source(self, *_: Any) -> None:
        self.dataset.visible = self.source.value == FROM_FOLDER

    def _session_dataset(self, run_folder: str) -> str | None:
        """Export the accepted corrections of this session into a new folder of the run folder."""
        folder = Path(run_folder) / "session_data" / f"{_dt.datetime.now():%Y%m%d-%H%M%S}"
        problems: list[str] = []
        cases = export_accepted(accepted_records(self.viewer.layers), folder, errors=problems)
        if problems:
            show_warning("MedViT: not exported — " + "; ".join(problems))
        if not cases:
            self.status.value = "no accepted corrections in this session: accept some in the corrections dock first"
            return None
        session_for(self.viewer).exported.emit(cases)
        return str(folder)

    def start(self) -> Any:
        from napari_medvit.training.finetune import FinetuneConfig, finetune

        if self.running:
            return None
        from_session = self.source.value == FROM_SESSION
        if not self._path(self.out) or (not from_session and not self._path(self.dataset)):
            self.status.value = "choose the export folder and a run folder" if not from_session else \
                "choose a run folder (the accepted corrections are exported into it)"
            return None
        dataset = self._session_dataset(self._path(self.out)) if from_session else self._path(self.dataset)
        if dataset is None:
            return None
        cfg = FinetuneConfig(dataset=dataset, out_dir=self._path(self.out), model=self.model.value,
                             checkpoint=self._path(self.base) or None, epochs=int(self.epochs.value),
                             lr=float(self.lr.value) or None, batch_size=int(self.batch.value),
                             val_fraction=float(self.val.value), seed=int(self.seed.value),
                             patience=int(self.patience.value), augment=str(self.augment.value),
                             device=str(self.device.value), precision=str(self.precision.value),
                             resume=bool(self.resume.value))
        self.curves.reset()
        self._steps = 0
        self.result = None
        self.status.value = "loading the cases and scoring the base model…"
        self.start_button.enabled, self.cancel_button.enabled = False, True
        self._run_model = cfg.model
        self.worker = start_generator_run(self._runs, lambda: finetune(cfg), {  # None when MEDVIT_SYNC=1 ran it already
            "yielded": self._on_event, "returned": self._on_done, "errored": self._on_error,
            "aborted": lambda: setattr(self.status, "value", "cancelled; the epoch checkpoints so far are kept"),
            "finished": self._on_finished})
        return self.worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.status.value = "cancelling…"
            self.worker.quit()

    def _on_event(self, event: Any) -> None:
        if event.kind == "note":
            show_warning(f"MedViT fine-tune: {event.message}")
            self.status.value = event.message
        elif event.kind == "baseline":
            self.curves.set_metric(event.metric)
            self.curves.set_base(event.val_metric, int(self.epochs.value))
            self.status.value = f"base model: validation {event.metric} {event.val_metric:.3f}"
        elif event.kind == "step":
            self._steps += 1
            self.status.value = f"epoch {event.epoch}, step {self._steps}: loss {event.train_loss:.3f}"
        elif event.kind == "epoch":
            self._steps = 0
            self.curves.add_epoch(event.epoch, event.val_metric, event.train_loss)
            self.status.value = (f"epoch {event.epoch}/{self.epochs.value}: loss {event.train_loss:.3f}, "
                                 f"validation {event.metric} {event.val_metric:.3f}")

    def _on_done(self, result: Any) -> None:
        self.result = result
        self.status.value = result.message
        if result.promoted:  # the inference docks switch to the new version
            session_for(self.viewer).promoted.emit(self._run_model or self.model.value, result.version)

    def _on_error(self, exc: BaseException) -> None:
        self.status.value = f"failed: {exc}"

    def _on_finished(self) -> None:
        self.worker = None
        self.start_button.enabled, self.cancel_button.enabled = True, False
