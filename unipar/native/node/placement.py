"""Where work goes in a cluster: decisions about peers, with no I/O and no clock.

The node's I/O shells (peers.py, leases.py, remote_actors.py) ask these functions and then send
what they decide. Everything they read comes from the scheduler's query interface
(:class:`SchedulerView`: totals, what is free, what is queued) and from :class:`PeerView`
records (each peer's totals, what this node sent it, what it last reported free), so placement
bugs replay in a unit test with a :class:`~.scheduler.Scheduler` and a few peers.

Rules:

* A task runs here when it fits this node's totals and there is room here now (free minus
  what is queued here already); else it goes to the peer with room that is least loaded by
  what we sent it (CPU share). One that asks for what this node does not have goes to a peer
  that has it and has room; while none has room it waits here, and is pulled by the first
  such peer that finishes work of ours or joins (a node that joins late still gets its share,
  as Ray's raylet keeps such work queued until a node has room). Tasks that came from a peer
  are never sent on again.
* A lease (the direct path) is refused ("busy") when peers exist and there is no room here
  now: the client then submits through this node, which spreads the work. Lease requests
  already queued here are refused once a peer reports room for them (a node that joined, or
  work that finished elsewhere), so work queued before a join still spreads.
* An actor goes to a peer only when this node has no room for it now and a peer reported
  room (or this node could never hold it); the peer's reported room is then counted down.
* An actor whose node died is re-created likewise; when no linked peer can hold it but the
  head lists a node that could, it waits for the link rather than being given up.
"""

from __future__ import annotations

from typing import Callable, Hashable, Literal, Protocol, Sequence, TypeVar

from ...exceptions import InfeasibleResourcesError

EPS = 1e-9


class SchedulerView(Protocol):
    """The part of :class:`~.scheduler.Scheduler` placement reads."""

    total: dict[str, float]

    def available(self) -> dict[str, float]: ...
    def queued_shapes(self) -> list[dict[str, float]]: ...
    def queued_ids(self, demand: dict[str, float]) -> list[Hashable]: ...
    def queued_demand(self) -> dict[str, float]: ...
    def waiting_actors(self) -> list[tuple[Hashable, dict[str, float]]]: ...


class PeerView(Protocol):
    """The part of :class:`~.records.Peer` placement reads (and ``avail``, which it counts
    down for actors it places there)."""

    total: dict[str, float]
    used: dict[str, float]
    avail: dict[str, float]

    def has(self, demand: dict[str, float]) -> bool: ...
    def room(self, demand: dict[str, float]) -> bool: ...


P = TypeVar("P", bound=PeerView)


def fits(have: dict[str, float], demand: dict[str, float]) -> bool:
    """Whether every positive amount of ``demand`` fits in ``have``."""
    return all(have.get(k, 0.0) + EPS >= v for k, v in demand.items() if v > 0)


def positive(demand: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in demand.items() if v > 0}


def room_here(sched: SchedulerView, demand: dict[str, float]) -> bool:
    """Free resources now, minus what tasks already queued here will take."""
    free = sched.available()
    for key, amount in sched.queued_demand().items():
        free[key] = free.get(key, 0.0) - amount
    return fits(free, demand)


def _holds(sched: SchedulerView, demand: dict[str, float]) -> bool:
    return all(sched.total.get(k, 0.0) >= v for k, v in demand.items() if v > 0)


def _least_loaded(peers: Sequence[P]) -> P:
    return min(peers, key=lambda p: p.used.get("CPU", 0.0) / max(p.total.get("CPU", 1.0), 1.0))


def _roomiest(peers: Sequence[P]) -> P:
    return max(peers, key=lambda p: p.avail.get("CPU", 0.0))


def _reserve(peer: PeerView, demand: dict[str, float]) -> None:
    for key, amount in demand.items():
        peer.avail[key] = peer.avail.get(key, 0.0) - amount


