"""The per-viewer evented session: how the docks of one viewer tell each other what happened.

``session_for(viewer)`` gives the viewer's :class:`Session` (made on first use, dropped with the
viewer). Its signals (psygnal):

- ``prediction_added(prediction, source, inputs)``: a run (or a re-run of its cheap part) gave a
  prediction of the image layer ``source``; ``inputs`` (:class:`RunInputs`) are the tabular feature
  list and values the run used. Emitted by the inference dock through :meth:`Session.add_prediction`.
- ``accepted(record)``: a correction was accepted (a :class:`napari_medvit.corrections.Correction`).
- ``exported(result)``: corrections were exported (the exporter's result, or the exported case ids).
- ``promoted(model_name, version_path)``: a fine-tuned version became the active one of a model.

Docks subscribe instead of polling or scanning each other; :func:`connect_until_destroyed` drops a
dock's connection when its Qt widget is destroyed. Qt-free and napari-free: the viewer is only a key.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from inspect import ismethod
from typing import Any

from psygnal import Signal, SignalInstance

_SESSIONS: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class RunInputs:
    """What a run was given besides the image: the tabular feature list of the model (DAFT) and the
    tabular values (name -> value, None = missing; None when the model takes no tabular row)."""

    tabular_features: tuple[dict[str, Any], ...] = ()
    tabular: dict[str, float | None] | None = None


@dataclass(frozen=True)
class PredictionAdded:
    """One ``prediction_added`` event, as :meth:`Session.recent_predictions` keeps it."""

    prediction: Any
    source: Any
    inputs: RunInputs = field(default_factory=RunInputs)


class Session:
    """The events of one viewer's docks, and the newest prediction of each run source (so a dock
    opened after a run still finds it)."""

    prediction_added = Signal(object, object, object)
    accepted = Signal(object)
    exported = Signal(object)
    promoted = Signal(str, object)

    def __init__(self) -> None:
        self._latest: weakref.WeakKeyDictionary[Any, PredictionAdded] = weakref.WeakKeyDictionary()
        self._anonymous: PredictionAdded | None = None

    def add_prediction(self, prediction: Any, source: Any, inputs: RunInputs | None = None, *,
                       origin: Any = None) -> None:
        """Keep ``prediction`` as the newest of ``origin`` (the emitting dock, held weakly: its entry
        goes with it) and emit ``prediction_added``."""
        event = PredictionAdded(prediction, source, inputs or RunInputs())
        if origin is None:
            self._anonymous = event
        else:
            self._latest[origin] = event
        self.prediction_added.emit(event.prediction, event.source, event.inputs)

    def recent_predictions(self) -> list[PredictionAdded]:
        """The newest prediction of each origin still alive (and of the anonymous one), oldest origin first."""
        events = list(self._latest.values())
        return events + ([self._anonymous] if self._anonymous is not None else [])


def session_for(viewer: Any) -> Session:
    """The session of ``viewer`` (any hashable, weak-referenceable object), made on first use."""
    try:
        return _SESSIONS[viewer]
    except KeyError:
        session = _SESSIONS[viewer] = Session()
        return session
    except TypeError as exc:
        raise ValueError(f"a session is keyed by its viewer, which must be hashable and weak-referenceable; "
                         f"got {type(viewer).__name__}") from exc


def connect_until_destroyed(signal: SignalInstance, slot: Callable[..., Any], owner: Any) -> None:
    """Connect ``slot`` to ``signal`` until ``owner`` (a QObject: anything with a ``destroyed`` signal,
    e.g. a dock's native widget) is destroyed; then disconnect it, so no event reaches a deleted
    widget. A bound method is held weakly, as psygnal holds it."""
    signal.connect(slot)
    ref: Callable[[], Any] = weakref.WeakMethod(slot) if ismethod(slot) else (lambda: slot)

    def drop(*_: Any) -> None:
        target = ref()
        if target is not None:
            signal.disconnect(target, missing_ok=True)

    owner.destroyed.connect(drop)
