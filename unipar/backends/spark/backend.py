"""The ``spark`` backend: unipar tasks and actors on Apache Spark (PySpark 4).

Spark has no futures, no nested jobs from executors and no long-lived stateful workers; this
module supplies all three while user code runs only on executors::

    driver (this module)                                         executors
    --------------------                                         ---------
    submit(spec) -> result-table entries, deps tracked
    schedule(): ready + resources free -> an idle runner, or a new runner job:
        job thread: setJobGroup(runner) ;
           base.mapPartitions(runner_partition(payload)).collect() -> run task, report, next
    ChannelServer (authenticated socket)  <---- task_done(+next) / log / yield / nested submit/get/wait
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
* **Generators stream** (generators.py): each value comes over the channel as it is yielded
  (``("yield", ...)``), its reply withheld while the stream's backpressure bound is reached.
* **No deadlock when nested tasks outnumber slots**: a task blocked in ``get``/``wait`` (without
  a timeout) on a task that is ready but has no free slot runs that task itself, inline, in its
  own slot ("slot lending"). See docs/backend-spark.md.

This module is the seam's methods and the channel's handlers; by role, the result table is
results.py, the task queue and runner jobs runners.py, the actor table actors.py, the Spark
session session.py, the socket channel.py, and the executor side executor.py and
actor_server.py.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import sys
import threading
import time
import uuid
import warnings
from typing import Any, Callable, Sequence

import cloudpickle

from ... import codepickle
from ...exceptions import (GetTimeoutError, NotSupportedError, ObjectLostError,
                           ResourcesBusyWarning, TaskCancelledError, UniparError)
from ...options import InitOptions, resource_demand
from ..base import ActorCall, ActorMeta, ActorSpec, Backend, Stream, TaskSpec
from ..scheduling import no_groups, refuse_strategy
from ..streams import header_call, header_spec
from . import envs
from .actors import ActorTable, split_args
from .channel import ChannelServer
from .executor import DRIVER_STORES, SessionInfo, SparkRef, TaskPayload
from .generators import STREAM, StreamRunner, StreamTable
from .results import Entry
from .runners import Task, TaskScheduler, short_name
from .session import SparkSessionHandle

__all__ = ["SparkBackend", "SPARK_NO_GROUPS"]


class SparkBackend(TaskScheduler, Backend):
    """Runs tasks as Spark jobs and actors as long-running Spark tasks (module docstring)."""

    name = "spark"
    logs_location = ("Spark's work directory ($SPARK_HOME/work/<app>/<executor>/stdout and "
                     "stderr) and the Spark UI's Executors tab (stdout/stderr links); in local "
                     "mode executors print here")

    def __init__(self) -> None:
        self.session_id = uuid.uuid4().hex
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self._init_results()     # results.py: entries, ref counts, ids
        self._init_scheduler()   # runners.py: tasks, ready queues, runner jobs, resources
        self._fn_cache: dict[str, bytes] = {}
        self.spark: SparkSessionHandle | None = None
        self.channel: ChannelServer | None = None
        self.info: SessionInfo | None = None
        self.actors = ActorTable(self)
        self.streams = StreamTable(self)
        self.log_to_driver = True
        self.job_env: dict[str, Any] = {}   # init(runtime_env=...): under every task's
        self._stopped = False
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
                                     {"log": self.on_log, "stream_drop": self.streams.drop},
                                     self.actors.on_connection)
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
        self.streams.clear()
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
               caller: int | None = None) -> list[Entry] | TaskPayload:
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

        def one_done(entry: Entry) -> None:
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

    def handle_keys(self, handles: list[SparkRef]) -> list[SparkRef]:
        return handles   # hashing them is not this engine's cost of a wait

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
            task = Task(task_id, short_name(spec), spec.function_id, fn_bytes, args_blob, deps,
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

    # Generators stream: each value comes here as it is yielded (generators.py).
    def submit_stream(self, spec: TaskSpec, parent: int | None = None,
                      held: bool = False) -> Stream:
        self._check_live()
        return self.streams.open(
            spec.options._generator_backpressure_num_objects,
            lambda stream_id: self.submit(header_spec(spec, StreamRunner, stream_id), parent)[0],
            held)

    def call_actor_stream(self, actor_id: Any, call: ActorCall, held: bool = False) -> Stream:
        self._check_live()
        return self.streams.open(
            call.backpressure,
            lambda stream_id: self.call_actor(actor_id, header_call(call, STREAM, stream_id))[0],
            held)

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
        # Executors may join a standalone or YARN/Kubernetes session; local[N] stays N slots.
        return not self.spark.is_local

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
            # generators (generators.py): values as they are yielded; executor code's streams
            "yield": self.streams.on_yield,
            "submit_stream": self._remote_submit_stream,
            "call_actor_stream": self._remote_call_actor_stream,
            "stream_next": self._remote_stream_next,
            "stream_cancel": self._remote_stream_cancel,
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

    def _remote_submit_stream(self, spec: TaskSpec, caller: int | None,
                              dropped: list[int]) -> int:
        self.streams.drop(dropped)
        return self.submit_stream(spec, caller, held=True).id  # type: ignore[attr-defined]

    def _remote_call_actor_stream(self, actor_id: Any, call: ActorCall, dropped: list[int]) -> int:
        self.streams.drop(dropped)
        return self.call_actor_stream(actor_id, call, held=True).id  # type: ignore[attr-defined]

    def _remote_stream_next(self, caller: int | None, stream_id: int, timeout: float | None,
                            dropped: list[int]) -> SparkRef | None:
        """The next ref of a stream executor code opened; None: it ended. The calling task
        gives its CPUs back while it waits, as in get()."""
        self.streams.drop(dropped)
        stream = self.streams.get(stream_id)
        if stream is None:
            return None
        with self.lock:
            self._block(caller)
            try:
                return stream.next(timeout)
            except StopIteration:
                return None
            finally:
                self._unblock(caller)

    def _remote_stream_cancel(self, stream_id: int, force: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.cancel(force)

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


def _settle(fut: concurrent.futures.Future, entry: Entry | None) -> None:
    if entry is None:
        fut.set_exception(ObjectLostError("the object was freed"))
    elif entry.error is not None:
        fut.set_exception(entry.error)
    else:
        try:
            fut.set_result(cloudpickle.loads(entry.value))
        except BaseException as exc:
            fut.set_exception(exc)