# -- tasks -------------------------------------------------------------------------------------
def home_unknown(sched: SchedulerView, demand: dict[str, float], peers: Sequence[PeerView],
                 from_peer: bool) -> bool:
    """True when neither this node nor a known peer could ever run ``demand``: the task waits
    here while the head's list is checked (it fails if no node there has that much)."""
    return not _holds(sched, demand) and not from_peer and not any(p.has(demand) for p in peers)


def task_peer(sched: SchedulerView, demand: dict[str, float], peers: Sequence[P],
              from_peer: bool) -> P | None:
    """The peer a task whose dependencies are ready goes to, or None: it stays here."""
    if not peers:
        return None
    if _holds(sched, demand):
        if from_peer or room_here(sched, demand):
            return None
        candidates = [p for p in peers if p.room(demand)]
    else:   # only peers could hold it: one with room now, else it waits here ("stranded")
        candidates = [p for p in peers if p.has(demand) and p.room(demand)]
    return _least_loaded(candidates) if candidates else None


def reported_room(sched: SchedulerView, peer: PeerView) -> bool:
    """Whether ``peer`` last reported room for some task queued here (and has room by what
    we sent it): worth sending it queued work now."""
    return any(peer.room(demand) and fits(peer.avail, demand)
               for demand in sched.queued_shapes())


def stranded(sched: SchedulerView) -> list[list[Hashable]]:
    """Ids queued here (per shape, first in line first) for resources this node does not have
    at all: they arrived before a peer that has them was known, or their node died."""
    return [sched.queued_ids(demand) for demand in sched.queued_shapes()
            if not _holds(sched, demand)]


def pull_to(sched: SchedulerView, peer: PeerView,
            movable: Callable[[Hashable], bool]) -> list[Hashable]:
    """Queued ids to send ``peer`` (newest first, per shape) while it has room, counting
    what we sent it; ``movable`` says which queued ids may go (tasks, not leases or tasks
    that came from a peer)."""
    used = dict(peer.used)
    chosen: list[Hashable] = []
    for demand in sched.queued_shapes():
        if not peer.has(demand):
            continue
        for item in reversed(sched.queued_ids(demand)):
            if not all(peer.total.get(k, 0.0) + EPS >= used.get(k, 0.0) + v
                       for k, v in demand.items() if v > 0):
                break
            if not movable(item):
                continue
            chosen.append(item)
            for key, amount in demand.items():
                used[key] = used.get(key, 0.0) + amount
    return chosen


# -- leases (the direct path) ------------------------------------------------------------------
def lease_refusal(sched: SchedulerView, demand: dict[str, float], fits_now: bool,
                  peers: Sequence[PeerView]) -> str | None:
    """Why a lease request is refused now ("busy": go through the node, which spreads the
    work; "infeasible": this node could never run it), or None: queue it here. ``fits_now``:
    the scheduler says it fits what is free (GPU ids included)."""
    if peers and not (fits_now and room_here(sched, demand)):
        return "busy"
    if not fits(sched.total, demand):
        return "infeasible"
    return None


def leases_to_refuse(queued: Sequence[tuple[Hashable, dict[str, float]]],
                     peers: Sequence[PeerView]) -> list[Hashable]:
    """Lease requests queued here (not granted) whose demand a peer has room for now (by
    what we sent it and by what it last reported free): refuse them, so the client sends
    their tasks through this node, which forwards them."""
    return [lease_id for lease_id, demand in queued
            if any(p.room(demand) and fits(p.avail, demand) for p in peers)]


