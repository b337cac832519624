"""What the client's delivery paths (leased workers, actor processes) may ask of their client.

:class:`~.direct.DirectPool` and :class:`~.actor_calls.ActorRouter` push work to other processes
and hand back what comes of it; they see their client only through these narrow interfaces
(the :class:`~.client.Client` satisfies them), so neither imports the client::

    Client.submit_task ─▶ DirectPool.submit ─▶ worker ─▶ DirectPool._settle ─▶ Delivery.deliver
    Client.call_actor  ─▶ ActorRouter.call  ─▶ actor  ─▶ ActorRouter settle ─▶ Delivery.deliver
"""

from __future__ import annotations

from typing import Protocol, Sequence

from ..wire import protocol as P
from ..wire.transport import Connection


class Delivery(Protocol):
    """Results, failures and output of work this client pushed; messages to its node."""

    secret: bytes      # to authenticate to workers and actors
    client_id: int     # who we are at the node (big results are stored there for us)

    def new_id(self) -> bytes:
        """A fresh id (leases, tasks, results), unique in the cluster."""

    def to_node(self, msg: P.Message, now: bool = False) -> None:
        """Send ``msg`` to our node: now, or with the next write (within about 1 ms)."""

    def wake_flusher(self) -> None:
        """Something was queued for a later write: make sure the flusher writes it soon."""

    def deliver(self, results: list) -> None:
        """Record finished work's results (``[oid, kind, payload, path, size, contained]``)."""

    def stream_item(self, msg: P.StreamItem, conn: Connection) -> None:
        """A value of a streaming generator we submitted, which came over ``conn``."""

    def fail_locally(self, return_ids: Sequence[bytes], payload: bytes) -> None:
        """Fail these results with the packed error ``payload``."""

    def show_log(self, msg: P.Log) -> None:
        """Output of work we pushed: shown (a driver) or passed on (a worker)."""
