"""Actors of the spark backend, driver side: a table of actors, each a long-running Spark task.

Life of one actor (``state``)::

    waiting --ctor args done--> ready --slot + resources--> starting --"ready"--> alive
       |                          ^                            |                    |
       +-- ctor arg failed --+    +------ lost, restarts left -+--------------------+
                             v                                 v                    v
                            dead <----- kill / lost with no restarts left / ctor raised

Calls queue per actor in submission order; the head is sent once its top-level ref arguments
are done (so a later call never overtakes an earlier one) through a per-attempt sender thread,
so a slow socket never holds the backend lock. The actor answers ``("result", call_id, ...)`` on
the same connection, after the call's log lines.

All methods but ``on_connection`` and the job/sender threads run with the backend lock held.
"""

from __future__ import annotations

import collections
import functools
import itertools
import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import cloudpickle

from ... import codepickle
from ...exceptions import ActorDiedError
from ...options import resource_demand
from ...refs import is_ref, unwrap
from ..base import ActorCall, ActorMeta, ActorSpec
from . import envs
from .channel import hang_up, recv, send
from .actor_server import actor_partition
from .executor import ActorPayload, DepArg, SessionInfo, SparkActorId, SparkRef
from .session import SparkSessionHandle, crash_reason

if TYPE_CHECKING:
    from multiprocessing.connection import Connection


class Scheduler(Protocol):
    """What the actor table may ask of the backend that owns it (the spark backend).

    A narrow interface instead of the backend class, so this module never imports the backend.
    """

    lock: "threading.RLock"
    session_id: str
    info: SessionInfo | None
    spark: SparkSessionHandle | None
    slots: int
    slots_used: int

    def new_entry(self, producer: int | None = None) -> tuple[int, SparkRef]: ...
    def finish(self, oid: int, value: bytes | None = None,
               error: BaseException | None = None) -> None: ...
    def drain_counts(self) -> None: ...
    def pin(self, oids: Sequence[int]) -> None: ...
    def unpin(self, oids: Sequence[int]) -> None: ...
    def when_done(self, oids: Sequence[int],
                  callback: Callable[[BaseException | None], None]) -> int: ...
    def dep_values(self, oids: Sequence[int]) -> list[bytes]: ...
    def fits(self, demand: dict[str, float]) -> bool: ...
    def acquire(self, demand: dict[str, float]) -> dict[str, float]: ...
    def give_back(self, held: dict[str, float]) -> None: ...
    def schedule(self) -> None: ...
    def on_log(self, stream: str, text: str) -> None: ...


def split_args(args: tuple, kwargs: dict) -> tuple[bytes, list[int]]:
    """Snapshot arguments now; top-level refs become DepArg markers (resolved before sending)."""
    deps: list[int] = []

    def mark(value: Any) -> Any:
        if is_ref(value):
            deps.append(unwrap(value).oid)
            return DepArg(len(deps) - 1)
        return value
    blob = cloudpickle.dumps((tuple(mark(a) for a in args), {k: mark(v) for k, v in kwargs.items()}))
    return blob, deps


@dataclass
class _Call:
    id: int
    method: str
    args_blob: bytes
    deps: list[int]
    outputs: list[int]
    num_returns: int
    ready: bool = False
    error: BaseException | None = None
    message: tuple | None = None  # as sent; a retry after a restart sends it again


@dataclass
class _Actor:
    number: int
    spec: ActorSpec
    name: str
    cls_bytes: bytes
    args_blob: bytes
    deps: list[int]
    demand: dict[str, float]
    restarts_left: int
    state: str = "waiting"
    attempt: int = 0
    held: dict[str, float] = field(default_factory=dict)
    conn: "Connection | None" = None
    outbox: "queue.Queue | None" = None
    queue: collections.deque = field(default_factory=collections.deque)
    inflight: dict[int, _Call] = field(default_factory=dict)
    dead_error: ActorDiedError | None = None
    orphaned: bool = False  # every driver handle is gone: stop once its calls are done

    def group(self, session: str) -> str:
        return f"unipar-{session[:8]}-actor-{self.number}-{self.attempt}"


