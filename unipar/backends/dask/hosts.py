"""What runs inside Dask workers for the ``dask`` backend's actors: the host of each actor
and the tasks behind method calls.

Data flow::

    Cls.remote()  -> client.submit(ActorHost, DaskBackend, blob, ..., actor=True)
                         a Dask actor: owns the user's instance, its own thread(s) or event
                         loop, and a sequencer that starts each caller's calls in order
    a.m.remote()  -> client.submit(run_actor_call, DaskBackend, host_future, caller, seq, ...)
                         depends on the host's key; hands the call over (in process on the
                         host's worker, else over Dask's actor RPC), secedes, returns the
                         host's pickled result
                  or client.submit(run_retrying_call, DaskBackend, actor_key, host_key, ...)
                         for an actor with max_restarts and max_task_retries: no dependency on
                         the host (the scheduler fails a host's dependents the moment its worker
                         dies); when the host dies during the call, it waits for the host the
                         creating process starts in its place (published in the scheduler's
                         metadata under [HOST_META, actor key]) and hands the call over again

The creating process restarts a lost host (see ``DaskBackend._restart``); a host knows nothing
of restarts beyond its own start count and where callers resume.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import cloudpickle

from ...exceptions import ActorDiedError, capture_remote
from . import envs
from .actors import (BackendClass, Failed, context, dask_key, ensure_worker_setup, pack_result,
                     resolve_args, where_ran, worker_address)
from .streaming import method_of

__all__ = ["HOST_META", "ActorHost", "call_host", "dead_entry", "host_entry", "run_actor_call",
           "run_retrying_call"]

#: Scheduler metadata ``[HOST_META, actor key]``: the actor's current host, set by the process
#: that created it each time it starts a new one (see :func:`host_entry`, :func:`dead_entry`).
HOST_META = "unipar-actor-host"
#: How long a call whose host died waits for the creating process to start a new one.
NEW_HOST_TIMEOUT_S = 60.0


def host_entry(host_key: str) -> dict[str, str]:
    """The metadata value naming an actor's new host."""
    return {"host": host_key}


def dead_entry(reason: str) -> dict[str, str]:
    """The metadata value saying an actor will not be restarted, and why."""
    return {"dead": reason}


@dataclass
class _Call:
    method: str
    call_bytes: bytes
    deps: tuple
    num_returns: int
    done: concurrent.futures.Future


