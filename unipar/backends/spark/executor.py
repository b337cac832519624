"""The executor side of the spark backend: what runs inside Spark's Python workers.

A task runs inside a *runner job*, a one-partition Spark job whose closure carries the first
:class:`TaskPayload`::

    Spark python worker                                  driver (ChannelServer)
    -------------------                                  ----------------------
    runner_partition(runner_id, payload)
      ensure_worker(session): connect, install ExecutorBackend, forward print()
      fn(*args)  --- nested .remote()/get()/wait() ---->  handlers (may answer "run it inline")
                 --- ("yield", stream, i, value) ----->  generators.py (reply: go on / stop)
                 --- ("log", stream, line) ------------>  print with "(name pid=N) "
      ("task_done", id, attempt, outcome, runner) ----->  result table; reply: the next task
      ... until the reply is None; then the job ends

An actor is a Spark task that never returns while the actor lives: ``actor_partition``
(actor_server.py) connects back with ``("actor_hello", ...)``, builds the instance and serves
``("call", ...)`` messages over that one connection, in order (or on a thread pool / event loop
when ``max_concurrency`` or ``async def`` say so). Its log lines travel on the same connection
ahead of the result they precede; it uses this module's print forwarding and thread context.

Also here: the types both sides share (handles, payloads), because executors unpickle them.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import io
import os
import socket
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Sequence

import cloudpickle

from ...exceptions import ResourcesBusyWarning, UniparError, capture_remote
from ...options import InitOptions, TaskOptions, split_returns
from ..base import (ActorCall, ActorMeta, ActorSpec, Backend, Stream, TaskSpec,
                    install_worker_backend)
from . import envs
from .channel import ChannelClient

# Stores of live driver sessions by session id (empty on executors): SparkRef counts itself there.
DRIVER_STORES: dict[str, Any] = {}


class SparkRef:
    """The spark backend's handle: a session id and an object id in the driver's result table.

    On the driver a ref counts itself in the table while alive; a ref that was ever pickled
    (sent to an executor) marks its object *escaped*, and escaped objects stay until shutdown,
    because executors hold refs the driver cannot count.
    """

    __slots__ = ("session", "oid", "__weakref__")

    def __init__(self, session: str, oid: int) -> None:
        self.session = session
        self.oid = oid
        store = DRIVER_STORES.get(session)
        if store is not None:
            store.counts.append((oid, 1))

    def __del__(self) -> None:
        try:
            store = DRIVER_STORES.get(self.session)
        except (AttributeError, TypeError):  # interpreter shutdown: module globals are gone
            return
        if store is not None:
            store.counts.append((self.oid, -1))

    def __reduce__(self):
        store = DRIVER_STORES.get(self.session)
        if store is not None:
            store.escaped.add(self.oid)
        return (SparkRef, (self.session, self.oid))

    def __hash__(self) -> int:
        return hash((self.session, self.oid))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SparkRef) and (self.oid, self.session) == (other.oid, other.session)

    def __repr__(self) -> str:
        return f"spark:{self.oid}"


class SparkActorId:
    """The spark backend's actor id: a session id and the actor's number.

    On the driver it counts itself like :class:`SparkRef`: when the last id of an unnamed,
    non-detached actor that never left the driver is gone, the actor is killed (as Ray does
    when the last handle goes out of scope), so forgotten actors do not hold Spark slots.
    """

    __slots__ = ("session", "number", "__weakref__")

    def __init__(self, session: str, number: int) -> None:
        self.session = session
        self.number = number
        store = DRIVER_STORES.get(session)
        if store is not None:
            store.actor_counts.append((number, 1))

    def __del__(self) -> None:
        try:
            store = DRIVER_STORES.get(self.session)
        except (AttributeError, TypeError):  # interpreter shutdown: module globals are gone
            return
        if store is not None:
            store.actor_counts.append((self.number, -1))

    def __reduce__(self):
        store = DRIVER_STORES.get(self.session)
        if store is not None:
            store.actors_escaped.add(self.number)
        return (SparkActorId, (self.session, self.number))

    def __hash__(self) -> int:
        return hash((self.session, self.number))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SparkActorId)
                and (self.number, self.session) == (other.number, other.session))

    def __repr__(self) -> str:
        return f"spark-actor:{self.number}"


@dataclass(frozen=True)
class SessionInfo:
    """What every executor-side entry point needs to reach the driver."""

    session: str
    address: tuple[str, int]
    authkey: bytes
    sys_path: tuple[str, ...]  # the driver's import path, so user modules import here too


class DepArg:
    """Stands for a top-level ref argument: replaced by ``dep_values[index]`` before the call."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self):
        return (DepArg, (self.index,))


