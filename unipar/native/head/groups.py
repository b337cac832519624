"""The head's placement groups: where each bundle goes, reserved on all its nodes or none.

Decisions are :func:`~..node.placement.place_bundles` (sans-I/O); this part keeps the table and
runs the two-phase reservation over the nodes' connections::

    driver ── create_placement_group ─▶ head: PENDING ─▶ place_bundles(free of live nodes)
        head ── reserve_bundles ─▶ each chosen node ── reply True/False ─▶ head
            all True ─▶ CREATED: the nodes offer the bundles' resources (R_group_<i>_<pg>),
                        the head lists them in the nodes' Resources, peers route work there
            any False ─▶ release_bundles to those that said yes; tried again on the next status
    no set of live nodes could ever hold it ─▶ INFEASIBLE (tried again when a node joins)
    a node with a bundle dies ─▶ the group's other bundles are released, the group is PENDING
    remove_placement_group ─▶ release_bundles to its nodes, REMOVED

The table lives only in the head's memory: a head restarted from its snapshot forgets groups
(their nodes still hold the bundles until the driver removes them or the nodes stop).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

from ..node.placement import bundle_keys, place_bundles
from ..wire import protocol as P


@dataclass
class Group:
    pg_id: str
    name: str
    strategy: str
    bundles: list[dict[str, float]]
    state: str = "PENDING"                              # PENDING CREATED INFEASIBLE REMOVED
    placed: dict[int, str] = field(default_factory=dict)   # bundle index -> node id
    error: str = ""
    reserving: dict[str, bool | None] | None = None     # node -> its answer, while asking
    trying: dict[int, str] = field(default_factory=dict)   # the placement being reserved

    def row(self) -> dict[str, Any]:
        return {"placement_group_id": self.pg_id, "name": self.name, "strategy": self.strategy,
                "state": self.state, "bundles": dict(enumerate(self.bundles)),
                "bundles_to_node_id": dict(self.placed), "error": self.error}


def _shown(resources: dict[str, float]) -> dict[str, float]:
    """A node's resources as users name them (without the ones placement adds)."""
    return {k: v for k, v in resources.items() if not k.startswith("node:") and "_group_" not in k}


