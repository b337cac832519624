"""The node's links to other nodes (peers): who they are, connecting, their messages, loss.

A node learns its peers from the head (every second) and opens one connection to each, as a
client with role ``peer``. Over it, this node is to the peer what a remote driver is to a node:
it registers functions, pushes the objects a task needs, submits tasks (forwarding.py), creates
and calls actors (remote_actors.py); the peer pushes back results and its workers' output.

A peer the head declares dead (or whose connection drops) is lost for good
(:meth:`PeerLinks.lost`): its tasks are retried elsewhere and nothing it still sends is used,
so a late result never races the retry. When the head declares *this* node dead, it is told
(``node_declared_dead``) and stops (:meth:`PeerLinks.declared_dead`).

Feasibility: a task or actor asking for more than any single live node has (``num_cpus=3`` on
two 2-CPU nodes) fails with :class:`~unipar.exceptions.InfeasibleResourcesError` instead of
waiting for ever (:meth:`PeerLinks.check_feasible`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any, Callable

from ..wire import protocol as P
from ..wire.server import ServerConnection
from ..wire.transport import Connection
from . import placement
from .head_link import HeadLink
from .records import Peer
from .scheduler import Scheduler

log = logging.getLogger("unipar.native.node")

PEER_REFRESH_TICKS = 4     # ask the head for the node list every 4 ticks (1 s)


class PeerLinks:
    """Every peer this node knows, by node id. Hooks, set by the daemon:
    ``on_message(peer, msg)`` for what a live peer sends, ``on_connected(peer)``,
    ``on_lost(peer)`` (its work is retried or fails), ``on_refresh()`` after each new node list
    (room may have appeared), and ``stop(text)`` when the head declared this node dead."""

    def __init__(self, node_id: str, secret: bytes, sched: Scheduler, head: HeadLink,
                 drivers: list[ServerConnection]) -> None:
        self.node_id = node_id
        self.secret = secret
        self.sched = sched
        self.head = head
        self.drivers = drivers
        self.peers: dict[str, Peer] = {}
        # A cluster of `unipar start`: nodes may join it, so work no node fits today waits
        # (as in Ray); a driver's own one-machine cluster sets False: such work fails.
        self.can_grow = True
        self._warned: set[tuple[str, str]] = set()   # (what, demand) already logged
        self.ticks = 0
        self.stopping = False
        self.on_message: Callable[[Peer, P.Message], None] = lambda peer, msg: None
        self.on_connected: Callable[[Peer], None] = lambda peer: None
        self.on_lost: Callable[[Peer], None] = lambda peer: None
        self.on_refresh: Callable[[], None] = lambda: None
        self.stop: Callable[[str], None] = lambda text: None

    def get(self, node_id: str | None) -> Peer | None:
        return self.peers.get(node_id) if node_id else None

    def live(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.alive and p.conn is not None]

    def __bool__(self) -> bool:
        return bool(self.peers)

    def send(self, peer: Peer, *msgs: P.Message) -> bool:
        """Write ``msgs`` to ``peer`` in order; False when it is not connected (or dropped)."""
        if peer.conn is None:
            return False
        try:
            for msg in msgs:
                peer.conn.post(msg)
            peer.conn.send(None)   # write what was posted, in order
        except ConnectionError:
            return False
        return True

    # -- the node list -------------------------------------------------------------------------
    def tick(self) -> None:
        self.ticks += 1
        if self.ticks % PEER_REFRESH_TICKS == 1:
            self.head.status_changed()
            self.head.ask(lambda r: P.ListNodes(r), self.update)

    def update(self, nodes: list[dict[str, Any]]) -> None:
        """The head's node list: new peers are connected, dead ones lost."""
        for node in nodes:
            nid = node["NodeID"]
            if nid == self.node_id:
                continue
            peer = self.peers.get(nid)
            if not node["Alive"]:
                if peer is not None and peer.alive:
                    self.lost(peer)
                continue
            if peer is None:
                peer = self.peers[nid] = Peer(nid, node["Address"], node["Resources"])
                self._connect(peer)
            peer.avail = dict(node.get("Available", node["Resources"]))
        self.on_refresh()

    def _connect(self, peer: Peer) -> None:
        peer.connecting = True
        loop = asyncio.get_running_loop()

        def run() -> None:
            try:
                conn = Connection(peer.address, self.secret)
                conn.send(P.Hello("peer", "", os.getpid()))
            except (OSError, ConnectionError, P.ProtocolError) as exc:
                log.warning("cannot reach node %s at %s: %s", peer.node_id[:8], peer.address, exc)
                loop.call_soon_threadsafe(self.lost, peer)
                return
            loop.call_soon_threadsafe(self._connected, peer, conn)
            conn.serve_forever(lambda m: loop.call_soon_threadsafe(self._message, peer, m))
            loop.call_soon_threadsafe(self.lost, peer)
        threading.Thread(target=run, daemon=True, name=f"unipar-peer-{peer.node_id[:8]}").start()

    def _connected(self, peer: Peer, conn: Connection) -> None:
        peer.conn, peer.connecting = conn, False
        if not peer.alive or self.stopping:
            conn.close()
            return
        self.on_connected(peer)

    def _message(self, peer: Peer, msg: P.Message) -> None:
        if not peer.alive:
            # Declared dead: its tasks were retried elsewhere, so a late result must not
            # resolve (or race) the retry's. Messages read before its connection was closed
            # still arrive here, after ``lost``.
            return
        if msg.op == "log":
            for driver in self.drivers:
                driver.send(msg)
            return
        self.on_message(peer, msg)

    def lost(self, peer: Peer) -> None:
        """The peer's connection dropped or the head says it is dead: retry or fail its work."""
        if not peer.alive:
            return
        peer.alive = False
        peer.connecting = False
        if peer.conn is not None:
            peer.conn.close()
        self.on_lost(peer)
        # Forget it: if it comes back, it registers again and is a new peer.
        self.peers.pop(peer.node_id, None)

    def declared_dead(self, reason: str) -> None:
        """The head declared this node dead (it was frozen or cut off for longer than the
        node timeout). The others have already retried its tasks elsewhere, failed calls to
        its actors and stopped listening to it, so whatever still runs here is stale: stop
        every worker and actor and exit, as Ray's raylet does when the GCS marks it dead.

        Rejoining under the same id could not be made safe (its results would race the
        retries), and a new id from inside would strand the drivers connected here with
        refs the cluster has forgotten; a node started again joins fresh instead."""
        if self.stopping:
            return
        text = (f"the head declared this node ({self.node_id[:8]}) dead: {reason}. Its tasks "
                "were retried on other nodes and its actors are dead; it stops now. Start it "
                "again (unipar start --address=...) to rejoin as a new node.")
        log.error("%s", text)
        for peer in list(self.peers.values()):
            peer.alive = False          # nothing more from or to them
            if peer.conn is not None:
                peer.conn.close()
        self.stop(text)   # kills every worker (tasks of any origin, actors); the daemon exits

    # -- feasibility ---------------------------------------------------------------------------
    def infeasible(self, demand: dict[str, float], what: str) -> Exception | None:
        """The error for ``what`` asking for ``demand`` when no live node (this one or a peer
        the head listed) has that much, else None. Meaningful once the peers are known."""
        totals = [self.sched.total] + [p.total for p in self.peers.values() if p.alive]
        return placement.infeasible(demand, totals, what)

    def infeasible_today(self) -> list[dict[str, Any]]:
        """Work queued here that no live node (this one or a peer) could hold today, one row
        per shape: ``{"demand", "tasks", "actors"}``. On a cluster that may grow it waits for
        a node that fits; ``unipar status`` lists it."""
        totals = [self.sched.total] + [p.total for p in self.peers.values() if p.alive]
        rows: dict[str, dict[str, Any]] = {}

        def count(demand: dict[str, float], kind: str, n: int) -> None:
            if any(placement.fits(t, demand) for t in totals):
                return
            row = rows.setdefault(repr(sorted(demand.items())),
                                  {"demand": demand, "tasks": 0, "actors": 0})
            row[kind] += n
        for demand in self.sched.queued_shapes():
            count(demand, "tasks", len(self.sched.queued_ids(demand)))
        for _aid, demand in self.sched.waiting_actors():
            count(demand, "actors", 1)
        return list(rows.values())

    def check_feasible(self, demand: dict[str, float], what: str,
                       fail: Callable[[Exception], None]) -> None:
        """Call ``fail(error)`` if no live node can hold ``demand`` and the cluster cannot
        grow; where it can, ``what`` waits here (queued) for a node that fits to join, and the
        node logs why once. This node's list of peers may lag the head's by a second (a node
        that just joined): when it says no, the head's list is fetched first, so the verdict
        comes later; meanwhile ``what`` waits here."""
        if self.infeasible(demand, what) is None:
            return

        def verdict() -> None:
            error = self.infeasible(demand, what)
            if error is None:
                return
            if not self.can_grow:
                fail(error)
            elif self._first_warning(what, demand):
                log.warning("%s; it waits here until a node that fits joins", error)

        def answered(nodes: list) -> None:
            self.update(nodes)
            verdict()
        if not self.head.ask(lambda r: P.ListNodes(r), answered):
            verdict()

    def _first_warning(self, what: str, demand: dict[str, float]) -> bool:
        key = (what, repr(sorted(demand.items())))
        if key in self._warned:
            return False
        if len(self._warned) > 1000:   # a long-lived node: bounded, a repeat now and then
            self._warned.clear()
        self._warned.add(key)
        return True
