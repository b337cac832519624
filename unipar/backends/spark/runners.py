"""The spark backend's task queue and runner jobs: which ready task runs where, and when.

:class:`TaskScheduler` is a mixin of :class:`~unipar.backends.spark.backend.SparkBackend`. It
owns the tasks (``_tasks``), the ready queues (one FIFO per demand), the runner jobs
(``_runners``, idle ones in ``_idle``), the logical resources (``totals``/``free``) and the Spark
slots in use. It uses the result table (results.py), the actor table, the Spark session and the
class's lock. Every method but ``_run_job`` (a job thread's body) is called with the lock held.

A **runner job** is one Spark task that runs unipar tasks one after another
(:func:`~unipar.backends.spark.executor.runner_partition`, sent by reference in the job's
closure): after each it reports the result and, in the same round trip, receives the next ready
task (waiting up to ``RUNNER_LINGER_S``).
"""

from __future__ import annotations

import collections
import functools
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ...exceptions import WorkerCrashedError
from ...options import TaskOptions
from ..base import TaskSpec
from . import envs
from .executor import SessionInfo, TaskPayload, runner_partition
from .results import ResultTable
from .session import SparkSessionHandle, crash_reason

if TYPE_CHECKING:
    from .actors import ActorTable

__all__ = ["BROADCAST_BYTES", "RUNNER_LINGER_S", "Runner", "Task", "TaskScheduler", "short_name"]

BROADCAST_BYTES = 1 << 20  # a dependency value this large travels as a broadcast
# How long a runner job that finished its task waits for another before its job ends: long
# enough to take the next task of a get()/.remote() loop, short enough to free its slot soon.
RUNNER_LINGER_S = 0.5


class Runner:
    """A runner job: one Spark task that runs unipar tasks one after another, as handed them."""

    __slots__ = ("id", "group", "cores", "task", "handed", "ended", "lent")

    def __init__(self, runner_id: int, group: str, cores: int = 1) -> None:
        self.id = runner_id
        self.group = group            # the Spark job group: cancel kills this job
        self.cores = cores            # Spark task slots its job holds (its resource profile)
        self.task: "Task | None" = None      # running now
        self.handed: "Task | None" = None    # given while idle, not yet picked up
        self.ended = False
        # Tasks lent this job's slot, run inline by a task of it that blocked in get/wait:
        # they die with its Python worker, so they are re-queued when the job ends without them.
        self.lent: "list[Task]" = []


@dataclass
class Task:
    id: int
    name: str
    fn_id: str
    fn_bytes: bytes
    args_blob: bytes
    deps: list[int]
    outputs: list[int]
    options: TaskOptions          # not the spec: its args are the caller's live objects
    demand: dict[str, float]
    parent: int | None
    state: str = "waiting"        # waiting -> ready -> running|inline -> done
    runner: Runner | None = None  # its runner job; inline: the job whose slot it uses
    attempt: int = 0              # bumped per launch after a crash: stale reports are ignored
    crashes: int = 0
    blocked: int = 0
    held: dict[str, float] = field(default_factory=dict)
    children: list[int] = field(default_factory=list)


def short_name(spec: TaskSpec) -> str:
    if spec.options.name:
        return spec.options.name
    return getattr(spec.function, "__name__", None) or spec.name.rsplit(".", 1)[-1]


