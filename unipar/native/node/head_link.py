"""The node's link to the head: registration, requests with callbacks, one-way reports.

The head is not on the per-task path; the node registers with it once (from a thread: the head
may still be starting), reports its free resources, and asks it for the node list and where
actors live. Replies run their callback on the node's loop.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any, Callable

from ..wire import protocol as P
from ..wire.transport import Connection
from .scheduler import Scheduler


class HeadLink:
    """One node's connection to the head (none in a node started without a head).
    ``declared_dead(reason)`` runs when the head declares this node dead."""

    def __init__(self, node_id: str, address: str, secret: bytes, sched: Scheduler) -> None:
        self.node_id = node_id
        self.address = address    # the head's; "" without a head
        self.secret = secret
        self.sched = sched
        self.conn: Connection | None = None
        self.declared_dead: Callable[[str], None] = lambda reason: None
        self.reqs: dict[int, Callable[[Any], None]] = {}
        self.req_ids = itertools.count(100)

    @property
    def joined(self) -> bool:
        return self.conn is not None

    def join(self, loop: asyncio.AbstractEventLoop, my_address: str) -> None:
        """Register with the head and wait for its answer (blocking: run it on a thread; the
        head may still be starting). The starter learns we are ready only after this."""
        head = Connection(self.address, self.secret)
        answered = threading.Event()

        def on_message(msg: P.Message) -> None:
            if not answered.is_set():
                answered.set()     # the first message is the answer to RegisterNode
                return
            loop.call_soon_threadsafe(self.on_message, msg)
        threading.Thread(target=head.serve_forever, args=(on_message,),
                         daemon=True, name="unipar-node-head").start()
        head.send(P.RegisterNode(1, self.node_id, my_address, self.sched.total))
        if not answered.wait(30):
            raise RuntimeError(f"the head at {self.address} did not answer")
        self.conn = head

    def on_message(self, msg: P.Message) -> None:
        """Called on the loop for every message the head sends us."""
        if msg.op == "reply":
            callback = self.reqs.pop(msg.req_id, None)  # type: ignore[attr-defined]
            if callback is not None:
                callback(msg.value)  # type: ignore[attr-defined]
        elif msg.op == P.NodeDeclaredDead.op:
            self.declared_dead(msg.reason)  # type: ignore[attr-defined]

    def ask(self, make: Callable[[int], P.Message], callback: Callable[[Any], None]) -> bool:
        if self.conn is None or self.conn.closed:
            return False
        req = next(self.req_ids)
        self.reqs[req] = callback
        try:
            self.conn.send(make(req))
        except ConnectionError:
            self.reqs.pop(req, None)
            return False
        return True

    def tell(self, msg: P.Message) -> None:
        if self.conn is not None and not self.conn.closed:
            try:
                self.conn.send(msg)
            except ConnectionError:
                pass

    def status_changed(self) -> None:
        self.tell(P.NodeStatus(self.node_id, self.sched.available()))
