"""The docks' one worker helper: background runs that end cleanly, also when napari closes under them.

Two gaps of napari's (superqt's) thread workers make a process abort at exit
("terminate called without an active exception", exit code 134):

* ``worker.quit()`` only makes a :class:`GeneratorWorker` stop *calling* its generator; the
  suspended generator is never closed, so its ``finally`` blocks do not run. The predictor's
  sliding window runs its windows in a helper thread that such a ``finally`` stops and joins: a
  cancelled 3D run left that thread computing the remaining windows. When Python exits while it
  runs torch, the thread is ended by ``pthread_exit`` inside torch's C++ code, which aborts.
* Nothing stops a worker whose viewer is closed: the thread pool's thread is still in Python
  (torch) when the interpreter is torn down, with the same result.

:class:`ClosingGeneratorWorker` closes its generator in the worker thread when the run ends for
any reason; :class:`Runs` starts a dock's workers on its own thread pool, and when the dock is
destroyed, the Qt application quits or Python exits, cancels them and waits (bounded) until their
thread has left Python. :func:`start_generator_run` is how a dock starts a run: its generator in a
:class:`ClosingGeneratorWorker` on the dock's :class:`Runs`, RuntimeErrors re-raised as
:class:`RunFailed` (:func:`guard_runtime_errors`), or synchronously in the main thread when
``MEDVIT_SYNC=1`` (debugging: the same slots are called in the same order).
"""

from __future__ import annotations

import atexit
import os
import sys
import weakref
from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from qtpy.QtCore import QCoreApplication, QObject, QThread, QThreadPool

#: how long closing a dock (or napari) waits for its runs to stop: a window or training step is seconds
SHUTDOWN_TIMEOUT_S = 60.0
_SIGNALS = ("started", "yielded", "returned", "errored", "warned", "aborted", "paused", "resumed", "finished")
_LIVE: weakref.WeakSet[Runs] = weakref.WeakSet()
_HOOKED_APPS: weakref.WeakSet[QObject] = weakref.WeakSet()
_atexit_registered = False


class ClosingGeneratorWorker(GeneratorWorker):
    """A napari generator worker that closes its generator, in its own thread, when the run ends.

    On a cancel (``quit()``) the generator is left at a ``yield``; closing it runs its ``finally``
    blocks at once (the predictor stops its sliding-window thread at the next window and joins it),
    rather than at garbage collection, perhaps while the interpreter exits.
    """

    def __init__(self, func: Callable[..., Generator[Any, Any, Any]], *args: Any, **kwargs: Any) -> None:
        body = func(*args, **kwargs)
        super().__init__(lambda: (yield from body))
        self.body = body

    def work(self) -> Any:
        try:
            return super().work()
        finally:
            self.body.close()  # a no-op for a generator that returned or raised


def _shutdown_all() -> None:
    for runs in list(_LIVE):
        runs.shutdown()


