"""A cancel's interrupt: raised in the task's own code, never in the worker's.

``cancel()`` of a running task sends SIGINT to its worker; the KeyboardInterrupt it raises
on the main thread stops the task wherever its code is (a sleep, a loop). But the worker's
own code runs on that thread too: a streaming generator's values are recorded and sent from
inside the task, and the task's result (or its error) is built and sent right after it. An
interrupt there left a write half done (a torn frame, or a connection whose writer flag
stayed set, so nothing was written to it again), or escaped the worker's handling of the
task's end so its result was never sent: the client then waited forever. The task's code
reaches unipar's code too: a ``get`` or ``put`` in it writes to the node and flushes the
process's refcount changes. An interrupt inside that write wedged the connection the same
way (a long ``make fuzz`` run: the refs in the task's arguments stayed held for good). So::

    Runtime._cancel ─▶ cancel(task_id): noted, then SIGINT ─▶ on_sigint (main thread)
        in running(task_id), outside shielded(): KeyboardInterrupt now
            ... unless it found unipar's own code running (not a wait): again in RETRY s
        in shielded():                          raised as the outermost section ends
        before running(task_id) started:        raised as it starts (never runs the code)
        after it ended, or for another task:    dropped (the task is done)

"Unipar's code runs": the frame the signal arrived in is a ``unipar`` module's (the task's
code is the user's, and the libraries it calls: a task's generator runs under unipar's loop,
and its own frames decide). A wait is the exception (``threading``'s ``wait``, where a
``get``, a request or a generator's next value blocks; or one of :data:`CANCELLABLE`): there
the interrupt stops the wait, as in Ray, and the caller's ``finally`` clauses clean up (so
unipar makes what it must release before it waits: ``put`` makes its ref before it waits for
the node's ping). Anything else of unipar's ends soon (a write, a refcount flush or
``__del__``, bookkeeping), so the interrupt is sent again after RETRY seconds by a helper
thread (a signal handler must not block, and ``SimpleQueue.put`` never does) until it lands
in the task's code or a wait, or the task ends and it is dropped.

Only the main thread is ever interrupted (Python runs signal handlers there); sections on
other threads (an actor's generator methods) need no shield and take none.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from types import FrameType

__all__ = ["cancel", "install", "on_sigint", "running", "shielded"]


class _State:
    """The main thread's: whose code runs, which task a cancel is for, shields open."""

    task: bytes | None = None        # the task whose own code runs now
    cancelled: bytes | None = None   # the task the last cancel was for
    depth = 0                        # shielded sections open
    main: threading.Thread | None = None   # the thread that installed the handler
    again: queue.SimpleQueue | None = None   # interrupts to send again (_send_again)


RETRY = 0.002   # seconds before an interrupt that found unipar's code running is sent again
# unipar's own waits that sleep between tries (the head, maybe down), by (module, function):
# a cancel may interrupt them (the waits of threading are not unipar's: interrupted anyway).
CANCELLABLE = {("unipar.native.client.head", "request")}


def install() -> None:
    """Route SIGINT to :func:`on_sigint` (daemons ignore it, and workers inherit that).
    Called once by the worker, on its main thread, before it runs anything."""
    signal.signal(signal.SIGINT, on_sigint)
    _State.main = threading.current_thread()
    _State.again = queue.SimpleQueue()
    threading.Thread(target=_send_again, args=(_State.again,), name="unipar-interrupts",
                     daemon=True).start()


def cancel(task_id: bytes) -> None:
    """Stop task ``task_id``, which runs (or is about to) on the main thread (any thread)."""
    _State.cancelled = task_id   # before the signal: its handler reads it
    os.kill(os.getpid(), signal.SIGINT)


def on_sigint(signum: int, frame: FrameType | None) -> None:
    """The SIGINT handler (runs on the main thread, between two bytecodes of its code)."""
    if _State.depth != 0 or _State.task is None or _State.cancelled != _State.task:
        return
    if _in_unipar(frame):
        _State.again.put(_State.task)   # type: ignore[union-attr]
        return
    if _due():
        raise KeyboardInterrupt


def _in_unipar(frame: FrameType | None) -> bool:
    """Whether ``frame`` is unipar's own code, other than a :data:`CANCELLABLE` wait."""
    if frame is None:
        return False
    module = frame.f_globals.get("__name__", "")
    return module.startswith("unipar.") and (module, frame.f_code.co_name) not in CANCELLABLE


def _send_again(pending: queue.SimpleQueue) -> None:
    """The helper thread: after RETRY s, interrupt again if that task's cancel still waits."""
    while True:
        task_id = pending.get()
        time.sleep(RETRY)
        if _State.task == task_id and _State.cancelled == task_id:
            os.kill(os.getpid(), signal.SIGINT)


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