class ActorTable:
    """Every actor of one spark session, and the named-actor registry."""

    def __init__(self, backend: Scheduler) -> None:
        self._b = backend
        # Keyed by number: the table must not hold SparkActorId objects, which count handles.
        self._actors: dict[int, _Actor] = {}
        self._names: dict[str, int] = {}
        self.handles: collections.Counter = collections.Counter()
        self._ready: collections.deque[_Actor] = collections.deque()
        self._numbers = itertools.count(1)
        self._call_ids = itertools.count(1)

    # -- creation ------------------------------------------------------------------------------
    def create(self, spec: ActorSpec) -> SparkActorId:
        b = self._b
        args_blob, deps = split_args(spec.args, dict(spec.kwargs))
        cls_bytes = codepickle.dumps(spec.cls)
        with b.lock:
            b.drain_counts()
            name = spec.options.name
            if name is not None and name in self._names:
                if spec.options.get_if_exists:
                    return SparkActorId(b.session_id, self._names[name])
                raise ValueError(f"an actor named {name!r} already exists; use "
                                 "unipar.get_actor(name) or .options(name=..., get_if_exists=True)")
            actor = _Actor(next(self._numbers), spec,
                           spec.meta.class_name, cls_bytes, args_blob, deps,
                           resource_demand(spec.options), spec.options.max_restarts)
            self._actors[actor.number] = actor
            if name is not None:
                self._names[name] = actor.number
            b.pin(deps)  # a restart needs the constructor arguments again
            b.when_done(deps, functools.partial(self._ctor_deps_done, actor))
            b.schedule()
            return SparkActorId(b.session_id, actor.number)

    def _ctor_deps_done(self, actor: _Actor, error: BaseException | None) -> None:
        if actor.state != "waiting":
            return
        if error is not None:
            self._die(actor, _died(f"actor {actor.name} could not start: a constructor argument "
                                   f"failed: {error}", error), keep_name=True)
            return
        actor.state = "ready"
        self._ready.append(actor)

    def schedule(self) -> None:
        """Start ready actors while slots and resources allow (called by the backend)."""
        b = self._b
        for actor in list(self._ready):
            if b.slots_used >= b.slots:
                return
            if actor.state != "ready":
                self._ready.remove(actor)
            elif b.fits(actor.demand):
                self._ready.remove(actor)
                self._launch(actor)

    # -- waiting for slots ---------------------------------------------------------------------
    def slot_wait(self, what: str, task_cores: int, actor_number: int | None = None) -> str | None:
        """Why ``what`` cannot get a Spark task slot now, or None when it need not wait.

        Args:
            what: the task or actor, as the message names it.
            task_cores: slots held by runner jobs running a task now (a runner job with no
                task ends within ``RUNNER_LINGER_S``, so its slot does not count as held).
            actor_number: for an actor, its number (None for a task). A task waits only when
                live actors hold every slot: that wait has no end until one is killed (running
                tasks free their slots; tasks queueing for them are not warned about, as on
                every backend). An actor not started yet waits when running tasks,
                live actors and actors queued ahead of it hold every slot.
        """
        b = self._b
        live = sum(1 for a in self._actors.values() if a.state in ("starting", "alive"))
        if actor_number is None:
            if live < b.slots:
                return None
            held = f"{live} live actors"
        else:
            actor = self._actors.get(actor_number)
            if actor is None or actor.state not in ("waiting", "ready"):
                return None
            ahead = sum(1 for a in self._ready if a.state == "ready" and a is not actor)
            if live + ahead + task_cores < b.slots:
                return None
            held = f"{live} live actors and {task_cores} running tasks"
            held += f" ({ahead} more actors wait ahead of it)" if ahead else ""
        return (f"{what} waits for a Spark task slot: all {b.slots} are held by {held}, and a "
                "live actor holds its slot for life. It starts when one is released "
                "(unipar.kill(actor) frees an actor's). On a cluster, give the workers more "
                "cores than the CPUs you need (e.g. --cores 32) and cap running tasks with "
                "unipar.init(num_cpus=...).")

    def _launch(self, actor: _Actor) -> None:
        b = self._b
        actor.state = "starting"
        actor.held = b.acquire(actor.demand)
        b.slots_used += 1
        options = actor.spec.options
        payload = ActorPayload(b.info, actor.number, actor.attempt, actor.name, actor.cls_bytes,
                               actor.args_blob, tuple(b.dep_values(actor.deps)),
                               options.concurrency(actor.spec.meta.is_async),
                               actor.spec.meta.is_async,
                               envs.ship(b.job_env, options.runtime_env))
        threading.Thread(target=self._run_job, args=(actor, payload), daemon=True,
                         name=f"unipar-spark-actor-{actor.number}").start()

    def _run_job(self, actor: _Actor, payload: ActorPayload) -> None:
        b = self._b
        reason = "its Spark task ended"
        try:
            b.spark.run_job(actor.group(b.session_id), f"unipar actor {actor.name}",
                            functools.partial(actor_partition, payload))
        except BaseException as exc:  # the worker or executor died, or the job was cancelled
            reason = crash_reason(exc)
        with b.lock:
            b.slots_used -= 1
            if actor.attempt == payload.attempt and actor.state in ("starting", "alive"):
                self._lost(actor, reason)
            b.schedule()

    # -- the actor's connection (its own thread, lock not held) ---------------------------------
    def on_connection(self, conn: "Connection", hello: tuple) -> None:
        b = self._b
        _, number, attempt = hello
        with b.lock:
            actor = self._actors.get(number)
            if actor is None or actor.attempt != attempt or actor.state != "starting":
                return  # a stale attempt: the server closes the connection
            actor.conn = conn
            outbox = actor.outbox = queue.Queue()
        threading.Thread(target=_sender, args=(conn, outbox), daemon=True,
                         name=f"unipar-spark-actor-send-{number}").start()
        reason = "its connection to the driver closed"
        try:
            while True:
                try:
                    message = recv(conn)
                except (EOFError, OSError):
                    break
                if message[0] == "log":
                    b.on_log(message[1], message[2])
                    continue
                with b.lock:
                    if actor.attempt != attempt or actor.state == "dead":
                        break
                    self._on_message(actor, message)
        finally:
            outbox.put(None)
            with b.lock:
                if actor.attempt == attempt and actor.state in ("starting", "alive"):
                    self._lost(actor, reason)
                    b.schedule()

    def _on_message(self, actor: _Actor, message: tuple) -> None:
        kind = message[0]
        if kind == "ready":
            actor.state = "alive"
            self._pump(actor)
        elif kind == "failed":
            error = message[1]
            self._die(actor, _died(f"actor {actor.name} could not start: its constructor raised "
                                   f"{type(getattr(error, 'cause', error)).__name__}: "
                                   f"{getattr(error, 'cause', error)}", error), keep_name=True)
        elif kind == "result":
            _, call_id, (status, value) = message
            call = actor.inflight.pop(call_id, None)
            if call is None:
                return
            for i, oid in enumerate(call.outputs):
                if status == "ok":
                    self._b.finish(oid, value=value[i])
                else:
                    self._b.finish(oid, error=value)
            self._stop_if_orphaned(actor)

    # -- calls ---------------------------------------------------------------------------------
    def call(self, actor_id: SparkActorId, call: ActorCall) -> list[SparkRef]:
        b = self._b
        args_blob, deps = split_args(call.args, dict(call.kwargs))
        with b.lock:
            b.drain_counts()
            made = [b.new_entry() for _ in range(call.num_returns)]
            actor = self._actors.get(actor_id.number)
            if actor is None or actor.state == "dead":
                error = actor.dead_error if actor is not None else None
                for oid, _ in made:
                    b.finish(oid, error=error or ActorDiedError(
                        f"actor {actor_id} is dead: it was killed or its session ended"))
                return [ref for _, ref in made]
            pending = _Call(next(self._call_ids), call.method, args_blob, deps,
                            [oid for oid, _ in made], call.num_returns)
            b.pin(deps)
            actor.queue.append(pending)
            b.when_done(deps, functools.partial(self._call_deps_done, actor, pending))
            self._pump(actor)
        return [ref for _, ref in made]

    def _call_deps_done(self, actor: _Actor, call: _Call, error: BaseException | None) -> None:
        call.ready, call.error = True, error
        self._pump(actor)

    def _pump(self, actor: _Actor) -> None:
        """Send queued calls, in order, while the head's arguments are done."""
        b = self._b
        while actor.state == "alive" and actor.queue and actor.queue[0].ready:
            call = actor.queue.popleft()
            if call.message is not None:  # re-sent after a restart (max_task_retries)
                actor.inflight[call.id] = call
                actor.outbox.put(call.message)
                continue
            if call.error is not None:  # a call whose argument failed fails with that error
                for oid in call.outputs:
                    b.finish(oid, error=call.error)
                b.unpin(call.deps)
                continue
            message = call.message = ("call", call.id, call.method, call.args_blob,
                                      tuple(b.dep_values(call.deps)), call.num_returns)
            b.unpin(call.deps)
            actor.inflight[call.id] = call
            actor.outbox.put(message)

    # -- death, restarts, kill -----------------------------------------------------------------
    def _lost(self, actor: _Actor, reason: str) -> None:
        """The actor's process or connection went away; restart it or let it die."""
        self._disconnect(actor)
        if actor.restarts_left == 0:
            self._die(actor, ActorDiedError(f"actor {actor.name} died: {reason}"))
            return
        if actor.restarts_left > 0:
            actor.restarts_left -= 1
        failed = list(actor.inflight.values())
        actor.inflight.clear()
        retry = actor.spec.options.max_task_retries != 0
        for call in reversed(failed) if retry else ():
            actor.queue.appendleft(call)  # sends call.message again, ahead of newer calls
        if not retry:
            for call in failed:
                for oid in call.outputs:
                    self._b.finish(oid, error=ActorDiedError(
                        f"actor {actor.name} died while running {call.method}: {reason} "
                        "(it is restarting; set max_task_retries to re-run such calls)"))
        actor.attempt += 1
        actor.state = "ready"
        self._ready.append(actor)

    def _disconnect(self, actor: _Actor) -> None:
        b = self._b
        b.give_back(actor.held)
        actor.held = {}
        if actor.outbox is not None:
            actor.outbox.put(None)
            actor.outbox = None
        if actor.conn is not None:
            hang_up(actor.conn)
            actor.conn = None
        if actor.state in ("starting", "alive"):
            group = actor.group(b.session_id)
            threading.Thread(target=b.spark.cancel_group, args=(group,), daemon=True).start()

    def _die(self, actor: _Actor, error: ActorDiedError, keep_name: bool = False) -> None:
        """``actor`` is dead for good; its calls fail with ``error``. Its name is freed, except
        when its creation failed (its constructor or an argument of it raised: ``keep_name``):
        as in Ray, that name stays taken, and
        get_actor gives a handle whose calls raise, until the actor is killed."""
        if actor.state == "dead":
            return
        self._disconnect(actor)
        actor.state = "dead"
        actor.dead_error = error
        if not keep_name:
            self._free_name(actor)
        calls = list(actor.inflight.values()) + list(actor.queue)
        actor.inflight.clear()
        actor.queue.clear()
        for call in calls:
            for oid in call.outputs:
                self._b.finish(oid, error=error)
        self._b.unpin(actor.deps)

    def kill(self, actor_id: SparkActorId, no_restart: bool) -> None:
        with self._b.lock:
            actor = self._actors.get(actor_id.number)
            if actor is None or actor.state == "dead":
                if actor is not None and no_restart:
                    self._free_name(actor)   # a failed constructor's name, kept till now
                return
            if not no_restart and actor.restarts_left != 0 and actor.state in ("starting", "alive"):
                self._lost(actor, "it was killed with unipar.kill(no_restart=False)")
            else:
                self._die(actor, ActorDiedError(f"actor {actor.name} was killed with unipar.kill()"))
            self._b.schedule()

    def _free_name(self, actor: _Actor) -> None:
        name = actor.spec.options.name
        if name is not None and self._names.get(name) == actor.number:
            del self._names[name]

    def count_handles(self, changes: Sequence[tuple[int, int]], escaped: set[int]) -> None:
        """Apply handle count changes; kill unnamed actors whose last driver handle is gone."""
        for number, delta in changes:
            self.handles[number] += delta
            actor = self._actors.get(number)
            if (actor is None or actor.state == "dead" or self.handles[number] > 0
                    or number in escaped or actor.spec.options.name is not None
                    or actor.spec.options.lifetime == "detached"):
                continue
            actor.orphaned = True
            self._stop_if_orphaned(actor)

    def _stop_if_orphaned(self, actor: _Actor) -> None:
        # Calls already made still run (their refs may be alive); stop after the last one.
        if actor.orphaned and not actor.queue and not actor.inflight:
            self._die(actor, ActorDiedError(f"actor {actor.name} was stopped: every handle to "
                                            "it is gone"))
            self.handles.pop(actor.number, None)

    def lookup(self, name: str) -> tuple[SparkActorId, ActorMeta]:
        with self._b.lock:
            number = self._names.get(name)
            if number is None:
                raise ValueError(f"no live actor is named {name!r}")
            return SparkActorId(self._b.session_id, number), self._actors[number].spec.meta

    def shutdown(self) -> None:
        with self._b.lock:
            for actor in self._actors.values():
                self._die(actor, ActorDiedError(f"actor {actor.name} is dead: its session ended"))
            self._names.clear()


def _died(message: str, cause: BaseException) -> ActorDiedError:
    error = ActorDiedError(message)
    error.__cause__ = cause
    return error


def _sender(conn: "Connection", outbox: "queue.Queue") -> None:
    while True:
        message = outbox.get()
        if message is None:
            return
        try:
            send(conn, message)
        except (OSError, ValueError):  # the actor is gone; its reader thread reports it
            return