class ActorHost:
    """A Dask actor that owns one unipar actor instance.

    Calls are handed over with a per-caller sequence number and start in that order. Sync
    actors run calls on their own pool of ``concurrency`` threads (never on Dask's single
    shared actor thread, so one actor's long call does not stall another); async actors run on
    their own event loop thread. The host never raises from ``__init__``: a failed constructor
    or a spent restart budget leaves it dead, and every call then fails with ActorDiedError.

    ``resume`` is given to a host started in place of a lost one: where each caller's call
    numbers go on (calls numbered below it were in flight on the lost host and are retried,
    so they run as they come).
    """

    def __init__(self, backend_cls: BackendClass, blob: bytes, call_bytes: bytes, topic: str,
                 forward: bool, resume: dict[str, int] | None, *deps: Any) -> None:
        ensure_worker_setup(backend_cls)
        # The class travels pickled apart, so one this worker cannot unpickle makes a dead
        # actor that says why (in _construct), not a failed Dask task.
        (self._cls_blob, self.class_name, self._concurrency, self._is_async,
         max_restarts, self._env) = cloudpickle.loads(blob)   # _env: runtime env (envs.py)
        self._cls: type | None = None
        self._call_bytes, self._deps = call_bytes, deps
        self._topic, self._forward = topic, forward
        self._lock = threading.Lock()
        self._next: dict[str, int] = {}
        self._pending: dict[str, dict[int, _Call | None]] = {}
        self._instance: Any = None
        self.dead_reason: str | None = None
        self._error: BaseException | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._max_restarts = max_restarts
        starts = self._count_start()
        # A re-created host (its worker died) accepts each caller's sequence where it resumes.
        self._restarted = starts > 1 or resume is not None
        self._resume = dict(resume or {})
        if max_restarts != -1 and starts > 1 + max_restarts:
            self.dead_reason = (f"the Dask worker holding it died and max_restarts={max_restarts} "
                                "restarts are used up")
        else:
            self._construct(in_task=True)
        self._start_runner()

    def _count_start(self) -> int:
        key = dask_key()
        if key is None:
            return 1
        from distributed import get_client
        client = get_client()
        name = ["unipar-actor-starts", str(key)]
        starts = client.get_metadata(name, 0) + 1
        client.set_metadata(name, starts)
        return starts

    def _construct(self, in_task: bool) -> None:
        # In the construction task a blocking get() may secede; a restart runs on Dask's actor
        # thread, which is no task thread.
        with context(self.class_name, self._topic, self._forward, in_task=in_task), \
                contextlib.ExitStack() as stack:
            try:
                stack.enter_context(envs.applied(self._env))
                if self._cls is None:
                    self._cls = cloudpickle.loads(self._cls_blob)
            except Exception as exc:   # e.g. a module it needs is not importable here
                self._error = capture_remote(exc, where_ran(f"{self.class_name}, unpickling the class"))
                self.dead_reason = (f"its class could not be unpickled on Dask worker "
                                    f"{worker_address()}: {type(exc).__name__}: {exc}")
                return
            try:
                args, kwargs = resolve_args(self._call_bytes, self._deps)
                self._instance = self._cls(*args, **kwargs)
                self.dead_reason = None
            except Exception as exc:
                self._error = capture_remote(exc, where_ran(f"{self.class_name}.__init__"))
                self.dead_reason = f"its constructor raised {type(exc).__name__}: {exc}"

    def _start_runner(self) -> None:
        if self._is_async:
            loop = self._loop = asyncio.new_event_loop()
            thread = threading.Thread(target=_run_loop, args=(loop,), daemon=True,
                                      name=f"unipar-actor-{self.class_name}")
            thread.start()
            self._semaphore = asyncio.run_coroutine_threadsafe(
                _make_semaphore(self._concurrency), loop).result()
            weakref.finalize(self, loop.call_soon_threadsafe, loop.stop)
        else:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self._concurrency, thread_name_prefix=f"unipar-actor-{self.class_name}")
            weakref.finalize(self, self._executor.shutdown, False, cancel_futures=True)

    # -- handing calls over, in order --------------------------------------------------------
    def deliver_local(self, caller: str, seq: int, call: _Call | None) -> None:
        """Queue ``call`` as ``caller``'s ``seq``-th; start every call whose turn has come."""
        with self._lock:
            nxt = self._next.get(caller)
            if nxt is None:
                nxt = self._resume.get(caller, seq if self._restarted else 0)
            if seq < nxt:  # a late call after a restart: run it now rather than never
                self._dispatch(call)
                return
            pending = self._pending.setdefault(caller, {})
            pending.setdefault(seq, call)
            while nxt in pending:
                self._dispatch(pending.pop(nxt))
                nxt += 1
            self._next[caller] = nxt
            if not pending:
                del self._pending[caller]

    async def deliver(self, caller: str, seq: int, method: str, call_bytes: bytes, deps: tuple,
                      num_returns: int) -> Any:
        """The same, over Dask's actor RPC (a call task that ran on another worker)."""
        call = _Call(method, call_bytes, deps, num_returns, concurrent.futures.Future())
        self.deliver_local(caller, seq, call)
        return await asyncio.wrap_future(call.done)

    def skip(self, caller: str, seq: int) -> None:
        """A call that will never arrive (it was cancelled): let the ones after it run."""
        self.deliver_local(caller, seq, None)

    def _dispatch(self, call: _Call | None) -> None:
        if call is None:
            return
        if self.dead_reason is not None:
            call.done.set_result(self._dead(call.method))
        elif self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._run_async(call), self._loop)
        else:
            assert self._executor is not None
            try:
                self._executor.submit(self._run_sync, call)
            except RuntimeError:  # shut down by kill() between the check and here
                call.done.set_result(self._dead(call.method))

    # -- running calls -----------------------------------------------------------------------
    def _dead(self, method: str) -> Failed:
        error = ActorDiedError(f"actor {self.class_name} is dead ({self.dead_reason}); "
                               f"call {method}() did not run")
        error.__cause__ = self._error
        return Failed(error)

    def _label(self, method: str) -> str:
        return f"{self.class_name}.{method}"

    def _run_sync(self, call: _Call) -> None:
        call.done.set_result(self._execute(call, None))

    async def _run_async(self, call: _Call) -> None:
        assert self._semaphore is not None
        async with self._semaphore:
            result = self._execute(call, asyncio.get_running_loop())
            if asyncio.iscoroutine(result):
                result = await self._finish_async(call, result)
        if not call.done.done():
            call.done.set_result(result)

    def _execute(self, call: _Call, loop: asyncio.AbstractEventLoop | None) -> Any:
        """Run one call; returns the packed result, or a coroutine to await for async methods."""
        if self.dead_reason is not None:
            return self._dead(call.method)
        label = self._label(call.method)
        with context(self.class_name, self._topic, self._forward, in_task=False):
            try:
                with envs.applied(self._env):
                    args, kwargs = resolve_args(call.call_bytes, call.deps)
                    result = method_of(self._instance, call.method)(*args, **kwargs)
                if asyncio.iscoroutine(result) and loop is not None:
                    return result
                if asyncio.iscoroutine(result):  # an async method on a sync host: run it here
                    result = asyncio.run(result)
                return pack_result(result, call.num_returns, label)
            except Exception as exc:
                return Failed(capture_remote(exc, where_ran(label)))

    async def _finish_async(self, call: _Call, coro: Any) -> Any:
        label = self._label(call.method)
        with context(self.class_name, self._topic, self._forward, in_task=False):
            try:
                return pack_result(await coro, call.num_returns, label)
            except Exception as exc:
                return Failed(capture_remote(exc, where_ran(label)))

    # -- life ----------------------------------------------------------------------------------
    def kill(self, restart: bool) -> None:
        """Stop the actor; with ``restart`` (and restarts left) start a fresh instance instead."""
        if restart and self.dead_reason is None and self._max_restarts != 0:
            self._instance = None
            self._construct(in_task=False)
            return
        self.dead_reason = "it was killed with unipar.kill()"
        self._instance = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def is_alive(self) -> bool:
        return self.dead_reason is None


