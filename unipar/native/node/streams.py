"""Streaming generators through the node: the values of a task the node sent to a worker
(or of an actor call it passed on) go back to the client that submitted it::

    worker ── StreamItem(stream_id, owner, i, record) ──▶ node ──▶ client ``owner``
    worker ◀── StreamAck(stream_id, consumed) ── node ◀── client

The node keeps, per open stream, the worker connection its values came from (for the acks);
the worker's last StreamItem (index -1) ends the route. Values for a client not connected
here (a task forwarded from another node) are dropped: streaming reaches clients on the node
that runs the task.
"""

from __future__ import annotations

from ..wire import protocol as P
from ..wire.server import ServerConnection


class StreamRelay:
    """Passes stream values to their owners and acks back to the producing workers."""

    def __init__(self, clients: dict[int, ServerConnection]) -> None:
        self.clients = clients   # the node's connections by client id (shared, read only)
        self.routes: dict[bytes, ServerConnection] = {}

    def on_stream_item(self, conn: ServerConnection, msg: P.StreamItem) -> None:
        if msg.index < 0:
            self.routes.pop(msg.stream_id, None)
            return
        self.routes[msg.stream_id] = conn
        owner = self.clients.get(msg.owner)
        if owner is None:
            return
        oid, kind, payload, path, size, contained = msg.result
        record = [oid, kind, P.blob(payload), path, size, contained]   # out of band again
        owner.send(P.StreamItem(msg.stream_id, msg.owner, msg.index, record))

    def on_stream_ack(self, conn: ServerConnection, msg: P.StreamAck) -> None:
        worker = self.routes.get(msg.stream_id)
        if worker is not None:
            worker.send(msg)

    def disconnected(self, conn: ServerConnection) -> None:
        """A worker's connection dropped: its streams' routes go with it."""
        for stream_id in [s for s, c in self.routes.items() if c is conn]:
            del self.routes[stream_id]
