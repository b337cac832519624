"""The node's link to the head: registration, requests with callbacks, one-way reports.

The head is not on the per-task path; the node registers with it once (from a thread: the head
may still be starting), reports its free resources, and asks it for the node list and where
actors live. Replies run their callback on the node's loop.

When the head goes away (killed, restarted), the node keeps running its work and reconnects
on its own, with backoff (0.1 s doubling to 2 s), registering again under its own id::

    head connection lost ─▶ retry RegisterNode ─▶ answered: requests still unanswered are sent
                                │                  again, reports made meanwhile are replayed
                                └─ nothing for HEAD_GIVE_UP s ─▶ ``gave_up(text)``: the node stops
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from typing import Any, Callable

from ... import config
from ..wire import protocol as P
from ..wire.transport import Connection
from .scheduler import Scheduler

log = logging.getLogger("unipar.native.node")

HEAD_GIVE_UP = config.head_give_up()   # s without a head, then the node stops (reliability.md)
RETRY_FIRST, RETRY_MAX = 0.1, 2.0   # s between attempts to reach the head again
REPLAY_MAX = 100_000    # reports kept while the head is away (oldest dropped beyond)


class HeadLink:
    """One node's connection to the head (none in a node started without a head).
    ``declared_dead(reason)`` runs when the head declares this node dead, ``gave_up(text)``
    when the head stayed unreachable for ``give_up_after`` seconds."""

    def __init__(self, node_id: str, address: str, secret: bytes, sched: Scheduler) -> None:
        self.node_id = node_id
        self.address = address    # the head's; "" without a head
        self.secret = secret
        self.sched = sched
        self.conn: Connection | None = None
        self.declared_dead: Callable[[str], None] = lambda reason: None
        self.gave_up: Callable[[str], None] = lambda text: None
        self.give_up_after = HEAD_GIVE_UP
        self.reqs: dict[int, tuple[Callable[[int], P.Message], Callable[[Any], None]]] = {}
        self.req_ids = itertools.count(100)
        self.missed: list[P.Message] = []   # told while the head was away: replayed
        # What the head asks of the node itself (placement-group bundles): op -> handler.
        self.handlers: dict[str, Callable[[Any], None]] = {}
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._my_address = ""

    @property
    def joined(self) -> bool:
        return self.conn is not None

    def join(self, loop: asyncio.AbstractEventLoop, my_address: str) -> None:
        """Register with the head and wait for its answer (blocking: run it on a thread; the
        head may still be starting). The starter learns we are ready only after this."""
        self._loop, self._my_address = loop, my_address
        self.conn = self._register(30.0)

    def _register(self, timeout: float) -> Connection:
        """A new connection to the head on which this node is registered (blocking).
        Raises OSError, ConnectionError or RuntimeError when the head cannot be reached."""
        loop = self._loop
        assert loop is not None
        head = Connection(self.address, self.secret, timeout=timeout)
        answered = threading.Event()

        def on_message(msg: P.Message) -> None:
            if not answered.is_set():
                answered.set()     # the first message is the answer to RegisterNode
                return
            loop.call_soon_threadsafe(self.on_message, msg)

        def serve() -> None:
            head.serve_forever(on_message)
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._lost, head)
        threading.Thread(target=serve, daemon=True, name="unipar-node-head").start()
        head.send(P.RegisterNode(1, self.node_id, self._my_address, self.sched.total))
        if not answered.wait(timeout):
            head.close()
            raise RuntimeError(f"the head at {self.address} did not answer")
        return head

    # -- the head went away --------------------------------------------------------------------
    def _lost(self, conn: Connection) -> None:
        """On the loop: our connection to the head closed. Work goes on; we reconnect."""
        if conn is not self.conn or self.stopping:
            return
        log.warning("lost the head at %s; reconnecting (giving up after %g s)", self.address,
                    self.give_up_after)
        threading.Thread(target=self._reconnect, daemon=True,
                         name="unipar-node-head-reconnect").start()

    def _reconnect(self) -> None:
        """On a thread: try to register again, with backoff, until ``give_up_after``."""
        loop = self._loop
        assert loop is not None
        since = time.monotonic()
        delay = RETRY_FIRST
        while not self.stopping:
            try:
                conn = self._register(min(5.0, self.give_up_after))
            except (OSError, ConnectionError, RuntimeError, P.ProtocolError):
                waited = time.monotonic() - since
                if waited >= self.give_up_after:
                    loop.call_soon_threadsafe(self.gave_up, (
                        f"the head at {self.address} has been unreachable for {waited:.0f} s "
                        f"(a node waits {self.give_up_after:g} s for it); this node stops. "
                        "Start the head again (unipar start --head) and this node afresh."))
                    return
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            loop.call_soon_threadsafe(self._rejoined, conn, time.monotonic() - since)
            return

    def _rejoined(self, conn: Connection, waited: float) -> None:
        """On the loop: registered again. Questions the old connection left unanswered are
        asked again and reports made while the head was away are sent, in order."""
        if self.stopping:
            conn.close()
            return
        self.conn = conn
        log.warning("rejoined the head at %s after %.1f s", self.address, waited)
        missed, self.missed = self.missed, []
        try:
            for msg in missed:
                conn.post(msg)
            for req, (make, _callback) in self.reqs.items():
                conn.post(make(req))
            conn.send(None)
        except ConnectionError:
            return   # lost again: _lost runs for it
        self.status_changed()

    def on_message(self, msg: P.Message) -> None:
        """Called on the loop for every message the head sends us."""
        if msg.op == "reply":
            pending = self.reqs.pop(msg.req_id, None)  # type: ignore[attr-defined]
            if pending is not None:
                pending[1](msg.value)  # type: ignore[attr-defined]
        elif msg.op == P.NodeDeclaredDead.op:
            self.declared_dead(msg.reason)  # type: ignore[attr-defined]
        elif msg.op in self.handlers:
            self.handlers[msg.op](msg)

    def ask(self, make: Callable[[int], P.Message], callback: Callable[[Any], None]) -> bool:
        """Send ``make(req_id)``; ``callback(value)`` runs with the answer. While the head is
        away the question waits and is asked again when we rejoin (or the node gives up).
        False only for a node without a head."""
        if self.conn is None:
            return False
        req = next(self.req_ids)
        self.reqs[req] = (make, callback)
        if not self.conn.closed:
            try:
                self.conn.send(make(req))
            except ConnectionError:
                pass   # asked again on rejoining
        return True

    def tell(self, msg: P.Message) -> None:
        """Send a one-way report; kept and replayed on rejoining while the head is away
        (free resources are not: the next status after rejoining says them)."""
        if self.conn is None:
            return
        if not self.conn.closed:
            try:
                self.conn.send(msg)
                return
            except ConnectionError:
                pass
        if msg.op != P.NodeStatus.op and len(self.missed) < REPLAY_MAX:
            self.missed.append(msg)

    def status_changed(self) -> None:
        self.tell(P.NodeStatus(self.node_id, self.sched.available()))
