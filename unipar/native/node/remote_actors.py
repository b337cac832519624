"""Actors on other nodes: created there, calls routed there, re-created when their node dies.

An actor goes to a peer only when this node has no room for it (:func:`~.placement.actor_peer`).
The head records where each actor lives, so a node that receives a call for an actor it does
not know (a handle passed along, a named actor) asks the head and routes it there.

An actor this node created on a peer is *owned* here, as the driver that made it is connected
here; when that peer dies, the owner decides its fate::

    peer lost ─▶ owned actor, restarts left? ─▶ head: still alive then? (LookupActor)
        │  yes ─▶ calls in flight: queued again within max_task_retries, others fail
        │         ─▶ a live node with its resources (here, or a peer) ─▶ CreateActor there
        │            (constructor re-run; queued calls follow, in order; the name is kept)
        └─ no  ─▶ dead: queued and later calls fail with ActorDiedError; its name is freed

A node that only *calls* an actor on the lost peer fails its calls in flight and asks the head
again where the actor lives (the owner may be restarting it; the head answers the dead node
until it is re-created, so it asks again for up to :data:`RELOCATE_PATIENCE` seconds, and ""
once the actor is dead for good).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Callable, Sequence

from ...exceptions import ActorDiedError
from ..wire import protocol as P
from ..wire import serialization as S
from ..wire.server import ServerConnection
from . import placement
from .actors import Actors, DeadActor, Deaths
from .forwarding import Forwarding
from .head_link import HeadLink
from .peers import PeerLinks
from .records import Peer, Task
from .scheduler import Scheduler
from .tasks import TaskTable

RELOCATE_PATIENCE = 10.0   # seconds a caller waits for an actor's owner to re-create it
RELOCATE_EVERY = 0.5


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


class RemoteActors:
    """Actors hosted on peers, as this node sees them. Implements :class:`~.ports.Elsewhere`."""

    def __init__(self, node_id: str, links: PeerLinks, forwarding: Forwarding, head: HeadLink,
                 tasks: TaskTable, actors: Actors, sched: Scheduler) -> None:
        self.node_id = node_id
        self.links = links
        self.fw = forwarding
        self.head = head
        self.tasks = tasks
        self.actors = actors
        self.sched = sched
        self.remote_actors: dict[bytes, str] = {}      # actor id -> peer hosting it
        self.remote_calls: dict[bytes, deque] = {}     # actor id -> calls not yet sent there
        self.actor_lookups: dict[bytes, list] = {}     # actor id -> (call, deps watched) waiting
        self.remote_creating: set[bytes] = set()       # actors whose CreateActor is not sent yet
        self.owned_actors: dict[bytes, OwnedActor] = {}
        self.dead_actors = Deaths()                    # the last actors buried or killed here
        self.relocating: dict[bytes, float] = {}       # actor id -> when to stop asking

    def has_peers(self) -> bool:
        return bool(self.links)

    def check_feasible(self, demand: dict[str, float], what: str,
                       fail: Callable[[Exception], None]) -> None:
        self.links.check_feasible(demand, what, fail)

    def _host(self, aid: bytes) -> Peer | None:
        return self.links.get(self.remote_actors.get(aid, ""))

    # -- creating actors elsewhere -------------------------------------------------------------
    def create_elsewhere(self, conn: ServerConnection, msg: P.CreateActor) -> bool:
        """Create the actor on a peer when placement says so (its constructor's arguments
        are pushed there first, once ready); True if it goes there."""
        if not self.links:
            return False
        peer = placement.actor_peer(self.sched, msg.resources, self.links.live())
        if peer is None:
            return False
        init = self.tasks.make_task(conn, msg.actor_id, f"{msg.class_name}.__init__", msg.args,
                                    msg.deps, msg.contained, [], msg.resources, 0)
        init.fn_key = msg.class_key
        init.remote_create = msg
        init.actor_id = msg.actor_id
        self._expect(msg.actor_id, peer, deque())
        self.tasks.watch_deps(init)
        return True

    def _expect(self, aid: bytes, peer: Peer, calls: deque) -> None:
        self.remote_creating.add(aid)
        self.remote_actors[aid] = peer.node_id
        self.remote_calls[aid] = calls

    def move_waiting_actors(self) -> None:
        """Actors waiting here for resources go to a peer that reported room for them."""
        def movable(aid: Any) -> bool:
            actor = self.actors.get(aid)
            return actor is not None and actor.state == "pending" and actor.init_task is not None
        for aid, peer in placement.waiting_actor_moves(self.sched, self.links.live(), movable):
            actor = self.actors.get(aid)
            assert actor is not None and actor.init_task is not None
            self.actors.leave(actor)   # callers waiting for its address: call via the node
            init = actor.init_task
            init.remote_create = actor.msg
            self._expect(aid, peer, deque(actor.queue))   # type: ignore[arg-type]
            self.send_create(init)

    def send_create(self, task: Task) -> None:
        """The constructor's dependencies are ready: send CreateActor to the chosen peer."""
        msg: P.CreateActor = task.remote_create
        peer = self._host(msg.actor_id)
        if peer is None or not peer.alive:
            self.tasks.finish(task)
            self.bury(msg.actor_id, "the node chosen for it was lost before it started")
            return
        msgs = self.fw.fn_msgs(peer, msg.class_key) + self.fw.push_deps(peer, task.deps)
        msgs.append(msg)
        self._own(msg, task)   # if that node dies, this one re-creates it
        if self.links.send(peer, *msgs):
            self.head.tell(P.ActorLocation(msg.actor_id, peer.node_id))
        # Sent: the peer pinned its copies of the arguments for the actor's life; ours can go.
        self.fw.release_deps(peer, task.deps)
        task.remote_create = None
        self.remote_creating.discard(msg.actor_id)
        self.tasks.finish(task)
        self.pump(msg.actor_id)

    def deps_ready(self, task: Task) -> None:
        """An actor task whose actor is not hosted here has its dependencies."""
        if task.remote_create is not None:
            self.send_create(task)
        else:
            self.pump(task.actor_id)   # type: ignore[arg-type]

    # -- calls ---------------------------------------------------------------------------------
    def route_call(self, task: Task) -> bool:
        """A call for an actor not hosted here: queue it for the peer hosting it (asking the
        head where that is, once). False when this node knows of no head to ask."""
        aid = task.actor_id
        assert aid is not None
        gone = self.dead_actors.get(aid)
        if gone is not None:   # its node died and it was not restarted, or it was killed
            self.tasks.fail_task(task, gone.death)
            return True
        if aid in self.remote_actors:
            self.remote_calls.setdefault(aid, deque()).append(task)
            self.tasks.watch_deps(task)
            return True
        if not self.head.joined:
            return False
        waiting = self.actor_lookups.get(aid)
        if waiting is not None:
            waiting.append((task, False))
            return True
        self.actor_lookups[aid] = [(task, False)]
        self.lookup(aid)
        return True

    def found(self, aid: bytes, nid: str | None) -> None:
        """The head answered where ``aid`` lives: send the calls waiting for that there."""
        if aid not in self.actor_lookups or self._stale_location(aid, nid):
            return
        calls = self.actor_lookups.pop(aid)
        self.relocating.pop(aid, None)
        actor = self.actors.get(aid) if nid == self.node_id else None
        peer = self.links.get(nid)
        if actor is None and (peer is None or not peer.alive):
            for task, _watched in calls:
                self.tasks.fail_task(task, S.pack_error(ActorDiedError(
                    f"actor {aid.hex()[:12]} is not alive on any node of this cluster")))
            return
        if actor is not None:   # created (or re-created) here meanwhile
            queue = actor.queue
        else:
            self.remote_actors[aid] = peer.node_id   # type: ignore[union-attr]
            queue = self.remote_calls.setdefault(aid, deque())
        for task, watched in calls:
            queue.append(task)
            if not watched:
                self.tasks.watch_deps(task)
        if actor is not None:
            self.actors.pump(actor)
        else:
            self.pump(aid)

    def pump(self, aid: bytes) -> None:
        """Send queued calls to the remote actor in order, while the next one's deps are ready."""
        queue = self.remote_calls.get(aid)
        peer = self._host(aid)
        if queue is None or peer is None:
            return
        while queue and queue[0].missing == 0 and aid not in self.remote_creating:
            task = queue.popleft()
            error = self.tasks.objects.failed_dep(task)
            if error is not None:
                self.tasks.fail_task(task, error)
                continue
            msgs = self.fw.push_deps(peer, task.deps)
            args = P.blob(task.args) if task.args is not None else None
            msgs.append(P.CallActor(aid, task.task_id, task.method, args, task.deps,
                                    task.contained, task.return_ids))
            if not self.fw.sent(peer, task, msgs):
                # Not connected yet, or its connection just dropped (``peer_lost`` follows
                # and restarts the actor or relocates its calls): the call waits.
                queue.appendleft(task)
                return

    def peer_connected(self, peer: Peer) -> None:
        """Calls that waited for the link to ``peer`` go now."""
        for aid, nid in list(self.remote_actors.items()):
            if nid == peer.node_id:
                self.pump(aid)

    def kill_remote(self, aid: bytes, no_restart: bool) -> bool:
        """Kill an actor hosted on a peer; without restarts it is not re-created either."""
        peer = self._host(aid)
        owned = self.owned_actors.get(aid) if no_restart else None
        if owned is not None:
            self.disown(aid)
            if peer is None or not peer.alive:   # being re-created: it never comes back
                self.bury(aid, "it was killed with unipar.kill()")
        if peer is None:
            return False
        self.links.send(peer, P.KillActor(0, aid, no_restart))
        if owned is not None:
            self._forget_killed(aid, owned)
        return True

    def _forget_killed(self, aid: bytes, owned: OwnedActor) -> None:
        """An actor we created was killed for good: drop its routing records (one per actor
        ever created, else), keeping its death for later calls from here, as its node would
        answer them. Not while calls for it still wait here (they go first, then fail there)."""
        if self.remote_calls.get(aid) or aid in self.remote_creating or aid in self.actor_lookups:
            return
        self.remote_calls.pop(aid, None)
        self.remote_actors.pop(aid, None)
        self.relocating.pop(aid, None)
        self.dead_actors.add(aid, DeadActor(
            owned.msg.class_name, owned.msg.name, owned.restarts, "", S.pack_error(
                ActorDiedError(f"actor {owned.msg.class_name} was killed with unipar.kill()"))))

    # -- owning, and a lost host ---------------------------------------------------------------
    def _own(self, msg: P.CreateActor, init: Task) -> None:
        """``msg`` was sent to a peer: keep what restarting it elsewhere needs."""
        if msg.actor_id in self.owned_actors:
            return   # a re-creation: the record (and its restart count) is kept
        owned = self.owned_actors[msg.actor_id] = OwnedActor(msg)
        if msg.max_restarts != 0:
            owned.pinned = True
            for oid in list(init.deps) + list(init.contained):
                self.tasks.objects.pin(oid)
        # The head then keeps its name when its node dies (we re-create it, or bury it and
        # free the name), and tells us when it dies for good there (died_elsewhere).
        self.head.tell(P.ActorOwner(msg.actor_id, self.node_id))

    def died_elsewhere(self, msg: P.ActorLocation) -> None:
        """The head says an actor owned here died for good on the node hosting it (killed
        through a handle there, out of restarts, its constructor failed). Drop what we kept
        for it; its death (the cause) stays in ``dead_actors`` for later calls from here.
        Calls still waiting here fail with it; calls sent there fail there."""
        aid = msg.actor_id
        if msg.node_id or self.actors.get(aid) is not None or aid in self.remote_creating:
            return   # not a death, or it lives here again / is being re-created
        owned = self.owned_actors.get(aid)
        name = owned.msg.class_name if owned else aid.hex()[:12]
        death = bytes(msg.death) if msg.death is not None else S.pack_error(
            ActorDiedError(f"actor {name} died on its node"))
        self.dead_actors.add(aid, DeadActor(name, owned.msg.name if owned else "",
                                            owned.restarts if owned else 0, "", death))
        self.remote_actors.pop(aid, None)
        self.relocating.pop(aid, None)
        for task in self.remote_calls.pop(aid, deque()):
            self.tasks.fail_task(task, death)
        self.disown(aid)

    def tracks(self, aid: bytes) -> bool:
        return (aid in self.remote_actors or aid in self.owned_actors
                or aid in self.remote_creating)

    def table_size(self) -> dict[str, int]:
        """Counts of its per-actor records (see :meth:`.Actors.table_size`)."""
        return {"remote_hosted": len(self.remote_actors), "remote_queues": len(self.remote_calls),
                "remote_owned": len(self.owned_actors), "remote_lookups": len(self.actor_lookups),
                "remote_deaths": len(self.dead_actors)}

    def disown(self, aid: bytes) -> None:
        owned = self.owned_actors.pop(aid, None)
        if owned is not None and owned.pinned:
            for oid in list(owned.msg.deps) + list(owned.msg.contained):
                self.tasks.objects.unpin(oid)

    def peer_lost(self, peer: Peer, calls: dict[bytes, list[Task]]) -> None:
        """``peer`` died: each actor it hosted is re-created, relocated or buried, with the
        ``calls`` that were in flight there (:func:`calls_in_flight`, taken before its
        tasks were counted out)."""
        for aid, nid in list(self.remote_actors.items()):
            if nid == peer.node_id:
                self._host_lost(aid, calls.pop(aid, []))
        for lost in calls.values():   # (not expected: calls follow their actor)
            for task in lost:
                self.tasks.fail_task(task, S.pack_error(ActorDiedError(
                    f"the node running actor call {task.name} died")))

    def _host_lost(self, aid: bytes, calls: list[Task]) -> None:
        """The peer hosting ``aid`` died with ``calls`` in flight there (in the order sent)."""
        if aid in self.remote_creating and self._create_on_another(aid):
            return
        owned = self.owned_actors.get(aid)
        if owned is None:
            for task in calls:
                self.tasks.fail_task(task, S.pack_error(ActorDiedError(
                    f"the node running actor call {task.name} died")))
            self.remote_actors.pop(aid, None)
            self.relocate(aid, list(self.remote_calls.pop(aid, deque())))
            return
        if not owned.can_restart():
            self.bury(aid, f"its node died and its restarts ({owned.msg.max_restarts}) "
                      "are used up", calls)
            return
        self._requeue_calls(owned, calls)
        # It may have died for good before its node did (killed, or out of restarts there):
        # the head then says "" and it stays dead.
        if not self.head.ask(lambda r: P.LookupActor(r, aid),
                             lambda nid: self._restart_checked(aid, nid)):
            self._restart_checked(aid, None)

    def _create_on_another(self, aid: bytes) -> bool:
        """Its CreateActor still waits for arguments here: send it to another peer instead."""
        init = self.tasks.get(aid)
        msg = init.remote_create if init is not None else None
        if msg is None:
            return False
        peer = placement.any_peer(msg.resources, self.links.live())
        if peer is None:
            return False
        self.remote_actors[aid] = peer.node_id
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
                self.tasks.fail_task(task, S.pack_error(ActorDiedError(
                    f"actor {owned.msg.class_name} died while running {task.name}: its node "
                    "died (it is being restarted; set max_task_retries to retry such calls)")))
        self.remote_calls.setdefault(aid, deque()).extendleft(reversed(again))

    def _restart_checked(self, aid: bytes, nid: Any) -> None:
        owned = self.owned_actors.get(aid)
        if owned is None:   # killed meanwhile
            self.bury(aid, "it was killed")
        elif nid == "":
            self.bury(aid, "it had died before its node did")
        else:
            owned.restarts += 1
            self._place_again(aid, owned)

    def _place_again(self, aid: bytes, owned: OwnedActor, deadline: float = 0.0) -> None:
        """Create the actor again on a live node that has its resources (here if there is
        room here now); its constructor runs again, from the arguments kept here. When no
        linked peer can hold it, the head's node list is fetched first (this node's may lag:
        a peer not linked yet, or just joined) and it waits for such a node to be linked,
        for up to :data:`RELOCATE_PATIENCE` seconds from ``deadline`` - that (0: from now)."""
        if self.owned_actors.get(aid) is not owned:
            return   # killed (and buried) while it waited
        deadline = deadline or time.monotonic() + RELOCATE_PATIENCE

        def answered(nodes: Any) -> None:
            if self.owned_actors.get(aid) is not owned:
                return   # killed (and buried) meanwhile
            if isinstance(nodes, list):
                self.links.update(nodes)   # links new peers; dead ones are lost
            self._place_on_listed(aid, owned, deadline)
        if placement.actor_home(self.sched, owned.msg.resources, self.links.live()) is not None:
            self._place_on_listed(aid, owned, deadline)
        elif not self.head.ask(lambda r: P.ListNodes(r), answered):
            self._place_on_listed(aid, owned, deadline)

    def _place_on_listed(self, aid: bytes, owned: OwnedActor, deadline: float) -> None:
        """:meth:`_place_again` with the node list as it is now (see placement.restart_home)."""
        msg = owned.msg
        listed = [p.total for p in self.links.peers.values() if p.alive]
        home = placement.restart_home(self.sched, msg.resources, self.links.live(), listed)
        if home == "wait" and time.monotonic() < deadline:
            asyncio.get_running_loop().call_later(RELOCATE_EVERY, self._place_again, aid, owned,
                                                  deadline)
            return
        if home is None or home == "wait":
            reach = " (none could be reached in time)" if home == "wait" else ""
            self.bury(aid, f"its node died and no live node has the resources it asks "
                      f"for ({placement.positive(msg.resources)}){reach}")
            return
        if home == "here":
            self._recreate_here(aid, owned)
            return
        self.remote_actors[aid] = home.node_id   # type: ignore[union-attr]
        left = -1 if msg.max_restarts == -1 else msg.max_restarts - owned.restarts
        init = self.tasks.make_task(None, aid, f"{msg.class_name}.__init__", msg.args, msg.deps,
                                    msg.contained, [], msg.resources, 0)
        init.fn_key, init.actor_id = msg.class_key, aid
        init.remote_create = P.CreateActor(
            aid, msg.class_key, msg.class_name, msg.args, msg.deps, msg.contained,
            msg.resources, left, msg.max_task_retries, msg.concurrency, msg.is_async, msg.name)
        self.remote_creating.add(aid)
        self.tasks.watch_deps(init)   # its arguments are pinned here: ready at once

    def _recreate_here(self, aid: bytes, owned: OwnedActor) -> None:
        """The actor moves onto this node: from now on actors.py handles it (its own init
        task keeps the constructor's arguments pinned and counts its restarts)."""
        queued = self.remote_calls.pop(aid, deque())
        self.remote_actors.pop(aid, None)
        self.head.tell(P.ActorLocation(aid, self.node_id))
        actor = self.actors.host(owned.msg, None)
        actor.restarts = owned.restarts
        actor.retries.update(owned.retries)
        actor.queue.extend(queued)   # their arguments are watched already
        self.disown(aid)
        self.tasks.watch_deps(actor.init_task)   # type: ignore[arg-type]

    def bury(self, aid: bytes, why: str, calls: Sequence[Task] = ()) -> None:
        """The actor is dead for good: its calls (in flight, queued, later) fail."""
        owned = self.owned_actors.get(aid)
        label = owned.msg.class_name if owned else aid.hex()[:12]
        death = S.pack_error(ActorDiedError(f"actor {label} died: {why}"))
        self.dead_actors.add(aid, DeadActor(label, owned.msg.name if owned else "",
                                            owned.restarts if owned else 0, "", death))
        self.remote_actors.pop(aid, None)
        self.remote_creating.discard(aid)
        for task in list(calls) + list(self.remote_calls.pop(aid, deque())):
            self.tasks.fail_task(task, death)
        if owned is not None:
            self.head.tell(P.ActorLocation(aid, "", death))   # lookups now say: dead
            if owned.msg.name:
                self.head.tell(P.UnregisterName(0, owned.msg.name, aid))
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
        self.lookup(aid)

    def lookup(self, aid: bytes) -> None:
        if not self.head.ask(lambda r: P.LookupActor(r, aid), lambda nid: self.found(aid, nid)):
            self.found(aid, None)

    def _stale_location(self, aid: bytes, nid: Any) -> bool:
        """The head names a node we do not know as live: its owner may be re-creating the
        actor (or a node that just joined). True if we ask again shortly."""
        if not nid or nid == self.node_id:
            return False
        peer = self.links.get(nid)
        if peer is not None and peer.alive:
            return False
        deadline = self.relocating.setdefault(aid, time.monotonic() + RELOCATE_PATIENCE)
        if time.monotonic() >= deadline:
            return False
        asyncio.get_running_loop().call_later(RELOCATE_EVERY, self.lookup, aid)
        return True


def calls_in_flight(peer: Peer) -> dict[bytes, list[Task]]:
    """Actor calls in flight on a lost peer, per actor, in the order they were sent."""
    calls: dict[bytes, list[Task]] = {}
    for task in peer.inflight.values():
        if task.actor_id is not None and task.state == "forwarded":
            calls.setdefault(task.actor_id, []).append(task)
    return calls