class PlacementGroups:
    """The table and the reservations; ``nodes`` is the head's node table (read, and the
    bundles' resources written into ``Resources``), ``send(node_id, msg)`` reaches a node
    (False when it has no connection)."""

    def __init__(self, nodes: dict[str, dict[str, Any]],
                 send: Callable[[str, P.Message], bool]) -> None:
        self.nodes = nodes
        self.send = send
        self.groups: dict[str, Group] = {}
        self.asks: dict[int, tuple[str, str]] = {}   # req id -> (group, node)
        self.req_ids = itertools.count(1)
        # False for a driver's own cluster (its head runs in its node): no node will join,
        # so an infeasible group fails instead of waiting.
        self.can_grow = True

    def handlers(self) -> dict[str, Callable[[Any, Any], None]]:
        return {P.CreatePlacementGroup.op: self.on_create,
                P.RemovePlacementGroup.op: self.on_remove,
                P.ListPlacementGroups.op: self.on_list}

    # -- drivers -------------------------------------------------------------------------------
    def on_create(self, conn: Any, msg: P.CreatePlacementGroup) -> None:
        if msg.name and any(g.name == msg.name and g.state != "REMOVED"
                            for g in self.groups.values()):
            conn.send(P.Reply(msg.req_id, None, f"a placement group named {msg.name!r} already "
                              "exists; use get_placement_group(name)", "value"))
            return
        group = Group(msg.pg_id, msg.name, msg.strategy,
                      [{k: float(v) for k, v in b.items()} for b in msg.bundles])
        self.groups[msg.pg_id] = group
        conn.send(P.Reply(msg.req_id, True))
        self.try_place(group)

    def on_remove(self, conn: Any, msg: P.RemovePlacementGroup) -> None:
        group = self.groups.get(msg.pg_id)
        if group is not None and group.state != "REMOVED":
            self._release(group, set(group.placed.values()) | set(group.reserving or ()))
            group.state, group.reserving = "REMOVED", None
        conn.send(P.Reply(msg.req_id, True))

    def on_list(self, conn: Any, msg: P.ListPlacementGroups) -> None:
        conn.send(P.Reply(msg.req_id, [{**g.row(), "can_grow": self.can_grow}
                                       for g in self.groups.values()]))

    # -- nodes ---------------------------------------------------------------------------------
    def on_reply(self, msg: P.Reply) -> None:
        """A node's answer to ReserveBundles."""
        asked = self.asks.pop(msg.req_id, None)
        if asked is None:
            return
        group = self.groups.get(asked[0])
        if group is None or group.reserving is None or asked[1] not in group.reserving:
            return
        group.reserving[asked[1]] = bool(msg.value)
        self._settle(group)

    def node_dead(self, node_id: str) -> None:
        """Its bundles are gone: answers it owes count as no; groups it held are placed again."""
        for group in self.groups.values():
            if group.reserving is not None and node_id in group.reserving:
                if group.reserving[node_id] is None:
                    group.reserving[node_id] = False
                self._settle(group)
            elif group.state == "CREATED" and node_id in group.placed.values():
                self._release(group, set(group.placed.values()) - {node_id})
                group.placed, group.state = {}, "PENDING"
        self.retry()

    def retry(self) -> None:
        """Try again every group not placed yet (called on node status and joins)."""
        for group in list(self.groups.values()):
            if group.state in ("PENDING", "INFEASIBLE") and group.reserving is None:
                self.try_place(group)

    # -- the reservation -----------------------------------------------------------------------
    def try_place(self, group: Group) -> None:
        alive = {nid: n for nid, n in self.nodes.items() if n.get("Alive")}
        if place_bundles(group.bundles, group.strategy,
                         {nid: n["Resources"] for nid, n in alive.items()}) is None:
            group.state = "INFEASIBLE"
            group.error = (f"placement group {group.pg_id} ({group.strategy}, bundles "
                           f"{group.bundles}) does not fit the {len(alive)} live node(s): "
                           f"{ {nid[:8]: _shown(n['Resources']) for nid, n in alive.items()} }")
            return
        group.state, group.error = "PENDING", ""
        placement = place_bundles(group.bundles, group.strategy,
                                  {nid: n.get("Available", n["Resources"])
                                   for nid, n in alive.items()})
        if placement is None:
            return   # fits the cluster, not what is free now: tried again on the next status
        group.trying, group.reserving = placement, {}
        for nid in sorted(set(placement.values())):
            req = next(self.req_ids)
            self.asks[req] = (group.pg_id, nid)
            group.reserving[nid] = None
            wanted = [[i, group.bundles[i]] for i, n in placement.items() if n == nid]
            if not self.send(nid, P.ReserveBundles(req, group.pg_id, wanted)):
                group.reserving[nid] = False
        self._settle(group)

    def _settle(self, group: Group) -> None:
        """Every chosen node answered: commit, or release those that said yes."""
        answers = group.reserving
        if answers is None or any(a is None for a in answers.values()):
            return
        group.reserving = None
        if group.state == "REMOVED":
            self._release(group, {n for n, ok in answers.items() if ok})
            return
        if all(answers.values()):
            group.placed, group.state = dict(group.trying), "CREATED"
            self._account(group, +1)
            return
        self._release(group, {n for n, ok in answers.items() if ok}, counted=False)

    def _release(self, group: Group, node_ids: set[str], counted: bool = True) -> None:
        if counted and group.placed:
            self._account(group, -1, node_ids)
        for nid in node_ids:
            self.send(nid, P.ReleaseBundles(group.pg_id))

    def _account(self, group: Group, sign: int, only: set[str] | None = None) -> None:
        """The nodes' listed resources: bundle resources added (+1) or removed (-1); what the
        bundles took off a node's free resources, until its next status says it."""
        for i, nid in group.placed.items():
            node = self.nodes.get(nid)
            if node is None or (only is not None and nid not in only):
                continue
            for key, amount in bundle_keys(group.pg_id, i, group.bundles[i]).items():
                left = node["Resources"].get(key, 0.0) + sign * amount
                if left > 1e-9:
                    node["Resources"][key] = left
                else:
                    node["Resources"].pop(key, None)
            free = node.setdefault("Available", dict(node["Resources"]))
            for key, amount in group.bundles[i].items():
                free[key] = free.get(key, 0.0) - sign * amount