# -- actors ------------------------------------------------------------------------------------
def actor_peer(sched: SchedulerView, demand: dict[str, float], peers: Sequence[P]) -> P | None:
    """A peer for a new actor (None: create it here). Here when this node has room for it
    now (counting actors waiting here); else a peer that reported room (counted down);
    else here if this node could ever hold it, else any peer that could."""
    demand = positive(demand)
    if not demand:
        return None
    free = sched.available()
    for _aid, queued in sched.waiting_actors():
        for key, amount in queued.items():
            free[key] = free.get(key, 0.0) - amount
    if fits(free, demand):
        return None
    able = [p for p in peers if p.has(demand)]
    roomy = [p for p in able if fits(p.avail, demand)]
    if not roomy and (_holds(sched, demand) or not able):
        return None
    peer = _roomiest(roomy or able)
    _reserve(peer, demand)
    return peer


def waiting_actor_moves(sched: SchedulerView, peers: Sequence[P],
                        movable: Callable[[Hashable], bool]) -> list[tuple[Hashable, P]]:
    """Actors waiting here for resources that a peer reported room for: where each goes."""
    moves = []
    for aid, demand in sched.waiting_actors():
        demand = positive(demand)
        if not demand or not movable(aid):
            continue
        roomy = [p for p in peers if p.has(demand) and fits(p.avail, demand)]
        if roomy:
            peer = _roomiest(roomy)
            _reserve(peer, demand)
            moves.append((aid, peer))
    return moves


def actor_home(sched: SchedulerView, demand: dict[str, float],
               peers: Sequence[P]) -> P | Literal["here"] | None:
    """Where to re-create an actor whose node died: "here" when there is room here now, a
    peer that reported room, here if it could ever fit, any peer that has it, else None."""
    demand = positive(demand)
    if fits(sched.available(), demand):
        return "here"
    able = [p for p in peers if p.has(demand)]
    roomy = [p for p in able if fits(p.avail, demand)]
    if not roomy and fits(sched.total, demand):
        return "here"
    if not able:
        return None
    peer = _roomiest(roomy or able)
    _reserve(peer, demand)
    return peer


def restart_home(sched: SchedulerView, demand: dict[str, float], peers: Sequence[P],
                 listed: Sequence[dict[str, float]]) -> P | Literal["here", "wait"] | None:
    """Where to re-create an actor whose node died (:func:`actor_home`), given ``peers`` this
    node is linked to and the totals of the other live nodes the head ``listed`` (linked or
    not). "wait": no linked node can hold it, but a listed one could (this node is linking
    to it, or it just joined); None: no live node could ever hold it, so it is given up."""
    home = actor_home(sched, demand, peers)
    if home is not None:
        return home
    return "wait" if any(fits(total, positive(demand)) for total in listed) else None


def any_peer(demand: dict[str, float], peers: Sequence[P]) -> P | None:
    """The peer with the most reported free CPUs among those that have ``demand``."""
    able = [p for p in peers if p.has(positive(demand))]
    return _roomiest(able) if able else None


# -- feasibility -------------------------------------------------------------------------------
def infeasible(demand: dict[str, float], totals: Sequence[dict[str, float]],
               what: str) -> Exception | None:
    """The error for ``what`` asking for ``demand`` when no node of ``totals`` (this one and
    the live peers) has that much, else None."""
    demand = positive(demand)
    if not demand or any(fits(total, demand) for total in totals):
        return None

    def coverage(total: dict[str, float]) -> float:
        return sum(min(total.get(k, 0.0) / v, 1.0) for k, v in demand.items())
    biggest = max(totals, key=coverage)
    has = {k: biggest.get(k, 0.0) for k in demand}
    return InfeasibleResourcesError(
        f"{what} asks for {demand}, but no single node of this cluster has that much: the "
        f"biggest node has {has} (of {len(totals)} live nodes). A task or actor runs on "
        "one node, so the cluster's total does not help. Ask for at most what one node has, "
        "or add a node with more (unipar start --address=... --num-cpus N --resources ...).")


