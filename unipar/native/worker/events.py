"""What a worker tells its node about its work, off the hot path: task events and its log file.

::

    main / actor threads ── started(), ended() ──▶ deque (append only: no lock, no I/O)
    thread "unipar-task-events": woken by the first event, waits BATCH_S, sends the lot as
                                 one TaskEvents to the node
    print() lines (process._Forward) ── write() ──▶ <session_dir>/logs/worker-<wid>-<pid>.log

Recording an event costs a clock read and an append; the send happens at most every BATCH_S
on its own thread, so a burst of short tasks costs the node one message per BATCH_S per worker.
When the node asks the worker to exit (``Shutdown``), :meth:`TaskEvents.exit` sends what is
unsent first (its node then lists the last tasks as finished, not lost with the worker), and
reports the tasks still running as "stopped".
"""

from __future__ import annotations

import collections
import os
import threading
import time
import traceback
from typing import Any, Callable

from ..wire import protocol as P

BATCH_S = 0.1            # events wait this long for others to share their message
EXIT_FLUSH_S = 1.0       # on exit, a send in progress on the sender thread is waited this long
STOPPED = ("its worker was stopped before it ended: the driver that pushed it exited, or its "
           "node retired the worker")
LOG_MAX_BYTES = 20 * 1024 * 1024
LOG_BACKUPS = 3

_running = threading.local()          # the task or actor call on this thread (its id)
_actor: list[bytes | None] = [None]   # the actor this process hosts, once it is set up


def running() -> tuple[str | None, str | None]:
    """(task id, actor id) as hex of the code running on this thread; None outside tasks
    (the driver) and outside actors. What ``unipar.get_runtime_context()`` reports."""
    task = getattr(_running, "task_id", None)
    return (task.hex() if task else None), (_actor[0].hex() if _actor[0] else None)


def hosting_actor(actor_id: bytes) -> None:
    """This worker process now hosts ``actor_id`` (for :func:`running`)."""
    _actor[0] = actor_id


class TaskEvents:
    """Start and end events of the tasks and calls this worker runs, sent in batches by
    ``send`` (the node connection's send; it may raise ConnectionError)."""

    def __init__(self, send: Callable[[P.Message], None]) -> None:
        self.send = send
        self.events: collections.deque[list] = collections.deque()
        self.wake = threading.Event()
        self.local = threading.local()   # the failure text of the call on this thread
        self.open: set[bytes] = set()    # started, not ended (their threads add and discard)
        # Held while a batch is taken and sent: the exit path must not overtake a batch the
        # sender thread took but has not sent (the node would see later events first).
        self.sending = threading.Lock()

    def started(self, task_id: bytes, name: str, kind: str = "task") -> None:
        _running.task_id = task_id
        self.open.add(task_id)
        self.events.append(["start", task_id, time.time(), name, kind])
        if not self.wake.is_set():
            self.wake.set()

    def failed(self, exc: BaseException) -> None:
        """Note why the task on this thread failed (its text and traceback), for its end."""
        self.local.error = "".join(traceback.format_exception(exc))

    def ended(self, task_id: bytes, status: str) -> None:
        _running.task_id = None
        self.open.discard(task_id)
        error = ""
        if status != "ok":
            error, self.local.error = getattr(self.local, "error", ""), ""
        self.events.append(["end", task_id, time.time(), status, error])
        if not self.wake.is_set():
            self.wake.set()

    def run_forever(self) -> None:
        """The sender thread: one TaskEvents per BATCH_S while there is something to say.
        (Sending sooner, when the worker goes idle, would also send the worker's dropped refs
        sooner — every send carries them — and a node then frees a copy it pulled before the
        next task on it, which reads the same object, has asked for it: it pulls it twice.)"""
        while True:
            self.wake.wait()
            time.sleep(BATCH_S)
            self.wake.clear()
            with self.sending:
                try:
                    self._send_all()
                except ConnectionError:
                    return   # the node is gone; so are we, shortly

    def _send_all(self) -> None:
        batch = []
        try:
            while True:
                batch.append(self.events.popleft())
        except IndexError:
            pass
        if batch:
            self.send(P.TaskEvents(batch))

    def exit(self) -> None:
        """The node asked this worker to exit: report the tasks still running as stopped, send
        every unsent event (waiting at most EXIT_FLUSH_S for the sender thread), and exit.
        Called on the node connection's reader thread; never returns."""
        now = time.time()
        for task_id in list(self.open):
            self.events.append(["end", task_id, now, "stopped", STOPPED])
        got = self.sending.acquire(timeout=EXIT_FLUSH_S)
        try:
            if got:
                self._send_all()
        except ConnectionError:
            pass   # the node is gone: nobody to tell
        finally:
            os._exit(0)


class LogFile:
    """This worker's own log file (size-rotated), holding every line its tasks printed, with
    a timestamp. Writing never raises: a full disk must not fail a task."""

    def __init__(self, log_dir: str, worker_id: str) -> None:
        self.path = os.path.join(log_dir, f"worker-{worker_id}-{os.getpid()}.log")
        self.lock = threading.Lock()
        self.file: Any = None

    def write(self, stream: str, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        tag = "" if stream == "stdout" else " [stderr]"
        lines = "".join(f"{stamp}{tag} {line}\n" for line in text.splitlines())
        with self.lock:
            try:
                if self.file is None:
                    self.file = open(self.path, "a", encoding="utf-8", errors="replace")
                self.file.write(lines)
                self.file.flush()
                if self.file.tell() > LOG_MAX_BYTES:
                    self._rotate()
            except OSError:
                pass

    def _rotate(self) -> None:
        self.file.close()
        self.file = None
        for i in range(LOG_BACKUPS - 1, 0, -1):
            if os.path.exists(f"{self.path}.{i}"):
                os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")


def open_log(session_dir: str, worker_id: str) -> LogFile | None:
    """The worker's log file under its node's log directory (None when the node has none)."""
    log_dir = os.path.join(session_dir, "logs")
    return LogFile(log_dir, worker_id) if os.path.isdir(log_dir) else None
