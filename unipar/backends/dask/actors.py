"""What runs inside Dask workers for the ``dask`` backend: the task wrapper, print forwarding,
worker setup, and the value format both sides share (actor hosts are in :mod:`.hosts`; this
module is also the ``--preload`` of a private cluster's processes).

Data flow::

    driver (DaskBackend)                        worker process
    --------------------                        --------------
    f.remote(x, ref, [ref2])
      -> client.submit(run_task, DaskBackend, fn_key, fn_blob, call_bytes, label, topic, *deps)
         call_bytes = pickled (args, kwargs) with top-level refs replaced by Dep(i);
         deps = the top-level refs' Dask futures (Dask resolves only these; ref2 stays a ref)
                                                run_task: install the worker backend (once),
                                                resolve Dep(i), call f with stdout captured,
                                                return the *pickled* result (or Failed)

Every entry point gets the backend class as its first argument (pickled by reference): the
worker side makes its backend from it, and so never imports the backend module.

Values: every stored value is ``bytes`` (a cloudpickle of the user's value), a tuple of such
bytes for ``num_returns > 1``, or a :class:`Failed`. Storing bytes gives unipar's snapshot rule
for free (Dask hands objects by reference to tasks on the same worker; bytes are unpickled
afresh by every reader) and makes failures plain data, so Dask never sees an application error
(its ``retries`` and error logging stay out of the way; worker loss is all it handles).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Protocol

import cloudpickle

from ... import _state
from ...exceptions import TaskCancelledError, WorkerCrashedError, capture_remote
from ...options import split_returns
from . import envs

if TYPE_CHECKING:
    from ..base import Backend

#: Dask's default ``distributed.scheduler.allowed-failures``: re-runs after worker loss. A task
#: whose ``max_retries`` is lower counts its own attempts (see :func:`_attempt_allowed`).
ALLOWED_FAILURES = 3

_tls = threading.local()


# -- values ----------------------------------------------------------------------------------

class Failed:
    """A stored failure: whoever reads it raises ``error`` (already a unipar error)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self):
        return (Failed, (self.error,))


@dataclass(frozen=True)
class Dep:
    """Placeholder for a top-level ref argument: the ``pos``-th Dask dependency, element ``index``."""

    pos: int
    index: int | None


def extract(value: Any, index: int | None) -> Any:
    """The stored item a handle names: the whole value, or one element of a multi-return."""
    if index is None or isinstance(value, Failed):
        return value
    return value[index]


def load(item: Any) -> Any:
    """The user's value from a stored item; raises the stored failure."""
    if isinstance(item, Failed):
        raise item.error
    return cloudpickle.loads(item)


def dumps(value: Any) -> tuple[bytes, list[Any]]:
    """Pickle ``value``; also return the Dask futures of every ref pickled inside it.

    The caller keeps those futures alive as long as the bytes may be read, since Dask frees a
    key as soon as no live Future names it.
    """
    outer = getattr(_tls, "collect", None)
    _tls.collect = collected = []
    try:
        data = cloudpickle.dumps(value)
    finally:
        _tls.collect = outer
    return data, collected


def note_pickled(future: Any) -> None:
    """Called by handles as they are pickled, so :func:`dumps` can keep their keys alive."""
    collected = getattr(_tls, "collect", None)
    if collected is not None:
        collected.append(future)
    else:
        # Pickled by something other than our dumps (user code): keep the key for this process.
        _ESCAPED[future.key] = future


#: Futures of refs that left this process inside a result or through user pickling. Dask has
#: no borrowing protocol, so they stay pinned until the process exits (see docs/backend-dask.md).
_ESCAPED: dict[Any, Any] = {}


def forget_escaped() -> None:
    """Drop the pinned futures of escaped refs: their client is being closed."""
    _ESCAPED.clear()


def pack_result(result: Any, num_returns: int, label: str) -> Any:
    """Pickle a function's result the way handles read it: the bytes of the one value for
    ``num_returns=1``, else a tuple of bytes, one per return value."""
    items = []
    for value in split_returns(result, num_returns, label):
        data, escaped = dumps(value)
        pin(escaped)
        items.append(data)
    return items[0] if num_returns == 1 else tuple(items)


def pin(futures: list[Any]) -> None:
    """Keep these futures (of refs that left this process inside a value) for the process's life."""
    for future in futures:
        _ESCAPED[future.key] = future


def resolve_args(call_bytes: bytes, deps: tuple) -> tuple[tuple, dict]:
    """Unpickle ``(args, kwargs)`` and put dependency values where the top-level refs were.

    Raises:
        UniparError: a dependency failed (the task fails with that same error).
    """
    args, kwargs = cloudpickle.loads(call_bytes)
    if not deps:
        return args, kwargs

    def one(value: Any) -> Any:
        # Each occurrence is unpickled afresh: a ref passed twice gives two private copies.
        if type(value) is not Dep:
            return value
        return load(extract(deps[value.pos], value.index))
    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


