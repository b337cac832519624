"""The ``local`` backend: every task and actor call runs in the calling process, at once.

For debugging: ``pdb.set_trace()`` and ``print`` inside a task work as in plain Python, and a
traceback points at the user's line. It keeps unipar's semantics where one process can: values
are copied (pickled) on ``put``, on argument passing and on ``get``, so mutation never leaks;
nested refs stay refs; errors propagate to dependents.

What one process cannot do is listed in docs/backends.md: a task that never ends blocks the
caller at ``.remote()`` (so ``get(timeout=...)`` cannot save it), actors never run in parallel,
``cancel`` finds every task already finished, and ``print`` carries no prefix.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cloudpickle

from ..exceptions import (ActorDiedError, ObjectLostError, TaskCancelledError, UniparError,
                          capture_remote)
from ..options import InitOptions, TaskOptions, resource_demand, split_returns
from ..refs import is_ref, unwrap
from ..runtime_env import applied_in_process, merge, refuse_in_process
from .scheduling import OneNodeGroups, in_group, running_ids, running_task
from .base import ActorCall, ActorMeta, ActorSpec, Backend, Stream, TaskSpec
from .._yielding import bound_method

_STORES: dict[str, "_Store"] = {}


class _Failed:
    """A stored failure: ``get`` re-raises ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Store:
    """Pickled values by object id, freed when the last LocalRef to them goes away."""

    def __init__(self, session: str) -> None:
        self.session = session
        self.values: dict[int, Any] = {}   # bytes, or _Failed
        self.counts: dict[int, int] = {}
        self.holds: dict[int, list] = {}    # refs a stored value contains (tasks return refs)
        self.lock = threading.Lock()
        self.ids = itertools.count(1)

    def new(self, value: Any, holds: Sequence["LocalRef"] = ()) -> "LocalRef":
        """Store ``value``; ``holds``: refs inside it, kept alive as long as it is."""
        oid = next(self.ids)
        with self.lock:
            self.values[oid] = value
            if holds:
                self.holds[oid] = list(holds)
        return LocalRef(self.session, oid)

    def incref(self, oid: int) -> None:
        with self.lock:
            self.counts[oid] = self.counts.get(oid, 0) + 1

    def decref(self, oid: int) -> None:
        held = None
        with self.lock:
            left = self.counts.get(oid, 0) - 1
            if left <= 0:
                self.counts.pop(oid, None)
                self.values.pop(oid, None)
                held = self.holds.pop(oid, None)
            else:
                self.counts[oid] = left
        del held   # outside the lock: dropping them decrefs them

    def load(self, oid: int) -> Any:
        try:
            value = self.values[oid]
        except KeyError:
            raise ObjectLostError(f"object {oid} is not in the local store") from None
        if isinstance(value, _Failed):
            raise value.error
        return cloudpickle.loads(value)


_pickling = threading.local()   # .refs: the LocalRefs met while _dumps pickles a value


def _dumps(value: Any) -> tuple[bytes, list]:
    """``value`` pickled, and the LocalRefs inside it (the store keeps them alive)."""
    _pickling.refs = []
    try:
        return cloudpickle.dumps(value), _pickling.refs
    finally:
        _pickling.refs = None


class LocalRef:
    """The local backend's handle: a session id and an object id, counted while alive."""

    __slots__ = ("session", "oid", "__weakref__")

    def __init__(self, session: str, oid: int) -> None:
        self.session = session
        self.oid = oid
        store = _STORES.get(session)
        if store is not None:
            store.incref(oid)

    def __del__(self) -> None:
        store = _STORES.get(self.session)
        if store is not None:
            store.decref(self.oid)

    def __reduce__(self):
        found = getattr(_pickling, "refs", None)
        if found is not None:   # pickled into a stored value: it must outlive this ref
            found.append(self)
        return (LocalRef, (self.session, self.oid))

    def __hash__(self) -> int:
        return hash((self.session, self.oid))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalRef) and (self.session, self.oid) == (other.session, other.oid)

    def __repr__(self) -> str:
        return f"local:{self.oid}"

    def store(self) -> _Store:
        store = _STORES.get(self.session)
        if store is None:
            raise ObjectLostError(f"object {self.oid} belongs to a local session that was shut down")
        return store


@dataclass(frozen=True)
class LocalActorId:
    session: str
    number: int


