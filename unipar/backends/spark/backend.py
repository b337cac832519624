"""The ``spark`` backend: unipar tasks and actors on Apache Spark (PySpark 4).

Spark has no futures, no nested jobs from executors and no long-lived stateful workers; this
module supplies all three while user code runs only on executors::

    driver (this module)                                         executors
    --------------------                                         ---------
    submit(spec) -> result-table entries, deps tracked
    schedule(): ready + resources free -> an idle runner, or a new runner job:
        job thread: setJobGroup(runner) ;
           base.mapPartitions(runner_partition(payload)).collect() -> run task, report, next
    ChannelServer (authenticated socket)  <---- task_done(+next) / log / nested submit/get/wait
    actor = a never-ending one-task job   <---- actor_hello; then ("call", ...) / ("result", ...)

* A **runner job** is one Spark task that runs unipar tasks one after another: after each it
  reports the result and, in the same round trip, receives the next ready task (waiting up to
  ``RUNNER_LINGER_S``), so bursts of tasks share jobs and a ``get(f.remote())`` loop reuses one.
  Cancelling a running task cancels its runner's job group.
* The **result table** maps object id -> pickled value or error. Top-level ref arguments are
  resolved here before launch; values over 1 MiB travel as a Spark broadcast (once per executor).
* **Resources** are logical, as in Ray: ``num_cpus``/``num_gpus``/``resources`` are counted here
  against ``cluster_resources()``; a task blocked in ``get``/``wait`` gives its CPUs back.
  **Slots** are real: a launched job holds one Spark task slot until it ends. A local session is
  ``local[slots]`` with ``slots`` well above ``num_cpus`` (see ``_local_slots``), so actors and
  blocked tasks do not starve the rest.
* **No deadlock when nested tasks outnumber slots**: a task blocked in ``get``/``wait`` (without
  a timeout) on a task that is ready but has no free slot runs that task itself, inline, in its
  own slot ("slot lending"). See docs/backend-spark.md.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import math
import os
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import cloudpickle

from ... import codepickle
from ...exceptions import (GetTimeoutError, ObjectLostError, ResourcesBusyWarning,
                          TaskCancelledError, UniparError, WorkerCrashedError)
from ...options import InitOptions, TaskOptions, resource_demand
from .actors import ActorTable, split_args
from .channel import ChannelServer
from .executor import DRIVER_STORES, SessionInfo, SparkRef, TaskPayload, runner_partition
from .session import SparkSessionHandle, crash_reason
from ..scheduling import no_groups, refuse_strategy
from . import envs
from ..base import ActorCall, ActorMeta, ActorSpec, Backend, Stream, TaskSpec
from ..streams import CollectedStream, collect_call, collect_spec

BROADCAST_BYTES = 1 << 20  # a dependency value this large travels as a broadcast
# How long a runner job that finished its task waits for another before its job ends: long
# enough to take the next task of a get()/.remote() loop, short enough to free its slot soon.
RUNNER_LINGER_S = 0.5


class _Runner:
    """A runner job: one Spark task that runs unipar tasks one after another, as handed them."""

    __slots__ = ("id", "group", "cores", "task", "handed", "ended", "lent")

    def __init__(self, runner_id: int, group: str, cores: int = 1) -> None:
        self.id = runner_id
        self.group = group            # the Spark job group: cancel kills this job
        self.cores = cores            # Spark task slots its job holds (its resource profile)
        self.task: "_Task | None" = None      # running now
        self.handed: "_Task | None" = None    # given while idle, not yet picked up
        self.ended = False
        # Tasks lent this job's slot, run inline by a task of it that blocked in get/wait:
        # they die with its Python worker, so they are re-queued when the job ends without them.
        self.lent: "list[_Task]" = []


class _Entry:
    """One object in the result table."""

    __slots__ = ("done", "value", "error", "broadcast", "count", "seen", "producer", "waiters")

    def __init__(self, producer: int | None = None) -> None:
        self.done = False
        self.value: bytes | None = None
        self.error: BaseException | None = None
        self.broadcast: Any = None
        self.count = 0
        self.seen = False            # a handle counted it once: only then may it be freed
        self.producer = producer     # the task id that makes it
        self.waiters: list[Callable[[], None]] = []  # run (under the lock) when it is done


@dataclass
class _Task:
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
    runner: _Runner | None = None  # its runner job; inline: the job whose slot it uses
    attempt: int = 0              # bumped per launch after a crash: stale reports are ignored
    crashes: int = 0
    blocked: int = 0
    held: dict[str, float] = field(default_factory=dict)
    children: list[int] = field(default_factory=list)


def _short_name(spec: TaskSpec) -> str:
    if spec.options.name:
        return spec.options.name
    return getattr(spec.function, "__name__", None) or spec.name.rsplit(".", 1)[-1]


class SparkBackend(Backend):
    """Runs tasks as Spark jobs and actors as long-running Spark tasks (module docstring)."""

    name = "spark"
    logs_location = ("Spark's work directory ($SPARK_HOME/work/<app>/<executor>/stdout and "
                     "stderr) and the Spark UI's Executors tab (stdout/stderr links); in local "
                     "mode executors print here")

    def __init__(self) -> None:
        self.session_id = uuid.uuid4().hex
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.entries: dict[int, _Entry] = {}
        self.counts: collections.deque = collections.deque()  # (oid, delta) from SparkRef
        self.escaped: set[int] = set()
        self.actor_counts: collections.deque = collections.deque()  # (number, delta), SparkActorId
        self.actors_escaped: set[int] = set()
        self._ids = itertools.count(1)
        self._tasks: dict[int, _Task] = {}
        # Ready tasks, one FIFO per demand (a "scheduling class", as in Ray): scheduling then
        # costs O(classes + started), not O(ready tasks), per event.
        self._ready: dict[tuple, collections.deque[_Task]] = {}
        self._idle: collections.deque[_Runner] = collections.deque()  # runners waiting for work
        self._runners: dict[int, _Runner] = {}  # runner jobs alive, by id
        self._fn_cache: dict[str, bytes] = {}
        self.totals: dict[str, float] = {}
        self.free: dict[str, float] = {}
        self.slots = 0
        self.slots_used = 0
        self.spark: SparkSessionHandle | None = None
        self.channel: ChannelServer | None = None
        self.info: SessionInfo | None = None
        self.actors = ActorTable(self)
        self.log_to_driver = True
        self.job_env: dict[str, Any] = {}   # init(runtime_env=...): under every task's
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, options: InitOptions) -> None:
        envs.check(options.runtime_env)
        self.job_env = dict(options.runtime_env or {})
        self.log_to_driver = options.log_to_driver
        self.spark = SparkSessionHandle.open(options)
        self.slots = self.spark.slots
        # Logical CPUs, as in Ray: init(num_cpus=...) if given (on a cluster too: it caps how
        # many tasks run at once below the executor cores), else the cores.
        cpus = float(options.num_cpus or self.spark.cores)
        self.totals = {"CPU": cpus, "GPU": float(options.num_gpus or 0)}
        self.totals.update({k: float(v) for k, v in options.resources.items()})
        self.free = dict(self.totals)
        self.channel = ChannelServer(self.spark.driver_host, self._handlers(),
                                     {"log": self.on_log}, self.actors.on_connection)
        self.info = SessionInfo(self.session_id, self.channel.address, self.channel.authkey,
                                tuple(p for p in sys.path if p and os.path.isdir(p)))
        DRIVER_STORES[self.session_id] = self
        print(f"unipar: spark backend on {self.spark.master} ({self.slots} task slots); "
              f"Spark UI: {self.spark.ui_url or 'disabled'}", file=sys.stderr, flush=True)

    def shutdown(self) -> None:
        with self.lock:
            if self._stopped:
                return
            self._stopped = True
            for task in list(self._tasks.values()):
                if task.state != "done":
                    self._fail_task(task, UniparError("the spark session was shut down"))
            self.cond.notify_all()
        self.actors.shutdown()
        if self.channel is not None:
            self.channel.close()
        if self.spark is not None:
            self.spark.close()
        DRIVER_STORES.pop(self.session_id, None)
        with self.lock:
            self.entries.clear()
            self._tasks.clear()
            self._ready.clear()

    def _check_live(self) -> None:
        if self._stopped or self.spark is None:
            raise UniparError("the spark backend is shut down; call unipar.init() again")

    # -- the result table (call with the lock held) -------------------------------------------
    def new_entry(self, producer: int | None = None) -> tuple[int, SparkRef]:
        oid = next(self._ids)
        self.entries[oid] = _Entry(producer)
        return oid, SparkRef(self.session_id, oid)

    def finish(self, oid: int, value: bytes | None = None, error: BaseException | None = None) -> None:
        """Record the outcome of ``oid`` (first outcome wins) and wake whoever waits on it."""
        entry = self.entries.get(oid)
        if entry is None or entry.done:
            return
        entry.done, entry.value, entry.error = True, value, error
        waiters, entry.waiters = entry.waiters, []
        for waiter in waiters:
            waiter()
        self.cond.notify_all()
        if entry.seen and entry.count <= 0 and oid not in self.escaped:
            self._free_entry(oid)

    def _free_entry(self, oid: int) -> None:
        entry = self.entries.pop(oid, None)
        if entry is not None and entry.broadcast is not None:
            broadcast = entry.broadcast
            threading.Thread(target=_destroy_broadcast, args=(broadcast,), daemon=True).start()

    def drain_counts(self) -> None:
        """Apply ref-count changes SparkRef queued (it may run inside GC, so it only queues)."""
        if self.actor_counts:
            changes = []
            while self.actor_counts:
                changes.append(self.actor_counts.popleft())
            self.actors.count_handles(changes, self.actors_escaped)
        while self.counts:
            oid, delta = self.counts.popleft()
            entry = self.entries.get(oid)
            if entry is None:
                continue
            entry.count += delta
            entry.seen = True
            if entry.count <= 0 and entry.done and oid not in self.escaped:
                self._free_entry(oid)

    def pin(self, oids: Sequence[int]) -> None:
        """Keep ``oids`` while a task or call that takes them as arguments still needs them."""
        for oid in oids:
            self.entry(oid).count += 1

    def unpin(self, oids: Sequence[int]) -> None:
        for oid in oids:
            entry = self.entries.get(oid)
            if entry is not None:
                entry.count -= 1
                if entry.seen and entry.count <= 0 and entry.done and oid not in self.escaped:
                    self._free_entry(oid)

    def entry(self, oid: int) -> _Entry:
        entry = self.entries.get(oid)
        if entry is None:
            raise ObjectLostError(f"object {oid} is not in the spark session's result table "
                                  "(it was freed, or belongs to a session that ended)")
        return entry

    def when_done(self, oids: Sequence[int], callback: Callable[[BaseException | None], None]) -> int:
        """Call ``callback(first_error_or_None)`` once every ``oids`` entry is done.

        Returns how many were still missing (0: the callback already ran).
        """
        missing = [oid for oid in oids if not self.entry(oid).done]
        state = {"left": len(missing)}

        def one_done() -> None:
            state["left"] -= 1
            if state["left"] == 0:
                callback(self._first_error(oids))
        for oid in missing:
            self.entries[oid].waiters.append(one_done)
        if not missing:
            callback(self._first_error(oids))
        return len(missing)

    def _first_error(self, oids: Sequence[int]) -> BaseException | None:
        for oid in oids:
            entry = self.entries.get(oid)
            if entry is None:
                return ObjectLostError(f"object {oid} was freed before a task could use it")
            if entry.error is not None:
                return entry.error
        return None

    def dep_values(self, oids: Sequence[int]) -> list[bytes]:
        return [self.entries[oid].value for oid in oids]  # type: ignore[misc]

    # -- objects -----------------------------------------------------------------------------
    def put(self, value: Any) -> SparkRef:
        self._check_live()
        data = cloudpickle.dumps(value)
        with self.lock:
            self.drain_counts()
            oid, ref = self.new_entry()
            self.finish(oid, value=data)
        return ref

    def _await(self, oids: list[int], need: int | None, timeout: float | None,
               caller: int | None = None) -> list[_Entry] | TaskPayload:
        """Wait (lock held) until ``need`` of ``oids`` are done (None: all, or any failed).

        Completions are counted by callbacks on the entries, so waiting on n refs costs O(n),
        not O(n) per completion. A blocked executor task (``caller``) may instead be handed a
        task to run inline (slot lending), returned as its payload.
        """
        self.drain_counts()
        entries = [self.entry(oid) for oid in oids]
        pending = [e for e in entries if not e.done]
        state = {"done": len(entries) - len(pending),
                 "failed": any(e.error is not None for e in entries)}
        target = len(entries) if need is None else need

        def one_done(entry: _Entry) -> None:
            state["done"] += 1
            state["failed"] = state["failed"] or entry.error is not None

        for entry in pending:
            entry.waiters.append(functools.partial(one_done, entry))
        deadline = None if timeout is None else time.monotonic() + timeout
        self._block(caller)
        try:
            while state["done"] < target and not (need is None and state["failed"]):
                if self._stopped:
                    raise UniparError("the spark session was shut down")
                if caller is not None and deadline is None and self.slots_used >= self.slots:
                    lent = self._lend_slot([oid for oid, e in zip(oids, entries) if not e.done],
                                           caller)
                    if lent is not None:
                        return lent
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise GetTimeoutError(f"get() timed out after {timeout} s ("
                                          f"{len(entries) - state['done']} of {len(oids)} not ready)")
                self.cond.wait(1.0 if remaining is None else min(remaining, 1.0))
            return entries
        finally:
            self._unblock(caller)

    def _values(self, handles: Sequence[SparkRef], timeout: float | None,
                caller: int | None) -> list[bytes] | TaskPayload:
        oids = [h.oid for h in handles]
        with self.lock:
            got = self._await(oids, None, timeout, caller)
            if isinstance(got, TaskPayload):
                return got
            for entry in got:
                if entry.error is not None and entry.done:
                    raise entry.error
            return [e.value for e in got]  # type: ignore[misc]

    def get(self, handles: Sequence[SparkRef], timeout: float | None) -> list[Any]:
        self._check_live()
        values = self._values(handles, timeout, None)
        return [cloudpickle.loads(v) for v in values]  # type: ignore[union-attr]

    def _done_indices(self, handles: Sequence[SparkRef], num_returns: int, timeout: float | None,
                      caller: int | None) -> set[int] | TaskPayload:
        oids = [h.oid for h in handles]
        with self.lock:
            try:
                got = self._await(oids, num_returns, timeout, caller)
            except GetTimeoutError:
                got = [self.entry(oid) for oid in oids]
            if isinstance(got, TaskPayload):
                return got
            return {i for i, e in enumerate(got) if e.done}

    def wait(self, handles: Sequence[SparkRef], num_returns: int, timeout: float | None,
             fetch_local: bool) -> set[int]:
        self._check_live()
        return self._done_indices(handles, num_returns, timeout, None)  # type: ignore[return-value]

    def future(self, handle: SparkRef) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def resolve(_: BaseException | None) -> None:
            entry = self.entries.get(handle.oid)
            # Set outside our lock: done-callbacks are user code that may call get().
            threading.Thread(target=_settle, args=(fut, entry), daemon=True).start()
        with self.lock:
            self.when_done([handle.oid], resolve)
        return fut

    # -- tasks -------------------------------------------------------------------------------
    def submit(self, spec: TaskSpec, parent: int | None = None) -> list[SparkRef]:
        envs.ship(self.job_env, spec.options.runtime_env)   # refused here, not in the job
        _refuse_strategy(spec.options.scheduling_strategy)
        self._check_live()
        # Function ids are unique per process; ids made on different executor hosts may clash,
        # so only the driver's own functions are cached.
        fn_bytes = self._fn_cache.get(spec.function_id) if parent is None else None
        if fn_bytes is None:
            fn_bytes = codepickle.dumps(spec.function)
            if parent is None:
                self._fn_cache[spec.function_id] = fn_bytes
        args_blob, deps = split_args(spec.args, dict(spec.kwargs))
        with self.lock:
            self.drain_counts()
            self.pin(deps)  # raises ObjectLostError for a freed argument, before anything exists
            task_id = next(self._ids)
            made = [self.new_entry(task_id) for _ in range(spec.options.num_returns)]
            task = _Task(task_id, _short_name(spec), spec.function_id, fn_bytes, args_blob, deps,
                         [oid for oid, _ in made], spec.options, resource_demand(spec.options), parent)
            self._tasks[task_id] = task
            if parent in self._tasks:
                self._tasks[parent].children.append(task_id)
            self.when_done(deps, functools.partial(self._deps_done, task))
            self.schedule()
            # A nested task's parent holds a slot itself (and may lend it): only the driver's
            # tasks can find every slot held by actors.
            busy = self._task_slot_wait(task) if parent is None else None
        if busy is not None:
            _warn_busy(busy)
        return [ref for _, ref in made]

    def _task_slot_wait(self, task: _Task) -> str | None:
        if task.state not in ("waiting", "ready"):
            return None
        return self.actors.slot_wait(f"task {task.name}", self._task_cores())

    def _task_cores(self) -> int:
        """Slots of runner jobs running a task now (not idle, lingered out or cancelled)."""
        return sum(runner.cores for runner in self._runners.values() if runner.task is not None)

    def _deps_done(self, task: _Task, error: BaseException | None) -> None:
        if task.state != "waiting":
            return
        if error is not None:
            self._fail_task(task, error)  # a task whose argument failed fails with that error
            return
        task.state = "ready"
        self._enqueue(task)
        self.schedule()

    def _enqueue(self, task: _Task) -> None:
        key = tuple(sorted(task.demand.items()))
        self._ready.setdefault(key, collections.deque()).append(task)

    def _fail_task(self, task: _Task, error: BaseException) -> None:
        self._release(task)
        task.state = "done"
        for oid in task.outputs:
            self.finish(oid, error=error)
        self._forget(task)

    def _forget(self, task: _Task) -> None:
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

    def _release(self, task: _Task) -> None:
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

    def _payload(self, task: _Task) -> TaskPayload:
        return TaskPayload(self.info, task.id, task.attempt, task.name, task.fn_id, task.fn_bytes,
                           task.args_blob, tuple(self.dep_values(task.deps)),
                           task.options.num_returns, task.options,
                           envs.ship(self.job_env, task.options.runtime_env))

    def _start(self, task: _Task, runner: "_Runner | None", inline: bool = False) -> None:
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

    def _cores_for(self, task: _Task) -> int:
        """Spark cores (slots) a task's runner job asks for: 1, or on a cluster its num_cpus.

        On a cluster a task with num_cpus > 1 runs under a stage-level task resource profile
        of ceil(num_cpus) cores (Spark supports these on standalone/YARN/Kubernetes without
        dynamic allocation, not in local mode).
        """
        if self.spark.is_local:
            return 1
        return min(max(1, math.ceil(task.options.num_cpus)), max(self.slots, 1))

    def _launch_runner(self, task: _Task, cores: int = 1) -> None:
        runner = _Runner(next(self._ids), f"unipar-{self.session_id[:8]}-runner-{next(self._ids)}",
                         cores)
        self._start(task, runner)
        self.slots_used += cores
        self._runners[runner.id] = runner
        payload = self._payload(task)
        threading.Thread(target=self._run_job, args=(runner, task, payload), daemon=True,
                         name=f"unipar-spark-job-{runner.id}").start()

    def _run_job(self, runner: "_Runner", task: _Task, payload: TaskPayload) -> None:
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

    def _with_broadcasts(self, task: _Task, payload: TaskPayload) -> TaskPayload:
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

    def _job_lost(self, task: _Task, error: BaseException | None) -> None:
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

    def _next_task(self, runner: "_Runner") -> TaskPayload | None:
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

    # -- cancel ------------------------------------------------------------------------------
    def cancel(self, handle: SparkRef, force: bool, recursive: bool) -> None:
        self._check_live()
        groups: list[str] = []
        with self.lock:
            entry = self.entries.get(handle.oid)
            task = self._tasks.get(entry.producer) if entry and entry.producer is not None else None
            todo = [task] if task is not None else []
            while todo:
                current = todo.pop()
                if current.state == "done":
                    continue
                if recursive:
                    todo.extend(self._tasks[c] for c in current.children if c in self._tasks)
                if current.state == "running" and current.runner is not None:
                    # Its runner job dies with it; the other tasks are not bound to that job.
                    groups.append(current.runner.group)
                    current.runner.task = None
                    current.runner.ended = True
                    if current.runner.handed is current:
                        current.runner.handed = None
                self._fail_task(current, TaskCancelledError(f"task {current.name} was cancelled"))
        for group in groups:  # outside the lock: a JVM call
            self.spark.cancel_group(group)

    # -- actors (the table lives in _spark_actors) ---------------------------------------------
    def create_actor(self, spec: ActorSpec) -> Any:
        envs.ship(self.job_env, spec.options.runtime_env)   # refused here, not in the job
        _refuse_strategy(spec.options.scheduling_strategy)
        actor_id, busy = self._create_actor(spec)
        if busy is not None:
            _warn_busy(busy)
        return actor_id

    def _create_actor(self, spec: ActorSpec) -> tuple[Any, str | None]:
        """Create an actor; returns its id and why it waits for a Spark slot (None: it need not).

        Executors call this (the "create_actor" op) and raise the warning in the caller.
        """
        self._check_live()
        actor_id = self.actors.create(spec)
        with self.lock:
            busy = self.actors.slot_wait(f"actor {spec.meta.class_name}", self._task_cores(),
                                         actor_id.number)
        return actor_id, busy

    # Generators run to completion in the worker, then stream from here (docs/generators.md).
    def submit_stream(self, spec: TaskSpec) -> Stream:
        return CollectedStream(self, self.submit(collect_spec(spec))[0])

    def call_actor_stream(self, actor_id: Any, call: ActorCall) -> Stream:
        return CollectedStream(self, self.call_actor(actor_id, collect_call(call))[0])

    def call_actor(self, actor_id: Any, call: ActorCall) -> list[SparkRef]:
        self._check_live()
        return self.actors.call(actor_id, call)

    def kill_actor(self, actor_id: Any, no_restart: bool) -> None:
        self._check_live()
        self.actors.kill(actor_id, no_restart)

    def get_actor(self, name: str) -> tuple[Any, ActorMeta]:
        self._check_live()
        return self.actors.lookup(name)

    # -- cluster -----------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        self._check_live()
        hosts = self.spark.executor_hosts()
        share = {k: v / len(hosts) for k, v in self.totals.items()}
        return [{"NodeID": f"{self.session_id[:8]}-{i}", "Alive": True,
                 "NodeManagerAddress": host, "Resources": dict(share)}
                for i, host in enumerate(hosts)]

    def cluster_resources(self) -> dict[str, float]:
        return dict(self.totals)

    def available_resources(self) -> dict[str, float]:
        with self.lock:
            return {k: max(v, 0.0) for k, v in self.free.items() if not k.startswith("_")}

    # -- scheduling: Spark places work itself (docs/scheduling.md) ----------------------------
    def can_grow(self) -> bool:
        return True   # executors may join a standalone or YARN/Kubernetes session

    def runtime_context(self) -> dict[str, Any]:
        return {"node_id": self.nodes()[0]["NodeID"], "job_id": self.session_id[:8],
                "task_id": None, "actor_id": None}

    def create_placement_group(self, bundles: list[dict[str, float]], strategy: str,
                               name: str | None) -> Any:
        raise no_groups(self.name, SPARK_NO_GROUPS)

    def wait_placement_group(self, pg_id: Any, timeout: float | None) -> bool:
        raise no_groups(self.name, SPARK_NO_GROUPS)

    def remove_placement_group(self, pg_id: Any) -> None:
        raise no_groups(self.name, SPARK_NO_GROUPS)

    def placement_group_table(self) -> list[dict[str, Any]]:
        return []

    def dashboard_url(self) -> str | None:
        return (self.spark.ui_url or None) if self.spark is not None else None

    def timeline(self) -> list[dict[str, Any]]:
        from ...exceptions import NotSupportedError
        raise NotSupportedError("unipar.timeline() is for the native backend; on spark the Spark "
                                "UI's Event Timeline (Jobs and Stages pages) shows when each task "
                                "ran")

    # -- the channel -------------------------------------------------------------------------
    def _handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "submit": self.submit,
            "put": self._put_bytes,
            "get": self._remote_get,
            "wait": self._remote_wait,
            "cancel": self.cancel,
            "task_done": self._on_task_done,
            "create_actor": self._create_actor,
            "call_actor": self.call_actor,
            "kill_actor": self.kill_actor,
            "get_actor": self.get_actor,
            "nodes": self.nodes,
            "cluster_resources": self.cluster_resources,
            "available_resources": self.available_resources,
            # scheduling (the executor side asks the driver, executor.py)
            "can_grow": self.can_grow,
            "runtime_context": self.runtime_context,
            "create_placement_group": self.create_placement_group,
            "wait_placement_group": self.wait_placement_group,
            "remove_placement_group": self.remove_placement_group,
            "placement_group_table": self.placement_group_table,
        }

    def _put_bytes(self, data: bytes) -> SparkRef:
        with self.lock:
            oid, ref = self.new_entry()
            self.finish(oid, value=data)
            self.escaped.add(oid)  # the executor holds the only ref
        return ref

    def _remote_get(self, caller: int | None, handles: list[SparkRef], timeout: float | None) -> tuple:
        got = self._values(handles, timeout, caller)
        return ("inline", got) if isinstance(got, TaskPayload) else ("values", got)

    def _remote_wait(self, caller: int | None, handles: list[SparkRef], num_returns: int,
                     timeout: float | None) -> tuple:
        got = self._done_indices(handles, num_returns, timeout, caller)
        return ("inline", got) if isinstance(got, TaskPayload) else ("done", got)

    def on_log(self, stream: str, text: str) -> None:
        if not self.log_to_driver:
            return
        out = sys.stdout if stream == "stdout" else sys.stderr
        out.write(text)
        out.flush()


SPARK_NO_GROUPS = (
    "Spark gives executor slots to running tasks only: it reserves nothing ahead of them, and picks executors itself")


def _refuse_strategy(strategy: Any) -> None:
    """SPREAD is what Spark does anyway; node affinity and placement groups it cannot do."""
    refuse_strategy(strategy, "spark", SPARK_NO_GROUPS,
                    "Spark picks the executor of each task itself")


def _warn_busy(message: str) -> None:
    # stacklevel 5: this function, the backend's submit/create_actor, the session layer's,
    # .remote(), the user's line.
    warnings.warn(message, ResourcesBusyWarning, stacklevel=5)


def _settle(fut: concurrent.futures.Future, entry: _Entry | None) -> None:
    if entry is None:
        fut.set_exception(ObjectLostError("the object was freed"))
    elif entry.error is not None:
        fut.set_exception(entry.error)
    else:
        try:
            fut.set_result(cloudpickle.loads(entry.value))
        except BaseException as exc:
            fut.set_exception(exc)


def _destroy_broadcast(broadcast: Any) -> None:
    try:
        broadcast.destroy()
    except Exception:  # the context may be stopping; Spark drops it with the context anyway
        pass

