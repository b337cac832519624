"""The node's answers to a lost peer for actors, and to work no live node could ever run.

Mixed into :class:`~.node.Node` through :class:`~.node_peers.PeerHost`. An actor this node
created on a peer (because it lacked the resources) is *owned* here, as the driver that made
it is connected here; when that peer dies, the owner decides its fate::

    peer lost ─▶ owned actor, restarts left? ─▶ head: still alive then? (LookupActor)
        │  yes ─▶ calls in flight: queued again within max_task_retries, others fail
        │         ─▶ a live node with its resources (here, or a peer) ─▶ CreateActor there
        │            (constructor re-run; queued calls follow, in order; the name is kept)
        └─ no  ─▶ dead: queued and later calls fail with ActorDiedError; its name is freed

A node that only *calls* an actor on the lost peer (a handle passed along, a named actor)
fails its calls in flight and asks the head again where the actor lives (the owner may be
restarting it; the head answers the dead node until it is re-created, so it asks again for
up to :data:`RELOCATE_PATIENCE` seconds, and "" once the actor is dead for good).

Feasibility: a task or actor asking for more than any single live node has (``num_cpus=3`` on
two 2-CPU nodes) fails with :class:`~unipar.exceptions.InfeasibleResourcesError` instead of
waiting for ever; the cluster-wide totals are checked above the engine, in ``unipar.api``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ...exceptions import ActorDiedError, InfeasibleResourcesError
from ..wire import protocol as P
from ..wire import serialization as S
from .actors import Actor

if TYPE_CHECKING:
    from .daemon import Task
    from .peers import Peer

RELOCATE_PATIENCE = 10.0   # seconds a caller waits for an actor's owner to re-create it
RELOCATE_EVERY = 0.5


def _fits(have: dict[str, float], demand: dict[str, float]) -> bool:
    return all(have.get(k, 0.0) + 1e-9 >= v for k, v in demand.items() if v > 0)


class OwnedActor:
    """An actor this node created on a peer: what it takes to create it again elsewhere.
    Its constructor's arguments stay pinned here while it may restart."""

    __slots__ = ("msg", "restarts", "retries", "pinned")

    def __init__(self, msg: P.CreateActor) -> None:
        self.msg = msg
        self.restarts = 0
        self.retries: dict[bytes, int] = {}   # call id -> times it was sent again
        self.pinned = False

    def can_restart(self) -> bool:
        limit = self.msg.max_restarts
        return limit == -1 or self.restarts < limit