@dataclass(frozen=True)
class TaskPayload:
    session: SessionInfo
    task_id: int
    attempt: int
    name: str                 # shown in the print prefix
    fn_id: str
    fn_bytes: bytes
    args_blob: bytes          # cloudpickle of (args, kwargs) with DepArg markers
    dep_values: tuple         # pickled values: bytes, or a Broadcast of bytes for large ones
    num_returns: int
    options: TaskOptions
    runtime_env: Any = None   # envs.ship(): applied around the call


@dataclass(frozen=True)
class ActorPayload:
    session: SessionInfo
    actor_number: int
    attempt: int
    name: str
    cls_bytes: bytes
    args_blob: bytes
    dep_values: tuple
    concurrency: int
    is_async: bool
    runtime_env: Any = None   # envs.ship(): applied around construction and each call


# -- process state --------------------------------------------------------------------------

class ThreadContext:
    """Who is running in this thread: names the print prefix and where log lines go."""

    def __init__(self, name: str, sink: Callable[[str, str], None], task_id: int | None) -> None:
        self.prefix = f"({name} pid={os.getpid()}) "
        self.sink = sink
        self.task_id = task_id
        self.partial = {"stdout": "", "stderr": ""}

    def flush(self) -> None:
        for stream, text in self.partial.items():
            if text:
                self.partial[stream] = ""
                self.sink(stream, self.prefix + text + "\n")


thread_state = threading.local()
_worker_lock = threading.Lock()
_worker_info: SessionInfo | None = None


def current_context() -> ThreadContext | None:
    return getattr(thread_state, "context", None)


def _client() -> ChannelClient:
    """This thread's connection to the driver (opened on first use)."""
    client = getattr(thread_state, "client", None)
    if client is None or getattr(thread_state, "client_session", None) != _worker_info.session:
        client = thread_state.client = ChannelClient(_worker_info.address, _worker_info.authkey)
        thread_state.client_session = _worker_info.session
    return client


def channel_call(op: str, *args: Any) -> Any:
    """One request to the driver over this thread's connection (what generators.py yields by)."""
    return _client().call(op, *args)


