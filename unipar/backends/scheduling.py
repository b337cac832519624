"""Scheduling helpers the adapters share (docs/scheduling.md): a placement-group table for an
engine with one node of known resources (local), and the errors of engines that cannot
reserve resources or pin work (dask, spark).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import Any, Callable, Iterator

from .._strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy
from ..exceptions import InfeasibleResourcesError, NotSupportedError

__all__ = ["OneNodeGroups", "refuse_strategy", "no_groups", "running_task", "running_ids"]


class OneNodeGroups:
    """Placement groups on one node whose totals are known: a bundle set is reserved when its
    sum fits what is free (``free()``, which counts live actors outside groups); a set that
    can never fit (more than the node has, or STRICT_SPREAD over several bundles) fails."""

    def __init__(self, node_id: str, totals: Callable[[], dict[str, float]],
                 free: Callable[[], dict[str, float]]) -> None:
        self.node_id = node_id
        self.totals = totals
        self.free = free
        self.rows: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def held(self) -> dict[str, float]:
        """What the created groups hold, summed."""
        out: dict[str, float] = {}
        for row in self.rows.values():
            if row["state"] == "CREATED":
                for bundle in row["bundles"].values():
                    for key, amount in bundle.items():
                        out[key] = out.get(key, 0.0) + amount
        return out

    def create(self, bundles: list[dict[str, float]], strategy: str, name: str | None) -> str:
        with self.lock:
            if name and any(r["name"] == name and r["state"] != "REMOVED"
                            for r in self.rows.values()):
                raise ValueError(f"a placement group named {name!r} already exists; use "
                                 "get_placement_group(name)")
            pg_id = uuid.uuid4().hex[:16]
            self.rows[pg_id] = {"placement_group_id": pg_id, "handle": pg_id, "name": name,
                                "strategy": strategy, "state": "PENDING",
                                "bundles": dict(enumerate(bundles)), "bundles_to_node_id": {},
                                "error": ""}
        return pg_id

    def _try(self, row: dict[str, Any]) -> None:
        whole: dict[str, float] = {}
        for bundle in row["bundles"].values():
            for key, amount in bundle.items():
                whole[key] = whole.get(key, 0.0) + amount
        totals = self.totals()
        if (row["strategy"] == "STRICT_SPREAD" and len(row["bundles"]) > 1) or any(
                totals.get(k, 0.0) + 1e-9 < v for k, v in whole.items()):
            row["state"] = "INFEASIBLE"
            row["error"] = (f"placement group {row['placement_group_id']} ({row['strategy']}, "
                            f"bundles {list(row['bundles'].values())}) does not fit the one "
                            f"node of this backend: {totals}")
            return
        free = self.free()
        for key, amount in self.held().items():
            free[key] = free.get(key, 0.0) - amount
        if all(free.get(k, 0.0) + 1e-9 >= v for k, v in whole.items()):
            row["state"] = "CREATED"
            row["bundles_to_node_id"] = {i: self.node_id for i in row["bundles"]}

    def wait(self, pg_id: str, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.lock:
                row = self.rows.get(pg_id)
                if row is None or row["state"] == "REMOVED":
                    raise ValueError(f"placement group {pg_id} was removed")
                if row["state"] != "CREATED":
                    self._try(row)
                if row["state"] == "CREATED":
                    return True
                if row["state"] == "INFEASIBLE":
                    raise InfeasibleResourcesError(f"{row['error']}; it could never be reserved")
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05 if deadline is None else min(0.05, max(0.0, deadline - time.monotonic())))

    def remove(self, pg_id: str) -> None:
        with self.lock:
            row = self.rows.get(pg_id)
            if row is not None:
                row["state"] = "REMOVED"
                row["bundles_to_node_id"] = {}

    def table(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.rows.values()]


def refuse_strategy(strategy: Any, backend: str, why_groups: str,
                    why_affinity: str | None = None) -> None:
    """For engines that cannot do some strategies: refuse a placement-group strategy
    (``why_groups`` says why) and, given ``why_affinity``, node affinity. SPREAD passes.

    Raises:
        NotSupportedError: a strategy the engine cannot follow.
    """
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        raise no_groups(backend, why_groups)
    if why_affinity and isinstance(strategy, NodeAffinitySchedulingStrategy):
        raise NotSupportedError(f"NodeAffinitySchedulingStrategy is not supported on "
                                f"{backend}: {why_affinity}")


def no_groups(backend: str, why: str) -> NotSupportedError:
    """The error every placement-group call raises on an engine that cannot reserve."""
    return NotSupportedError(f"placement groups are not supported on {backend}: {why}")


_running = threading.local()   # in-process engines: the task running on this thread


@contextlib.contextmanager
def running_task(actor_id: str | None) -> Iterator[None]:
    """Record a task (a new id) or actor call running on this thread, for
    :func:`running_ids`; engines that run work in the caller's process (local) use it."""
    before = (getattr(_running, "task", None), getattr(_running, "actor", None))
    _running.task, _running.actor = uuid.uuid4().hex[:16], actor_id
    try:
        yield
    finally:
        _running.task, _running.actor = before


def running_ids() -> tuple[str | None, str | None]:
    """(task id, actor id) recorded by :func:`running_task` on this thread, or Nones."""
    return getattr(_running, "task", None), getattr(_running, "actor", None)


def in_group(opts: Any) -> bool:
    """Whether options place the work in a placement group (it takes the bundle's resources)."""
    return isinstance(getattr(opts, "scheduling_strategy", None), PlacementGroupSchedulingStrategy)
