"""The dask cluster as unipar sees it: workers, their resources, and what is free.

:class:`WorkerView` owns what the backend knows of the workers' declared resources (refreshed
on demand) and turns unipar demands into Dask resource restrictions. ``scheduler_usage`` runs
on the scheduler (``run_on_scheduler``, pickled by reference: keep it at this module path).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

from .restarts import DEMAND
from .waiting import slot_released

__all__ = ["KILLED", "WorkerView", "scheduler_usage"]

KILLED = "unipar-killed-actors"  # scheduler metadata: host keys of killed actors


class WorkerView:
    """Workers and resources of the cluster behind ``live()`` (the backend's Dask client).

    ``expected_workers()`` is how many workers the backend's own cluster runs (0 when it
    joined someone else's): fewer means one is restarting, which is waited for.
    """

    def __init__(self, live: Callable[[], Any], expected_workers: Callable[[], int]) -> None:
        self._live = live
        self._expected = expected_workers
        self._worker_max: dict[str, float] = {}
        self._declared: set[str] = set()

    def workers(self) -> dict[str, dict[str, Any]]:
        """The scheduler's worker table (address -> info)."""
        client = self._live()
        with slot_released():
            workers = client.scheduler_info(n_workers=-1)["workers"]
            expected = self._expected()
            if len(workers) < expected:
                # A worker of our own cluster died (a crash, a forced cancel) and its nanny is
                # starting a new one: count it once it is back rather than report a shrunk cluster.
                with contextlib.suppress(Exception):
                    client.wait_for_workers(expected, timeout=30)
                workers = client.scheduler_info(n_workers=-1)["workers"]
            return workers

    def refresh(self) -> None:
        """Read again which resources the workers declare, and the most any one has."""
        maxima: dict[str, float] = {}
        declared: set[str] = set()
        for info in self.workers().values():
            for name, amount in (info.get("resources") or {}).items():
                declared.add(name)
                maxima[name] = max(maxima.get(name, 0.0), float(amount))
        self._worker_max, self._declared = maxima, declared

    def restrictions(self, demand: dict[str, float]) -> dict[str, float] | None:
        """Dask resource restrictions for a unipar demand (see backend.py's docstring for CPU)."""
        out: dict[str, float] = {}
        for name, amount in demand.items():
            if name == "CPU" and (amount <= 1 or "CPU" not in self._declared):
                continue  # the thread slot is the CPU
            if name not in self._declared:
                self.refresh()
            if name not in self._declared:
                # No worker has it (yet): the API warned that it waits, and Dask keeps a task
                # whose restriction no worker meets pending until a worker that has it joins.
                out[name] = amount
                continue
            # More than any one worker has: take a whole worker's share (documented).
            out[name] = min(amount, self._worker_max.get(name, amount))
        return out or None

    def nodes(self) -> list[dict[str, Any]]:
        """One entry per machine (host), its workers' resources summed: a Dask worker is one
        process, while a node is what Ray and the other backends call one (a machine)."""
        by_host: dict[str, dict[str, float]] = {}
        for address, info in self.workers().items():
            total = by_host.setdefault(str(info.get("host") or address), {})
            for name, amount in _worker_resources(info).items():
                total[name] = total.get(name, 0.0) + amount
        return [{"NodeID": f"dask-{host}", "Alive": True, "NodeManagerAddress": host,
                 "Resources": resources} for host, resources in sorted(by_host.items())]

    def cluster_resources(self) -> dict[str, float]:
        """Every worker's resources summed, with its threads as CPU."""
        totals: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
        for info in self.workers().values():
            for name, amount in _worker_resources(info).items():
                totals[name] = totals.get(name, 0.0) + amount
        return totals

    def available_resources(self) -> dict[str, float]:
        """The total less busy threads, running tasks' resources and live actors' demand."""
        with slot_released():
            usage = self._live().run_on_scheduler(scheduler_usage)
        free = self.cluster_resources()
        free["CPU"] -= usage.pop("__busy_threads__", 0.0)
        for name, amount in usage.pop("__actors__", {}).items():  # held for life, as in Ray
            free[name] = free.get(name, 0.0) - amount
        for name, amount in usage.items():
            if name != "CPU":
                free[name] = free.get(name, 0.0) - amount
        return {k: max(v, 0.0) for k, v in free.items()}


def _worker_resources(info: dict[str, Any]) -> dict[str, float]:
    resources = {"CPU": float(info.get("nthreads", 1)), "GPU": 0.0}
    resources.update({k: float(v) for k, v in (info.get("resources") or {}).items()})
    return resources


def scheduler_usage(dask_scheduler: Any = None) -> dict[str, Any]:
    """On the scheduler: threads running tasks, resources held by running tasks, and the
    demand of every live actor (cluster-wide: actors that tasks and actors created count too)."""
    usage: dict[str, Any] = {"__busy_threads__": 0.0}
    actors: dict[str, float] = {}
    killed = dask_scheduler.task_metadata.get(KILLED, {})
    for ts in dask_scheduler.tasks.values():
        if ts.actor and ts.state == "memory" and str(ts.key) not in killed:
            for name, amount in ((ts.annotations or {}).get(DEMAND) or {}).items():
                actors[name] = actors.get(name, 0.0) + float(amount)
    usage["__actors__"] = actors
    for ws in dask_scheduler.workers.values():
        # Actor constructions in progress are not counted: the actor's own demand is.
        running = sum(1 for ts in ws.processing if not ts.actor) - len(ws.long_running)
        usage["__busy_threads__"] += float(max(0, min(ws.nthreads, running)))
        for name, amount in ws.used_resources.items():
            usage[name] = usage.get(name, 0.0) + float(amount)
    return usage