# -- worker process setup ----------------------------------------------------------------------

@dataclass
class _Context:
    """What the current thread runs: for print prefixes, topics and slot release."""

    name: str
    topic: str
    forward: bool
    in_task: bool          # a Dask task thread (may secede); False in actor threads
    seceded: bool = False


def current_context() -> _Context | None:
    return getattr(_tls, "ctx", None)


@contextlib.contextmanager
def context(name: str, topic: str, forward: bool, in_task: bool) -> Iterator[_Context]:
    outer = getattr(_tls, "ctx", None)
    ctx = _tls.ctx = _Context(name, topic, forward, in_task)
    try:
        yield ctx
    finally:
        _flush(ctx)
        _tls.ctx = outer


class BackendClass(Protocol):
    """The driver's backend class as the worker side sees it.

    The driver passes it (``DaskBackend``, pickled by reference) with every task and actor it
    submits, so this module makes a worker's backend without importing the backend module,
    which imports this one for the functions it submits.
    """

    name: str

    def for_worker(self, client: Any) -> "Backend": ...


_setup_lock = threading.Lock()
_WORKER: Any = None
_BACKEND: Any = None  # the worker-side DaskBackend of this process
_setup_done = False


def ensure_worker_setup(backend_cls: BackendClass) -> None:
    """Install the worker-side backend (again, if user code shut it down) and, once per
    process, the print forwarder."""
    global _setup_done, _WORKER, _BACKEND
    if _setup_done and _state.current() is _BACKEND:
        return
    with _setup_lock:
        if _setup_done and _state.current() is _BACKEND:
            return
        from distributed import get_worker
        _WORKER = get_worker()  # actor threads are not Dask's: get_worker() fails there
        current = _state.current()
        if current is None or current.name != backend_cls.name:
            from distributed import get_client
            from ..base import install_worker_backend
            if _BACKEND is None:
                _BACKEND = backend_cls.for_worker(get_client())
            install_worker_backend(_BACKEND)
        else:
            _BACKEND = current
        if not isinstance(sys.stdout, _Tee):
            sys.stdout = _Tee(sys.stdout, "stdout")
            sys.stderr = _Tee(sys.stderr, "stderr")
        _setup_done = True


class _Tee:
    """A ``sys.stdout`` stand-in: lines written by unipar tasks go to the driver, prefixed.

    Writes from threads that run no unipar task (Dask's own) go to the original stream.
    """

    def __init__(self, original: Any, stream: str) -> None:
        self._original = original
        self._stream = stream

    def write(self, text: str) -> int:
        ctx = getattr(_tls, "ctx", None)
        if ctx is None or not ctx.forward:
            return self._original.write(text)
        buffers = ctx.__dict__.setdefault("buffers", {})
        pending = buffers.get(self._stream, "") + text
        if "\n" in pending:
            done, _, pending = pending.rpartition("\n")
            _send(ctx, self._stream, done)
        buffers[self._stream] = pending
        return len(text)

    def flush(self) -> None:
        self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def _send(ctx: _Context, stream: str, text: str) -> None:
    prefix = f"({ctx.name} pid={os.getpid()}) "
    body = "".join(prefix + line + "\n" for line in text.split("\n"))
    try:
        assert _WORKER is not None
        _WORKER.log_event(ctx.topic, {"stream": stream, "text": body})
    except Exception:  # not in a worker (or it is closing): print here rather than lose it
        original = sys.__stdout__ if stream == "stdout" else sys.__stderr__
        if original is not None:
            original.write(body)


def _flush(ctx: _Context) -> None:
    for stream, pending in ctx.__dict__.get("buffers", {}).items():
        if pending:
            _send(ctx, stream, pending)
    ctx.__dict__.pop("buffers", None)


# -- tasks -------------------------------------------------------------------------------------

_FUNCTIONS: dict[str, tuple] = {}


def _function(fn_key: str, fn_blob: bytes) -> tuple:
    entry = _FUNCTIONS.get(fn_key)
    if entry is None:
        entry = _FUNCTIONS[fn_key] = cloudpickle.loads(fn_blob)
    return entry


class TaskInterrupt(KeyboardInterrupt):
    """Raised inside a running task's thread by ``unipar.cancel`` (as Ray raises KeyboardInterrupt)."""


def dask_key() -> Any:
    from distributed.worker import thread_state
    return getattr(thread_state, "key", None)


