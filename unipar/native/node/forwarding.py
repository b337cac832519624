"""Work and objects across nodes: tasks sent to peers, their results, objects fetched.

When a task goes elsewhere is placement's (:mod:`.placement`): a task that asks for what this
node does not have goes to a peer that has it; one that finds no room here goes to a peer
with room (we count what we sent it and have not got back). Tasks that came from a peer are
not sent on again. A peer that finishes something of ours is sent more queued tasks.

A ref to an object this node does not know (a ref nested in an argument, a handle to a result
another node made) is fetched on demand: the node asks every peer; the first that has it sends
the contents, which are stored once here and shared by every local worker. Objects bigger than
one chunk are not sent whole: this node pulls them chunk by chunk (:mod:`.transfers`).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable

from ...exceptions import ObjectLostError, WorkerCrashedError
from ..wire import protocol as P
from ..wire import serialization as S
from ..wire.chunks import CHUNK_SIZE
from ..wire.server import ServerConnection
from . import placement
from .objects import ObjectDirectory
from .peers import PeerLinks
from .records import INLINE_MAX, Obj, Peer, Task
from .scheduler import Scheduler
from .store import StoreFullError
from .tasks import TaskTable
from .transfers import Transfers, conn_sender


class Forwarding:
    """Tasks this node sent to peers and objects it fetches from them. Implements
    :class:`~.ports.Fetcher` for the object directory."""

    def __init__(self, node_id: str, links: PeerLinks, objects: ObjectDirectory,
                 tasks: TaskTable, sched: Scheduler, transfers: Transfers,
                 functions: dict[str, bytes]) -> None:
        self.node_id = node_id
        self.links = links
        self.objects = objects
        self.tasks = tasks
        self.sched = sched
        self.transfers = transfers
        self.functions = functions
        self.remote_results: dict[bytes, str] = {}     # object id -> peer holding its original
        self.fetching: dict[bytes, int] = {}           # object id -> peers yet to answer
        self.fetch_holds: dict[bytes, set[str]] = {}   # object id -> peers holding it for us

    # -- forwarding tasks ----------------------------------------------------------------------
    def maybe_forward(self, task: Task) -> bool:
        """Send ``task`` (deps ready, not failed) to a peer if it belongs there; True if sent.
        One that no known node could run waits here, and fails (InfeasibleResourcesError) if
        the head knows no such node either."""
        if not self.links:
            return False
        peers = self.links.live()
        if placement.home_unknown(self.sched, task.resources, peers, task.from_peer):
            # It waits here; it fails if the head's list has no node with that much.
            asyncio.get_running_loop().call_soon(self._check_task_feasible, task)
            return False
        peer = placement.task_peer(self.sched, task.resources, peers, task.from_peer)
        return peer is not None and self.forward(task, peer)

    def _check_task_feasible(self, task: Task) -> None:
        """``task`` waits here (queued) for resources no known node has: fail it if none has."""
        def fail(error: Exception) -> None:
            if self.tasks.get(task.task_id) is task and task.state == "queued" \
                    and not task.cancelled:
                self.sched.remove_task(task.task_id)
                self.tasks.fail_task(task, S.pack_error(error))
        self.links.check_feasible(task.resources, f"task {task.name}", fail)

    def push_deps(self, peer: Peer, deps: list[bytes]) -> list[P.Message]:
        """Messages that give ``peer`` our objects ``deps`` (once per peer, counted)."""
        msgs: list[P.Message] = []
        for oid in deps:
            if peer.pushed.get(oid):
                peer.pushed[oid] += 1
                continue
            obj = self.objects.objects[oid]
            if obj.kind == "shm" and obj.size > CHUNK_SIZE:   # too big for one frame: it pulls
                msgs.append(P.OfferObject(oid, obj.size, self.node_id))
                peer.pushed[oid] = 1
                continue
            payload = self.objects.read_object(oid, obj) if obj.kind == "shm" else obj.payload
            kind = "error" if obj.kind == "error" else "inline"
            msgs.append(P.PutObject(oid, kind, P.blob(payload), "", obj.size, []))
            peer.pushed[oid] = 1
        return msgs

    def release_deps(self, peer: Peer, deps: list[bytes]) -> None:
        released = []
        for oid in deps:
            left = peer.pushed.get(oid, 0) - 1
            if left <= 0:
                peer.pushed.pop(oid, None)
                released.append(oid)
            else:
                peer.pushed[oid] = left
        if released:
            self.links.send(peer, P.RefUpdates([], released))

    def fn_msgs(self, peer: Peer, key: str) -> list[P.Message]:
        if key in peer.fns:
            return []
        peer.fns.add(key)
        return [P.RegisterFunction(key, P.blob(self.functions[key]))]

    def forward(self, task: Task, peer: Peer) -> bool:
        msgs = self.fn_msgs(peer, task.fn_key) + self.push_deps(peer, task.deps)
        args = P.blob(task.args) if task.args is not None else None
        msgs.append(P.SubmitTask(task.task_id, task.fn_key, task.name, args, task.deps,
                                 task.contained, task.return_ids, task.resources,
                                 task.retries_left))
        return self.sent(peer, task, msgs)

    def sent(self, peer: Peer, task: Task, msgs: list[P.Message]) -> bool:
        """Send ``msgs`` carrying ``task`` to ``peer``; the task is then counted there."""
        if not self.links.send(peer, *msgs):
            self.release_deps(peer, task.deps)
            return False
        task.state = "forwarded"
        task.worker = peer.node_id
        peer.add(task)
        for oid in task.return_ids:
            self.remote_results[oid] = peer.node_id
        return True

    def _forwarded_done(self, peer: Peer, task: Task) -> None:
        peer.remove(task.task_id)
        self.release_deps(peer, task.deps)
        self.tasks.finish(task)
        self.pull_to(peer)

    def _movable(self, task_id: Any) -> bool:
        task = self.tasks.get(task_id)
        return task is not None and not task.from_peer and task.state == "queued"

    def _resend(self, task_ids: list[Any], peer: Peer | None) -> None:
        """Take queued tasks out of the scheduler and send them (to ``peer``, or where
        placement says); the first that does not go is queued again and ends the round."""
        for task_id in task_ids:
            task = self.tasks.get(task_id)
            if task is None or task.state != "queued":
                continue
            self.sched.remove_task(task_id)
            went = self.forward(task, peer) if peer is not None else self.maybe_forward(task)
            if not went:
                self.sched.add_task(task_id, task.resources, time.monotonic(),
                                    f"task {task.name}", front=True)
                return

    def pull_to(self, peer: Peer) -> None:
        """A peer finished something of ours (or joined): send it queued tasks (newest
        first) while it has room, so a wide map keeps every node busy."""
        self._resend(placement.pull_to(self.sched, peer, self._movable), peer)

    def spread(self) -> None:
        """Peers reported room (a node joined, or work ended elsewhere): each that has room
        for work queued here is sent some, so a map queued before a join still spreads."""
        for peer in self.links.live():
            if placement.reported_room(self.sched, peer):
                self.pull_to(peer)

    def place_stranded(self) -> None:
        """Tasks queued here for resources this node does not have (they arrived before we
        knew a peer that has them, or their node died): send them where they can run."""
        for ids in placement.stranded(self.sched):
            self._resend(ids, None)

    def cancel_remote(self, task: Task, force: bool, recursive: bool) -> None:
        """Cancel a task we sent to a peer: tell the peer, stop counting it as ours there."""
        peer = self.links.get(task.worker)
        if peer is None:
            return
        if task.return_ids:
            self.links.send(peer, P.Cancel(task.return_ids[0], force, recursive))
        if peer.remove(task.task_id) is not None:
            self.release_deps(peer, task.deps)

    def freed(self, oid: bytes) -> None:
        """Our copy of a result a peer made was freed: let the peer free its original."""
        nid = self.remote_results.pop(oid, None)
        peer = self.links.get(nid)
        if peer is not None and peer.alive:
            self.links.send(peer, P.RefUpdates([], [oid]))

    # -- results and objects from peers --------------------------------------------------------
    def on_peer_message(self, peer: Peer, msg: P.Message) -> None:
        if msg.op == "object_ready":
            self._peer_object(peer, msg)  # type: ignore[arg-type]
        elif msg.op == "object_chunk":   # a pull of ours, over our connection to it
            self.transfers.chunk_arrived(peer, msg)  # type: ignore[arg-type]
        elif msg.op == "fetch_chunk":    # it pulls an object we offered, over its connection
            self.transfers.serve_chunk(lambda m: self.links.send(peer, m), msg)  # type: ignore[arg-type]

    def _peer_object(self, peer: Peer, msg: P.ObjectReady) -> None:
        oid = msg.oid
        obj = self.objects.get(oid)
        if oid in self.fetching:
            if msg.kind == "error" and _is_lost(msg.payload):
                self.fetching[oid] -= 1
                if self.fetching[oid] > 0:
                    return          # another peer may still have it
            self.fetching.pop(oid, None)
            if obj is not None and obj.kind is None:
                self._adopt(oid, msg.kind, msg.payload, msg.size, [], peer)
            if oid not in self.transfers.pulls:
                self._fetch_done(oid)   # else once the pull ends
            return
        if obj is None or obj.kind is not None:
            return
        self._adopt(oid, msg.kind, msg.payload, msg.size, [], peer)
        self._result_arrived(peer, obj)

    def _result_arrived(self, peer: Peer, obj: Obj) -> None:
        """A result of a task we sent ``peer`` is here (a pulled one: its last chunk): the
        task is done once all its results are."""
        task_id = obj.task_id
        task = peer.inflight.get(task_id) if task_id is not None else None
        if task is not None and all(self.objects.get(o) is None or self.objects.objects[o].kind
                                    for o in task.return_ids):
            self._forwarded_done(peer, task)

    def adopt(self, oid: bytes, kind: str, payload: Any, size: int, contained: list) -> None:
        self.fetching.pop(oid, None)
        self._adopt(oid, kind, payload, size, contained)

    def _adopt(self, oid: bytes, kind: str, payload: Any, size: int, contained: list,
               peer: Peer | None = None) -> None:
        """Store contents received from a peer: big ones go to this node's store, once, so
        every local worker maps the same copy. ``chunked``: pull them from ``peer``."""
        if oid in self.transfers.pulls:
            return   # a pull brings it already: one copy per node, whoever else answers
        if kind == "chunked" and peer is not None:
            obj = self.objects.objects[oid]
            self.transfers.pull(oid, size, peer, lambda m: self.links.send(peer, m),
                                lambda: self._result_arrived(peer, obj))
            return
        if kind == "inline" and payload is not None and len(payload) > INLINE_MAX:
            try:
                path = self.objects.store.alloc(oid, len(payload))
                tmp = path + ".tmp"
                with open(tmp, "wb", buffering=0) as f:
                    f.write(payload)
                os.replace(tmp, path)
                self.objects.forget_spilled()
                self.objects.resolve(oid, "shm", None, path, len(payload), contained)
                return
            except (StoreFullError, OSError):
                self.objects.forget_spilled()
        self.objects.resolve(oid, kind, bytes(payload) if payload is not None else None, "",
                             size, contained)

    def on_offer_object(self, conn: ServerConnection, msg: P.OfferObject) -> None:
        """A peer sends us a task that needs this big object: pull it from that peer."""
        obj = self.objects.get(msg.oid)
        if obj is None:
            obj = self.objects.add(msg.oid)
        self.objects.hold(conn, msg.oid, obj)   # released by the peer's RefUpdates, as a PutObject
        if obj.kind is not None or msg.oid in self.transfers.pulls:
            return
        self.fetching.pop(msg.oid, None)
        peer = self.links.get(msg.node_id)
        if peer is not None and peer.alive and peer.conn is not None:
            # Over our own connection to it: its server side then sends the chunks, from its
            # event loop, without ever blocking on a slow reader.
            self.transfers.pull(msg.oid, msg.size, peer, lambda m: self.links.send(peer, m))
        else:   # we do not know it yet (it joined a moment ago): ask on its connection
            self.transfers.pull(msg.oid, msg.size, conn, conn_sender(conn))

    # -- fetching objects ----------------------------------------------------------------------
    def fetch(self, conn: ServerConnection | None, oid: bytes, subscribe: bool = True) -> bool:
        """``conn`` (or, with None, a task here) wants an object this node does not know: ask
        the peers. True if asked; the object then exists here, pending."""
        if conn is not None and conn.info.get("peer"):
            return False     # a peer asking us: answer only for ourselves (no loops)
        peers = self.links.live()
        if not peers:
            return False
        obj = self.objects.get(oid)
        if obj is None:
            obj = self.objects.add(oid)
            if conn is not None:
                self.objects.hold(conn, oid, obj)
        if subscribe and conn is not None and conn not in obj.subscribers:
            obj.subscribers.append(conn)
        if oid not in self.fetching:
            self._ask_peers(oid, peers)
        return True

    def _ask_peers(self, oid: bytes, peers: list[Peer]) -> None:
        self.fetching[oid] = len(peers)
        holds = self.fetch_holds.setdefault(oid, set())
        for peer in peers:
            # Hold it there until our copy is made: whatever keeps it alive there now
            # (the object that contains its ref, say) may let go before a big copy ends.
            # Sent before anything we send later (a release of that container) and
            # handled before it: no window where nobody holds it.
            if self.links.send(peer, P.RefUpdates([oid], []), P.Subscribe([oid])):
                holds.add(peer.node_id)
            else:
                self.fetching[oid] -= 1
        if self.fetching[oid] <= 0:
            self._fetch_failed(oid)

    def _fetch_done(self, oid: bytes) -> None:
        """The fetch of ``oid`` ended (copied, or failed): drop the holds it took on peers."""
        for nid in self.fetch_holds.pop(oid, ()):
            peer = self.links.get(nid)
            if peer is not None and peer.alive:
                self.links.send(peer, P.RefUpdates([], [oid]))

    def pull_ended(self, oid: bytes) -> None:
        self._fetch_done(oid)

    def pull_source_lost(self, oid: bytes) -> None:
        """The node we pulled ``oid`` from is gone (its partial copy here is removed already).
        A result of a task not finished here waits for that task (``peer_lost`` retries or
        fails it); anything else is asked of the other peers, once more, and fails only if
        none has it."""
        obj = self.objects.get(oid)
        if obj is None or obj.kind is not None:
            return
        if obj.task_id is not None and self.tasks.get(obj.task_id) is not None:
            return
        self.fetching.pop(oid, None)
        if not self.fetch(None, oid):
            self._fetch_failed(oid)

    def _fetch_failed(self, oid: bytes) -> None:
        self.fetching.pop(oid, None)
        self._fetch_done(oid)
        self.objects.fail(oid, ObjectLostError(
            f"object {oid.hex()} no longer exists on any node (every ref to it was "
            "dropped, or its node was lost)"))

    # -- a lost peer ---------------------------------------------------------------------------
    def peer_lost(self, peer: Peer, retry: Callable[[Task], None]) -> None:
        """Tasks (not actor calls) we sent the lost ``peer`` are retried (``retry``) within
        their max_retries, or fail; fetches it was to answer count it out."""
        for task in list(peer.inflight.values()):
            peer.remove(task.task_id)
            if task.state != "forwarded":
                continue
            for oid in task.return_ids:
                self.remote_results.pop(oid, None)
            if task.actor_id is not None:
                continue   # with its actor (remote_actors.py)
            if task.retries_left != 0:
                task.retries_left -= 1 if task.retries_left > 0 else 0
                task.state, task.worker = "waiting", None
                retry(task)
            elif any(self.transfers.pull_source(oid) is peer for oid in task.return_ids):
                # It ran, but its result was still being copied here: lost with the node.
                self.tasks.fail_task(task, S.pack_error(ObjectLostError(
                    f"the result of task {task.name} was lost with the node that made it "
                    "before its copy reached this node, and max_retries does not allow "
                    "running it again")))
            else:
                self.tasks.fail_task(task, S.pack_error(WorkerCrashedError(
                    f"the node running task {task.name} died and its retries are used up")))

    def fetches_lost(self, peer: Peer) -> None:
        """Fetches ``peer`` was to answer count it out; pulls from it end (after retries, so
        results they redo stay pending)."""
        for oid in list(self.fetching):
            self.fetching[oid] -= 1
            if self.fetching[oid] <= 0:
                self._fetch_failed(oid)
        self.transfers.pulls_lost(peer)


def _is_lost(payload: Any) -> bool:
    try:
        return isinstance(S.load_packed(payload), ObjectLostError)
    except Exception:   # noqa: BLE001 - an undecodable error is not "lost"
        return False
