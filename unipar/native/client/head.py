"""A client's requests to the head: the node list and named actors, waiting out a head restart.

The head is not on the task path, so a client opens a connection to it only when asked
something only the head knows. If the head is down (killed, being restarted), the request is
sent again on a new connection, with backoff, until the head answers or ``wait`` seconds
have passed; then :class:`~unipar.exceptions.HeadUnavailableError` says what waited and since
when — never a raw socket error::

    request ─▶ connect ─▶ send ─▶ reply ──────────────────────────────▶ value
                 │          └─ connection lost before the reply ─┐
                 └─ refused / unreachable ──── sleep (backoff) ◀──┘ ─▶ past wait: HeadUnavailableError
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
from typing import Callable

from ... import config
from ...exceptions import HeadUnavailableError
from ..wire import protocol as P
from ..wire.transport import Connection

HEAD_WAIT = config.head_wait()      # s a request waits for a head that is down
RETRY_FIRST, RETRY_MAX = 0.1, 2.0   # s between attempts


class HeadChannel:
    """One process's connection to the head, opened on first use and again after a loss."""

    def __init__(self, address: str, secret: bytes, wait: float | None = None) -> None:
        self.address = address
        self.secret = secret
        self._wait = wait
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._reqs: dict[int, concurrent.futures.Future] = {}
        self._ids = itertools.count(1)
        self._closed = False

    @property
    def wait(self) -> float:
        """Seconds a request waits for a head that is down (HEAD_WAIT unless given)."""
        return self._wait if self._wait is not None else HEAD_WAIT

    def request(self, make: Callable[[int], P.Message], what: str,
                timeout: float) -> P.Reply | None:
        """Send ``make(req_id)`` to the head and return its Reply; None when ``timeout``
        passed with the head connected but silent (the caller raises its timeout error).

        Raises:
            HeadUnavailableError: the head could not be reached, or its connection kept
                closing, for ``min(timeout, wait)`` seconds.
        """
        since = time.time()
        deadline = time.monotonic() + timeout
        give_up = time.monotonic() + min(timeout, self.wait)
        delay = RETRY_FIRST
        problem = ""
        while True:
            try:
                conn = self._connection()
                req = next(self._ids)
                fut: concurrent.futures.Future = concurrent.futures.Future()
                self._reqs[req] = fut
                conn.send(make(req))
                reply = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except concurrent.futures.TimeoutError:
                return None
            except (OSError, ConnectionError, EOFError, P.ProtocolError) as exc:
                problem = str(exc) or type(exc).__name__
            else:
                if reply is not None:
                    return reply
                problem = "the connection closed before the head answered"
            if time.monotonic() >= give_up or self._closed:
                raise HeadUnavailableError(
                    f"the head at {self.address} did not answer while this process waited to "
                    f"{what}: unreachable since {time.strftime('%H:%M:%S', time.localtime(since))}"
                    f" ({time.time() - since:.1f} s; last problem: {problem}). Running work goes "
                    "on; if the head was stopped, `unipar start --head` on its machine brings it "
                    "back, and its nodes rejoin")
            time.sleep(max(0.0, min(delay, give_up - time.monotonic())))
            delay = min(delay * 2, RETRY_MAX)

    def _connection(self) -> Connection:
        with self._lock:
            if self._conn is None or self._conn.closed:
                conn = Connection(self.address, self.secret, timeout=min(5.0, self.wait))
                self._conn = conn
                threading.Thread(target=self._read, args=(conn,), daemon=True,
                                 name="unipar-head-reader").start()
            return self._conn

    def _read(self, conn: Connection) -> None:
        conn.serve_forever(self._on_message)
        # Lost: what waits on this connection is asked again on a new one (None: not answered).
        with self._lock:
            if self._conn is conn:
                self._conn = None
            reqs, self._reqs = self._reqs, {}
        for fut in reqs.values():
            if not fut.done():
                fut.set_result(None)

    def _on_message(self, msg: P.Message) -> None:
        if msg.op == P.Reply.op:
            fut = self._reqs.pop(msg.req_id, None)  # type: ignore[attr-defined]
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def close(self) -> None:
        """Close the connection; idempotent."""
        self._closed = True
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
