"""The node's cluster half: other nodes (peers), tasks and actors sent to them, objects fetched.

A node learns its peers from the head (every second) and opens one connection to each, as a
client with role ``peer``. Over it, this node is to the peer what a remote driver is to a node:
it registers functions, pushes the objects a task needs (contents, not paths), submits tasks,
creates and calls actors; the peer pushes back results (contents) and its workers' output.

When a task goes elsewhere (:meth:`PeerHost.maybe_forward`):

- it asks for a resource this node does not have at all, and a peer has it; or
- this node has no free room for it now, and a peer has room (we count what we sent it and
  have not got back against its CPUs). Tasks that came from a peer are not sent on again.

An actor goes to a peer only when this node lacks the resources it asks for. The head records
where each actor lives, so a node that receives a call for an actor it does not know (a handle
passed along, a named actor) asks the head and routes it there.

A ref to an object this node does not know (a ref nested in an argument, a handle to a result
another node made) is fetched on demand: the node asks every peer; the first that has it sends
the contents, which are stored once here and shared by every local worker. Objects bigger than
one chunk are not sent whole: this node pulls them chunk by chunk (:mod:`.transfer`).

A peer the head declares dead (or whose connection drops) is lost for good
(:meth:`PeerHost._peer_lost`): its tasks are retried elsewhere and nothing it still sends is
used, so a late result never races the retry. When the head declares *this* node dead, it is
told (``node_declared_dead``) and stops (:meth:`PeerHost.declared_dead`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections import deque
from typing import Any

from ...exceptions import ActorDiedError, ObjectLostError, WorkerCrashedError
from ..wire import protocol as P
from ..wire import serialization as S
from .failover import FailoverHost, dead_peer_calls
from .store import StoreFullError
from ..wire.server import ServerConnection
from ..wire.chunks import CHUNK_SIZE
from .transfers import TransferHost
from ..wire.transport import Connection

log = logging.getLogger("unipar.native.node")

PEER_REFRESH_TICKS = 4     # ask the head for the node list every 4 ticks (1 s)
INLINE_MAX = 100 * 1024


class Peer:
    """Another node, as seen from this one."""

    def __init__(self, node_id: str, address: str, total: dict[str, float]) -> None:
        self.node_id = node_id
        self.address = address
        self.total = dict(total)
        self.conn: Connection | None = None
        self.connecting = False
        self.alive = True
        self.fns: set[str] = set()
        self.inflight: dict[bytes, Any] = {}      # task id -> Task sent there, not finished
        self.used: dict[str, float] = {}         # resources of the tasks in ``inflight``
        self.pushed: dict[bytes, int] = {}       # object id -> tasks there that use our copy
        self.avail: dict[str, float] = dict(total)   # its free resources, as last reported

    def add(self, task: Any) -> None:
        self.inflight[task.task_id] = task
        for key, amount in task.resources.items():
            self.used[key] = self.used.get(key, 0.0) + amount

    def remove(self, task_id: bytes) -> Any:
        task = self.inflight.pop(task_id, None)
        if task is not None:
            for key, amount in task.resources.items():
                self.used[key] = self.used.get(key, 0.0) - amount
        return task

    def room(self, demand: dict[str, float]) -> bool:
        """Could it take one more task of ``demand``, counting what we sent and did not get back?"""
        return all(self.total.get(k, 0.0) + 1e-9 >= self.used.get(k, 0.0) + v
                   for k, v in demand.items() if v > 0)

    def has(self, demand: dict[str, float]) -> bool:
        return all(self.total.get(k, 0.0) >= v for k, v in demand.items() if v > 0)


class PeerHost(FailoverHost, TransferHost):
    """Mixed into :class:`~.node.Node`; uses its objects, tasks, store and scheduler."""

    def init_peers(self) -> None:
        self.peers: dict[str, Peer] = {}
        self.remote_results: dict[bytes, str] = {}     # object id -> peer holding its original
        self.remote_actors: dict[bytes, str] = {}      # actor id -> peer hosting it
        self.remote_calls: dict[bytes, deque] = {}     # actor id -> calls not yet sent there
        self.actor_lookups: dict[bytes, list] = {}     # actor id -> (call, deps watched) waiting for the head
        self.fetching: dict[bytes, int] = {}           # object id -> peers yet to answer
        self.fetch_holds: dict[bytes, set[str]] = {}   # object id -> peers holding it for us
        self.remote_creating: set[bytes] = set()       # actors whose CreateActor is not sent yet
        self.head_reqs: dict[int, Any] = {}
        self.head_req_ids = itertools.count(100)
        self.peer_ticks = 0
        self.init_transfers()
        self.init_failover()

    # -- the head ------------------------------------------------------------------------------
    def on_head_message(self, msg: P.Message) -> None:
        """Called on the loop for every message the head sends us."""
        if msg.op == "reply":
            callback = self.head_reqs.pop(msg.req_id, None)  # type: ignore[attr-defined]
            if callback is not None:
                callback(msg.value)  # type: ignore[attr-defined]
        elif msg.op == P.NodeDeclaredDead.op:
            self.declared_dead(msg.reason)  # type: ignore[attr-defined]

    def declared_dead(self, reason: str) -> None:
        """The head declared this node dead (it was frozen or cut off for longer than the
        node timeout). The others have already retried its tasks elsewhere, failed calls to
        its actors and stopped listening to it, so whatever still runs here is stale: stop
        every worker and actor and exit, as Ray's raylet does when the GCS marks it dead.

        Rejoining under the same id could not be made safe (its results would race the
        retries), and a new id from inside would strand the drivers connected here with
        refs the cluster has forgotten; a node started again joins fresh instead."""
        if self.stopping.is_set():
            return
        text = (f"the head declared this node ({self.node_id[:8]}) dead: {reason}. Its tasks "
                "were retried on other nodes and its actors are dead; it stops now. Start it "
                "again (unipar start --address=...) to rejoin as a new node.")
        log.error("%s", text)
        self._warn(text)   # drivers connected here: their pending gets raise next
        for peer in list(self.peers.values()):
            peer.alive = False          # nothing more from or to them
            if peer.conn is not None:
                peer.conn.close()
        self.stop()   # kills every worker (tasks of any origin, actors); the daemon exits

    def ask_head(self, make: Any, callback: Any) -> bool:
        if self.head is None or self.head.closed:
            return False
        req = next(self.head_req_ids)
        self.head_reqs[req] = callback
        try:
            self.head.send(make(req))
        except ConnectionError:
            self.head_reqs.pop(req, None)
            return False
        return True

    def tell_head(self, msg: P.Message) -> None:
        if self.head is not None and not self.head.closed:
            try:
                self.head.send(msg)
            except ConnectionError:
                pass

    def peers_tick(self) -> None:
        self.peer_ticks += 1
        if self.peer_ticks % PEER_REFRESH_TICKS == 1:
            self.tell_head(P.NodeStatus(self.node_id, self.sched.available()))
            self.ask_head(lambda r: P.ListNodes(r), self._update_peers)

    def _update_peers(self, nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            nid = node["NodeID"]
            if nid == self.node_id:
                continue
            peer = self.peers.get(nid)
            if not node["Alive"]:
                if peer is not None and peer.alive:
                    self._peer_lost(peer)
                continue
            if peer is None:
                peer = self.peers[nid] = Peer(nid, node["Address"], node["Resources"])
                self._connect(peer)
            peer.avail = dict(node.get("Available", node["Resources"]))
        self._move_waiting_actors()

    def _connect(self, peer: Peer) -> None:
        peer.connecting = True
        loop = asyncio.get_running_loop()

        def run() -> None:
            try:
                conn = Connection(peer.address, self.secret)
                conn.send(P.Hello("peer", "", os.getpid()))
            except (OSError, ConnectionError, P.ProtocolError) as exc:
                log.warning("cannot reach node %s at %s: %s", peer.node_id[:8], peer.address, exc)
                loop.call_soon_threadsafe(self._peer_lost, peer)
                return
            loop.call_soon_threadsafe(self._peer_connected, peer, conn)
            conn.serve_forever(lambda m: loop.call_soon_threadsafe(self._on_peer_message, peer, m))
            loop.call_soon_threadsafe(self._peer_lost, peer)
        threading.Thread(target=run, daemon=True, name=f"unipar-peer-{peer.node_id[:8]}").start()

    def _peer_connected(self, peer: Peer, conn: Connection) -> None:
        peer.conn, peer.connecting = conn, False
        if not peer.alive or self.stopping.is_set():
            conn.close()
            return
        self._place_stranded()
        self._pull_to(peer)
        for aid, nid in list(self.remote_actors.items()):   # calls that waited for the link
            if nid == peer.node_id:
                self.pump_remote(aid)

    def _place_stranded(self) -> None:
        """Tasks queued here for resources this node does not have (they arrived before we
        knew a peer that has them, or their node died): send them where they can run."""
        for shape in list(self.sched.queues):
            demand = dict(shape)
            if all(self.sched.total.get(k, 0.0) >= v for k, v in demand.items() if v > 0):
                continue
            for task_id in list(self.sched.queues.get(shape) or {}):
                task = self.tasks.get(task_id)
                if task is None or task.state != "queued":
                    continue
                self.sched.remove_task(task_id)
                if not self.maybe_forward(task, task.from_peer):
                    self.sched.add_task(task_id, task.resources, time.monotonic(),
                                        f"task {task.name}", front=True)
                    break

    def live_peers(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.alive and p.conn is not None]

    def _send(self, peer: Peer, *msgs: P.Message) -> bool:
        if peer.conn is None:
            return False
        try:
            for msg in msgs:
                peer.conn.post(msg)
            peer.conn.send(None)   # write what was posted, in order
        except ConnectionError:
            return False
        return True

    # -- messages from peers -------------------------------------------------------------------
    def _on_peer_message(self, peer: Peer, msg: P.Message) -> None:
        if not peer.alive:
            # Declared dead: its tasks were retried elsewhere, so a late result must not
            # resolve (or race) the retry's. Messages read before its connection was closed
            # still arrive here, after ``_peer_lost``.
            return
        if msg.op == "object_ready":
            self._peer_object(peer, msg)  # type: ignore[arg-type]
        elif msg.op == "log":
            for driver in self.drivers:
                driver.send(msg)
        elif msg.op == "object_chunk":   # a pull of ours, over our connection to it
            self.chunk_arrived(peer, msg)  # type: ignore[arg-type]
        elif msg.op == "fetch_chunk":    # it pulls an object we offered, over its connection
            self.serve_chunk(lambda m: self._send(peer, m), msg)  # type: ignore[arg-type]

    def _peer_object(self, peer: Peer, msg: P.ObjectReady) -> None:
        oid = msg.oid
        obj = self.objects.get(oid)
        if oid in self.fetching:
            if msg.kind == "error" and self._is_lost(msg.payload):
                self.fetching[oid] -= 1
                if self.fetching[oid] > 0:
                    return          # another peer may still have it
            self.fetching.pop(oid, None)
            if obj is not None and obj.kind is None:
                self._adopt(oid, msg.kind, msg.payload, msg.size, [], peer)
            if oid not in self.pulls:
                self._fetch_done(oid)   # else once the pull ends
            return
        if obj is None or obj.kind is not None:
            return
        self._adopt(oid, msg.kind, msg.payload, msg.size, [], peer)
        self._result_arrived(peer, obj)

    def _result_arrived(self, peer: Peer, obj: Any) -> None:
        """A result of a task we sent ``peer`` is here (a pulled one: its last chunk): the
        task is done once all its results are."""
        task_id = obj.task_id
        task = peer.inflight.get(task_id) if task_id is not None else None
        if task is not None and all(self.objects.get(o) is None or self.objects[o].kind
                                    for o in task.return_ids):
            self._forwarded_done(peer, task)

    @staticmethod
    def _is_lost(payload: Any) -> bool:
        try:
            return isinstance(S.load_packed(payload), ObjectLostError)
        except Exception:   # noqa: BLE001 - an undecodable error is not "lost"
            return False

    def _adopt(self, oid: bytes, kind: str, payload: Any, size: int, contained: list,
               peer: Peer | None = None) -> None:
        """Store contents received from a peer: big ones go to this node's store, once, so
        every local worker maps the same copy. ``chunked``: pull them from ``peer``."""
        if oid in self.pulls:
            return   # a pull brings it already: one copy per node, whoever else answers
        if kind == "chunked" and peer is not None:
            obj = self.objects[oid]
            self.pull(oid, size, peer, lambda m: self._send(peer, m),
                      lambda: self._result_arrived(peer, obj))
            return
        if kind == "inline" and payload is not None and len(payload) > INLINE_MAX:
            try:
                path = self.store.alloc(oid, len(payload))
                tmp = path + ".tmp"
                with open(tmp, "wb", buffering=0) as f:
                    f.write(payload)
                os.replace(tmp, path)
                self._forget_spilled()
                self._resolve(oid, "shm", None, path, len(payload), contained)
                return
            except (StoreFullError, OSError):
                self._forget_spilled()
        self._resolve(oid, kind, bytes(payload) if payload is not None else None, "", size,
                      contained)

    # -- forwarding tasks ----------------------------------------------------------------------
    def maybe_forward(self, task: Any, from_peer: bool) -> bool:
        """Send ``task`` (deps ready, not failed) to a peer if it belongs there; True if sent.
        One that no known node could run waits here, and fails (InfeasibleResourcesError) if
        the head knows no such node either."""
        peers = self.live_peers()
        demand = task.resources
        here = all(self.sched.total.get(k, 0.0) >= v for k, v in demand.items() if v > 0)
        if not here and not from_peer and not any(p.has(demand) for p in peers):
            # It waits here; it fails if the head's list has no node with that much.
            asyncio.get_running_loop().call_soon(self.check_task_feasible, task)
            return False
        if not peers:
            return False
        if here:
            if from_peer or self._room_here(demand):
                return False
            candidates = [p for p in peers if p.room(demand)]
        else:
            candidates = [p for p in peers if p.has(demand)]
            candidates = [p for p in candidates if p.room(demand)] or candidates
        if not candidates:
            return False
        peer = min(candidates, key=lambda p: p.used.get("CPU", 0.0) / max(p.total.get("CPU", 1.0), 1.0))
        return self.forward(task, peer)

    def _room_here(self, demand: dict[str, float]) -> bool:
        """Free resources now, minus what tasks already queued here will take."""
        free = self.sched.available()
        for shape, queue in self.sched.queues.items():
            for key, amount in shape:
                free[key] = free.get(key, 0.0) - amount * len(queue)
        return all(free.get(k, 0.0) >= v - 1e-9 for k, v in demand.items() if v > 0)

    def _push_deps(self, peer: Peer, deps: list[bytes]) -> list[P.Message]:
        msgs: list[P.Message] = []
        for oid in deps:
            if peer.pushed.get(oid):
                peer.pushed[oid] += 1
                continue
            obj = self.objects[oid]
            if obj.kind == "shm" and obj.size > CHUNK_SIZE:   # too big for one frame: it pulls
                msgs.append(P.OfferObject(oid, obj.size, self.node_id))
                peer.pushed[oid] = 1
                continue
            payload = self._read_object(oid, obj) if obj.kind == "shm" else obj.payload
            kind = "error" if obj.kind == "error" else "inline"
            msgs.append(P.PutObject(oid, kind, P.blob(payload), "", obj.size, []))
            peer.pushed[oid] = 1
        return msgs

    def _release_deps(self, peer: Peer, deps: list[bytes]) -> None:
        released = []
        for oid in deps:
            left = peer.pushed.get(oid, 0) - 1
            if left <= 0:
                peer.pushed.pop(oid, None)
                released.append(oid)
            else:
                peer.pushed[oid] = left
        if released:
            self._send(peer, P.RefUpdates([], released))

    def _fn_msgs(self, peer: Peer, key: str) -> list[P.Message]:
        if key in peer.fns:
            return []
        peer.fns.add(key)
        return [P.RegisterFunction(key, P.blob(self.functions[key]))]

    def forward(self, task: Any, peer: Peer) -> bool:
        msgs = self._fn_msgs(peer, task.fn_key) + self._push_deps(peer, task.deps)
        args = P.blob(task.args) if task.args is not None else None
        msgs.append(P.SubmitTask(task.task_id, task.fn_key, task.name, args, task.deps,
                                 task.contained, task.return_ids, task.resources,
                                 task.retries_left))
        return self._sent(peer, task, msgs)

    def _sent(self, peer: Peer, task: Any, msgs: list[P.Message]) -> bool:
        if not self._send(peer, *msgs):
            self._release_deps(peer, task.deps)
            return False
        task.state = "forwarded"
        task.worker = peer.node_id
        peer.add(task)
        for oid in task.return_ids:
            self.remote_results[oid] = peer.node_id
        return True

    def _forwarded_done(self, peer: Peer, task: Any) -> None:
        peer.remove(task.task_id)
        self._release_deps(peer, task.deps)
        self._finish(task)
        self._pull_to(peer)

    def _pull_to(self, peer: Peer) -> None:
        """A peer finished something of ours: send it queued tasks (newest first) while it
        has room, so a wide map keeps every node busy."""
        for shape in list(self.sched.queues):
            demand = dict(shape)
            if not peer.has(demand):
                continue
            queue = self.sched.queues.get(shape)
            for task_id in list(reversed(queue or {})):
                if not peer.room(demand):
                    break
                task = self.tasks.get(task_id)
                if task is None or task.from_peer or task.state != "queued":
                    continue
                self.sched.remove_task(task_id)
                if not self.forward(task, peer):
                    self.sched.add_task(task_id, task.resources, time.monotonic(),
                                        f"task {task.name}", front=True)
                    return

    def release_remote(self, oid: bytes) -> None:
        """Our copy of a result a peer made was freed: let the peer free its original."""
        nid = self.remote_results.pop(oid, None)
        peer = self.peers.get(nid) if nid else None
        if peer is not None and peer.alive:
            self._send(peer, P.RefUpdates([], [oid]))

    def cancel_remote(self, task: Any, force: bool, recursive: bool) -> None:
        """Cancel a task we sent to a peer: tell the peer, stop counting it as ours there."""
        peer = self.peers.get(task.worker or "")
        if peer is None:
            return
        if task.return_ids:
            self._send(peer, P.Cancel(task.return_ids[0], force, recursive))
        if peer.remove(task.task_id) is not None:
            self._release_deps(peer, task.deps)

    # -- fetching objects ----------------------------------------------------------------------
    def fetch(self, conn: ServerConnection | None, oid: bytes, subscribe: bool = True) -> bool:
        """``conn`` (or, with None, a task here) wants an object this node does not know: ask
        the peers. True if asked; the object then exists here, pending."""
        if conn is not None and conn.info.get("peer"):
            return False     # a peer asking us: answer only for ourselves (no loops)
        peers = self.live_peers()
        if not peers:
            return False
        obj = self.objects.get(oid)
        if obj is None:
            obj = self.objects[oid] = self.new_obj()
            if conn is not None:
                self._hold(conn, oid, obj)
        if subscribe and conn is not None and conn not in obj.subscribers:
            obj.subscribers.append(conn)
        if oid not in self.fetching:
            self.fetching[oid] = len(peers)
            holds = self.fetch_holds.setdefault(oid, set())
            for peer in peers:
                # Hold it there until our copy is made: whatever keeps it alive there now
                # (the object that contains its ref, say) may let go before a big copy ends.
                # Sent before anything we send later (a release of that container) and
                # handled before it: no window where nobody holds it.
                if self._send(peer, P.RefUpdates([oid], []), P.Subscribe([oid])):
                    holds.add(peer.node_id)
                else:
                    self.fetching[oid] -= 1
            if self.fetching[oid] <= 0:
                self._fetch_failed(oid)
        return True

    def _fetch_done(self, oid: bytes) -> None:
        """The fetch of ``oid`` ended (copied, or failed): drop the holds it took on peers."""
        for nid in self.fetch_holds.pop(oid, ()):
            peer = self.peers.get(nid)
            if peer is not None and peer.alive:
                self._send(peer, P.RefUpdates([], [oid]))

    def pull_ended(self, oid: bytes) -> None:
        self._fetch_done(oid)

    def pull_source_lost(self, oid: bytes) -> None:
        """The node we pulled ``oid`` from is gone (its partial copy here is removed already).
        A result of a task not finished here waits for that task (``_peer_lost`` retries or
        fails it); anything else is asked of the other peers, once more, and fails only if
        none has it."""
        obj = self.objects.get(oid)
        if obj is None or obj.kind is not None:
            return
        if obj.task_id is not None and obj.task_id in self.tasks:
            return
        self.fetching.pop(oid, None)
        if not self.fetch(None, oid):
            self._fetch_failed(oid)

    def _fetch_failed(self, oid: bytes) -> None:
        self.fetching.pop(oid, None)
        self._fetch_done(oid)
        obj = self.objects.get(oid)
        if obj is not None and obj.kind is None:
            self._resolve(oid, "error", S.pack_error(ObjectLostError(
                f"object {oid.hex()} no longer exists on any node (every ref to it was "
                "dropped, or its node was lost)")), "", 0, [])

    # -- actors elsewhere ----------------------------------------------------------------------
    def maybe_forward_actor(self, msg: P.CreateActor) -> Peer | None:
        """A peer for an actor (None: create it here). Here when this node has room for it
        now; else a peer with room (as it last reported, less what we placed there since);
        else here if this node could ever hold it, else any peer that could."""
        demand = {k: v for k, v in msg.resources.items() if v > 0}
        if not demand:
            return None
        free = self.sched.available()
        for queued in self.sched.actor_queue.values():
            for key, amount in queued.demand.items():
                free[key] = free.get(key, 0.0) - amount
        if all(free.get(k, 0.0) + 1e-9 >= v for k, v in demand.items()):
            return None
        peers = [p for p in self.live_peers() if p.has(demand)]
        roomy = [p for p in peers if all(p.avail.get(k, 0.0) + 1e-9 >= v for k, v in demand.items())]
        here = all(self.sched.total.get(k, 0.0) >= v for k, v in demand.items())
        if not roomy and (here or not peers):
            return None
        peer = max(roomy or peers, key=lambda p: p.avail.get("CPU", 0.0))
        for key, amount in demand.items():
            peer.avail[key] = peer.avail.get(key, 0.0) - amount
        return peer

    def _move_waiting_actors(self) -> None:
        """Actors waiting here for resources go to a peer that reported room for them."""
        for aid, queued in list(self.sched.actor_queue.items()):
            actor = self.actors.get(aid)   # type: ignore[arg-type]
            demand = {k: v for k, v in queued.demand.items() if v > 0}
            if actor is None or actor.state != "pending" or actor.init_task is None or not demand:
                continue
            roomy = [p for p in self.live_peers() if p.has(demand) and all(
                p.avail.get(k, 0.0) + 1e-9 >= v for k, v in demand.items())]
            if not roomy:
                continue
            peer = max(roomy, key=lambda p: p.avail.get("CPU", 0.0))
            for key, amount in demand.items():
                peer.avail[key] = peer.avail.get(key, 0.0) - amount
            self.sched.remove_actor(aid)
            del self.actors[aid]   # type: ignore[arg-type]
            self.actor_left(actor)   # callers waiting for its address: call via the node
            init = actor.init_task
            init.remote_create = actor.msg
            self.remote_creating.add(aid)   # type: ignore[arg-type]
            self.remote_actors[aid] = peer.node_id   # type: ignore[index]
            self.remote_calls[aid] = deque(actor.queue)   # type: ignore[index]
            self.send_remote_create(init)

    def status_changed(self) -> None:
        """Actors took or gave back resources: tell the head now (cluster views stay fresh)."""
        if self.head is not None:
            self.tell_head(P.NodeStatus(self.node_id, self.sched.available()))

    def forward_actor(self, conn: ServerConnection, msg: P.CreateActor, peer: Peer) -> None:
        """Create the actor on ``peer``; its constructor's arguments are pushed there first."""
        init = self._make_task(conn, msg.actor_id, f"{msg.class_name}.__init__", msg.args,
                               msg.deps, msg.contained, [], msg.resources, 0)
        init.fn_key = msg.class_key
        init.remote_create = msg
        init.actor_id = msg.actor_id
        self.remote_creating.add(msg.actor_id)
        self.remote_actors[msg.actor_id] = peer.node_id
        self.remote_calls[msg.actor_id] = deque()
        self._watch_deps(init)

    def send_remote_create(self, task: Any) -> None:
        """The constructor's dependencies are ready: send CreateActor to the chosen peer."""
        msg: P.CreateActor = task.remote_create
        peer = self.peers.get(self.remote_actors.get(msg.actor_id, ""))
        if peer is None or not peer.alive:
            self._finish(task)
            self.bury_actor(msg.actor_id, "the node chosen for it was lost before it started")
            return
        msgs = self._fn_msgs(peer, msg.class_key) + self._push_deps(peer, task.deps)
        msgs.append(msg)
        self.own_remote_actor(msg, task)   # if that node dies, this one re-creates it
        if not self._send(peer, *msgs):
            self._release_deps(peer, task.deps)
        else:
            # The peer pinned its copies of the arguments for the actor's life: ours can go.
            self._release_deps(peer, task.deps)
            self.tell_head(P.ActorLocation(msg.actor_id, peer.node_id))
        task.remote_create = None
        self.remote_creating.discard(msg.actor_id)
        self._finish(task)
        self.pump_remote(msg.actor_id)

    def route_call(self, conn: ServerConnection, task: Any) -> bool:
        """A call for an actor not hosted here: queue it for the peer hosting it (asking the
        head where that is, once). False when this node knows of no peers at all."""
        aid = task.actor_id
        death = self.dead_actors.get(aid)
        if death is not None:   # its node died and it was not restarted
            self._fail_task(task, death)
            return True
        if aid in self.remote_actors:
            self.remote_calls.setdefault(aid, deque()).append(task)
            self._watch_deps(task)
            return True
        if self.head is None:
            return False
        waiting = self.actor_lookups.get(aid)
        if waiting is not None:
            waiting.append((task, False))
            return True
        self.actor_lookups[aid] = [(task, False)]
        self.lookup_actor(aid)
        return True

    def actor_found(self, aid: bytes, nid: str | None) -> None:
        """The head answered where ``aid`` lives: send the calls waiting for that there."""
        if aid not in self.actor_lookups or self.stale_location(aid, nid):
            return
        calls = self.actor_lookups.pop(aid)
        self.relocating.pop(aid, None)
        actor = self.actors.get(aid) if nid == self.node_id else None
        peer = self.peers.get(nid or "")
        if actor is None and (peer is None or not peer.alive):
            for task, _watched in calls:
                self._fail_task(task, S.pack_error(ActorDiedError(
                    f"actor {aid.hex()[:12]} is not alive on any node of this cluster")))
            return
        if actor is not None:   # created (or re-created) here meanwhile
            queue = actor.queue
        else:
            self.remote_actors[aid] = peer.node_id
            queue = self.remote_calls.setdefault(aid, deque())
        for task, watched in calls:
            queue.append(task)
            if not watched:
                self._watch_deps(task)
        if actor is not None:
            self._pump(actor)
        else:
            self.pump_remote(aid)

    def pump_remote(self, aid: bytes) -> None:
        """Send queued calls to the remote actor in order, while the next one's deps are ready."""
        queue = self.remote_calls.get(aid)
        peer = self.peers.get(self.remote_actors.get(aid, ""))
        if queue is None or peer is None:
            return
        while queue and queue[0].missing == 0 and aid not in self.remote_creating:
            task = queue.popleft()
            error = self._failed_dep(task)
            if error is not None:
                self._fail_task(task, error)
                continue
            msgs = self._push_deps(peer, task.deps)
            args = P.blob(task.args) if task.args is not None else None
            msgs.append(P.CallActor(aid, task.task_id, task.method, args, task.deps,
                                    task.contained, task.return_ids))
            if not self._sent(peer, task, msgs):
                # Not connected yet, or its connection just dropped (``_peer_lost`` follows
                # and restarts the actor or relocates its calls): the call waits.
                queue.appendleft(task)
                return

    def kill_remote(self, aid: bytes, no_restart: bool) -> bool:
        """Kill an actor hosted on a peer; without restarts it is not re-created either."""
        peer = self.peers.get(self.remote_actors.get(aid, ""))
        if no_restart and aid in self.owned_actors:
            self.disown(aid)
            if peer is None or not peer.alive:   # being re-created: it never comes back
                self.bury_actor(aid, "it was killed with unipar.kill()")
        if peer is None:
            return False
        self._send(peer, P.KillActor(0, aid, no_restart))
        return True

    # -- failures ------------------------------------------------------------------------------
    def _peer_lost(self, peer: Peer) -> None:
        """The peer's connection dropped or the head says it is dead: retry or fail its work."""
        if not peer.alive:
            return
        peer.alive = False
        peer.connecting = False
        if peer.conn is not None:
            peer.conn.close()
        calls = dead_peer_calls(peer)   # actor calls in flight there, per actor
        for task in list(peer.inflight.values()):
            peer.remove(task.task_id)
            if task.state != "forwarded":
                continue
            for oid in task.return_ids:
                self.remote_results.pop(oid, None)
            if task.actor_id is not None:
                continue   # below, with its actor
            elif task.retries_left != 0:
                task.retries_left -= 1 if task.retries_left > 0 else 0
                task.state, task.worker = "waiting", None
                self._deps_ready(task)
            elif any(self.pulls.get(oid) is not None and self.pulls[oid].source is peer
                     for oid in task.return_ids):
                # It ran, but its result was still being copied here: lost with the node.
                self._fail_task(task, S.pack_error(ObjectLostError(
                    f"the result of task {task.name} was lost with the node that made it "
                    "before its copy reached this node, and max_retries does not allow "
                    "running it again")))
            else:
                self._fail_task(task, S.pack_error(WorkerCrashedError(
                    f"the node running task {task.name} died and its retries are used up")))
        for aid, nid in list(self.remote_actors.items()):
            if nid == peer.node_id:
                self.actor_host_lost(aid, calls.pop(aid, []))
        for aid, lost in calls.items():   # (not expected: calls follow their actor)
            for task in lost:
                self._fail_task(task, S.pack_error(ActorDiedError(
                    f"the node running actor call {task.name} died")))
        for oid in list(self.fetching):
            self.fetching[oid] -= 1
            if self.fetching[oid] <= 0:
                self._fetch_failed(oid)
        self.pulls_lost(peer)   # after the retries above: results they redo stay pending
        # Forget it: if it comes back, it registers again and is a new peer.
        self.peers.pop(peer.node_id, None)