class _Actor:
    def __init__(self, spec: ActorSpec) -> None:
        self.spec = spec
        self.instance: Any = None
        self.error: BaseException | None = None
        self.dead_reason: str | None = None
        self.env: dict[str, Any] = {}   # its runtime env, applied around each call


def _copy(value: Any) -> Any:
    # A snapshot: what the task sees must not change when the caller mutates the original.
    return cloudpickle.loads(cloudpickle.dumps(value))


def _run_coroutine(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside an event loop (e.g. an async driver): run it on a helper thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class LocalBackend(Backend):
    """Runs everything in the calling thread, eagerly, with copy semantics."""

    name = "local"
    logs_location = "none: local runs every task in this process, whose output goes here"

    def __init__(self) -> None:
        self._session = uuid.uuid4().hex
        self._store: _Store | None = None
        self._actors: dict[LocalActorId, _Actor] = {}
        self._names: dict[str, LocalActorId] = {}
        self._actor_ids = itertools.count(1)
        self._totals: dict[str, float] = {}
        self._job_env: dict[str, Any] = {}
        self._groups = OneNodeGroups(self._session[:16], lambda: dict(self._totals),
                                     self._free_of_actors)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, options: InitOptions) -> None:
        if options.address not in (None, "local"):
            raise ValueError(f"the local backend runs in this process and takes no address "
                             f"(got {options.address!r}); unset UNIPAR_ADDRESS")
        self._totals = {"CPU": float(options.num_cpus or os.cpu_count() or 1),
                        "GPU": float(options.num_gpus or 0),
                        "node:127.0.0.1": 1.0}   # as Ray names a node (nodes() says this IP)
        self._totals.update({k: float(v) for k, v in options.resources.items()})
        self._job_env = dict(options.runtime_env or {})
        self._store = _STORES[self._session] = _Store(self._session)

    def shutdown(self) -> None:
        _STORES.pop(self._session, None)
        self._store = None
        self._actors.clear()
        self._names.clear()

    # -- objects -----------------------------------------------------------------------------
    def _live_store(self) -> _Store:
        if self._store is None:
            raise UniparError("the local backend is shut down")
        return self._store

    def put(self, value: Any) -> LocalRef:
        return self._live_store().new(*_dumps(value))

    def get(self, handles: Sequence[LocalRef], timeout: float | None) -> list[Any]:
        return [h.store().load(h.oid) for h in handles]

    def handle_keys(self, handles: list[LocalRef]) -> list[LocalRef]:
        return handles   # hashing them is not this engine's cost of a wait

    def wait(self, handles: Sequence[LocalRef], num_returns: int, timeout: float | None,
             fetch_local: bool) -> set[int]:
        return set(range(len(handles)))  # everything ran at .remote()

    def cancel(self, handle: LocalRef, force: bool, recursive: bool) -> None:
        return None  # every task finished before its ref was returned

    def future(self, handle: LocalRef) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        try:
            fut.set_result(self.get([handle], None)[0])
        except BaseException as exc:  # the future carries what get() would raise
            fut.set_exception(exc)
        return fut

    # -- tasks -------------------------------------------------------------------------------
    @staticmethod
    def _snapshot(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Copy every argument that is not a top-level ref, now, as a remote engine would."""
        def one(where: str, value: Any) -> Any:
            if is_ref(value):
                return value
            try:
                return _copy(value)
            except Exception as exc:
                raise TypeError(f"could not serialize {where} ({type(value).__name__}) with "
                                f"cloudpickle: {exc}; pass picklable values only") from exc
        return (tuple(one(f"argument {i}", a) for i, a in enumerate(args)),
                {k: one(f"argument {k!r}", v) for k, v in kwargs.items()})

    @staticmethod
    def _resolve(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Replace top-level refs by their values (raising the error of a failed one)."""
        def one(value: Any) -> Any:
            if is_ref(value):
                handle = unwrap(value)
                return handle.store().load(handle.oid)
            return value
        return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}

    def _store_outputs(self, call: Callable[[], Any], num_returns: int, name: str,
                       options: TaskOptions | None = None) -> list[LocalRef]:
        store = self._live_store()
        attempts = 1 + (max(options.max_retries, 0) if options else 0)
        for attempt in range(attempts):
            try:
                values = split_returns(call(), num_returns, name)
                return [store.new(*_dumps(v)) for v in values]
            except Exception as exc:
                if options is not None and attempt + 1 < attempts and options.should_retry(exc):
                    continue
                failed = _Failed(capture_remote(exc, f"{name} (local, pid={os.getpid()})"))
                return [store.new(failed) for _ in range(max(num_returns, 1))][:num_returns]
        raise AssertionError("unreachable")

    def _runtime_env(self, env: Any) -> dict[str, Any]:
        """The env a call runs under: env_vars, working_dir and py_modules apply in this
        process for the call's duration; pip cannot (refused here, at ``.remote()``)."""
        merged = merge(self._job_env, env)
        refuse_in_process(merged, self.name)
        return merged

    def submit(self, spec: TaskSpec) -> list[LocalRef]:
        env = self._runtime_env(spec.options.runtime_env)
        snapshot = self._snapshot(spec.args, dict(spec.kwargs))

        def call() -> Any:
            args, kwargs = self._resolve(*snapshot)
            with applied_in_process(env), running_task(None):
                return spec.function(*args, **kwargs)
        return self._store_outputs(call, spec.options.num_returns, spec.name, spec.options)

    def submit_stream(self, spec: TaskSpec) -> "_LocalStream":
        env = self._runtime_env(spec.options.runtime_env)
        snapshot = self._snapshot(spec.args, dict(spec.kwargs))

        def start() -> Any:
            args, kwargs = self._resolve(*snapshot)
            return spec.function(*args, **kwargs)
        return _LocalStream(self._live_store(), start, env, spec.name)

    # -- actors ------------------------------------------------------------------------------
    def create_actor(self, spec: ActorSpec) -> LocalActorId:
        name = spec.options.name
        if name is not None and name in self._names:
            if spec.options.get_if_exists:
                return self._names[name]
            raise ValueError(f"an actor named {name!r} already exists; use "
                             "get_actor(name) or .options(name=..., get_if_exists=True)")
        env = self._runtime_env(spec.options.runtime_env)
        snapshot = self._snapshot(spec.args, dict(spec.kwargs))
        actor_id = LocalActorId(self._session, next(self._actor_ids))
        actor = self._actors[actor_id] = _Actor(spec)
        actor.env = env
        try:
            args, kwargs = self._resolve(*snapshot)
            with applied_in_process(env):
                actor.instance = spec.cls(*args, **kwargs)
        except Exception as exc:
            actor.error = capture_remote(exc, f"{spec.meta.class_name}.__init__ (local)")
            actor.dead_reason = f"its constructor raised {type(exc).__name__}: {exc}"
        if name is not None:
            self._names[name] = actor_id
        return actor_id

    def call_actor(self, actor_id: LocalActorId, call: ActorCall) -> list[LocalRef]:
        actor = self._actors.get(actor_id)
        label = f"{actor.spec.meta.class_name}.{call.method}" if actor else call.method
        snapshot = self._snapshot(call.args, dict(call.kwargs))

        def run() -> Any:
            if actor is None or actor.dead_reason is not None:
                reason = actor.dead_reason if actor else "it was killed or its session ended"
                raise ActorDiedError(f"actor {label.split('.')[0]} is dead: {reason}") from (
                    actor.error if actor else None)
            args, kwargs = self._resolve(*snapshot)
            with applied_in_process(actor.env), running_task(str(actor_id)):
                result = bound_method(actor.instance, call.method)(*args, **kwargs)
                return _run_coroutine(result) if asyncio.iscoroutine(result) else result
        return self._store_outputs(run, call.num_returns, label)

    def call_actor_stream(self, actor_id: LocalActorId, call: ActorCall) -> "_LocalStream":
        actor = self._actors.get(actor_id)
        label = f"{actor.spec.meta.class_name}.{call.method}" if actor else call.method
        snapshot = self._snapshot(call.args, dict(call.kwargs))

        def start() -> Any:
            if actor is None or actor.dead_reason is not None:
                reason = actor.dead_reason if actor else "it was killed or its session ended"
                raise ActorDiedError(f"actor {label.split('.')[0]} is dead: {reason}")
            args, kwargs = self._resolve(*snapshot)
            return getattr(actor.instance, call.method)(*args, **kwargs)
        return _LocalStream(self._live_store(), start, actor.env if actor else {}, label)

    def kill_actor(self, actor_id: LocalActorId, no_restart: bool) -> None:
        actor = self._actors.get(actor_id)
        if actor is None:
            return
        actor.dead_reason = "it was killed with unipar.kill()"
        actor.instance = None
        name = actor.spec.options.name
        if name is not None and self._names.get(name) == actor_id:
            del self._names[name]

    def get_actor(self, name: str) -> tuple[LocalActorId, ActorMeta]:
        actor_id = self._names.get(name)
        if actor_id is None:
            raise ValueError(f"no live actor is named {name!r}")
        return actor_id, self._actors[actor_id].spec.meta

    # -- cluster -----------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        return [{"NodeID": self._session[:16], "Alive": True, "NodeManagerAddress": "127.0.0.1",
                 "Resources": dict(self._totals)}]

    def cluster_resources(self) -> dict[str, float]:
        return dict(self._totals)

    def available_resources(self) -> dict[str, float]:
        free = self._free_of_actors()
        for key, amount in self._groups.held().items():   # placement groups hold theirs
            free[key] = free.get(key, 0.0) - amount
        return free

    def _free_of_actors(self) -> dict[str, float]:
        free = dict(self._totals)
        for actor in self._actors.values():   # an actor in a group takes from the group's
            if actor.dead_reason is None and not in_group(actor.spec.options):
                for key, amount in resource_demand(actor.spec.options).items():
                    free[key] = free.get(key, 0.0) - amount
        return free

    # -- scheduling: one node; groups are bookkeeping (every task runs here anyway) -----------
    def can_grow(self) -> bool:
        return False

    def runtime_context(self) -> dict[str, Any]:
        task_id, actor_id = running_ids()
        return {"node_id": self._session[:16], "job_id": self._session[:8],
                "task_id": task_id, "actor_id": actor_id}

    def create_placement_group(self, bundles: list[dict[str, float]], strategy: str,
                               name: str | None) -> str:
        return self._groups.create(bundles, strategy, name)

    def wait_placement_group(self, pg_id: str, timeout: float | None) -> bool:
        return self._groups.wait(pg_id, timeout)

    def remove_placement_group(self, pg_id: str) -> None:
        self._groups.remove(pg_id)

    def placement_group_table(self) -> list[dict[str, Any]]:
        return self._groups.table()

    def dashboard_url(self) -> str | None:
        return None   # tasks run in this process: there is nothing to watch

    def timeline(self) -> list[dict[str, Any]]:
        from ..exceptions import NotSupportedError
        raise NotSupportedError("unipar.timeline() is for the native backend; local runs every "
                                "task inline in this process: profile it with cProfile or a "
                                "tracer instead")