class _Forward(io.TextIOBase):
    """Replaces sys.stdout/sys.stderr in a worker: lines of a task go to the driver, prefixed."""

    def __init__(self, stream: str, original: Any) -> None:
        self._stream = stream
        self._original = original

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        ctx = current_context()
        if ctx is None:  # not inside a unipar task (a user thread, Spark's own code)
            return self._original.write(text)
        pending = ctx.partial[self._stream] + text
        *lines, ctx.partial[self._stream] = pending.split("\n")
        if lines:
            ctx.sink(self._stream, "".join(ctx.prefix + line + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        self._original.flush()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", "utf-8")

    def isatty(self) -> bool:
        return False


def ensure_worker(info: SessionInfo) -> None:
    """Make this Python worker ready for unipar code of session ``info`` (idempotent)."""
    global _worker_info
    if _worker_info is not None and _worker_info.session == info.session:
        return
    with _worker_lock:
        if _worker_info is not None and _worker_info.session == info.session:
            return
        for entry in info.sys_path:  # after our own entries: installed packages win
            if entry not in sys.path:
                sys.path.append(entry)
        if not isinstance(sys.stdout, _Forward):
            sys.stdout = _Forward("stdout", sys.stdout)
        if not isinstance(sys.stderr, _Forward):
            sys.stderr = _Forward("stderr", sys.stderr)
        _worker_info = info
        install_worker_backend(ExecutorBackend(info))


# -- running tasks --------------------------------------------------------------------------

# Unpickled functions by their pickled bytes (ids from different hosts may clash): Python
# workers are reused, so a function is unpickled once per worker. Bounded: cleared when full.
_functions: dict[bytes, Any] = {}
_FUNCTIONS_MAX = 256


def _load_function(fn_id: str, fn_bytes: bytes) -> Any:
    fn = _functions.get(fn_bytes)
    if fn is None:
        if len(_functions) >= _FUNCTIONS_MAX:
            _functions.clear()
        fn = _functions[fn_bytes] = cloudpickle.loads(fn_bytes)
    return fn


def _dep_value(value: Any) -> Any:
    data = value if isinstance(value, (bytes, bytearray)) else value.value  # a Broadcast
    return cloudpickle.loads(data)


def resolve_args(args_blob: bytes, dep_values: Sequence[Any]) -> tuple[tuple, dict]:
    """Unpickle arguments, putting the values of top-level refs where their markers are."""
    args, kwargs = cloudpickle.loads(args_blob)
    if dep_values:
        loaded = [_dep_value(v) for v in dep_values]
        args = tuple(loaded[a.index] if isinstance(a, DepArg) else a for a in args)
        kwargs = {k: loaded[v.index] if isinstance(v, DepArg) else v for k, v in kwargs.items()}
    return args, kwargs


def _call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    result = fn(*args, **kwargs)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    return result


def execute_task(payload: TaskPayload) -> tuple:
    """Run one task here and now; return its outcome ``("ok", [bytes])`` or ``("err", error)``."""
    where = f"{payload.name} (spark executor, pid={os.getpid()})"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(envs.applied(payload.runtime_env))
        except Exception as exc:   # a bad archive, a full disk: this task fails, says why
            return ("err", capture_remote(exc, f"{where}, setting up its runtime_env"))
        return _execute(payload, where)


def _execute(payload: TaskPayload, where: str) -> tuple:
    options = payload.options
    attempts = 1 + (max(options.max_retries, 0) if options.retry_exceptions else 0)
    for attempt in range(attempts):
        try:
            fn = _load_function(payload.fn_id, payload.fn_bytes)
            args, kwargs = resolve_args(payload.args_blob, payload.dep_values)
            outputs = split_returns(_call(fn, args, kwargs), payload.num_returns, payload.name)
            return ("ok", [cloudpickle.dumps(v) for v in outputs])
        except Exception as exc:
            if attempt + 1 < attempts and options.should_retry(exc):
                continue
            return ("err", capture_remote(exc, where))
    raise AssertionError("unreachable")


def run_task(payload: TaskPayload, runner_id: int | None = None) -> TaskPayload | None:
    """Run a task in this thread, with its print prefix, and report the outcome to the driver.

    Returns the next task the driver hands this runner (None for inline runs, or when the
    runner should end).
    """
    client = _client()
    previous = current_context()
    ctx = thread_state.context = ThreadContext(payload.name, lambda stream, text: client.notify("log", stream, text),
                                  payload.task_id)
    try:
        outcome = execute_task(payload)
    finally:
        ctx.flush()
        thread_state.context = previous
    _report_dropped_streams(client)   # the task's own streams are usually dropped by now
    try:
        return client.call("task_done", payload.task_id, payload.attempt, outcome, runner_id)
    except Exception as exc:  # the result did not pickle: report that instead
        outcome = ("err", capture_remote(exc, f"{payload.name} (sending its result)"))
        return client.call("task_done", payload.task_id, payload.attempt, outcome, runner_id)


def runner_partition(runner_id: int, payload: TaskPayload, rows: Iterable[Any]) -> list:
    """The function Spark runs for a runner job: its first task, then each one it is handed."""
    for _ in rows:  # drain the input: a worker whose input is left unread is not reused
        pass
    ensure_worker(payload.session)
    next_payload: TaskPayload | None = payload
    while next_payload is not None:
        next_payload = run_task(next_payload, runner_id)
    return []


# -- streams opened by executor code ------------------------------------------------------------

# Ids of ExecutorStreams that were dropped: __del__ may run inside GC, while this thread's
# connection is in use, so it only queues; the next stream call or task report sends them.
_dropped_streams: collections.deque = collections.deque()


def _take_dropped() -> list[int]:
    taken = []
    while _dropped_streams:
        taken.append(_dropped_streams.popleft())
    return taken


def _report_dropped_streams(client: ChannelClient) -> None:
    if _dropped_streams:
        client.notify("stream_drop", _take_dropped())


class ExecutorStream(Stream):
    """A stream opened by executor code: the stream itself lives on the driver (generators.py),
    each ``next`` asks it there."""

    def __init__(self, stream_id: int) -> None:
        self._id = stream_id
        self._ended = False

    def next(self, timeout: float | None) -> Hashable:
        if self._ended:
            raise StopIteration
        ctx = current_context()
        caller = ctx.task_id if ctx is not None else None
        ref = _client().call("stream_next", caller, self._id, timeout, _take_dropped())
        if ref is None:
            self._ended = True
            raise StopIteration
        return ref

    def cancel(self, force: bool) -> None:
        _client().call("stream_cancel", self._id, force)

    def __del__(self) -> None:
        if not self._ended:
            _dropped_streams.append(self._id)


# -- the executor-side backend ----------------------------------------------------------------

class ExecutorBackend(Backend):
    """The backend unipar code sees inside a task or actor: every call goes to the driver."""

    name = "spark"
    logs_location = "Spark's work directory and the Spark UI's Executors tab"

    def __init__(self, info: SessionInfo) -> None:
        self._info = info

    def _caller(self) -> int | None:
        ctx = current_context()
        return ctx.task_id if ctx is not None else None

    def start(self, options: InitOptions) -> None:
        raise UniparError("unipar.init() inside a spark task: the task already runs in a session")

    def shutdown(self) -> None:
        return None  # the driver owns the session

    def submit(self, spec: TaskSpec) -> list[Hashable]:
        return _client().call("submit", spec, self._caller())

    def put(self, value: Any) -> Hashable:
        return _client().call("put", cloudpickle.dumps(value))

    def get(self, handles: Sequence[Hashable], timeout: float | None) -> list[Any]:
        while True:
            kind, value = _client().call("get", self._caller(), list(handles), timeout)
            if kind == "inline":  # the driver lends this blocked slot to a task we wait on
                run_task(value)
                continue
            return [cloudpickle.loads(v) for v in value]

    def handle_keys(self, handles: list[Hashable]) -> list[Hashable]:
        return handles

    def wait(self, handles: Sequence[Hashable], num_returns: int, timeout: float | None,
             fetch_local: bool) -> set[int]:
        while True:
            kind, value = _client().call("wait", self._caller(), list(handles), num_returns, timeout)
            if kind == "inline":
                run_task(value)
                continue
            return value

    def cancel(self, handle: Hashable, force: bool, recursive: bool) -> None:
        _client().call("cancel", handle, force, recursive)

    def future(self, handle: Hashable) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def resolve() -> None:
            try:
                fut.set_result(self.get([handle], None)[0])
            except BaseException as exc:  # the future carries what get() would raise
                fut.set_exception(exc)
        threading.Thread(target=resolve, name="unipar-spark-future", daemon=True).start()
        return fut

    def create_actor(self, spec: ActorSpec) -> Any:
        actor_id, busy = _client().call("create_actor", spec)
        if busy is not None:  # raised here, so it reaches the driver as this task's stderr
            warnings.warn(busy, ResourcesBusyWarning, stacklevel=4)
        return actor_id

    def call_actor(self, actor_id: Any, call: ActorCall) -> list[Hashable]:
        return _client().call("call_actor", actor_id, call)

    # Generators stream through the driver (generators.py).
    def submit_stream(self, spec: TaskSpec) -> Stream:
        return ExecutorStream(_client().call("submit_stream", spec, self._caller(),
                                             _take_dropped()))

    def call_actor_stream(self, actor_id: Any, call: ActorCall) -> Stream:
        return ExecutorStream(_client().call("call_actor_stream", actor_id, call,
                                             _take_dropped()))

    def kill_actor(self, actor_id: Any, no_restart: bool) -> None:
        _client().call("kill_actor", actor_id, no_restart)

    def get_actor(self, name: str) -> tuple[Any, ActorMeta]:
        return _client().call("get_actor", name)

    def nodes(self) -> list[dict[str, Any]]:
        return _client().call("nodes")

    def cluster_resources(self) -> dict[str, float]:
        return _client().call("cluster_resources")

    def available_resources(self) -> dict[str, float]:
        return _client().call("available_resources")

    # -- scheduling: the driver's answers (backend.py), this task's own id -------------------
    def can_grow(self) -> bool:
        return _client().call("can_grow")

    def runtime_context(self) -> dict[str, Any]:
        info = dict(_client().call("runtime_context"))
        ctx = current_context()
        host = socket.gethostname()
        for node in self.nodes():   # the node (executor host) this task runs on
            if node["NodeManagerAddress"] in (host, socket.gethostbyname(host)):
                info["node_id"] = node["NodeID"]
        info["task_id"] = str(ctx.task_id) if ctx is not None else None
        return info

    def create_placement_group(self, bundles: list[dict[str, float]], strategy: str,
                               name: str | None) -> Any:
        return _client().call("create_placement_group", bundles, strategy, name)

    def wait_placement_group(self, pg_id: Any, timeout: float | None) -> bool:
        return _client().call("wait_placement_group", pg_id, timeout)

    def remove_placement_group(self, pg_id: Any) -> None:
        _client().call("remove_placement_group", pg_id)

    def placement_group_table(self) -> list[dict[str, Any]]:
        return _client().call("placement_group_table")

    def dashboard_url(self) -> str | None:
        return None   # inside a Spark task: the driver knows the UI

    def timeline(self) -> list[dict[str, Any]]:
        from ...exceptions import NotSupportedError
        raise NotSupportedError("unipar.timeline() is for the native backend; on spark the Spark "
                                "UI's Event Timeline shows when each task ran")


__all__ = ["SparkRef", "SparkActorId", "SessionInfo", "DepArg", "TaskPayload", "ActorPayload",
           "ExecutorBackend", "runner_partition", "ensure_worker", "execute_task", "resolve_args",
           "DRIVER_STORES", "ThreadContext", "thread_state", "current_context", "channel_call",
           "ExecutorStream"]