class TaskScheduler(ResultTable):
    """Tasks from submission to their outcome: queued by demand, run in runner jobs."""

    spark: SparkSessionHandle | None
    info: SessionInfo | None
    actors: "ActorTable"
    job_env: dict[str, Any]
    _stopped: bool

    def _init_scheduler(self) -> None:
        self._tasks: dict[int, Task] = {}
        # Ready tasks, one FIFO per demand (a "scheduling class", as in Ray): scheduling then
        # costs O(classes + started), not O(ready tasks), per event.
        self._ready: dict[tuple, collections.deque[Task]] = {}
        self._idle: collections.deque[Runner] = collections.deque()  # runners waiting for work
        self._runners: dict[int, Runner] = {}  # runner jobs alive, by id
        self.totals: dict[str, float] = {}
        self.free: dict[str, float] = {}
        self.slots = 0
        self.slots_used = 0

    def _task_slot_wait(self, task: Task) -> str | None:
        if task.state not in ("waiting", "ready"):
            return None
        return self.actors.slot_wait(f"task {task.name}", self._task_cores())

    def _task_cores(self) -> int:
        """Slots of runner jobs running a task now (not idle, lingered out or cancelled)."""
        return sum(runner.cores for runner in self._runners.values() if runner.task is not None)

    def _deps_done(self, task: Task, error: BaseException | None) -> None:
        if task.state != "waiting":
            return
        if error is not None:
            self._fail_task(task, error)  # a task whose argument failed fails with that error
            return
        task.state = "ready"
        self._enqueue(task)
        self.schedule()

    def _enqueue(self, task: Task) -> None:
        key = tuple(sorted(task.demand.items()))
        self._ready.setdefault(key, collections.deque()).append(task)

    def _fail_task(self, task: Task, error: BaseException) -> None:
        self._release(task)
        task.state = "done"
        for oid in task.outputs:
            self.finish(oid, error=error)
        self._forget(task)

    def _forget(self, task: Task) -> None:
        if self._tasks.pop(task.id, None) is not None:
            self.unpin(task.deps)
        parent = self._tasks.get(task.parent) if task.parent is not None else None
        if parent is not None and task.id in parent.children:
            parent.children.remove(task.id)

    def fits(self, demand: dict[str, float]) -> bool:
        return all(self.free.get(k, 0.0) >= v - 1e-9 for k, v in demand.items())

    def acquire(self, demand: dict[str, float]) -> dict[str, float]:
        for key, amount in demand.items():
            self.free[key] = self.free.get(key, 0.0) - amount
        return dict(demand)

    def give_back(self, held: dict[str, float]) -> None:
        for key, amount in held.items():
            self.free[key] = self.free.get(key, 0.0) + amount
        if held:
            self.schedule()

    def _release(self, task: Task) -> None:
        held, task.held = task.held, {}
        # "_lent_cpu" marks CPUs already given back while the task was blocked.
        self.give_back({k: v for k, v in held.items() if not k.startswith("_")})

    def schedule(self) -> None:
        """Start every ready task (and actor) that fits the free resources.

        A task goes to an idle runner if one waits for work, else to a new runner job while a
        Spark slot is free. Tasks with a large argument always get a new job: their argument
        then travels as a broadcast in that job's closure.
        """
        if self._stopped:
            return
        for key, queue in list(self._ready.items()):
            demand = dict(key)
            while queue and self.fits(demand):
                task = queue[0]
                if task.state != "ready":  # cancelled or lent while queued
                    queue.popleft()
                    continue
                big = any(len(self.entries[oid].value or b"") >= BROADCAST_BYTES
                          for oid in task.deps)
                cores = self._cores_for(task)
                runner = None if big else next((r for r in self._idle if r.cores == cores), None)
                if runner is not None:
                    queue.popleft()
                    self._idle.remove(runner)
                    self._start(task, runner)
                    runner.handed = task
                elif self.slots_used + cores <= self.slots:
                    queue.popleft()
                    self._launch_runner(task, cores)
                else:
                    break
            if not queue:
                del self._ready[key]
        self.actors.schedule()
        self.cond.notify_all()

    def _payload(self, task: Task) -> TaskPayload:
        return TaskPayload(self.info, task.id, task.attempt, task.name, task.fn_id, task.fn_bytes,
                           task.args_blob, tuple(self.dep_values(task.deps)),
                           task.options.num_returns, task.options,
                           envs.ship(self.job_env, task.options.runtime_env))

    def _start(self, task: Task, runner: "Runner | None", inline: bool = False) -> None:
        """Mark ``task`` started in ``runner``: as its task, or ``inline`` in the slot of a
        task of it that blocked (holding no resources of its own)."""
        task.state = "inline" if inline else "running"
        task.runner = runner
        if inline:
            if runner is not None:
                runner.lent.append(task)
            return
        assert runner is not None, "a task that is not inline runs in a runner job"
        task.held = self.acquire(task.demand)
        runner.task = task

    def _cores_for(self, task: Task) -> int:
        """Spark cores (slots) a task's runner job asks for: 1, or on a cluster its num_cpus.

        On a cluster a task with num_cpus > 1 runs under a stage-level task resource profile
        of ceil(num_cpus) cores (Spark supports these on standalone/YARN/Kubernetes without
        dynamic allocation, not in local mode).
        """
        if self.spark.is_local:
            return 1
        return min(max(1, math.ceil(task.options.num_cpus)), max(self.slots, 1))

    def _launch_runner(self, task: Task, cores: int = 1) -> None:
        runner = Runner(next(self._ids), f"unipar-{self.session_id[:8]}-runner-{next(self._ids)}",
                         cores)
        self._start(task, runner)
        self.slots_used += cores
        self._runners[runner.id] = runner
        payload = self._payload(task)
        threading.Thread(target=self._run_job, args=(runner, task, payload), daemon=True,
                         name=f"unipar-spark-job-{runner.id}").start()

    def _run_job(self, runner: "Runner", task: Task, payload: TaskPayload) -> None:
        """One runner job: its first task, then whatever the driver hands it (``_next_task``)."""
        error: BaseException | None = None
        try:
            payload = self._with_broadcasts(task, payload)
            self.spark.run_job(runner.group, f"unipar task {task.name}",
                               functools.partial(runner_partition, runner.id, payload),
                               cores=runner.cores)
        except BaseException as exc:  # a crashed worker, a cancelled job, a stopped context
            error = exc
        with self.lock:
            self.slots_used -= runner.cores
            runner.ended = True
            self._runners.pop(runner.id, None)
            if runner in self._idle:
                self._idle.remove(runner)
            lost_tasks, runner.task, runner.handed = (runner.task, runner.handed), None, None
            for lost in lost_tasks:
                if lost is not None and lost.state == "running" and lost.runner is runner:
                    self._job_lost(lost, error)
            lent, runner.lent = runner.lent, []
            for lost in lent:
                if lost.state == "inline" and lost.runner is runner:
                    self._job_lost(lost, error)
            self.schedule()

    def _with_broadcasts(self, task: Task, payload: TaskPayload) -> TaskPayload:
        big = [i for i, v in enumerate(payload.dep_values) if len(v) >= BROADCAST_BYTES]
        if not big:
            return payload
        values = list(payload.dep_values)
        for i in big:
            oid = task.deps[i]
            with self.lock:
                entry = self.entries.get(oid)
                broadcast = entry.broadcast if entry is not None else None
            if broadcast is None:
                broadcast = self.spark.broadcast(values[i])
                with self.lock:
                    if entry is not None and entry.broadcast is None and oid in self.entries:
                        entry.broadcast = broadcast
            values[i] = broadcast
        return TaskPayload(**{**payload.__dict__, "dep_values": tuple(values)})

    def _job_lost(self, task: Task, error: BaseException | None) -> None:
        """The job ended without the task's result: its worker died (or its executor was lost)."""
        reason = crash_reason(error) if error is not None else "it ended without a result"
        retries = task.options.max_retries
        self._release(task)
        task.runner = None
        if retries == -1 or task.crashes < retries:
            task.crashes += 1
            task.attempt += 1
            task.state = "ready"
            self._enqueue(task)
            return
        self._fail_task(task, WorkerCrashedError(
            f"the Spark worker running task {task.name} died: {reason} "
            f"(attempts: {task.crashes + 1}; raise max_retries to retry more)"))

    def _on_task_done(self, task_id: int, attempt: int, outcome: tuple,
                      runner_id: int | None = None) -> TaskPayload | None:
        """Record a task's outcome; a runner gets its next task (None: its job should end)."""
        with self.lock:
            runner = self._runners.get(runner_id) if runner_id is not None else None
            if runner is not None and not runner.ended and runner not in self._idle:
                # Idle before the task's resources come back, so the next ready task goes to
                # this runner instead of a new job.
                runner.task = None
                self._idle.append(runner)
            task = self._tasks.get(task_id)
            if task is not None and task.state in ("running", "inline") and task.attempt == attempt:
                self._release(task)
                task.state = "done"
                status, value = outcome
                for i, oid in enumerate(task.outputs):
                    if status == "ok":
                        self.finish(oid, value=value[i])
                    else:
                        self.finish(oid, error=value)
                self._forget(task)
            return self._next_task(runner) if runner is not None else None

    def _next_task(self, runner: "Runner") -> TaskPayload | None:
        """Wait (lock held) up to RUNNER_LINGER_S for a task to hand to this idle runner.

        A task handed to the runner is its ``runner.task`` from the moment it is handed
        (``_start``), so if the runner's job dies while running it, ``_run_job`` re-queues it.
        ``runner.task`` is not touched here: the task may have been handed already, when its
        previous task's resources came back in ``_on_task_done``.
        """
        if runner.ended or self._stopped:
            if runner in self._idle:
                self._idle.remove(runner)
            return None
        if runner not in self._idle and runner.handed is None:
            self._idle.append(runner)
        self.schedule()
        deadline = time.monotonic() + RUNNER_LINGER_S
        while runner.handed is None and not self._stopped:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.cond.wait(remaining)
        task, runner.handed = runner.handed, None
        if task is None or runner.ended:  # ended: its job died while it waited (task re-queued)
            if runner in self._idle:
                self._idle.remove(runner)
            runner.ended = True  # its job is about to end: hand it nothing more
            return None
        return self._payload(task)

    # -- blocked tasks -----------------------------------------------------------------------
    def _block(self, caller: int | None) -> None:
        task = self._tasks.get(caller) if caller is not None else None
        if task is None or task.state != "running":
            return
        task.blocked += 1
        if task.blocked == 1 and task.held.get("CPU"):
            # As in Ray: a task waiting on others gives its CPUs back while it waits.
            self.give_back({"CPU": task.held.pop("CPU")})
            task.held["_lent_cpu"] = task.demand["CPU"]

    def _unblock(self, caller: int | None) -> None:
        task = self._tasks.get(caller) if caller is not None else None
        if task is None or task.blocked == 0:
            return
        task.blocked -= 1
        if task.blocked == 0 and "_lent_cpu" in task.held:
            cpu = task.held.pop("_lent_cpu")
            task.held["CPU"] = cpu
            self.free["CPU"] = self.free.get("CPU", 0.0) - cpu  # may oversubscribe for a while

    def _lend_slot(self, oids: Sequence[int], caller: int) -> TaskPayload | None:
        """A ready task among what the caller waits on (or their inputs) when no slot is free.

        The task is started inline in the caller's runner job (the caller's own runner, or
        the one the caller itself runs inline in), so it is re-queued if that job dies.
        """
        if self.slots_used < self.slots:
            return None
        blocked = self._tasks.get(caller)
        host = blocked.runner if blocked is not None else None
        seen: set[int] = set()
        stack = list(oids)
        while stack:
            entry = self.entries.get(stack.pop())
            if entry is None or entry.done or entry.producer in seen:
                continue
            task = self._tasks.get(entry.producer) if entry.producer is not None else None
            if task is None:
                continue
            seen.add(task.id)
            if task.state == "ready":  # left in its queue; schedule() drops non-ready heads
                self._start(task, host, inline=True)
                return self._payload(task)
            if task.state == "waiting":
                stack.extend(task.deps)
        return None
