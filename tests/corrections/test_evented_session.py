"""The per-viewer evented session, without Qt or napari: a viewer is only its key."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace
from typing import Any

import pytest
from psygnal import Signal

from napari_medvit._session import RunInputs, Session, connect_until_destroyed, session_for


class Viewer:
    """A stand-in for napari's viewer: hashable and weak-referenceable."""


class Owner:
    """A stand-in for a dock's QObject: it has a ``destroyed`` signal."""

    destroyed = Signal()


class Dock:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def on_prediction(self, prediction: Any, source: Any) -> None:  # fewer arguments than the signal: allowed
        self.seen.append((prediction, source))

    def on_record(self, record: Any) -> None:
        self.seen.append((record,))


def test_one_session_per_viewer_dropped_with_it() -> None:
    a, b = Viewer(), Viewer()
    assert session_for(a) is session_for(a) and session_for(a) is not session_for(b)
    gone = weakref.ref(session_for(a))
    del a
    gc.collect()
    assert gone() is None  # the session went with its viewer: nothing else holds it
    with pytest.raises(ValueError, match="hashable and weak-referenceable"):
        session_for([])


def test_predictions_are_emitted_and_the_newest_of_each_origin_is_kept() -> None:
    session = Session()
    seen: list[tuple[Any, ...]] = []
    session.prediction_added.connect(lambda *args: seen.append(args))
    first, second = Dock(), Dock()
    inputs = RunInputs(({"name": "age"},), {"age": 71.0})
    session.add_prediction("p1", "T1", inputs, origin=first)
    session.add_prediction("p2", "T1", origin=first)
    session.add_prediction("p3", "FLAIR", origin=second)
    assert seen == [("p1", "T1", inputs), ("p2", "T1", RunInputs()), ("p3", "FLAIR", RunInputs())]
    assert [e.prediction for e in session.recent_predictions()] == ["p2", "p3"]
    del first
    gc.collect()
    assert [e.prediction for e in session.recent_predictions()] == ["p3"]  # a closed dock's result goes with it


def test_a_connection_ends_when_its_owner_is_destroyed() -> None:
    session, owner, dock = Session(), Owner(), Dock()
    connect_until_destroyed(session.prediction_added, dock.on_prediction, owner)
    session.add_prediction("p1", "frame")
    assert dock.seen == [("p1", "frame")] and len(session.prediction_added) == 1
    owner.destroyed.emit()
    session.add_prediction("p2", "frame")
    assert dock.seen == [("p1", "frame")] and len(session.prediction_added) == 0

    promoted: list[tuple[str, Any]] = []
    other = Owner()
    connect_until_destroyed(session.promoted, lambda model, version: promoted.append((model, version)), other)
    session.promoted.emit("transfuse_tiny", "run/versions/v1.safetensors")
    other.destroyed.emit()
    session.promoted.emit("transfuse_tiny", "run/versions/v2.safetensors")
    assert promoted == [("transfuse_tiny", "run/versions/v1.safetensors")]


def test_a_dock_collected_before_its_owner_is_destroyed_is_not_kept_alive() -> None:
    session, owner, dock = Session(), Owner(), Dock()
    connect_until_destroyed(session.accepted, dock.on_record, owner)
    del dock
    gc.collect()
    session.accepted.emit(SimpleNamespace(name="record"))  # nothing is called: the bound method was held weakly
    owner.destroyed.emit()
    assert len(session.accepted) == 0
