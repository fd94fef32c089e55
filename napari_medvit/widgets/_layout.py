"""Docks that keep a modest width whatever they show.

A QLabel sized to its text, or a combo box sized to its longest entry, widens its dock, and with it
the window: a checkpoint's error message made the main window 3,874 px wide, and a long weights
description pushed the canvas to a quarter of a 1,920 px screen. :func:`fit_dock` makes every label
of a dock wrap (a very long message is cut, its whole text in the tooltip), every combo box size
itself to a few characters (the chosen entry in the tooltip), and caps the dock's width at
:func:`dock_width` (a fifth of the screen, 300–420 px), so the canvas keeps most of the window.
Call it again after adding widgets (the DAFT panel, extra channels).

:class:`ScrollingDock` puts a dock's form in a scroll area: docks stacked in one column (inference,
corrections, fine-tune) made the window 1,388–1,472 px tall on 768 and 1,080 px screens; now each dock
scrolls within the height napari gives it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label
from qtpy.QtCore import Qt
from qtpy.QtGui import QGuiApplication
from qtpy.QtWidgets import QComboBox, QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

MAX_DOCK_WIDTH = 420  # px
MIN_DOCK_WIDTH = 260
SCREEN_FRACTION = 0.19
MESSAGE_CHARS = 280  # a longer message is cut on screen; the tooltip holds all of it
_FITTED = "_medvit_fitted"


def dock_width() -> int:
    """The widest a dock may be on this screen."""
    screen = QGuiApplication.primaryScreen()
    width = screen.availableGeometry().width() if screen is not None else 1920
    return int(min(MAX_DOCK_WIDTH, max(MIN_DOCK_WIDTH, SCREEN_FRACTION * width)))


def _walk(container: Container) -> Iterator[Any]:
    for widget in container:
        yield widget
        if isinstance(widget, Container):
            yield from _walk(widget)


def _fit_label(label: Label) -> None:
    """Wrap; show at most MESSAGE_CHARS characters, keeping the whole text as the label's value and tooltip
    (magicgui sets and reads a label's value through the QLabel's setText / text)."""
    native = label.native
    native.setWordWrap(True)
    native.setMinimumWidth(0)
    native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    shown, full = native.setText, [native.text()]

    def set_text(text: str) -> None:
        full[0] = text = str(text)
        native.setToolTip(text if len(text) > 60 else "")
        shown(text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…")

    native.setText = set_text
    native.text = lambda: full[0]
    set_text(full[0])


def _fit_combo(combo: ComboBox) -> None:
    native = combo.native
    native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    native.setMinimumContentsLength(8)
    native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    def tooltip(*_: Any) -> None:
        native.setToolTip(native.currentText())

    native.currentTextChanged.connect(tooltip)
    tooltip()


def fit_dock(container: Container) -> None:
    """Wrap the labels and narrow the combo boxes of ``container`` (once each) and cap its width."""
    for widget in _walk(container):
        if getattr(widget, _FITTED, False):
            continue
        if isinstance(widget, Label):
            _fit_label(widget)
        elif isinstance(widget, ComboBox):
            _fit_combo(widget)
        elif isinstance(widget, FileEdit):  # "Choose directory" / "Select file" -> "…" (the full words as tooltip)
            widget.choose_btn.native.setToolTip(widget.choose_btn.text)
            widget.choose_btn.text = "…"
        else:
            continue
        setattr(widget, _FITTED, True)
    width = dock_width()
    container.native.setMaximumWidth(width)
    body = getattr(container, "body", None)
    if body is not None:  # a ScrollingDock: as wide as its form needs (within the cap), the height scrolls
        needed = body.minimumSizeHint().width() + body.style().pixelMetric(body.style().PixelMetric.PM_ScrollBarExtent)
        container.native.setMinimumWidth(min(max(needed, MIN_DOCK_WIDTH), width))


class ScrollingDock(Container):
    """A magicgui container whose form scrolls: napari docks :attr:`native` (a frame holding a scroll
    area); the form, with its labels column, is :attr:`body` inside it (add Qt widgets to ``body.layout()``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.body: QWidget = super().native
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)  # never cut a field off
        with self.native_parent_changed.blocked():  # the form is not built yet: no reset_choices now
            scroll.setWidget(self.body)
        frame = QWidget()
        layout = QVBoxLayout(frame)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)
        self._frame = frame

    def end_form(self) -> None:
        """Keep the rows at the top of a tall dock (the scroll area stretches the form to its height)."""
        self.body.layout().addStretch(1)

    @property
    def native(self) -> Any:
        """The dock's outer widget (what napari docks): the scroll area around :attr:`body`."""
        return self.__dict__.get("_frame") or super().native