class _LocalStream(Stream):
    """A generator run in this process, one step per ``next``: each value exists (and its
    handle is given) as soon as the consumer asks for it, so nothing runs ahead of it."""

    def __init__(self, store: _Store, start: Callable[[], Any], env: Any, name: str) -> None:
        self._store = store
        self._start = start
        self._gen: Any = None
        self._env = env
        self._name = name
        self._done = False
        self._cancelled: LocalRef | None = None   # given once after a cancel, then the end
        self._lock = threading.Lock()

    def next(self, timeout: float | None) -> LocalRef:
        with self._lock:
            if self._cancelled is not None:
                handle, self._cancelled = self._cancelled, None
                return handle
            if self._done:
                raise StopIteration
            try:
                with applied_in_process(self._env):
                    value = self._step()
            except (StopIteration, StopAsyncIteration):
                self._done = True
                raise StopIteration from None
            except Exception as exc:   # in its place in the stream, then the end
                self._done = True
                return self._store.new(_Failed(capture_remote(exc, f"{self._name} (local)")))
            return self._store.new(*_dumps(value))

    def _step(self) -> Any:
        if self._gen is None:
            self._gen = self._start()
        if hasattr(self._gen, "__anext__"):
            return _run_coroutine(self._gen.__anext__())
        return next(self._gen)

    def cancel(self, force: bool) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            if self._gen is not None and hasattr(self._gen, "close"):
                self._gen.close()   # an async generator's aclose() is not awaited: local only
            # One handle that says so, as a remote engine's stream does.
            self._cancelled = self._store.new(_Failed(TaskCancelledError(
                f"task {self._name} was cancelled")))
