"""The node's scheduling decisions, with no I/O: fed events, returns actions.

The node daemon (the I/O shell) tells the scheduler what happened — a task became runnable, a
worker registered, finished, blocked in ``get``, died; an actor wants a home — and calls
:meth:`Scheduler.schedule` to learn what to do: run a task on an idle worker, start worker
processes, place an actor (start its dedicated process), retire idle workers. Scheduling bugs
replay in a unit test with no sockets and no clock (``now`` is always passed in).

Rules:

* A task runs when its whole demand (CPU, GPU, custom) fits in what is free. Queued tasks are
  grouped by demand ("shape"), FIFO within a shape; a shape that does not fit is skipped in
  O(1), so a long queue costs nothing per decision and big tasks do not block small ones.
* A worker blocked in ``get``/``wait`` gives its CPUs back (not GPUs or custom resources, as
  in Ray) and takes them back when it resumes, even if that oversubscribes for a while.
* Actors hold their demand for life; each gets a new process.
* Workers are started on demand, up to ``max_active`` not-blocked workers; idle workers beyond
  ``keep_idle`` retire after ``idle_timeout`` seconds.
* A runtime env is a demand key ``runtime_env:<id>`` with amount 0 (:func:`env_of`): its tasks
  and actors run only on workers started for it, and those run nothing else. Such workers are
  started on demand and retire when idle (``keep_idle`` counts only plain workers).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable

EPS = 1e-9
ENV_TAG = "runtime_env:"


def env_of(demand: dict[str, float] | tuple) -> str:
    """The runtime env a demand (dict or shape) names, or "" for none."""
    for key in (demand if isinstance(demand, dict) else dict(demand)):
        if key.startswith(ENV_TAG):
            return key
    return ""


@dataclass(frozen=True)
class Dispatch:
    task_id: Hashable
    worker_id: str
    gpu_ids: tuple[int, ...]


@dataclass(frozen=True)
class PlaceActor:
    actor_id: Hashable
    gpu_ids: tuple[int, ...]


@dataclass(frozen=True)
class StartWorkers:
    count: int
    env: str = ""   # the runtime env they are dedicated to ("" for plain workers)


@dataclass(frozen=True)
class RetireWorker:
    worker_id: str


Action = Dispatch | PlaceActor | StartWorkers | RetireWorker


@dataclass
class _Queued:
    demand: dict[str, float]
    since: float
    label: str
    warned: bool = False


@dataclass
class _Worker:
    state: str = "idle"                      # idle | busy | blocked
    task_id: Hashable | None = None
    demand: dict[str, float] = field(default_factory=dict)
    gpu_ids: tuple[int, ...] = ()
    idle_since: float = 0.0
    env: str = ""


class Scheduler:
    """Resources, the queue of runnable tasks, pending actors and the task-worker pool of one node."""

    def __init__(self, resources: dict[str, float], *, gpu_ids: list[int] | None = None,
                 max_active: int | None = None, keep_idle: int | None = None,
                 idle_timeout: float = 10.0) -> None:
        self.total = {k: float(v) for k, v in resources.items()}
        self.free = dict(self.total)
        cpus = int(self.total.get("CPU", 0))
        self.gpu_free: dict[int, float] = {i: 1.0 for i in (gpu_ids if gpu_ids is not None
                                                            else range(int(self.total.get("GPU", 0))))}
        self.max_active = max_active if max_active is not None else max(2 * cpus, 4)
        self.keep_idle = keep_idle if keep_idle is not None else max(cpus, 1)
        self.idle_timeout = idle_timeout
        self.queues: dict[tuple, OrderedDict[Hashable, _Queued]] = {}   # by demand shape
        self.shape_of: dict[Hashable, tuple] = {}
        self.actor_queue: OrderedDict[Hashable, _Queued] = OrderedDict()
        self.actors: dict[Hashable, tuple[dict[str, float], tuple[int, ...]]] = {}
        self.workers: dict[str, _Worker] = {}
        self.starting = 0
        self.starting_env: dict[str, int] = {}   # of ``starting``: workers for a runtime env
        self.warned_labels: set[str] = set()
        # Placement-group bundles held here: group id -> (taken from free, resources added).
        self.bundles: dict[str, tuple[dict[str, float], dict[str, float]]] = {}

    # -- events --------------------------------------------------------------------------------
    def add_task(self, task_id: Hashable, demand: dict[str, float], now: float,
                 label: str = "", front: bool = False) -> None:
        """A task whose dependencies are ready wants to run."""
        shape = tuple(sorted(demand.items()))
        queue = self.queues.get(shape)
        if queue is None:
            queue = self.queues[shape] = OrderedDict()
        queue[task_id] = _Queued(dict(demand), now, label or str(task_id))
        self.shape_of[task_id] = shape
        if front:
            queue.move_to_end(task_id, last=False)

    def remove_task(self, task_id: Hashable) -> bool:
        """Drop a queued task (cancelled); False when it is not queued (running or unknown)."""
        shape = self.shape_of.pop(task_id, None)
        if shape is None:
            return False
        queue = self.queues[shape]
        del queue[task_id]
        if not queue:
            del self.queues[shape]
        return True

    def queued(self) -> int:
        return len(self.shape_of)

    def add_actor(self, actor_id: Hashable, demand: dict[str, float], now: float,
                  label: str = "") -> None:
        self.actor_queue[actor_id] = _Queued(dict(demand), now, label or str(actor_id))

    def remove_actor(self, actor_id: Hashable) -> None:
        """The actor is gone (or never placed): give back what it held."""
        self.actor_queue.pop(actor_id, None)
        held = self.actors.pop(actor_id, None)
        if held is not None:
            self._release(*held)

    def workers_requested(self, count: int, env: str = "") -> None:
        """The shell started ``count`` processes (they register later)."""
        self.starting += count
        if env:
            self.starting_env[env] = self.starting_env.get(env, 0) + count

    def _started(self, env: str) -> None:
        self.starting = max(0, self.starting - 1)
        if env and env in self.starting_env:
            self.starting_env[env] -= 1
            if self.starting_env[env] <= 0:
                del self.starting_env[env]

    def worker_start_failed(self, env: str = "") -> None:
        self._started(env)

    def worker_registered(self, worker_id: str, now: float, env: str = "") -> None:
        self._started(env)
        self.workers[worker_id] = _Worker(idle_since=now, env=env)

    def task_finished(self, worker_id: str, now: float) -> Hashable | None:
        """The worker's task ended; it is idle again. Returns the task id it ran."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return None
        task_id = worker.task_id
        self._release_worker(worker)
        worker.state, worker.task_id, worker.idle_since = "idle", None, now
        return task_id

    def worker_lost(self, worker_id: str) -> Hashable | None:
        """The process died; returns the id of the task it was running, if any."""
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return None
        self._release_worker(worker)
        return worker.task_id

    def worker_blocked(self, worker_id: str) -> None:
        worker = self.workers.get(worker_id)
        if worker is None or worker.state != "busy":
            return
        worker.state = "blocked"
        self.free["CPU"] = self.free.get("CPU", 0.0) + worker.demand.get("CPU", 0.0)

    def worker_unblocked(self, worker_id: str) -> None:
        worker = self.workers.get(worker_id)
        if worker is None or worker.state != "blocked":
            return
        worker.state = "busy"
        self.free["CPU"] = self.free.get("CPU", 0.0) - worker.demand.get("CPU", 0.0)

    # -- decisions -----------------------------------------------------------------------------
    def schedule(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for actor_id, item in list(self.actor_queue.items()):
            gpus = self._acquire(item.demand)
            if gpus is not None:
                del self.actor_queue[actor_id]
                self.actors[actor_id] = (item.demand, gpus)
                actions.append(PlaceActor(actor_id, gpus))
        idle_by_env: dict[str, list[str]] = {}
        for wid, w in self.workers.items():
            if w.state == "idle":
                idle_by_env.setdefault(w.env, []).append(wid)
        waiting_fit = 0
        env_fit: dict[str, int] = {}
        for shape, queue in list(self.queues.items()):
            env = env_of(shape)
            idle = idle_by_env.setdefault(env, [])
            while queue and idle:
                task_id, item = next(iter(queue.items()))
                gpus = self._acquire(item.demand)
                if gpus is None:
                    break
                wid = idle.pop()
                worker = self.workers[wid]
                worker.state, worker.task_id, worker.demand, worker.gpu_ids = "busy", task_id, item.demand, gpus
                del queue[task_id]
                del self.shape_of[task_id]
                actions.append(Dispatch(task_id, wid, gpus))
            if not queue:
                del self.queues[shape]
            elif not idle and env:
                env_fit[env] = env_fit.get(env, 0) + self._could_start(dict(shape), len(queue))
            elif not idle:
                waiting_fit += self._could_start(dict(shape), len(queue))
        actions.extend(self._start_for_envs(env_fit))
        idle = idle_by_env.get("", [])
        active = sum(1 for w in self.workers.values() if w.state != "blocked") + self.starting
        # Start workers for tasks that fit but find no idle worker, and keep the pool at
        # ``keep_idle`` workers (a crashed or retired worker is replaced before it is needed).
        plain_starting = self.starting - sum(self.starting_env.values())
        plain = sum(1 for w in self.workers.values() if not w.env)
        want = max(waiting_fit - plain_starting, self.keep_idle - plain - plain_starting)
        count = min(want, self.max_active - active)
        if count > 0:
            actions.append(StartWorkers(count))
        actions.extend(self._retire(idle, now))
        actions.extend(self._retire_env_workers(idle_by_env, now))
        return actions

    def _start_for_envs(self, env_fit: dict[str, int]) -> list[Action]:
        """Workers for runtime envs whose tasks fit but find no idle worker of their env.
        Idle workers of other envs do not count against ``max_active`` here: they cannot
        take these tasks, and they retire after ``idle_timeout``."""
        actions: list[Action] = []
        for env, fit in env_fit.items():
            busy = sum(1 for w in self.workers.values() if w.state == "busy") + self.starting
            count = min(fit - self.starting_env.get(env, 0), self.max_active - busy)
            if count > 0:
                actions.append(StartWorkers(count, env))   # the shell calls workers_requested
        return actions

    def _retire_env_workers(self, idle_by_env: dict[str, list[str]], now: float) -> list[Action]:
        actions: list[Action] = []
        for env, idle in idle_by_env.items():
            for wid in idle if env else ():
                if now - self.workers[wid].idle_since >= self.idle_timeout:
                    del self.workers[wid]
                    actions.append(RetireWorker(wid))
        return actions

    def _could_start(self, demand: dict[str, float], queued: int) -> int:
        """How many of ``queued`` tasks of this shape the free resources could take now."""
        count = queued
        for key, amount in demand.items():
            if amount > EPS:
                count = min(count, int((self.free.get(key, 0.0) + EPS) // amount))
        return max(count, 0)

    def _retire(self, idle: list[str], now: float) -> list[Action]:
        spare = sum(1 for w in self.workers.values() if not w.env) - self.keep_idle
        actions: list[Action] = []
        for wid in idle:
            if spare <= 0:
                break
            if now - self.workers[wid].idle_since >= self.idle_timeout:
                del self.workers[wid]
                spare -= 1
                actions.append(RetireWorker(wid))
        return actions

    def stuck(self, now: float, after: float) -> list[tuple[str, dict[str, float], dict[str, float]]]:
        """Queued tasks and actors that have waited ``after`` seconds and cannot run even when
        every running task finishes — what they need is held by actors (which hold it for
        life). ``(label, demand, free)``; each label is reported once. A long queue behind
        running tasks is normal and never reported."""
        found = []
        heads = [next(iter(q.values())) for q in self.queues.values()]
        reclaimable: dict[str, float] | None = None
        for item in heads + list(self.actor_queue.values()):
            if item.warned or now - item.since < after:
                continue
            if reclaimable is None:
                reclaimable = self._free_after_tasks()
            if all(reclaimable.get(k, 0.0) + EPS >= v for k, v in item.demand.items()):
                continue   # running tasks will give back enough
            item.warned = True
            if item.label in self.warned_labels:
                continue
            self.warned_labels.add(item.label)
            found.append((item.label, dict(item.demand), self.available()))
        return found

    def _free_after_tasks(self) -> dict[str, float]:
        """What would be free if every running task finished now (actors keep theirs)."""
        free = dict(self.free)
        for worker in self.workers.values():
            for key, value in worker.demand.items():
                if worker.state == "blocked" and key == "CPU":
                    continue   # already given back
                free[key] = free.get(key, 0.0) + value
        return free

    def available(self) -> dict[str, float]:
        return {k: max(v, 0.0) if abs(v) > EPS else 0.0 for k, v in self.free.items()}

    def fits_now(self, demand: dict[str, float]) -> bool:
        """Whether ``demand`` fits in what is free now (and a worker is idle or can start)."""
        return self._fits(demand)

    def fits_total(self, demand: dict[str, float]) -> bool:
        """Whether ``demand`` could ever fit on this node."""
        return all(self.total.get(k, 0.0) + EPS >= v for k, v in demand.items() if v > EPS)

    # -- queries (what placement.py may read) ----------------------------------------------------
    def queued_shapes(self) -> list[dict[str, float]]:
        """The demands that tasks queued here ask for, one per shape, oldest shape first."""
        return [dict(shape) for shape in self.queues]

    def queued_ids(self, demand: dict[str, float]) -> list[Hashable]:
        """Ids of the tasks (and lease requests) queued with ``demand``, first in line first."""
        return list(self.queues.get(tuple(sorted(demand.items()))) or ())

    def task_of(self, worker_id: str) -> Hashable | None:
        """The task (or lease) the worker runs now, if any."""
        worker = self.workers.get(worker_id)
        return worker.task_id if worker is not None else None

    def busy_workers(self) -> int:
        return sum(1 for w in self.workers.values() if w.state != "idle")

    def queued_demand(self) -> dict[str, float]:
        """What every task queued here asks for, summed."""
        total: dict[str, float] = {}
        for shape, queue in self.queues.items():
            for key, amount in shape:
                total[key] = total.get(key, 0.0) + amount * len(queue)
        return total

    def waiting_actors(self) -> list[tuple[Hashable, dict[str, float]]]:
        """Actors waiting here for resources, with what each asks for, oldest first."""
        return [(aid, dict(item.demand)) for aid, item in self.actor_queue.items()]

    # -- placement-group bundles (placement.py: place_bundles, bundle_keys) --------------------
    def reserve_bundles(self, pg_id: str, take: dict[str, float], adds: dict[str, float]) -> bool:
        """Hold ``take`` out of what is free now for group ``pg_id`` and offer ``adds`` (its
        bundles' own resources, placement.bundle_keys) instead: work in the group asks for
        those. All or nothing: False (nothing held) when ``take`` does not fit now or the
        group already holds bundles here."""
        if pg_id in self.bundles or not all(self.free.get(k, 0.0) + EPS >= v
                                            for k, v in take.items() if v > 0):
            return False
        for key, amount in take.items():
            self.free[key] = self.free.get(key, 0.0) - amount
        for key, amount in adds.items():
            self.total[key] = self.total.get(key, 0.0) + amount
            self.free[key] = self.free.get(key, 0.0) + amount
        self.bundles[pg_id] = (dict(take), dict(adds))
        return True

    def release_bundles(self, pg_id: str) -> bool:
        """Give back what group ``pg_id`` holds here (False: it holds nothing). Work still
        running in it keeps its bundle resources until it ends; they then vanish."""
        held = self.bundles.pop(pg_id, None)
        if held is None:
            return False
        take, adds = held
        for key, amount in take.items():
            self.free[key] = self.free.get(key, 0.0) + amount
        for key, amount in adds.items():
            left = self.total.get(key, 0.0) - amount
            if left > EPS:
                self.total[key] = left
                self.free[key] = self.free.get(key, 0.0) - amount
            else:
                self.total.pop(key, None)
                self.free.pop(key, None)
        return True

    # -- resources -----------------------------------------------------------------------------
    def _fits(self, demand: dict[str, float]) -> bool:
        for key, amount in demand.items():
            if amount > EPS and self.free.get(key, 0.0) + EPS < amount:
                return False
        gpus = demand.get("GPU", 0.0)
        return gpus <= EPS or self._pick_gpus(gpus) is not None

    def _pick_gpus(self, amount: float) -> tuple[int, ...] | None:
        if amount >= 1 - EPS:
            whole = [i for i, f in sorted(self.gpu_free.items()) if f >= 1 - EPS]
            need = math.ceil(amount - EPS)
            return tuple(whole[:need]) if len(whole) >= need else None
        shared = [i for i, f in sorted(self.gpu_free.items()) if f + EPS >= amount]
        return (shared[0],) if shared else None

    def _acquire(self, demand: dict[str, float]) -> tuple[int, ...] | None:
        if not self._fits(demand):
            return None
        gpus: tuple[int, ...] = ()
        amount = demand.get("GPU", 0.0)
        if amount > EPS:
            gpus = self._pick_gpus(amount) or ()
            share = 1.0 if amount >= 1 - EPS else amount
            for i in gpus:
                self.gpu_free[i] -= share
        for key, value in demand.items():
            if value:   # a runtime env's tag (amount 0) is not a resource
                self.free[key] = self.free.get(key, 0.0) - value
        return gpus

    def _release(self, demand: dict[str, float], gpus: tuple[int, ...]) -> None:
        for key, value in demand.items():
            if value and key in self.total:   # not: a removed bundle's resources
                self.free[key] = self.free.get(key, 0.0) + value
        if gpus:
            amount = demand.get("GPU", 0.0)
            share = 1.0 if amount >= 1 - EPS else amount
            for i in gpus:
                self.gpu_free[i] = min(1.0, self.gpu_free[i] + share)

    def _release_worker(self, worker: _Worker) -> None:
        if worker.state == "idle":
            return
        demand = dict(worker.demand)
        if worker.state == "blocked":
            demand.pop("CPU", None)   # already given back while it was blocked
        self._release(demand, worker.gpu_ids)
        worker.demand, worker.gpu_ids = {}, ()