async def _make_semaphore(limit: int) -> asyncio.Semaphore:
    return asyncio.Semaphore(limit)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


def run_actor_call(backend_cls: BackendClass, actor: Any, caller: str, seq: int, method: str,
                   call_bytes: bytes, num_returns: int, *deps: Any) -> Any:
    """The Dask task behind every actor method call: hand it to the host and wait for it.

    ``actor`` is Dask's proxy for the host (the dependency on the actor's key). On the host's
    own worker the call is handed over in process; elsewhere it goes over Dask's actor RPC.
    """
    ensure_worker_setup(backend_cls)
    from distributed import get_worker, secede
    host = get_worker().state.actors.get(actor.key)
    if isinstance(host, ActorHost):
        call = _Call(method, call_bytes, deps, num_returns, concurrent.futures.Future())
        host.deliver_local(caller, seq, call)
        try:
            return call.done.result(timeout=0.002)
        except concurrent.futures.TimeoutError:
            # A long call: give the thread slot back so this wait never starves the worker.
            secede()
            return call.done.result()
    secede()
    return actor.deliver(caller, seq, method, call_bytes, deps, num_returns).result()


def call_host(actor: Any, method: str, *args: Any) -> Any:
    """Run a host management method (kill, skip) on the host's worker, from a task."""
    from distributed import get_worker
    host = get_worker().state.actors.get(actor.key)
    if isinstance(host, ActorHost):
        return getattr(host, method)(*args)
    return getattr(actor, method)(*args).result()


