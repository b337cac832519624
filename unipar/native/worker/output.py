"""Output of code running in a worker: ``print`` sends whole lines, prefixed
``(name pid=N) ``, to the driver — through the node, or straight back to the client that pushed
the running task — always before the task's result, since both travel on the same connection.
"""

from __future__ import annotations

import io
import os
import threading
from typing import Callable

from ..wire import protocol as P
from ..wire.transport import Connection
from .interrupts import shielded

# The running task's short name (``current.label``) on this thread, for the prefix.
current = threading.local()


class Forward(io.TextIOBase):
    """A text stream that forwards whole lines to the driver, prefixed with where they ran."""

    def __init__(self, stream: str, label: Callable[[], str],
                 conn: Callable[[], Connection]) -> None:
        """``label()``: the worker's name when no task names itself; ``conn()``: where its
        lines go now (the node, or the client that pushed the running task)."""
        self.label = label
        self.conn = conn
        self.stream = stream
        self.pending = ""
        self.lock = threading.Lock()
        # Also given each body (stream, text): the worker's own log file (worker/events.py).
        self.tee: Callable[[str, str], None] | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        # A cancel's interrupt waits for the line to be sent whole (one cut mid-write wedged
        # the connection the task's result goes back on).
        with shielded():
            with self.lock:
                self.pending += text
                if "\n" not in self.pending:
                    return len(text)
                complete, _, self.pending = self.pending.rpartition("\n")
            self._send(complete + "\n")
        return len(text)

    def flush(self) -> None:
        pass   # partial lines wait for their newline (or the end of the task)

    def finish(self) -> None:
        with self.lock:
            rest, self.pending = self.pending, ""
        if rest:
            self._send(rest + "\n")

    def _send(self, text: str) -> None:
        name = getattr(current, "label", None) or self.label()
        prefix = f"({name} pid={os.getpid()}) "
        body = "".join(prefix + line + "\n" for line in text.splitlines())
        if self.tee is not None:
            self.tee(self.stream, body)
        try:
            self.conn().send(P.Log(self.stream, body))
        except ConnectionError:
            pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # Code that needs a real descriptor (subprocess, faulthandler) writes below Python,
        # straight to the terminal the daemons inherited, without a prefix.
        return 2 if self.stream == "stderr" else 1

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"
