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
  ordinary Dask futures;
* generator tasks and methods stream: each yielded value's Future reaches the driver through a
  ``distributed.Queue`` as it is yielded (generators.py, streaming.py).

This module is the seam's methods and the driver's state; the rest of the package, by role:
handles.py (refs and actor ids), waiting.py (get/wait and the thread slot), names.py (named
actors), workers.py (workers and resources), hosts.py and restarts.py (actor hosts and their
restarts), actors.py (what runs inside workers), generators.py and streaming.py (streaming
generators, the driver's and the worker's side), cluster.py (the private cluster), envs.py
(runtime_env), placement.py (scheduling strategies).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import sys
import threading
import time
import uuid
from typing import Any, Sequence

import cloudpickle

from ... import codepickle
from ...exceptions import BackendUnavailableError, NotSupportedError, UniparError
from ...options import InitOptions, TaskOptions, resource_demand
from ...refs import is_ref, unwrap
from ..base import ActorCall, ActorMeta, ActorSpec, Backend, Stream, TaskSpec
from ..scheduling import no_groups
from ..streams import header_call, header_spec
from . import actors as worker_side
from . import envs, hosts
from .actors import Dep, dumps
from .cluster import LocalProcesses
from .generators import DaskStream
from .handles import DaskActorId, DaskRef, future_for_key
from .names import NameRegistry
from .placement import WHY_NO_GROUPS, DaskPlacement, runtime_context
from .restarts import DEMAND as _DEMAND
from .restarts import Recipe, Restarts
from .streaming import STREAM, Streaming
from .waiting import get_values, now, slot_released, wait_done
from .workers import KILLED, WorkerView

__all__ = ["DaskBackend"]

log = logging.getLogger("unipar.dask")