# -- placement groups --------------------------------------------------------------------------
def place_bundles(bundles: Sequence[dict[str, float]], strategy: str,
                  free: dict[str, dict[str, float]]) -> dict[int, str] | None:
    """Where each bundle of a placement group goes (bundle index -> node id), all or nothing:
    None when ``free`` (node id -> what it has free; pass totals to ask "ever") cannot hold
    them all under ``strategy``.

    PACK: as few nodes as possible (the fullest-fitting node first); SPREAD: a node with no
    bundle of this group first, then any; STRICT_PACK: one node holds all; STRICT_SPREAD:
    each bundle on its own node. Bundles are placed biggest first (fewer dead ends); ties go
    to the node listed first, so a decision replays the same in a test."""
    if strategy == "STRICT_PACK":
        whole: dict[str, float] = {}
        for bundle in bundles:
            for key, amount in bundle.items():
                whole[key] = whole.get(key, 0.0) + amount
        home = next((nid for nid, have in free.items() if fits(have, whole)), None)
        return None if home is None else {i: home for i in range(len(bundles))}
    left = {nid: dict(have) for nid, have in free.items()}
    used: dict[str, int] = {}
    placed: dict[int, str] = {}
    order = sorted(range(len(bundles)), key=lambda i: -sum(bundles[i].values()))
    for i in order:
        able = [nid for nid, have in left.items() if fits(have, bundles[i])]
        if strategy == "STRICT_SPREAD":
            able = [nid for nid in able if nid not in used]
        elif strategy == "SPREAD":
            able = [nid for nid in able if nid not in used] or able
        else:   # PACK: a node already used, then the one with the least room left
            able = ([nid for nid in able if nid in used] or able)
        if not able:
            return None
        nid = able[0]
        placed[i] = nid
        used[nid] = used.get(nid, 0) + 1
        for key, amount in bundles[i].items():
            left[nid][key] = left[nid].get(key, 0.0) - amount
    return placed


def bundle_keys(pg_hex: str, index: int, demand: dict[str, float]) -> dict[str, float]:
    """The resources a reserved bundle adds to its node, as Ray names them: each resource
    ``R`` as ``R_group_<i>_<pg>`` (this bundle) and ``R_group_<pg>`` (any bundle), plus
    ``bundle_group_<i>_<pg>``/``bundle_group_<pg>`` (1000 each), which work that asks for no
    resources still takes a sliver of, so it lands in the bundle too."""
    keys: dict[str, float] = {}
    for key, amount in positive(demand).items():
        keys[f"{key}_group_{index}_{pg_hex}"] = amount
        keys[f"{key}_group_{pg_hex}"] = amount
    keys[f"bundle_group_{index}_{pg_hex}"] = 1000.0
    keys[f"bundle_group_{pg_hex}"] = 1000.0
    return keys


def demand_in_bundle(demand: dict[str, float], pg_hex: str, index: int) -> dict[str, float]:
    """A task's or actor's demand rewritten to take from bundle ``index`` of group ``pg_hex``
    (-1: any bundle) instead of from its node's free resources. Keys that are not amounts
    (a runtime env's tag, 0) stay as they are."""
    tag = f"_group_{index}_{pg_hex}" if index >= 0 else f"_group_{pg_hex}"
    out = {(f"{k}{tag}" if v > 0 else k): v for k, v in demand.items()}
    out[f"bundle{tag}"] = 0.001
    return out


def bundle_reservation(pg_hex: str, bundles: Sequence[tuple[int, dict[str, float]]]
                       ) -> tuple[dict[str, float], dict[str, float]]:
    """What a node holds for the ``(index, resources)`` bundles of one group placed on it:
    (taken out of its free resources, offered in their place: :func:`bundle_keys` summed)."""
    take: dict[str, float] = {}
    adds: dict[str, float] = {}
    for index, demand in bundles:
        for key, amount in positive(demand).items():
            take[key] = take.get(key, 0.0) + amount
        for key, amount in bundle_keys(pg_hex, index, demand).items():
            adds[key] = adds.get(key, 0.0) + amount
    return take, adds