def _attempt_allowed(key: Any, max_retries: int) -> bool:
    """Count this run of ``key`` on the scheduler; False when worker losses used up max_retries.

    Only tasks asking for fewer re-runs than Dask's allowed-failures pay this round trip.
    """
    from distributed import get_client
    client = get_client()
    name = ["unipar-attempts", str(key)]
    attempt = client.get_metadata(name, 0) + 1
    client.set_metadata(name, attempt)
    return attempt <= 1 + max_retries


def run_task(backend_cls: BackendClass, fn_key: str, fn_blob: bytes, call_bytes: bytes,
             label: str, topic: str, forward: bool, *deps: Any, env: Any = None) -> Any:
    """The Dask task behind every ``f.remote()``: returns the pickled result or a Failed.
    ``env``: its runtime env (envs.py), applied around the whole run and undone after."""
    ensure_worker_setup(backend_cls)
    where = where_ran(label)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(envs.applied(env))
        except Exception as exc:   # a lost package, a bad archive: this task fails, says why
            return Failed(capture_remote(exc, f"{where}, setting up its runtime_env"))
        return _run_task(fn_key, fn_blob, call_bytes, label, topic, forward, deps, where)


def _run_task(fn_key: str, fn_blob: bytes, call_bytes: bytes, label: str, topic: str,
              forward: bool, deps: tuple, where: str) -> Any:
    try:
        function, num_returns, max_retries, options = _function(fn_key, fn_blob)
    except Exception as exc:   # e.g. a module it needs is not importable on this worker
        return Failed(capture_remote(exc, f"{where}, unpickling the function"))
    if 0 <= max_retries < ALLOWED_FAILURES and not _attempt_allowed(dask_key(), max_retries):
        error = WorkerCrashedError(
            f"task {label} was running on a Dask worker that died, and its max_retries="
            f"{max_retries} re-runs are used up")
        return _fail(error, num_returns)
    attempts = 1 + (max_retries if max_retries >= 0 else 10**9)
    with context(label, topic, forward, in_task=True):
        for attempt in range(attempts):
            try:
                args, kwargs = resolve_args(call_bytes, deps)
                return pack_result(function(*args, **kwargs), num_returns, label)
            except TaskInterrupt:
                return _fail(TaskCancelledError(f"task {label} was cancelled while running"),
                             num_returns)
            except Exception as exc:
                if attempt + 1 < attempts and options.should_retry(exc) and not _is_unipar(exc):
                    continue
                return _fail(capture_remote(exc, where), num_returns)
    raise AssertionError("unreachable")


def where_ran(label: str) -> str:
    """Where code runs, for remote tracebacks: the Dask worker's address and the process."""
    return f"{label} (dask worker {worker_address()}, pid={os.getpid()})"


def local_worker() -> Any:
    """This process's Dask worker (None before the first task set the process up)."""
    return _WORKER


def worker_address() -> str:
    """This Dask worker's address ("?" before the first task set the process up)."""
    return str(getattr(_WORKER, "address", None) or "?")


def _is_unipar(exc: BaseException) -> bool:
    from ...exceptions import UniparError
    return isinstance(exc, UniparError)


def _fail(error: BaseException, num_returns: int) -> Any:
    # A multi-return task fails as one value; every handle's extract() sees the Failed.
    return Failed(error)


def interrupt_task(key: Any, force: bool, dask_worker: Any = None) -> bool:
    """Run on every worker by ``cancel``: interrupt (or with ``force`` kill) the thread running ``key``."""
    if dask_worker is None:
        return False
    with dask_worker.active_threads_lock:
        idents = [ident for ident, k in dask_worker.active_threads.items() if k == key]
    if not idents:
        return False
    if force:
        # Exit after this reply is sent; the nanny starts a fresh worker process.
        threading.Timer(0.05, os._exit, (1,)).start()
        return True
    for ident in idents:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                   ctypes.py_object(TaskInterrupt))
    return True


# -- preload for the processes of a private local cluster ---------------------------------------

def dask_setup(service: Any) -> None:
    """``--preload`` hook: exit when the driver that started this cluster is gone.

    Only processes started by :class:`~unipar.backends.dask.backend.LocalProcesses` carry
    ``UNIPAR_DASK_DRIVER_PID``; a shared cluster that preloads this module is left alone.
    """
    pid = int(os.environ.get("UNIPAR_DASK_DRIVER_PID", "0") or 0)
    if pid <= 0:
        return

    def watch() -> None:
        import time
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                # The driver cannot clean up any more: remove the cluster's directory (every
                # process tries; the last one out leaves nothing) and go.
                import shutil
                shutil.rmtree(os.environ.get("UNIPAR_DASK_DIRECTORY", ""), ignore_errors=True)
                os._exit(0)
            except PermissionError:
                pass
    threading.Thread(target=watch, daemon=True, name="unipar-driver-watch").start()
