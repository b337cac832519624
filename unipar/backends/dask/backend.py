"""The ``dask`` backend: unipar on Dask distributed, on a local cluster or an existing scheduler.

Without an address, ``start`` runs a local cluster of worker processes (one thread each, one per
CPU slot, bound to 127.0.0.1, no dashboard) whose workers declare ``CPU``/``GPU``/custom
resources. With ``init(address="tcp://host:8786")`` (or ``UNIPAR_ADDRESS``) it connects a
Client to that scheduler.

How unipar's rules map onto Dask (the worker side is in :mod:`.actors`):

* every ``.remote()`` is one Dask task with a unique key (``pure=False``), kept running by
  ``fire_and_forget`` even when its ref is dropped (as in Ray); ``num_returns=n`` is one task
  whose value is a tuple, read by n handles (no splitter tasks);
* arguments are pickled into bytes at submit time: a snapshot, and Dask only sees the top-level
  refs (passed as real dependencies), so refs nested in containers arrive as refs;
* values are stored pickled and failures are stored as values, so ``get`` re-raises the
  original error and dependents fail with the same error;
* ``CPU`` is the worker's thread slot, not a Dask resource restriction (only ``num_cpus > 1``
  is sent as one): a task blocked in ``get``/``wait`` secedes, which frees its thread but would
  not free a Dask resource, so nested tasks never deadlock;
* actors are Dask actors hosting the user's instance (see ``ActorHost``); method results are
  ordinary Dask futures.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import sys
import threading
import time
import uuid
from typing import Any, Iterator, Sequence

import cloudpickle

from ... import codepickle
from ...exceptions import (ActorDiedError, BackendUnavailableError, GetTimeoutError,
                          ObjectLostError, TaskCancelledError, UniparError, WorkerCrashedError,
                          capture_remote)
from ...options import InitOptions, TaskOptions, resource_demand
from . import actors as worker_side
from . import hosts
from .actors import Dep, dumps, extract, load, note_pickled
from .cluster import LocalProcesses
from ..scheduling import no_groups
from .placement import WHY_NO_GROUPS, DaskPlacement, runtime_context
from .restarts import DEMAND as _DEMAND
from .restarts import Recipe, Restarts
from ...refs import is_ref, unwrap
from . import envs
from ..base import ActorCall, ActorMeta, ActorSpec, Backend, Stream, TaskSpec
from ..streams import CollectedStream, collect_call, collect_spec

log = logging.getLogger("unipar.dask")

_EMPTY_CALL = cloudpickle.dumps(((), {}))
_NAME_PREFIX = "unipar-actor:"
_KILLED = "unipar-killed-actors"  # scheduler metadata: host keys of killed actors


# -- handles -----------------------------------------------------------------------------------

def _process_client() -> Any:
    """The Dask client of this process: the running backend's, else the worker's own."""
    from ... import _state
    backend = _state.current()
    if isinstance(backend, DaskBackend) and backend._client is not None:
        return backend._client
    from distributed import get_client
    return get_client()


class DaskRef:
    """A handle: one Dask future (its key), and which element of a multi-return it names.

    ``keep`` holds the futures of refs nested in this task's arguments, so they live at least
    as long as this handle (Dask would free them as soon as the driver dropped its own refs).
    ``call`` names the actor call behind it, so ``cancel`` can tell the actor to skip it.
    """

    __slots__ = ("key", "index", "future", "keep", "call", "__weakref__")

    def __init__(self, future: Any, index: int | None = None, keep: Any = None,
                 call: tuple | None = None) -> None:
        self.key = future.key
        self.index = index
        self.future = future
        self.keep = keep
        self.call = call

    def __reduce__(self):
        note_pickled(self.future)
        return (_rebuild_ref, (self.key, self.index, self.call))

    def __hash__(self) -> int:
        return hash((self.key, self.index))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DaskRef) and (self.key, self.index) == (other.key, other.index)

    def __repr__(self) -> str:
        return f"dask:{self.key}" + (f"[{self.index}]" if self.index is not None else "")


def _future(key: str) -> Any:
    """A Future for ``key`` in this process, registered with the scheduler.

    Dask no longer tells the scheduler about Futures built from a key, so without the
    ``client-desires-keys`` message the Future would never learn its state.
    """
    from distributed import Future
    client = _process_client()
    future = Future(key, client)
    client._send_to_scheduler({"op": "client-desires-keys", "keys": [key]})
    return future


def _rebuild_ref(key: str, index: int | None, call: tuple | None) -> DaskRef:
    return DaskRef(_future(key), index, None, call)


class DaskActorId:
    """An actor id: a stable key, and the future of the Dask actor hosting it now.

    ``key`` is the first host's Dask key and never changes; after a restart (its worker died)
    the creating process's backend knows the new host (see :mod:`.restarts`). ``retries`` is
    the actor's ``max_task_retries`` where it may be restarted (else 0): calls on such an actor
    are retried on the new host (see ``hosts.run_retrying_call``).
    """

    __slots__ = ("key", "future", "keep", "retries", "__weakref__")

    def __init__(self, future: Any, keep: Any = None, key: str | None = None,
                 retries: int = 0) -> None:
        self.key = key or future.key
        self.future = future
        self.keep = keep
        self.retries = retries

    def __reduce__(self):
        note_pickled(self.future)
        return (_rebuild_actor_id, (self.key, self.future.key, self.retries))

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DaskActorId) and self.key == other.key

    def __repr__(self) -> str:
        return f"dask-actor:{self.key}"


def _rebuild_actor_id(key: str, host_key: str, retries: int = 0) -> DaskActorId:
    return DaskActorId(_future(host_key), None, key, retries)


# -- errors ------------------------------------------------------------------------------------

def _map_error(exc: BaseException, handle: DaskRef) -> BaseException:
    """Dask's own failures (not the task's) as unipar errors."""
    from distributed.scheduler import KilledWorker
    if isinstance(exc, UniparError):
        return exc
    if isinstance(exc, KilledWorker):
        if handle.call is not None:
            return ActorDiedError(f"the Dask worker running actor call {handle.key} kept dying: {exc}")
        return WorkerCrashedError(f"the Dask workers running task {handle.key} died "
                                  f"{worker_side.ALLOWED_FAILURES + 1} times: {exc}")
    if isinstance(exc, (concurrent.futures.CancelledError,)) or type(exc).__name__.endswith("CancelledError"):
        return TaskCancelledError(f"task {handle.key} was cancelled")
    if handle.call is not None:
        return ActorDiedError(f"actor call {handle.key} failed in Dask: {exc}")
    # Raised on the worker that ran the task (run_task stores its own failures as values).
    return capture_remote(exc, f"a Dask worker (task {handle.key})")


# -- the backend ---------------------------------------------------------------------------------

class DaskBackend(Backend):
    """unipar's API on a Dask distributed cluster. One instance per driver, one per worker."""

    name = "dask"
    logs_location = ("Dask keeps scheduler and worker logs in memory: the dashboard's Info "
                     "page shows them, as do distributed.Client.get_worker_logs() and "
                     "get_scheduler_logs(); a local cluster's processes also print here")

    def __init__(self) -> None:
        self._client: Any = None
        self._cluster: Any = None
        self._job_env: dict[str, Any] = {}
        self._envs = envs.Shipper()   # runtime_env packages, scattered once (envs.py)
        self._session = uuid.uuid4().hex
        self._caller = uuid.uuid4().hex  # this process, as a submitter of actor calls
        self._topic = f"unipar-print-{self._session}"
        self._forward = True
        self._in_worker = False
        self._functions: dict[tuple[str, int], tuple[str, bytes, TaskOptions]] = {}
        self._seqs: dict[str, int] = {}   # actor key -> number of this process's next call
        self._lock = threading.Lock()
        self._worker_max: dict[str, float] = {}
        self._declared: set[str] = set()
        self._named: dict[str, str] = {}  # name -> actor key, published by this driver
        self._restarts = Restarts(self._live, self._caller, self._peek_seq)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, options: InitOptions) -> None:
        envs.check(options.runtime_env)
        self._job_env = dict(options.runtime_env or {})
        try:
            import distributed
        except ImportError as exc:  # pragma: no cover - registry checks first
            raise BackendUnavailableError("the dask backend needs 'pip install unipar[dask]'") from exc
        self._forward = options.log_to_driver
        address = options.address
        wait_workers = options.backend_options.get("wait_for_workers", 1)
        if address is None:
            self._cluster = LocalProcesses(options)
            address = self._cluster.scheduler_file
            wait_workers = self._cluster.expected_workers
        try:
            self._client = distributed.Client(
                scheduler_file=address, timeout=30, set_as_default=False) if self._cluster else \
                distributed.Client(address, timeout=options.backend_options.get("connect_timeout", 30),
                                   set_as_default=False)
        except OSError as exc:
            raise BackendUnavailableError(
                f"could not reach a Dask scheduler at {address!r} ({exc}); start one with "
                "'dask scheduler' and 'dask worker ADDRESS', or unset UNIPAR_ADDRESS to run a "
                "local cluster") from exc
        if wait_workers:
            try:
                self._client.wait_for_workers(wait_workers, timeout=60)
            except TimeoutError as exc:
                tail = self._cluster.log_tail() if self._cluster else ""
                raise BackendUnavailableError(
                    f"{wait_workers} Dask worker(s) did not join {address!r} within 60 s\n{tail}") from exc
        if self._forward:
            self._client.subscribe_topic(self._topic, _print_event)
        self._refresh_workers()

    @classmethod
    def for_worker(cls, client: Any) -> "DaskBackend":
        """The backend tasks use inside a worker process (through the worker's own client)."""
        backend = cls()
        backend._client = client
        backend._in_worker = True
        backend._refresh_workers()
        return backend

    def shutdown(self) -> None:
        if self._in_worker:
            return  # the worker's own client belongs to Dask; a task may not close it
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is None:
            return
        worker_side.forget_escaped()
        self._restarts.clear()
        self._envs.clear()
        with contextlib.suppress(Exception):
            for name, key in list(self._named.items()):
                self._unpublish(client, name, key)
        if cluster is not None:
            with contextlib.suppress(Exception):
                client.shutdown()  # our own cluster: scheduler and workers exit
        with contextlib.suppress(Exception):
            client.close(timeout=10)
        if cluster is not None:
            cluster.close()

    def _live(self) -> Any:
        if self._client is None:
            raise UniparError("the dask backend is shut down; call unipar.init() again")
        return self._client

    # -- submitting ----------------------------------------------------------------------------
    def _function(self, spec: TaskSpec) -> tuple[str, bytes]:
        """The pickled function and its task options, pickled once per (function, options)."""
        cache_key = (spec.function_id, id(spec.options))
        entry = self._functions.get(cache_key)
        if entry is None or entry[2] is not spec.options:
            opts = spec.options
            blob = codepickle.dumps((spec.function, opts.num_returns, opts.max_retries, opts))
            entry = (f"{self._session}:{spec.function_id}:{id(opts)}", blob, opts)
            self._functions[cache_key] = entry
        return entry[0], entry[1]

    def _pack_args(self, args: tuple, kwargs: Any) -> tuple[list[Any], bytes, list[Any] | None]:
        """Arguments as bytes with top-level refs replaced by Dep placeholders.

        Returns the dependency futures (for Dask to resolve), the bytes, and the futures of
        nested refs (to keep alive).
        """
        if not args and not kwargs:
            return [], _EMPTY_CALL, None
        deps: list[Any] = []
        positions: dict[str, int] = {}

        def one(value: Any) -> Any:
            if not is_ref(value):
                return value
            handle: DaskRef = unwrap(value)
            pos = positions.get(handle.key)
            if pos is None:
                pos = positions[handle.key] = len(deps)
                deps.append(handle.future)
            return Dep(pos, handle.index)
        packed = (tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()})
        data, nested = dumps(packed)
        return deps, data, nested or None

    def _restrictions(self, demand: dict[str, float]) -> dict[str, float] | None:
        """Dask resource restrictions for a unipar demand (see the module docstring for CPU)."""
        out: dict[str, float] = {}
        for name, amount in demand.items():
            if name == "CPU" and (amount <= 1 or "CPU" not in self._declared):
                continue  # the thread slot is the CPU
            if name not in self._declared:
                self._refresh_workers()
            if name not in self._declared:
                continue  # the API's feasibility check has already let this pass
            # More than any one worker has: take a whole worker's share (documented).
            out[name] = min(amount, self._worker_max.get(name, amount))
        return out or None

    def _context(self) -> tuple[str, bool]:
        ctx = worker_side.current_context()
        if ctx is not None:
            return ctx.topic, ctx.forward
        return self._topic, self._forward

    def submit(self, spec: TaskSpec) -> list[DaskRef]:
        from distributed import fire_and_forget
        client = self._live()
        env = self._envs.ship(client, self._job_env, spec.options.runtime_env)
        fn_key, fn_blob = self._function(spec)
        deps, call_bytes, nested = self._pack_args(spec.args, spec.kwargs)
        label = spec.options.name or spec.name.rsplit(".", 1)[-1]
        topic, forward = self._context()
        future = client.submit(
            worker_side.run_task, DaskBackend, fn_key, fn_blob, call_bytes, label, topic, forward,
            *deps, env=env,
            key=f"{label}-{uuid.uuid4().hex}", pure=False,
            resources=self._restrictions(resource_demand(spec.options)),
            **self._placement().kwargs(spec.options.scheduling_strategy))
        fire_and_forget(future)  # a dropped ref must not cancel the task (Ray runs it anyway)
        n = spec.options.num_returns
        if n == 1:
            return [DaskRef(future, None, nested)]
        return [DaskRef(future, i, nested) for i in range(n)]

    def put(self, value: Any) -> DaskRef:
        data, nested = dumps(value)
        # One blob, scattered unhashed: exactly one new key, whatever the value's type.
        client = self._live()
        for attempt in range(3):
            try:
                with self._slot_released():
                    future = client.scatter(data, hash=False)
                break
            except OSError:  # the chosen worker was exiting (a crash, a forced cancel): retry
                if attempt == 2:
                    raise
        return DaskRef(future, None, nested or None)

    # -- waiting ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _slot_released(self) -> Iterator[None]:
        """Inside a Dask task thread, give the thread slot back while blocked (secede/rejoin)."""
        ctx = worker_side.current_context()
        if ctx is None or not ctx.in_task or ctx.seceded:
            yield
            return
        from distributed import rejoin, secede
        secede()
        ctx.seceded = True
        try:
            yield
        finally:
            ctx.seceded = False
            rejoin()

    def get(self, handles: Sequence[DaskRef], timeout: float | None) -> list[Any]:
        client = self._live()
        futures = list({h.key: h.future for h in handles}.values())
        for future in futures:
            if future.status == "lost" and str(future.key).startswith("bytes-"):
                # put() values are not in Dask's graph: lost with their worker, for good.
                raise ObjectLostError(f"the value of {future.key} (from put) was on a Dask worker "
                                      "that died; Dask cannot recompute put() values")
        if timeout is None:
            # The common case in one trip to the event loop: gather waits by itself.
            try:
                with self._slot_released():
                    gathered = client.gather(futures)
            except Exception:  # a Dask-level failure: sort it out below, in input order
                pass
            else:
                values = dict(zip((f.key for f in futures), gathered, strict=True))
                return [load(extract(values[h.key], h.index)) for h in handles]
        if not all(f.done() for f in futures):
            if timeout == 0:
                raise GetTimeoutError(f"{len(futures)} object(s) not ready within timeout=0")
            with self._slot_released():
                try:
                    _dask_wait(client, futures, timeout, "ALL_COMPLETED")
                except TimeoutError:
                    raise GetTimeoutError(
                        f"not all of {len(futures)} object(s) were ready within {timeout} s") from None
        finished = [f for f in futures if f.status == "finished"]
        try:
            values = dict(zip((f.key for f in finished), client.gather(finished), strict=True))
        except BaseException as exc:
            raise _map_error(exc, handles[0]) from None
        out = []
        for handle in handles:  # the first failure in input order wins, stored or Dask's own
            status = handle.future.status
            if status == "cancelled":
                raise TaskCancelledError(f"task {handle.key} was cancelled")
            if handle.key not in values:
                raise _map_error(handle.future.exception(), handle)
            out.append(load(extract(values[handle.key], handle.index)))
        return out

    def wait(self, handles: Sequence[DaskRef], num_returns: int, timeout: float | None,
             fetch_local: bool) -> set[int]:
        client = self._live()
        by_key: dict[str, Any] = {h.key: h.future for h in handles}

        def finished() -> set[int]:
            return {i for i, h in enumerate(handles) if by_key[h.key].done()}
        done = finished()
        if len(done) >= num_returns or timeout == 0:
            return done
        deadline = None if timeout is None else _now() + timeout
        with self._slot_released():
            while len(done) < num_returns:
                remaining = None if deadline is None else deadline - _now()
                if remaining is not None and remaining <= 0:
                    break
                pending = [f for f in by_key.values() if not f.done()]
                try:
                    _dask_wait(client, pending, remaining, "FIRST_COMPLETED")
                except TimeoutError:
                    pass
                done = finished()
        return done

    def future(self, handle: DaskRef) -> concurrent.futures.Future:
        result: concurrent.futures.Future = concurrent.futures.Future()

        def resolve(_: Any) -> None:  # runs on Dask's callback thread, once the task is done
            try:
                result.set_result(self.get([handle], None)[0])
            except BaseException as exc:
                result.set_exception(exc)
        handle.future.add_done_callback(resolve)
        return result

    def cancel(self, handle: DaskRef, force: bool, recursive: bool) -> None:
        client = self._live()
        if handle.future.done():
            return
        client.cancel([handle.future], force=True)
        if handle.call is not None:
            self._skip_call(handle.call)
        # Dask cannot stop a running thread; interrupt it (or kill its worker with force).
        try:
            hit = client.run(worker_side.interrupt_task, handle.key, force, wait=True)
        except Exception:  # a worker went away meanwhile: nothing left to interrupt there
            return
        if force:
            self._await_gone([address for address, found in hit.items() if found])

    def _await_gone(self, addresses: list[str], timeout: float = 15.0) -> None:
        """Return once the scheduler has dropped these (exiting) workers, so no new work or
        ``put`` data is sent to them."""
        deadline = _now() + timeout
        while addresses and _now() < deadline:
            with self._slot_released():
                live = self._live().scheduler_info(n_workers=-1)["workers"]
            addresses = [a for a in addresses if a in live]
            if addresses:
                time.sleep(0.05)

    def _skip_call(self, call: tuple) -> None:
        actor_key, caller, seq = call
        with contextlib.suppress(Exception):
            self._host_call(DaskActorId(_future(actor_key)), "skip", caller, seq)

    # -- actors ------------------------------------------------------------------------------------
    def create_actor(self, spec: ActorSpec) -> DaskActorId:
        import dask
        client = self._live()
        opts = spec.options
        env = self._envs.ship(client, self._job_env, opts.runtime_env, by_key=True)
        if opts.name is not None:
            found = self._lookup(opts.name)
            if found is not None:
                if opts.get_if_exists:
                    return found[0]
                raise ValueError(f"an actor named {opts.name!r} already exists; use "
                                 "get_actor(name) or .options(name=..., get_if_exists=True)")
        blob = cloudpickle.dumps((codepickle.dumps(spec.cls), spec.meta.class_name,
                                  opts.concurrency(spec.meta.is_async), spec.meta.is_async,
                                  opts.max_restarts, env))
        deps, call_bytes, nested = self._pack_args(spec.args, spec.kwargs)
        topic, forward = self._context()
        demand = resource_demand(opts)
        resources = self._restrictions(demand)
        host_args = (DaskBackend, blob, call_bytes, topic, forward, None, *deps)
        with dask.annotate(**{_DEMAND: demand}):
            future = client.submit(
                hosts.ActorHost, *host_args,
                key=f"{spec.meta.class_name}-actor-{uuid.uuid4().hex}", actor=True, pure=False,
                resources=resources, **self._placement().kwargs(opts.scheduling_strategy))
        actor_id = DaskActorId(future, nested,
                               retries=opts.max_task_retries if opts.max_restarts != 0 else 0)
        if opts.max_restarts != 0:
            self._restarts.add(actor_id.key, future,
                               Recipe(host_args, resources, demand, opts.max_restarts))
        if opts.name is not None:
            existing = self._publish(opts.name, actor_id, spec.meta, detached=opts.lifetime == "detached")
            if existing is not None:  # lost a race with another creator
                self.kill_actor(actor_id, True)
                if opts.get_if_exists:
                    return existing[0]
                raise ValueError(f"an actor named {opts.name!r} already exists")
        return actor_id

    def _next_seq(self, key: str) -> int:
        with self._lock:
            seq = self._seqs.get(key, 0)
            self._seqs[key] = seq + 1
            return seq

    def _peek_seq(self, key: str) -> int:
        with self._lock:
            return self._seqs.get(key, 0)

    # Generators run to completion in the worker, then stream from here (docs/generators.md).
    def submit_stream(self, spec: TaskSpec) -> Stream:
        return CollectedStream(self, self.submit(collect_spec(spec))[0])

    def call_actor_stream(self, actor_id: Any, call: ActorCall) -> Stream:
        return CollectedStream(self, self.call_actor(actor_id, collect_call(call))[0])

    def call_actor(self, actor_id: DaskActorId, call: ActorCall) -> list[DaskRef]:
        from distributed import fire_and_forget
        client = self._live()
        host = self._restarts.host(actor_id.key, actor_id.future)
        seq = self._next_seq(actor_id.key)
        deps, call_bytes, nested = self._pack_args(call.args, call.kwargs)
        key = f"{call.method}-{uuid.uuid4().hex}"
        if actor_id.retries:
            # Not a dependency on the host: the scheduler would fail the call with its worker.
            future = client.submit(
                hosts.run_retrying_call, DaskBackend, actor_id.key, host.key, self._caller, seq,
                call.method, call_bytes, call.num_returns, actor_id.retries, *deps,
                key=key, pure=False)
        else:
            future = client.submit(
                hosts.run_actor_call, DaskBackend, host, self._caller, seq, call.method,
                call_bytes, call.num_returns, *deps, key=key, pure=False)
        fire_and_forget(future)
        keep = (host, nested)
        tag = (host.key, self._caller, seq)
        if call.num_returns == 1:
            return [DaskRef(future, None, keep, tag)]
        return [DaskRef(future, i, keep, tag) for i in range(call.num_returns)]

    def _host_call(self, actor_id: DaskActorId, method: str, *args: Any) -> Any:
        """Call a host management method (kill, skip) and wait for it."""
        host = self._restarts.current(actor_id.key, actor_id.future)
        with self._slot_released():
            proxy = host.result(timeout=60)
            if self._in_worker:
                return hosts.call_host(proxy, method, *args)
        if proxy._client is None and proxy._worker is None:
            # Dask binds actor proxies to the default client, which ours is not (a user's own
            # Client stays the default); bind it to ours.
            proxy._client, proxy._future = self._client, host
        return getattr(proxy, method)(*args).result(timeout=60)

    def kill_actor(self, actor_id: DaskActorId, no_restart: bool) -> None:
        client = self._live()
        host = self._restarts.current(actor_id.key, actor_id.future)
        if host.status == "pending":
            # Not built yet: wait for it, so the kill is not lost (creation is usually quick).
            with contextlib.suppress(Exception), self._slot_released():
                host.result(timeout=60)
        if host.status == "finished":
            with contextlib.suppress(Exception):
                self._host_call(actor_id, "kill", not no_restart)
        if no_restart:
            self._restarts.forget(actor_id.key)
            # Live actors' demand is read off the scheduler; mark this one as no longer holding.
            with contextlib.suppress(Exception), self._slot_released():
                client.set_metadata([_KILLED, str(host.key)], True)
            for name, key in list(self._named.items()):
                if key == actor_id.key:
                    self._unpublish(client, name, key)
            self._unpublish_any(actor_id.key)

    def get_actor(self, name: str) -> tuple[DaskActorId, ActorMeta]:
        found = self._lookup(name)
        if found is None:
            raise ValueError(f"no live actor is named {name!r}")
        return found

    # -- the name registry: Dask published datasets, which also keep the actor's key alive -----
    def _lookup(self, name: str) -> tuple[DaskActorId, ActorMeta] | None:
        client = self._live()
        with self._slot_released():
            entry = client.get_dataset(_NAME_PREFIX + name, default=None)
        if entry is None:
            return None
        future, meta_blob, *rest = entry
        return DaskActorId(future, retries=rest[0] if rest else 0), cloudpickle.loads(meta_blob)

    def _publish(self, name: str, actor_id: DaskActorId, meta: ActorMeta,
                 detached: bool) -> tuple[DaskActorId, ActorMeta] | None:
        client = self._live()
        try:
            with self._slot_released():
                client.publish_dataset(actor_id.future, cloudpickle.dumps(meta),
                                       actor_id.retries, name=_NAME_PREFIX + name)
        except KeyError:
            return self._lookup(name)
        if not detached and not self._in_worker:
            self._named[name] = actor_id.key
        return None

    def _unpublish(self, client: Any, name: str, key: str) -> None:
        self._named.pop(name, None)
        entry = client.get_dataset(_NAME_PREFIX + name, default=None)
        if entry is not None and entry[0].key == key:
            client.unpublish_dataset(_NAME_PREFIX + name)

    def _unpublish_any(self, key: str) -> None:
        """Free the name of a killed actor, whichever process published it."""
        client = self._live()
        with contextlib.suppress(Exception), self._slot_released():
            for name in client.list_datasets():
                if isinstance(name, str) and name.startswith(_NAME_PREFIX):
                    entry = client.get_dataset(name, default=None)
                    if entry is not None and entry[0].key == key:
                        client.unpublish_dataset(name)

    # -- cluster -----------------------------------------------------------------------------------
    def _workers(self) -> dict[str, dict[str, Any]]:
        client = self._live()
        with self._slot_released():
            workers = client.scheduler_info(n_workers=-1)["workers"]
            expected = self._cluster.expected_workers if self._cluster is not None else 0
            if len(workers) < expected:
                # A worker of our own cluster died (a crash, a forced cancel) and its nanny is
                # starting a new one: count it once it is back rather than report a shrunk cluster.
                with contextlib.suppress(Exception):
                    client.wait_for_workers(expected, timeout=30)
                workers = client.scheduler_info(n_workers=-1)["workers"]
            return workers

    def _refresh_workers(self) -> None:
        maxima: dict[str, float] = {}
        declared: set[str] = set()
        for info in self._workers().values():
            for name, amount in (info.get("resources") or {}).items():
                declared.add(name)
                maxima[name] = max(maxima.get(name, 0.0), float(amount))
        self._worker_max, self._declared = maxima, declared

    @staticmethod
    def _worker_resources(info: dict[str, Any]) -> dict[str, float]:
        resources = {"CPU": float(info.get("nthreads", 1)), "GPU": 0.0}
        resources.update({k: float(v) for k, v in (info.get("resources") or {}).items()})
        return resources

    def nodes(self) -> list[dict[str, Any]]:
        """One entry per machine (host), its workers' resources summed: a Dask worker is one
        process, while a node is what Ray and the other backends call one (a machine)."""
        by_host: dict[str, dict[str, float]] = {}
        for address, info in self._workers().items():
            total = by_host.setdefault(str(info.get("host") or address), {})
            for name, amount in self._worker_resources(info).items():
                total[name] = total.get(name, 0.0) + amount
        return [{"NodeID": f"dask-{host}", "Alive": True, "NodeManagerAddress": host,
                 "Resources": resources} for host, resources in sorted(by_host.items())]

    def cluster_resources(self) -> dict[str, float]:
        totals: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
        for info in self._workers().values():
            for name, amount in self._worker_resources(info).items():
                totals[name] = totals.get(name, 0.0) + amount
        return totals

    def available_resources(self) -> dict[str, float]:
        with self._slot_released():
            usage = self._live().run_on_scheduler(_scheduler_usage)
        free = self.cluster_resources()
        free["CPU"] -= usage.pop("__busy_threads__", 0.0)
        for name, amount in usage.pop("__actors__", {}).items():  # held for life, as in Ray
            free[name] = free.get(name, 0.0) - amount
        for name, amount in usage.items():
            if name != "CPU":
                free[name] = free.get(name, 0.0) - amount
        return {k: max(v, 0.0) for k, v in free.items()}

    # -- scheduling (placement.py): strategies as worker restrictions; no placement groups ----
    def _placement(self) -> DaskPlacement:
        found = self.__dict__.get("_placement_rules")
        if found is None:
            found = self.__dict__["_placement_rules"] = DaskPlacement(self._workers)
        return found

    def can_grow(self) -> bool:
        return True   # workers may join a Dask cluster at any time

    def runtime_context(self) -> dict[str, Any]:
        client = self._live()
        return runtime_context(str(client.scheduler.address),
                               lambda: self.nodes()[0]["NodeID"])

    def create_placement_group(self, bundles: list[dict[str, float]], strategy: str,
                               name: str | None) -> Any:
        raise no_groups(self.name, WHY_NO_GROUPS)

    def wait_placement_group(self, pg_id: Any, timeout: float | None) -> bool:
        raise no_groups(self.name, WHY_NO_GROUPS)

    def remove_placement_group(self, pg_id: Any) -> None:
        raise no_groups(self.name, WHY_NO_GROUPS)

    def placement_group_table(self) -> list[dict[str, Any]]:
        return []

    def dashboard_url(self) -> str | None:
        try:
            return self._live().dashboard_link or None
        except (KeyError, AttributeError, ValueError):   # the scheduler serves none
            return None

    def timeline(self) -> list[dict[str, Any]]:
        from ...exceptions import NotSupportedError
        raise NotSupportedError("unipar.timeline() is for the native backend; on dask the "
                                "dashboard's Task Stream shows when each task ran, and "
                                "distributed.performance_report(filename=...) saves it")


