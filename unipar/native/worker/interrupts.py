"""A cancel's interrupt: raised in the task's own code, never in the worker's.

``cancel()`` of a running task sends SIGINT to its worker; the KeyboardInterrupt it raises
on the main thread stops the task wherever its code is (a sleep, a loop). But the worker's
own code runs on that thread too: a streaming generator's values are recorded and sent from
inside the task, and the task's result (or its error) is built and sent right after it. An
interrupt there left a write half done (a torn frame, or a connection whose writer flag
stayed set, so nothing was written to it again), or escaped the worker's handling of the
task's end so its result was never sent: the client then waited forever. So::

    Runtime._cancel ─▶ cancel(task_id): noted, then SIGINT ─▶ on_sigint (main thread)
        in running(task_id), outside shielded(): KeyboardInterrupt now
        in shielded():                          raised as the outermost section ends
        before running(task_id) started:        raised as it starts (never runs the code)
        after it ended, or for another task:    dropped (the task is done)

Only the main thread is ever interrupted (Python runs signal handlers there); sections on
other threads (an actor's generator methods) need no shield and take none.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

__all__ = ["cancel", "install", "on_sigint", "running", "shielded"]


class _State:
    """The main thread's: whose code runs, which task a cancel is for, shields open."""

    task: bytes | None = None        # the task whose own code runs now
    cancelled: bytes | None = None   # the task the last cancel was for
    depth = 0                        # shielded sections open
    main: threading.Thread | None = None   # the thread that installed the handler


def install() -> None:
    """Route SIGINT to :func:`on_sigint` (daemons ignore it, and workers inherit that).
    Called once by the worker, on its main thread, before it runs anything."""
    signal.signal(signal.SIGINT, on_sigint)
    _State.main = threading.current_thread()


def cancel(task_id: bytes) -> None:
    """Stop task ``task_id``, which runs (or is about to) on the main thread (any thread)."""
    _State.cancelled = task_id   # before the signal: its handler reads it
    os.kill(os.getpid(), signal.SIGINT)


def on_sigint(signum: int, frame: FrameType | None) -> None:
    """The SIGINT handler (runs on the main thread, between two bytecodes of its code)."""
    if _State.depth == 0 and _due():
        raise KeyboardInterrupt


def _due() -> bool:
    """Whether a cancel of the running task waits to be raised; taken by this call (the
    task's code may catch the KeyboardInterrupt and go on, as it could before)."""
    if _State.task is None or _State.cancelled != _State.task:
        return False
    _State.cancelled = None
    return True


class running:
    """Around the code of task ``task_id`` (main thread): a cancel of it raises
    KeyboardInterrupt in there, at once or, if it came first, as the section starts.
    (A class, not a generator: it wraps every task the worker runs.)"""

    __slots__ = ("task_id",)

    def __init__(self, task_id: bytes) -> None:
        self.task_id = task_id

    def __enter__(self) -> None:
        _State.task = self.task_id
        if _due():
            _State.task = None
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        _State.task = None


class shielded:
    """A section of the worker's own work inside a task that a cancel may not cut short:
    its interrupt is raised as the outermost section ends (in place of what the section
    raised, if anything: the cancel wins). A no-op off the main thread (or before
    :func:`install`)."""

    __slots__ = ("main",)

    def __enter__(self) -> None:
        self.main = threading.current_thread() is _State.main
        if self.main:
            _State.depth += 1

    def __exit__(self, *exc: object) -> None:
        if self.main:
            _State.depth -= 1
            if _State.depth == 0 and _due():
                raise KeyboardInterrupt