_EMPTY_CALL = cloudpickle.dumps(((), {}))


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
        self._view = WorkerView(self._live, self._expected_workers)
        self._names = NameRegistry(self._live)
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
        self._view.refresh()

    @classmethod
    def for_worker(cls, client: Any) -> "DaskBackend":
        """The backend tasks use inside a worker process (through the worker's own client)."""
        backend = cls()
        backend._client = client
        backend._in_worker = True
        backend._view.refresh()
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
            self._names.unpublish_all(client)
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

    @property
    def dask_client(self) -> Any:
        """This process's Dask client while the backend runs, else None (read by handles.py
        when a handle is unpickled here)."""
        return self._client

    def _expected_workers(self) -> int:
        return self._cluster.expected_workers if self._cluster is not None else 0

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
        # A top-level ref's value may hold refs (a put list): the task reads them, so they
        # must live as long as its handles do, not only as long as the caller's ref.
        held: list[Any] = []

        def one(value: Any) -> Any:
            if not is_ref(value):
                return value
            handle: DaskRef = unwrap(value)
            pos = positions.get(handle.key)
            if pos is None:
                pos = positions[handle.key] = len(deps)
                deps.append(handle.future)
                if handle.keep is not None:
                    held.append(handle.keep)
            return Dep(pos, handle.index)
        packed = (tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()})
        data, nested = dumps(packed)
        return deps, data, (list(nested or ()) + held) or None

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
            resources=self._view.restrictions(resource_demand(spec.options)),
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
                with slot_released():
                    future = client.scatter(data, hash=False)
                break
            except OSError:  # the chosen worker was exiting (a crash, a forced cancel): retry
                if attempt == 2:
                    raise
        return DaskRef(future, None, nested or None)

    # -- waiting (waiting.py) ------------------------------------------------------------------
    def get(self, handles: Sequence[DaskRef], timeout: float | None) -> list[Any]:
        return get_values(self._live(), handles, timeout)

    def handle_keys(self, handles: list[DaskRef]) -> list[DaskRef]:
        return handles   # hashing them is not this engine's cost of a wait

    def wait(self, handles: Sequence[DaskRef], num_returns: int, timeout: float | None,
             fetch_local: bool) -> set[int]:
        return wait_done(self._live(), handles, num_returns, timeout)

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
            # The call runs on the actor's own thread: one not started yet is skipped, a
            # running one is left alone (as Ray does). Interrupting the call's Dask task, which
            # only waits for it, would raise KeyboardInterrupt in a worker thread: the worker exits.
            self._skip_call(handle.call)
            return
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
        deadline = now() + timeout
        while addresses and now() < deadline:
            with slot_released():
                live = self._live().scheduler_info(n_workers=-1)["workers"]
            addresses = [a for a in addresses if a in live]
            if addresses:
                time.sleep(0.05)

    def _skip_call(self, call: tuple) -> None:
        actor_key, caller, seq = call
        with contextlib.suppress(Exception):
            self._host_call(DaskActorId(future_for_key(actor_key)), "skip", caller, seq)

    # -- actors ------------------------------------------------------------------------------------
    def create_actor(self, spec: ActorSpec) -> DaskActorId:
        import dask
        client = self._live()
        opts = spec.options
        env = self._envs.ship(client, self._job_env, opts.runtime_env, by_key=True)
        if opts.name is not None:
            found = self._names.lookup(opts.name)
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
        resources = self._view.restrictions(demand)
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
            existing = self._names.publish(opts.name, actor_id, spec.meta, remember=(
                opts.lifetime != "detached" and not self._in_worker))
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

    # Generators stream: each value comes here as the worker yields it (generators.py).
    def submit_stream(self, spec: TaskSpec) -> Stream:
        stream = DaskStream(self._live(), spec.options._generator_backpressure_num_objects,
                            self._cancel_stream)
        stream.start(self.submit(header_spec(spec, Streaming, stream.header))[0])
        return stream

    def call_actor_stream(self, actor_id: Any, call: ActorCall) -> Stream:
        stream = DaskStream(self._live(), call.backpressure, self._cancel_stream)
        stream.start(self.call_actor(actor_id, header_call(call, STREAM, stream.header))[0])
        return stream

    def _cancel_stream(self, handle: DaskRef, force: bool) -> None:
        self.cancel(handle, force, True)

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
        with slot_released():
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
            with contextlib.suppress(Exception), slot_released():
                host.result(timeout=60)
        if host.status == "finished":
            with contextlib.suppress(Exception):
                self._host_call(actor_id, "kill", not no_restart)
        if no_restart:
            self._restarts.forget(actor_id.key)
            # Live actors' demand is read off the scheduler; mark this one as no longer holding.
            with contextlib.suppress(Exception), slot_released():
                client.set_metadata([KILLED, str(host.key)], True)
            self._names.forget_actor(client, actor_id.key)

    def get_actor(self, name: str) -> tuple[DaskActorId, ActorMeta]:
        found = self._names.lookup(name)
        if found is None:
            raise ValueError(f"no live actor is named {name!r}")
        return found

    # -- cluster -----------------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        return self._view.nodes()

    def cluster_resources(self) -> dict[str, float]:
        return self._view.cluster_resources()

    def available_resources(self) -> dict[str, float]:
        return self._view.available_resources()

    # -- scheduling (placement.py): strategies as worker restrictions; no placement groups ----
    def _placement(self) -> DaskPlacement:
        found = self.__dict__.get("_placement_rules")
        if found is None:
            found = self.__dict__["_placement_rules"] = DaskPlacement(self._view.workers)
        return found

    def can_grow(self) -> bool:
        # Workers may join a scheduler started elsewhere; the private LocalCluster that
        # unipar.init() starts never gets more (what fits no worker there would never run).
        return self._cluster is None

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
        raise NotSupportedError("unipar.timeline() is for the native backend; on dask the "
                                "dashboard's Task Stream shows when each task ran, and "
                                "distributed.performance_report(filename=...) saves it")


def _print_event(event: Any) -> None:
    """Driver side of print forwarding: write a worker's prefixed lines to our stdout/stderr."""
    _, msg = event
    stream = sys.stderr if msg.get("stream") == "stderr" else sys.stdout
    stream.write(msg.get("text", ""))
    stream.flush()
