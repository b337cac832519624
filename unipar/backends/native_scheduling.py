"""The native backend's scheduling strategies and placement groups (docs/scheduling.md).

Strategies become resource demands the engine already routes by, as in Ray:

* a placement-group bundle: the demand is rewritten onto the bundle's resources
  (``CPU`` -> ``CPU_group_<i>_<pg>``, placement.demand_in_bundle), which only the node holding
  the bundle offers; a call waits (in ``.remote()``) until the group is reserved;
* node affinity: a sliver (0.001) of ``node:<id>``, which only that node has (soft: only while
  the node is alive);
* SPREAD: node affinity, soft, to the live nodes in turn.

Groups themselves are the head's (native/head/groups.py); this adapter asks it over the
client's head channel and polls the table while it waits.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import threading
import time
import uuid
import warnings
from typing import TYPE_CHECKING, Any, Callable

from .._strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy
from ..exceptions import InfeasibleResourcesError, InfeasibleWarning
from ..native.node.placement import demand_in_bundle
from ..native.wire import protocol as P

if TYPE_CHECKING:
    from ..native.client.client import Client

NODE_KEY = "node:"
NODES_TTL = 1.0   # s the live node list is reused for SPREAD and affinity checks


def engine_key(key: str) -> bool:
    """Resource names the engine adds for placement (hidden from users' resource dicts):
    ``node:<id>`` and bundles' resources; ``node:<ip>`` is shown, as in Ray."""
    return (key.startswith(NODE_KEY) and not _is_ip(key[len(NODE_KEY):])) or "_group_" in key


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def user_view(resources: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in resources.items() if not engine_key(k)}


class NativeScheduling:
    """Strategies and groups for one process's client (``client()`` gives it, or raises)."""

    def __init__(self, client: Callable[[], "Client"], can_grow: Callable[[], bool]) -> None:
        self._client = client
        self._can_grow = can_grow
        self._created: set[str] = set()
        self._spread = itertools.count()
        self._alive: tuple[float, list[str]] = (0.0, [])
        self._lock = threading.Lock()

    # -- strategies ----------------------------------------------------------------------------
    def demand(self, strategy: Any, demand: dict[str, float]) -> dict[str, float]:
        """``demand`` rewritten for ``strategy`` (None: unchanged).

        Raises:
            InfeasibleResourcesError: hard affinity to a node that is not alive; a group
                that can never be placed.
        """
        if strategy is None:
            return demand
        if isinstance(strategy, PlacementGroupSchedulingStrategy):
            pg = strategy.placement_group
            if pg.id not in self._created:
                self.wait(pg.id, None)
            return demand_in_bundle(demand, pg.id, strategy.placement_group_bundle_index)
        if isinstance(strategy, NodeAffinitySchedulingStrategy):
            # A node missing from the cached list may have joined since: ask before refusing.
            if (strategy.node_id in self._live_nodes()
                    or strategy.node_id in self._live_nodes(fresh=True)):
                return {**demand, NODE_KEY + strategy.node_id: 0.001}
            if strategy.soft:
                return demand
            raise InfeasibleResourcesError(
                f"NodeAffinitySchedulingStrategy(node_id={strategy.node_id!r}, soft=False): no "
                "live node has that id (unipar.nodes() lists them); pass soft=True to run "
                "elsewhere when it is gone")
        nodes = self._live_nodes()   # "SPREAD": the live nodes in turn
        if len(nodes) <= 1:
            return demand
        return {**demand, NODE_KEY + nodes[next(self._spread) % len(nodes)]: 0.001}

    def _live_nodes(self, fresh: bool = False) -> list[str]:
        """Ids of the live nodes, as the head listed them at most NODES_TTL s ago (``fresh``:
        now)."""
        with self._lock:
            at, nodes = self._alive
            if not fresh and time.monotonic() - at < NODES_TTL:
                return nodes
        nodes = sorted(n["NodeID"] for n in self._client().nodes() if n["Alive"])
        with self._lock:
            self._alive = (time.monotonic(), nodes)
        return nodes

    def runtime_context(self, task_id: str | None, actor_id: str | None) -> dict[str, Any]:
        client = self._client()
        job = hashlib.sha1(client.head_address.encode()).hexdigest()[:8]
        return {"node_id": client.node_id, "job_id": job, "task_id": task_id,
                "actor_id": actor_id}

    # -- placement groups ----------------------------------------------------------------------
    def create(self, bundles: list[dict[str, float]], strategy: str, name: str | None) -> str:
        pg_id = uuid.uuid4().hex[:16]
        self._client().request(lambda r: P.CreatePlacementGroup(r, pg_id, bundles, strategy,
                                                                name or ""), head=True)
        return pg_id

    def remove(self, pg_id: str) -> None:
        self._created.discard(pg_id)
        self._client().request(lambda r: P.RemovePlacementGroup(r, pg_id), head=True)

    def table(self) -> list[dict[str, Any]]:
        rows = self._client().request(lambda r: P.ListPlacementGroups(r), head=True).value
        for row in rows:
            row["handle"] = row["placement_group_id"]
            row["name"] = row["name"] or None
            row["bundles"] = {int(i): b for i, b in row["bundles"].items()}
            row["bundles_to_node_id"] = {int(i): n for i, n in row["bundles_to_node_id"].items()}
        return rows

    def wait(self, pg_id: str, timeout: float | None, fail: bool | None = None) -> bool:
        """Poll the head's table until the group is CREATED (True) or ``timeout`` (False).
        ``fail``: init's fail_infeasible (None: fail where the cluster cannot grow)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay, warned = 0.01, False
        while True:
            row = next((r for r in self.table() if r["placement_group_id"] == pg_id), None)
            state = row["state"] if row else "REMOVED"
            if state == "CREATED":
                self._created.add(pg_id)
                return True
            if state == "REMOVED":
                raise ValueError(f"placement group {pg_id} was removed")
            if state == "INFEASIBLE" and row is not None:
                if fail or (fail is None and not row.get("can_grow", self._can_grow())):
                    raise InfeasibleResourcesError(
                        f"{row['error']}; it could never be reserved. Ask for smaller bundles "
                        "or another strategy, or add nodes.")
                if not warned:
                    warned = True
                    warnings.warn(f"{row['error']}; it waits for nodes that fit to join",
                                  InfeasibleWarning, stacklevel=4)
            if deadline is not None and time.monotonic() >= deadline:
                return False
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            delay = min(delay * 2, 0.5)