# -- calls retried on a restarted host -----------------------------------------------------------

class _HostLost(Exception):
    """The host a call was handed to is gone: its worker died (before or during the call)."""


def run_retrying_call(backend_cls: BackendClass, actor_key: str, host_key: str, caller: str,
                      seq: int, method: str, call_bytes: bytes, num_returns: int, retries: int,
                      *deps: Any) -> Any:
    """The Dask task behind a call on an actor with ``max_restarts`` and ``max_task_retries``.

    Hands the call to the host ``host_key``; each time that host is lost (its worker died
    before or during the call), hands it to the host started in its place, at most ``retries``
    times (-1: no limit). Returns the host's pickled result, or a Failed with ActorDiedError
    once the retries or the actor's restarts are used up.
    """
    ensure_worker_setup(backend_cls)
    from distributed import get_client, secede
    secede()   # it may wait for a restart: never hold a worker thread meanwhile
    client = get_client()
    losses = 0
    while True:
        try:
            return _hand_over(client, host_key, caller, seq, method, call_bytes, deps,
                              num_returns)
        except _HostLost as exc:
            losses += 1
            if retries != -1 and losses > retries:
                return Failed(ActorDiedError(
                    f"the actor's Dask worker died during call {method}() ({exc}) and its "
                    f"max_task_retries={retries} retries are used up"))
        try:
            host_key = _next_host(client, actor_key, host_key)
        except ActorDiedError as exc:
            return Failed(exc)


def _hand_over(client: Any, host_key: str, caller: str, seq: int, method: str,
               call_bytes: bytes, deps: tuple, num_returns: int) -> Any:
    """Run the call on the host ``host_key`` and return its packed result.

    Raises:
        _HostLost: the host is gone, or went while the call ran.
    """
    from distributed import Future, get_worker
    host = get_worker().state.actors.get(host_key)
    if isinstance(host, ActorHost):   # here: if this worker dies, Dask runs this task again
        call = _Call(method, call_bytes, deps, num_returns, concurrent.futures.Future())
        host.deliver_local(caller, seq, call)
        return call.done.result()
    future = Future(host_key, client)
    # A Future built from a key learns its state only once the scheduler knows it is wanted.
    client._send_to_scheduler({"op": "client-desires-keys", "keys": [host_key]})
    try:
        proxy = future.result()   # waits for the host's constructor
    except Exception as exc:
        raise _HostLost(f"host {host_key}: {exc}") from exc
    try:
        return proxy.deliver(caller, seq, method, call_bytes, deps, num_returns).result()
    except Exception as exc:   # the RPC failed: the host's worker is gone
        raise _HostLost(f"host {host_key}: {type(exc).__name__}: {exc}") from exc


def _next_host(client: Any, actor_key: str, lost: str) -> str:
    """The key of the host started in place of ``lost``, once the creating process has
    published it.

    Raises:
        ActorDiedError: the actor will not be restarted, or no new host came in time.
    """
    deadline = time.monotonic() + NEW_HOST_TIMEOUT_S
    while time.monotonic() < deadline:
        entry = client.get_metadata([HOST_META, actor_key], None) or {}
        if "dead" in entry:
            raise ActorDiedError(f"actor {actor_key} is dead ({entry['dead']})")
        if entry.get("host") not in (None, lost):
            return str(entry["host"])
        time.sleep(0.05)
    raise ActorDiedError(f"actor {actor_key} lost its Dask worker and no new host started "
                         f"within {NEW_HOST_TIMEOUT_S:.0f} s (the process that created it "
                         "restarts it: is that process gone?)")