def _scheduler_usage(dask_scheduler: Any = None) -> dict[str, Any]:
    """On the scheduler: threads running tasks, resources held by running tasks, and the
    demand of every live actor (cluster-wide: actors that tasks and actors created count too)."""
    usage: dict[str, Any] = {"__busy_threads__": 0.0}
    actors: dict[str, float] = {}
    killed = dask_scheduler.task_metadata.get(_KILLED, {})
    for ts in dask_scheduler.tasks.values():
        if ts.actor and ts.state == "memory" and str(ts.key) not in killed:
            for name, amount in ((ts.annotations or {}).get(_DEMAND) or {}).items():
                actors[name] = actors.get(name, 0.0) + float(amount)
    usage["__actors__"] = actors
    for ws in dask_scheduler.workers.values():
        # Actor constructions in progress are not counted: the actor's own demand is.
        running = sum(1 for ts in ws.processing if not ts.actor) - len(ws.long_running)
        usage["__busy_threads__"] += float(max(0, min(ws.nthreads, running)))
        for name, amount in ws.used_resources.items():
            usage[name] = usage.get(name, 0.0) + float(amount)
    return usage


def _print_event(event: Any) -> None:
    """Driver side of print forwarding: write a worker's prefixed lines to our stdout/stderr."""
    _, msg = event
    stream = sys.stderr if msg.get("stream") == "stderr" else sys.stdout
    stream.write(msg.get("text", ""))
    stream.flush()


def _dask_wait(client: Any, futures: list[Any], timeout: float | None, return_when: str) -> None:
    """``distributed.wait`` on our client (the public one uses the default client)."""
    from distributed.client import _wait
    client.sync(_wait, futures, timeout=timeout, return_when=return_when)


_now = time.monotonic