class FailoverHost:
    """Actor fail-over and feasibility for a node (a mixin: state lives on the Node)."""

    def init_failover(self) -> None:
        self.owned_actors: dict[bytes, OwnedActor] = {}
        self.dead_actors: dict[bytes, bytes] = {}        # actor id -> its death (packed error)
        self.relocating: dict[bytes, float] = {}         # actor id -> when to stop asking

    # -- feasibility ---------------------------------------------------------------------------
    def infeasible(self, demand: dict[str, float], what: str) -> Exception | None:
        """The error for ``what`` asking for ``demand`` when no live node (this one or a peer
        the head listed) has that much, else None. Meaningful once the peers are known."""
        demand = {k: v for k, v in demand.items() if v > 0}
        if not demand:
            return None
        nodes = [self.sched.total] + [p.total for p in self.peers.values() if p.alive]
        if any(_fits(total, demand) for total in nodes):
            return None

        def coverage(total: dict[str, float]) -> float:
            return sum(min(total.get(k, 0.0) / v, 1.0) for k, v in demand.items())
        biggest = max(nodes, key=coverage)
        has = {k: biggest.get(k, 0.0) for k in demand}
        return InfeasibleResourcesError(
            f"{what} asks for {demand}, but no single node of this cluster has that much: the "
            f"biggest node has {has} (of {len(nodes)} live nodes). A task or actor runs on "
            "one node, so the cluster's total does not help. Ask for at most what one node has, "
            "or add a node with more (unipar start --address=... --num-cpus N --resources ...).")

    def check_feasible(self, demand: dict[str, float], what: str,
                       fail: Callable[[Exception], None]) -> None:
        """Call ``fail(error)`` if no live node can hold ``demand``. This node's list of peers
        may lag the head's by a second (a node that just joined): when it says no, the head's
        list is fetched first, so the verdict comes later; meanwhile ``what`` waits here."""
        if self.infeasible(demand, what) is None:
            return

        def answered(nodes: list) -> None:
            self._update_peers(nodes)
            error = self.infeasible(demand, what)
            if error is not None:
                fail(error)
        if not self.ask_head(lambda r: P.ListNodes(r), answered):
            error = self.infeasible(demand, what)
            if error is not None:
                fail(error)

    def check_task_feasible(self, task: Task) -> None:
        """``task`` waits here (queued) for resources no known node has: fail it if none has."""
        def fail(error: Exception) -> None:
            if self.tasks.get(task.task_id) is task and task.state == "queued" \
                    and not task.cancelled:
                self.sched.remove_task(task.task_id)
                self._fail_task(task, S.pack_error(error))
        self.check_feasible(task.resources, f"task {task.name}", fail)

    # -- actors this node created on a peer ----------------------------------------------------
    def own_remote_actor(self, msg: P.CreateActor, init: Task) -> None:
        """``msg`` was sent to a peer: keep what restarting it elsewhere needs."""
        if msg.actor_id in self.owned_actors:
            return   # a re-creation: the record (and its restart count) is kept
        owned = self.owned_actors[msg.actor_id] = OwnedActor(msg)
        if msg.max_restarts != 0:
            owned.pinned = True
            for oid in list(init.deps) + list(init.contained):
                self._pin(oid)
            # The head then keeps its name when its node dies: we re-create it.
            self.tell_head(P.ActorOwner(msg.actor_id, self.node_id))

    def disown(self, aid: bytes) -> None:
        owned = self.owned_actors.pop(aid, None)
        if owned is not None and owned.pinned:
            for oid in list(owned.msg.deps) + list(owned.msg.contained):
                self._unpin(oid)

    def actor_host_lost(self, aid: bytes, calls: list[Task]) -> None:
        """The peer hosting ``aid`` died with ``calls`` in flight there (in the order sent)."""
        if aid in self.remote_creating and self._create_elsewhere(aid):
            return
        owned = self.owned_actors.get(aid)
        if owned is None:
            for task in calls:
                self._fail_task(task, S.pack_error(ActorDiedError(
                    f"the node running actor call {task.name} died")))
            self.remote_actors.pop(aid, None)
            self.relocate(aid, list(self.remote_calls.pop(aid, deque())))
            return
        if not owned.can_restart():
            self.bury_actor(aid, f"its node died and its restarts ({owned.msg.max_restarts}) "
                            "are used up", calls)
            return
        self._requeue_calls(owned, calls)
        # It may have died for good before its node did (killed, or out of restarts there):
        # the head then says "" and it stays dead.
        if not self.ask_head(lambda r: P.LookupActor(r, aid),
                             lambda nid: self._restart_checked(aid, nid)):
            self._restart_checked(aid, None)

    def _create_elsewhere(self, aid: bytes) -> bool:
        """Its CreateActor still waits for arguments here: send it to another peer instead."""
        init = self.tasks.get(aid)
        msg = init.remote_create if init is not None else None
        if msg is None:
            return False
        demand = {k: v for k, v in msg.resources.items() if v > 0}
        peers = [p for p in self.live_peers() if p.has(demand)]
        if not peers:
            return False
        self.remote_actors[aid] = max(peers, key=lambda p: p.avail.get("CPU", 0.0)).node_id
        return True

    def _requeue_calls(self, owned: OwnedActor, calls: list[Task]) -> None:
        """Calls in flight on the lost node go again (first, in order) within max_task_retries."""
        aid, limit = owned.msg.actor_id, owned.msg.max_task_retries
        again = []
        for task in calls:
            used = owned.retries.get(task.task_id, 0)
            if limit == -1 or used < limit:
                owned.retries[task.task_id] = used + 1
                task.state = "queued"
                again.append(task)
            else:
                self._fail_task(task, S.pack_error(ActorDiedError(
                    f"actor {owned.msg.class_name} died while running {task.name}: its node "
                    "died (it is being restarted; set max_task_retries to retry such calls)")))
        self.remote_calls.setdefault(aid, deque()).extendleft(reversed(again))

    def _restart_checked(self, aid: bytes, nid: Any) -> None:
        owned = self.owned_actors.get(aid)
        if owned is None:   # killed meanwhile
            self.bury_actor(aid, "it was killed")
        elif nid == "":
            self.bury_actor(aid, "it had died before its node did")
        else:
            owned.restarts += 1
            self._place_again(aid, owned)

    def _place_again(self, aid: bytes, owned: OwnedActor) -> None:
        """Create the actor again on a live node that has its resources (here if there is
        room here now); its constructor runs again, from the arguments kept here."""
        msg = owned.msg
        demand = {k: v for k, v in msg.resources.items() if v > 0}
        home = self._actor_home(demand)
        if home is None:
            self.bury_actor(aid, f"its node died and no live node has the resources it asks "
                            f"for ({demand})")
            return
        if home == "here":
            self._recreate_here(aid, owned)
            return
        self.remote_actors[aid] = home.node_id
        left = -1 if msg.max_restarts == -1 else msg.max_restarts - owned.restarts
        init = self._make_task(None, aid, f"{msg.class_name}.__init__", msg.args, msg.deps,
                               msg.contained, [], msg.resources, 0)
        init.fn_key, init.actor_id = msg.class_key, aid
        init.remote_create = P.CreateActor(
            aid, msg.class_key, msg.class_name, msg.args, msg.deps, msg.contained,
            msg.resources, left, msg.max_task_retries, msg.concurrency, msg.is_async, msg.name)
        self.remote_creating.add(aid)
        self._watch_deps(init)   # its arguments are pinned here: ready at once

    def _actor_home(self, demand: dict[str, float]) -> Any:
        """"here", a live Peer with the resources (one that reported room first), or None."""
        if _fits(self.sched.available(), demand):
            return "here"
        peers = [p for p in self.live_peers() if p.has(demand)]
        roomy = [p for p in peers if _fits(p.avail, demand)]
        if not roomy and _fits(self.sched.total, demand):
            return "here"
        if not peers:
            return None
        peer = max(roomy or peers, key=lambda p: p.avail.get("CPU", 0.0))
        for key, amount in demand.items():
            peer.avail[key] = peer.avail.get(key, 0.0) - amount
        return peer

    def _recreate_here(self, aid: bytes, owned: OwnedActor) -> None:
        """The actor moves onto this node: from now on node_actors handles it (its own init
        task keeps the constructor's arguments pinned and counts its restarts)."""
        msg = owned.msg
        queued = self.remote_calls.pop(aid, deque())
        self.remote_actors.pop(aid, None)
        self.tell_head(P.ActorLocation(aid, self.node_id))
        actor = Actor(msg)
        actor.restarts = owned.restarts
        actor.retries.update(owned.retries)
        self.actors[aid] = actor
        init = self._make_task(None, aid, f"{msg.class_name}.__init__", msg.args, msg.deps,
                               msg.contained, [], msg.resources, 0)
        init.actor_id = aid
        actor.init_task = init
        actor.queue.extend(queued)   # their arguments are watched already
        self.disown(aid)
        self._watch_deps(init)

    def bury_actor(self, aid: bytes, why: str, calls: Sequence[Task] = ()) -> None:
        """The actor is dead for good: its calls (in flight, queued, later) fail."""
        owned = self.owned_actors.get(aid)
        label = owned.msg.class_name if owned else aid.hex()[:12]
        death = S.pack_error(ActorDiedError(f"actor {label} died: {why}"))
        self.dead_actors[aid] = death
        self.remote_actors.pop(aid, None)
        self.remote_creating.discard(aid)
        for task in list(calls) + list(self.remote_calls.pop(aid, deque())):
            self._fail_task(task, death)
        if owned is not None:
            self.tell_head(P.ActorLocation(aid, ""))   # lookups now say: dead
            if owned.msg.name:
                self.tell_head(P.UnregisterName(0, owned.msg.name, aid))
            self.disown(aid)

    # -- callers of an actor whose node died -----------------------------------------------------
    def relocate(self, aid: bytes, tasks: list[Task]) -> None:
        """Ask the head again where ``aid`` lives, for ``tasks`` whose arguments are watched
        already (queued calls of a lost host); calls arriving meanwhile wait behind them."""
        waiting = self.actor_lookups.setdefault(aid, [])
        fresh = not waiting
        waiting[:0] = [(task, True) for task in tasks]
        if not fresh:
            return
        self.relocating.setdefault(aid, time.monotonic() + RELOCATE_PATIENCE)
        self.lookup_actor(aid)

    def lookup_actor(self, aid: bytes) -> None:
        if not self.ask_head(lambda r: P.LookupActor(r, aid),
                             lambda nid: self.actor_found(aid, nid)):
            self.actor_found(aid, None)

    def stale_location(self, aid: bytes, nid: Any) -> bool:
        """The head names a node we do not know as live: its owner may be re-creating the
        actor (or a node that just joined). True if we ask again shortly."""
        if not nid or nid == self.node_id:
            return False
        peer = self.peers.get(nid)
        if peer is not None and peer.alive:
            return False
        deadline = self.relocating.setdefault(aid, time.monotonic() + RELOCATE_PATIENCE)
        if time.monotonic() >= deadline:
            return False
        asyncio.get_running_loop().call_later(RELOCATE_EVERY, self.lookup_actor, aid)
        return True


def dead_peer_calls(peer: Peer) -> dict[bytes, list]:
    """Actor calls in flight on a lost peer, per actor, in the order they were sent."""
    calls: dict[bytes, list] = {}
    for task in peer.inflight.values():
        if task.actor_id is not None and task.state == "forwarded":
            calls.setdefault(task.actor_id, []).append(task)
    return calls
