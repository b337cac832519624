"""Scheduling strategies on Dask (docs/scheduling.md): node affinity and SPREAD become worker
restrictions (``workers=``, ``allow_other_workers=``); placement groups cannot be built, since
Dask reserves nothing ahead of the work that uses it.

A unipar node on Dask is one host (``NodeID`` ``dask-<host>``): its workers are the ones whose
``host`` is that host.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any, Callable

from ..._strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy
from ..scheduling import no_groups

WHY_NO_GROUPS = ("Dask reserves no resources ahead of the tasks that use them (worker "
                 "resources are counted per running task), so a bundle cannot be held for "
                 "later work; use node affinity or resources= instead")


def host_of(address: str, info: dict[str, Any]) -> str:
    return str(info.get("host") or address)


class DaskPlacement:
    """Turns strategies into ``client.submit`` keyword arguments; ``workers()`` is the
    scheduler's worker table (address -> info)."""

    def __init__(self, workers: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self.workers = workers
        self.turn = itertools.count()

    def kwargs(self, strategy: Any) -> dict[str, Any]:
        """Extra ``client.submit`` arguments for ``strategy`` (None: none).

        Raises:
            NotSupportedError: a placement-group strategy.
        """
        if strategy is None:
            return {}
        if isinstance(strategy, PlacementGroupSchedulingStrategy):
            raise no_groups("dask", WHY_NO_GROUPS)
        by_host: dict[str, list[str]] = {}
        for address, info in self.workers().items():
            by_host.setdefault(host_of(address, info), []).append(address)
        if isinstance(strategy, NodeAffinitySchedulingStrategy):
            chosen = by_host.get(strategy.node_id.removeprefix("dask-"))
            if not chosen:
                return {}   # soft (hard affinity to a dead node is refused above the seam)
            return {"workers": chosen, "allow_other_workers": strategy.soft}
        hosts = sorted(by_host)   # "SPREAD": hosts in turn, then the worker Dask picks there
        if len(hosts) <= 1:
            return {}
        return {"workers": by_host[hosts[next(self.turn) % len(hosts)]],
                "allow_other_workers": True}


def runtime_context(scheduler_address: str, first_node: Callable[[], str]) -> dict[str, Any]:
    """Node, job and task of the calling code: in a Dask task, its worker's host and the
    task's key; on the driver, the first node (the driver runs on none of them). Actor ids
    are not known in the threads actors run in (None)."""
    job = hashlib.sha1(scheduler_address.encode()).hexdigest()[:8]
    try:
        from distributed import get_worker
        worker = get_worker()
    except ValueError:   # not in a Dask task: the driver, or an actor's own thread
        return {"node_id": first_node(), "job_id": job, "task_id": None, "actor_id": None}
    host = worker.address.rpartition("://")[2].rpartition(":")[0]
    task = worker.get_current_task()
    return {"node_id": f"dask-{host}", "job_id": job,
            "task_id": str(task) if task is not None else None, "actor_id": None}
