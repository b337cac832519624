"""What one part of the node daemon may ask of another: small interfaces, no implementations.

Parts are handed these (the daemon wires them in :class:`~.daemon.Node`), so no part imports
the module of a part that also needs it back: objects.py asks the peers for objects through
:class:`Fetcher`, actors.py reaches actors on other nodes through :class:`Elsewhere`, and
everything that talks to the head uses :class:`HeadPort`.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from ..wire import protocol as P
from ..wire.server import ServerConnection
from .records import Task


class Fetcher(Protocol):
    """Objects made on other nodes (peers.py)."""

    def fetch(self, conn: ServerConnection | None, oid: bytes, subscribe: bool = True) -> bool:
        """Ask the peers for ``oid`` on behalf of ``conn`` (None: a task here); True if asked
        (the object then exists here, pending)."""

    def adopt(self, oid: bytes, kind: str, payload: Any, size: int, contained: list) -> None:
        """Store contents a peer or remote driver pushed (no longer fetching them)."""

    def freed(self, oid: bytes) -> None:
        """Our copy of ``oid`` was freed: the peer that made it may free its original."""


class HeadPort(Protocol):
    """The head, as the parts see it (head_link.py). Every call is a no-op without a head."""

    def tell(self, msg: P.Message) -> None: ...

    def ask(self, make: Callable[[int], P.Message], callback: Callable[[Any], None]) -> bool:
        """Send ``make(req_id)``; ``callback(value)`` runs on the loop with the answer.
        False when there is no head to ask."""

    def status_changed(self) -> None:
        """Resources were taken or given back: report this node's free resources now."""


class Elsewhere(Protocol):
    """Actors on other nodes (remote_actors.py), as actors.py sees them."""

    def has_peers(self) -> bool: ...

    def create_elsewhere(self, conn: ServerConnection, msg: P.CreateActor) -> bool:
        """Create the actor on a peer if placement says so; True if it goes there."""

    def route_call(self, task: Task) -> bool:
        """Queue a call for an actor not hosted here; False when no node can be asked."""

    def kill_remote(self, aid: bytes, no_restart: bool) -> bool: ...

    def table_size(self) -> dict[str, int]:
        """Counts of its per-actor records (``remote_*`` keys), for ``node_info``."""

    def tracks(self, aid: bytes) -> bool:
        """Whether ``aid`` may still live on a peer (being created, hosted, re-created)."""

    def check_feasible(self, demand: dict[str, float], what: str,
                       fail: Callable[[Exception], None]) -> None:
        """Call ``fail(error)`` if no live node can ever hold ``demand``."""