class Runs:
    """The background work of one dock, on a thread pool of its own.

    ``start(worker)`` starts a worker there. ``shutdown()`` (called when the dock's widget is
    destroyed, when the Qt application is about to quit, and at interpreter exit) disconnects the
    workers from the dock, cancels them and waits up to ``timeout_s`` until the pool's threads have
    left Python: only this dock's work is waited for, not other plugins' workers.
    """

    def __init__(self, owner: QObject, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        global _atexit_registered
        self.timeout_s = timeout_s
        self.pool = QThreadPool()
        self.workers: list[Any] = []
        _LIVE.add(self)
        owner.destroyed.connect(lambda *_: self.shutdown())  # the closure keeps self until then
        app = QCoreApplication.instance()
        if app is not None and app not in _HOOKED_APPS:
            _HOOKED_APPS.add(app)
            app.aboutToQuit.connect(_shutdown_all)
        if not _atexit_registered:
            atexit.register(_shutdown_all)  # runs before Python stops its threads: sys.exit() with a run going
            _atexit_registered = True

    def start(self, worker: Any) -> Any:
        """Start ``worker`` (made with ``_start_thread=False``) on this dock's pool and return it."""
        self.workers.append(worker)  # the pool keeps no Python reference to it
        ref = weakref.ref(worker)  # a strong one in the slot would keep the worker (and its data) forever
        worker.finished.connect(lambda: self._forget(ref()))
        self.pool.start(worker)
        return worker

    def _forget(self, worker: Any) -> None:
        self.workers = [w for w in self.workers if w is not worker]

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Cancel every run, wait until they have stopped; False if one is still running after the timeout."""
        workers, self.workers = self.workers, []
        for worker in workers:
            for name in _SIGNALS:  # the dock may be gone: its slots must not run any more
                try:
                    getattr(worker, name).disconnect()
                except (TypeError, RuntimeError, AttributeError):
                    pass  # nothing connected, or the signals object is already deleted
            worker.quit()
        app = QCoreApplication.instance()
        if app is not None and QThread.currentThread() != app.thread():
            return False  # e.g. garbage collection in a worker thread: never wait for a pool from inside it
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            done = self.pool.waitForDone(int(timeout * 1000))
        except RuntimeError:  # the pool itself is already deleted (interpreter teardown)
            return True
        if not done:
            print(f"napari-medvit: a background run did not stop within {timeout:.0f} s", file=sys.stderr)
        return done


class RunFailed(Exception):
    """An error of a run, re-raised under a type that napari's worker reports.

    superqt's generator worker takes any RuntimeError from the generator for "the worker was
    deleted" and ends silently, without ``errored`` or ``finished``: torch reports most of its
    errors as RuntimeError, so they must not reach it as such.
    """


def guard_runtime_errors(gen: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    """Delegate to ``gen``; a RuntimeError it raises comes out as :class:`RunFailed`."""
    try:
        return (yield from gen)
    except RuntimeError as exc:
        raise RunFailed(str(exc)) from exc


def synchronous() -> bool:
    """``MEDVIT_SYNC`` is set (to anything but empty): runs happen in the main thread."""
    return bool(os.environ.get("MEDVIT_SYNC"))


def start_generator_run(runs: Runs, gen: Generator[Any, None, Any] | Callable[[], Generator[Any, None, Any]],
                        connect: dict[str, Callable[..., Any]]) -> Any:
    """Start ``gen`` (a generator, or a function of no arguments making one, called where the run runs)
    as a dock's run: in a :class:`ClosingGeneratorWorker` on ``runs`` with the slots of ``connect``
    (signal name -> callable, as napari's ``_connect``; an "errored" slot replaces superqt's default,
    which re-raises in the main thread), and return the worker. With ``MEDVIT_SYNC=1`` the generator
    runs here and now, calling the same slots ("yielded" per event, then "returned" or "errored",
    then "finished"), and None is returned."""
    unknown = sorted(set(connect) - set(_SIGNALS))
    if unknown:
        raise ValueError(f"unknown worker signal(s) {unknown}; the signals are {list(_SIGNALS)}")

    def body() -> Generator[Any, None, Any]:
        return (yield from guard_runtime_errors(gen() if callable(gen) else gen))

    if synchronous():
        _run_synchronously(body(), connect)
        return None
    worker = create_worker(body, _start_thread=False, _worker_class=ClosingGeneratorWorker, _connect=dict(connect))
    return runs.start(worker)


def _run_synchronously(gen: Generator[Any, None, Any], connect: dict[str, Callable[..., Any]]) -> None:
    def call(name: str, *args: Any) -> None:
        if name in connect:
            connect[name](*args)

    call("started")
    try:
        while True:
            call("yielded", next(gen))
    except StopIteration as stop:
        call("returned", stop.value)
    except Exception as exc:  # shown by the dock's "errored" slot, never crashes napari
        if "errored" not in connect:
            raise
        call("errored", exc)
    finally:
        call("finished")
