"""A worker process: runs tasks (pool workers) or hosts one actor (actor workers).

Started by its node daemon as ``python -m unipar.native.worker`` with the secret on stdin; the
pipe then stays open, and EOF on it (the node died) ends the worker at once. The worker is also
a full client: code in a task may call ``get``/``put``/``.remote()``.

Threads: the client's reader thread receives ``run_task``/``init_actor``/... and queues them;
the main thread runs them one at a time (tasks and plain actors). Threaded actors
(``max_concurrency`` > 1) run calls on a thread pool; async actors on one event loop thread.
``print`` goes through :class:`.output.Forward`, which sends whole lines, prefixed
``(name pid=N) ``, to the node, which passes them to the driver — always before the task's
result, since both travel on the same connections in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import importlib
import os
import queue
import sys
import threading
import time
from typing import Any, Callable

import cloudpickle

from ...exceptions import ActorDiedError, GetTimeoutError, TaskCancelledError, capture_remote
from ..._yielding import bound_method
from ...options import split_returns
from ..client.client import Client
from ..client.refs import TRACKER, NativeRef
from ..wire import protocol as P
from ..wire import serialization as S
from ..wire.transport import Connection, Listener
from . import interrupts
from .events import LogFile, TaskEvents, hosting_actor, open_log
from .output import Forward, current
from .runtime_env import prepare as prepare_runtime_env
from .streaming import install as install_streaming, method_of, on_ack

# The direct connection of the client whose task or call runs in this context (its print
# lines and result go back that way), or None for one the node sent. A context variable:
# threaded and async actors run several calls at once.
_reply_to: contextvars.ContextVar[Connection | None] = contextvars.ContextVar("reply", default=None)
MAX_MAPPED = 32   # big arguments kept mapped per worker
REPLY_DELAY = 0.0005   # seconds a finished task's result may wait for others to share a write


class Runtime:
    """Everything a worker process does besides talking: run tasks and actor calls."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.functions: dict[str, Any] = {}
        self.unloaded: dict[str, Any] = {}   # code of pushed tasks that never ran (_keep_code)
        self.client: Client = None  # type: ignore[assignment]
        self.label = "worker"
        self.current_task: bytes | None = None
        self.unflushed: set[Connection] = set()
        self.task_lock = threading.Lock()
        self.cancelled: set[bytes] = set()
        # Tasks pushed directly that have not started (a client may take them back while
        # this worker is busy), and those it took back (skipped when their turn comes).
        self.waiting: set[bytes] = set()
        self.taken: set[bytes] = set()
        self.borrowing: set[bytes] = set()   # direct calls whose arguments held refs
        self.replies_posted = threading.Event()   # results wait for the reply flusher
        self.reply_lock = threading.Lock()          # guards unflushed
        # Big arguments stay mapped (pages already faulted in) until the node says the object
        # was freed or moved: a task reusing one costs no new mapping. Bounded, as a safety net.
        self.mapped: dict[bytes, tuple[str, Any, list[Any]]] = {}
        self.map_lock = threading.Lock()
        self.base_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.instance: Any = None
        self.setup_error: Exception | None = None   # the runtime env could not be set up
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.semaphore: asyncio.Semaphore | None = None
        self.events = TaskEvents(lambda msg: None)   # the node's, once connected (_serve)
        self.log_file: LogFile | None = None
        # What each kind of message does, by op: from our node (reader thread), from clients
        # pushing work to us (their reader threads), and on the main thread (one at a time).
        self.node_handlers: dict[str, Callable[[Any], None]] = {
            P.CancelTask.op: lambda msg: self._cancel(msg.task_id),
            P.Shutdown.op: lambda msg: self.events.exit(),   # its last events first
            P.Forget.op: self._forget,
            P.RunActorTask.op: lambda msg: self._on_run_actor_task(msg, None),
            P.StreamAck.op: on_ack,
        }
        self.direct_handlers: dict[str, Callable[[Any, Connection], None]] = {
            P.RunTask.op: self._on_run_task,
            P.RunActorTask.op: self._on_run_actor_task,
            P.CancelTask.op: lambda msg, conn: self._cancel(msg.task_id),
            P.TakeBack.op: self._take_back,
            P.Attach.op: self._on_attach,
            P.StreamAck.op: lambda msg, conn: on_ack(msg),
        }
        self.run_handlers: dict[str, Callable[[Any, Connection | None], None]] = {
            P.RunTask.op: self._run_pushed,
            P.InitActor.op: lambda msg, reply: self.init_actor(msg),
            P.RunActorTask.op: self._run_call,
        }

    def log_conn(self) -> Connection:
        reply = _reply_to.get()
        return reply if reply is not None and not reply.closed else self.client.conn

    def forward_log(self, msg: P.Log) -> None:
        """Output of a task this worker's task started (pushed directly): pass it on as it
        is, already prefixed, the way our own output goes."""
        try:
            self.log_conn().send(msg)
        except ConnectionError:
            pass

    # direct connections (one thread each): tasks pushed by a client holding a lease on us
    def accept(self, conn: Connection) -> None:
        threading.Thread(target=conn.serve_forever, args=(lambda m: self.handle_direct(conn, m),),
                         name="unipar-direct-reader", daemon=True).start()

    def handle_direct(self, conn: Connection, msg: P.Message) -> None:
        """A message from a client that pushes work to us directly (``direct_handlers``)."""
        handle = self.direct_handlers.get(msg.op)
        if handle is None:
            conn.close()   # nothing else may arrive here
        else:
            handle(msg, conn)

    def _on_attach(self, msg: P.Attach, conn: Connection) -> None:
        conn.owner = msg.client_id  # type: ignore[attr-defined]

    def _on_run_actor_task(self, msg: P.RunActorTask, conn: Connection | None) -> None:
        if self.instance is not None and (self.pool or self.loop):
            self._start_concurrent_call(msg, conn)   # threaded or async: runs at once
        else:
            self.inbox.put((msg, conn))

    def _on_run_task(self, msg: P.RunTask, conn: Connection) -> None:
        with self.task_lock:
            self.waiting.add(msg.task_id)
        self.inbox.put((msg, conn))

    def _take_back(self, msg: P.TakeBack, conn: Connection) -> None:
        """Give back the tasks among ``msg.task_ids`` that have not started (another worker
        is free for them); the rest finish here as usual."""
        given = []
        with self.task_lock:
            for task_id in msg.task_ids:
                if task_id in self.waiting:
                    self.waiting.discard(task_id)
                    self.taken.add(task_id)
                    given.append(task_id)
        try:
            for task_id in given:
                conn.post(P.TaskDone(task_id, "returned", []))
            conn.flush()
        except ConnectionError:
            pass

    def _run_pushed(self, msg: P.RunTask, reply: Connection | None) -> None:
        """Run a task from the inbox unless its client took it back meanwhile."""
        if reply is not None:
            with self.task_lock:
                taken = msg.task_id in self.taken
                self.taken.discard(msg.task_id)
                self.waiting.discard(msg.task_id)
            if taken:
                self._keep_code(msg)   # later pushes of it come without the code
                return
        self.run_task(msg, reply)

    def _cancel(self, task_id: bytes) -> None:
        with self.task_lock:
            if self.current_task == task_id:
                interrupts.cancel(task_id)             # KeyboardInterrupt in the task
                self.client.cancel_submitted()         # and in what it started directly
            else:   # not started yet (still queued here): never start it
                self.cancelled.add(task_id)

    # reader thread
    def handle(self, msg: P.Message) -> None:
        """A message from our node (``node_handlers``); the rest is queued for the main thread."""
        handle = self.node_handlers.get(msg.op)
        if handle is None:
            self.inbox.put((msg, None))
        else:
            handle(msg)

    def _forget(self, msg: P.Forget) -> None:
        with self.map_lock:
            for oid in msg.oids:
                self.mapped.pop(oid, None)

    # main thread
    def run(self) -> None:
        """Run what the reader threads queued, one at a time (``run_handlers``), forever."""
        handlers = self.run_handlers
        while True:
            try:
                if self.unflushed and self.inbox.empty():
                    self._flush_replies()
                msg, reply = self.inbox.get()
                handle = handlers.get(msg.op)
                if handle is not None:
                    handle(msg, reply)
            except KeyboardInterrupt:
                continue   # a cancel that arrived just after its task ended

    def _set_cuda(self, gpu_ids: list[int]) -> None:
        """CUDA_VISIBLE_DEVICES for the next task: its GPUs, else what the worker started with
        (only touched when it changes: most tasks use none)."""
        want = ",".join(str(i) for i in gpu_ids) if gpu_ids else self.base_cuda
        if want == os.environ.get("CUDA_VISIBLE_DEVICES"):
            return
        if want is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = want

    def _function(self, key: str, blob: Any) -> Any:
        if self.setup_error is not None:   # every task and actor of this env fails with it
            raise self.setup_error
        fn = self.functions.get(key)
        if fn is None:
            blob = self.unloaded.pop(key, None) if blob is None else blob
            fn = self.functions[key] = cloudpickle.loads(blob)
        return fn

    def _keep_code(self, msg: P.RunTask) -> None:
        """A pushed task that will not run (cancelled or taken back before it started) may
        be the one that carried its function's code: keep the code, unloaded (loading it
        could fail, and that is the first task that runs it to report)."""
        if msg.fn_blob is not None and msg.fn_key not in self.functions:
            self.unloaded[msg.fn_key] = msg.fn_blob

    def _arguments(self, packed: Any, deps: list, cache: bool = True) -> tuple[tuple, dict, Any]:
        """Arguments from their packed form and dependency values. ``cache``: keep big ones
        mapped (only when the node sent them: it tells us when to let go)."""
        if packed is None:   # big arguments travel as the last dependency
            data, buffers = S.map_file(deps[-1][3]) if deps[-1][1] == "shm" else S.unpack(deps[-1][2])
            packed_args = S.loads(data, buffers)
            deps = deps[:-1]
        else:
            packed_args = S.load_packed(packed)
        args, kwargs, extra = packed_args
        values = [self._load_dep(d, cache) for d in deps]
        args, kwargs = S.fill_slots(args, kwargs, values)
        return args, kwargs, extra

    def _load_dep(self, dep: list, cache: bool = True) -> Any:
        oid, kind, payload, path = dep
        if kind != "shm":
            return S.load_packed(payload)
        if not cache:
            try:
                return S.loads(*S.map_file(path, populate=True))
            except FileNotFoundError:   # spilled since: ask where it is now
                return self.client.get([NativeRef(oid)], None)[0]
        with self.map_lock:
            cached = self.mapped.get(oid)
        if cached is not None and cached[0] == path:
            return S.loads(cached[1], cached[2])
        try:
            data, buffers = S.map_file(path, populate=True)   # the task will likely read it all
        except FileNotFoundError:   # spilled to disk since the node sent us the path
            return self.client.get([NativeRef(oid)], None)[0]
        with self.map_lock:
            if len(self.mapped) >= MAX_MAPPED:
                self.mapped.pop(next(iter(self.mapped)))
            self.mapped[oid] = (path, data, buffers)
        return S.loads(data, buffers)

    def _result(self, oid: bytes, value: Any, owner: int | None = None) -> list:
        """The result record of one return value. ``owner``: the client id of a task pushed
        directly; a big result (or one holding refs) is stored at the node for it first, so
        the node knows the object before the owner hears of it."""
        data, buffers, contained = S.dumps(value)
        if contained:
            self.client.promote(contained)   # refs to our own direct results: tell the node
        size = S.payload_size(data, buffers)
        if size <= self.client.inline_max:
            result = [oid, "inline", P.blob(S.pack(data, buffers)), "", size, contained]
            if owner is None or not contained:
                return result
        else:
            reserve = size + 64 * (len(buffers) + 2)
            path = self.client.request(lambda r: P.Alloc(r, oid, reserve)).value
            real = S.write_file(path, data, buffers)
            result = [oid, "shm", None, path, real, contained]
            if owner is None:
                return result
        self.client.request(lambda r: P.PutFor(r, owner, *result))
        return result

    # streaming generators (streaming.StreamHost): values go where the task's result goes
    def stream_conn(self) -> Connection | None:
        return _reply_to.get()

    def stream_record(self, value: Any, owner: int) -> list:
        return self._result(self.client.new_id(), value, owner)

    def node_conn(self) -> Connection:
        return self.client.conn

    def _error_results(self, return_ids: list, exc: BaseException, where: str) -> list:
        err = capture_remote(exc, where)
        packed = S.pack(*S.dumps(err)[:2])
        return [[oid, "error", P.blob(packed), "", len(packed), []] for oid in return_ids]

    def _results(self, return_ids: list, result: Any, name: str, where: str,
                 owner: int | None = None) -> tuple[str, list]:
        try:
            values = split_returns(result, len(return_ids), name)
            return "ok", [self._result(oid, v, owner) for oid, v in zip(return_ids, values)]
        except Exception as exc:   # unpicklable result, wrong count, store full
            return "error", self._error_results(return_ids, exc, where)

    def run_task(self, msg: P.RunTask, reply: Connection | None = None) -> None:
        """Run one task; its result goes to the node, or back over ``reply`` (pushed directly)."""
        short = msg.name.rsplit(".", 1)[-1]
        current.label = short
        where = f"{msg.name} (pid={os.getpid()})"
        self._set_cuda(msg.gpu_ids)
        status, results = "ok", []
        retry_filter: Any = False
        token = _reply_to.set(reply)
        try:
            with self.task_lock:
                if msg.task_id in self.cancelled:
                    self.cancelled.discard(msg.task_id)
                    self._keep_code(msg)   # later pushes of it come without the code
                    raise KeyboardInterrupt
                self.current_task = msg.task_id
            self.events.started(msg.task_id, msg.name)
            fn = self._function(msg.fn_key, msg.fn_blob)
            args, kwargs, retry_filter = self._arguments(msg.args, msg.deps, cache=reply is None)
            with interrupts.running(msg.task_id):   # a cancel interrupts only this
                result = fn(*args, **kwargs)
            with self.task_lock:
                self.current_task = None
            status, results = self._results(msg.return_ids, result, msg.name, where,
                                            _owner(reply))
        except KeyboardInterrupt:
            with self.task_lock:
                self.current_task = None
            status = "error"
            results = self._error_results(
                msg.return_ids, TaskCancelledError(f"task {msg.name} was cancelled"), where)
        except Exception as exc:
            self.events.failed(exc)
            with self.task_lock:
                self.current_task = None
            retry = retry_filter is True or (isinstance(retry_filter, tuple)
                                             and isinstance(exc, retry_filter))
            status = "retry" if retry else "error"
            results = self._error_results(msg.return_ids, exc, where)
        finally:
            current.label = None
            for stream in (sys.stdout, sys.stderr):
                if isinstance(stream, Forward):
                    stream.finish()
            _reply_to.reset(token)
        self.events.ended(msg.task_id, status)
        self._reply(reply, P.TaskDone(msg.task_id, status, results))

    def _reply(self, reply: Connection | None, msg: P.Message) -> None:
        """Send a task's outcome. A result never waits for the work queued behind it: an
        actor's is written before its next call starts (a crash then re-runs only the call
        it interrupted); a task's, with more queued here, goes out with the next write of
        the reply flusher, within about REPLY_DELAY (a burst of short tasks answers in a
        few writes), or when the queue runs empty."""
        try:
            if reply is None:
                self.client.conn.send(msg)
            elif self.role != "task" or self.inbox.empty():
                reply.send(msg)
            else:
                reply.post(msg)
                with self.reply_lock:
                    self.unflushed.add(reply)
                if not self.replies_posted.is_set():
                    self.replies_posted.set()
        except ConnectionError:
            pass   # the client that pushed it is gone; its node cleans up after it

    def flush_replies_forever(self) -> None:
        """The reply flusher (its own thread): writes posted results within ~REPLY_DELAY."""
        while True:
            self.replies_posted.wait()
            time.sleep(REPLY_DELAY)   # let the results of a burst gather into one write
            self.replies_posted.clear()
            self._flush_replies()

    def _flush_replies(self) -> None:
        if not self.unflushed:
            return
        with self.reply_lock:
            pending, self.unflushed = self.unflushed, set()
        for conn in pending:
            try:
                conn.flush()
            except ConnectionError:
                pass

    # -- actors --------------------------------------------------------------------------------
    def init_actor(self, msg: P.InitActor) -> None:
        self.label = msg.class_name
        hosting_actor(msg.actor_id)
        error = None
        try:
            cls = self._function(msg.class_key, msg.class_blob)
            args, kwargs, _ = self._arguments(msg.args, msg.deps)
            self.instance = cls(*args, **kwargs)
        except Exception as exc:
            cause = capture_remote(exc, f"{msg.class_name}.__init__ (pid={os.getpid()})")
            died = ActorDiedError(f"actor {msg.class_name} died: its constructor raised "
                                  f"{type(exc).__name__}: {exc}\n\n{getattr(cause, 'remote_traceback', '')}")
            error = P.blob(S.pack(*S.dumps(died)[:2]))
        if error is None and msg.is_async:
            self._start_loop(msg.concurrency)
        elif error is None and msg.concurrency > 1:
            self.pool = concurrent.futures.ThreadPoolExecutor(msg.concurrency,
                                                              thread_name_prefix="unipar-actor")
        self.client.conn.send(P.ActorReady(msg.actor_id, error))

    def _start_loop(self, concurrency: int) -> None:
        ready = threading.Event()

        def run_loop() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            self.semaphore = asyncio.Semaphore(concurrency)
            ready.set()
            self.loop.run_forever()
        threading.Thread(target=run_loop, name="unipar-actor-loop", daemon=True).start()
        ready.wait(10)

    def _where(self, msg: P.RunActorTask) -> str:
        return f"{self.label}.{msg.method} (pid={os.getpid()})"

    def _run_call(self, msg: P.RunActorTask, reply: Connection | None) -> None:
        """Run one actor call on this thread; its result goes back over ``reply`` (a call
        pushed directly) or to the node."""
        token = _reply_to.set(reply)
        try:
            outcome = self._call_sync(msg, reply)
        finally:
            _reply_to.reset(token)
        self._finish_call(msg, *outcome, reply)

    def _call_sync(self, msg: P.RunActorTask, reply: Connection | None) -> tuple[str, list]:
        name = f"{self.label}.{msg.method}"
        self.events.started(msg.task_id, name, "actor_call")
        try:
            method = method_of(self.instance, msg.method, bound_method)
            args, kwargs = self._call_arguments(msg, reply)
            result = method(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = asyncio.run(result)
        except Exception as exc:
            self.events.failed(exc)
            return "error", self._error_results(msg.return_ids, exc, self._where(msg))
        return self._results(msg.return_ids, result, name, self._where(msg), _owner(reply))

    def _call_arguments(self, msg: P.RunActorTask, reply: Connection | None
                        ) -> tuple[tuple, dict]:
        """A call's arguments; notes the calls pushed directly whose arguments held refs."""
        before = TRACKER.unpickled
        args, kwargs, _ = self._arguments(msg.args, msg.deps, cache=reply is None)
        if reply is not None and TRACKER.unpickled != before:
            self.borrowing.add(msg.task_id)
        return args, kwargs

    def _finish_call(self, msg: P.RunActorTask, status: str, results: list,
                     reply: Connection | None) -> None:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, Forward):
                stream.finish()
        self.events.ended(msg.task_id, status)
        if msg.task_id in self.borrowing:
            self.borrowing.discard(msg.task_id)
            self._borrows_known()
        self._reply(reply, P.TaskDone(msg.task_id, status, results))

    def _borrows_known(self) -> None:
        """Before a call pushed directly answers its caller (not the node): make sure the node
        knows the refs the actor kept from the call's arguments. The caller lets go of its own
        refs once it has the result; were our count still in this process's batch, the node
        could free the object first. Ping goes after the batch on our node connection, and
        the node answers in order (one round trip, only for calls whose arguments held refs)."""
        try:
            self.client.request(lambda r: P.Ping(r), timeout=30)
        except (ConnectionError, GetTimeoutError):
            pass   # the node is gone (or stuck): it frees nothing early then

    def _start_concurrent_call(self, msg: P.RunActorTask, reply: Connection | None = None) -> None:
        if self.pool is not None:
            self.pool.submit(self._run_call, msg, reply)
            return
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(self._call_async(msg, reply), self.loop)

    async def _call_async(self, msg: P.RunActorTask, reply: Connection | None) -> None:
        assert self.semaphore is not None
        _reply_to.set(reply)   # this call's own context (each coroutine task has one)
        async with self.semaphore:
            name = f"{self.label}.{msg.method}"
            self.events.started(msg.task_id, name, "actor_call")
            try:
                method = method_of(self.instance, msg.method, bound_method)
                args, kwargs = self._call_arguments(msg, reply)
                result = method(*args, **kwargs)
                if asyncio.iscoroutine(result):
                    result = await result
            except Exception as exc:
                self.events.failed(exc)
                outcome = ("error", self._error_results(msg.return_ids, exc, self._where(msg)))
            else:
                outcome = self._results(msg.return_ids, result, name, self._where(msg),
                                        _owner(reply))
        self._finish_call(msg, *outcome, reply)


def _owner(reply: Connection | None) -> int | None:
    """The client id of whoever pushed a task or call over ``reply`` (None: the node)."""
    return getattr(reply, "owner", None) if reply is not None else None


def direct_socket_path(node_address: str, worker_id: str) -> str:
    """Where worker ``worker_id`` of the node at ``node_address`` (its Unix socket) takes
    tasks pushed directly: beside the node's socket, so both sides derive it alone."""
    return os.path.join(os.path.dirname(node_address[len("unix://"):]), f"{worker_id}.sock")


def _watch_stdin() -> None:
    try:
        while sys.stdin.buffer.read(1 << 16):
            pass
    except OSError:
        pass
    os._exit(0)   # the node that started us is gone


def main() -> None:
    """``python -m unipar.native.worker``: the secret on stdin, which stays open; EOF on it
    means the node is gone."""
    secret = bytes.fromhex(sys.stdin.buffer.readline().strip().decode())
    threading.Thread(target=_watch_stdin, name="unipar-watchdog", daemon=True).start()
    _serve(secret)


def forked_main(secret_hex: str, env: dict[str, str], lifeline: Any) -> None:
    """A worker forked by the node's fork server (boot.WorkerLauncher): ``env`` is this
    worker's part of the environment; EOF on ``lifeline`` means the node is gone."""
    os.environ.update(env)

    def watch() -> None:
        try:
            while True:
                lifeline.recv_bytes()
        except (EOFError, OSError):
            os._exit(0)
    threading.Thread(target=watch, name="unipar-watchdog", daemon=True).start()
    _serve(bytes.fromhex(secret_hex))


def _serve(secret: bytes) -> None:
    # Daemons ignore SIGINT; we inherit that, but cancel() needs it to raise KeyboardInterrupt
    # (only in the task's own code, never in the worker's: interrupts.py).
    interrupts.install()
    for entry in reversed(os.environ.get("UNIPAR_DRIVER_SYS_PATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(1, entry)
    role = os.environ.get("UNIPAR_WORKER_ROLE", "task")
    runtime = Runtime(role)
    node_address = os.environ["UNIPAR_NODE_ADDRESS"]
    wid = os.environ["UNIPAR_WORKER_ID"]
    # Listen before the node knows us: a lease on us (or a call to our actor) may come at once.
    Listener(direct_socket_path(node_address, wid), secret, runtime.accept)
    client = Client(node_address, secret, role="worker" if role == "task" else "actor",
                    worker_id=wid, handler=runtime.handle)
    client.log_sink = runtime.forward_log
    runtime.client = client
    install_streaming(runtime)
    setup = os.environ.get("UNIPAR_WORKER_SETUP", "")
    if setup:
        module, _, attr = setup.partition(":")
        hook: Callable[[Client], None] = getattr(importlib.import_module(module), attr)
        hook(client)
    env_tag = os.environ.get("UNIPAR_RUNTIME_ENV", "")
    if env_tag:   # before anything runs: the env's code must import when functions unpickle
        runtime.setup_error = prepare_runtime_env(client, env_tag, node_address)
    threading.Thread(target=runtime.flush_replies_forever, name="unipar-reply-flusher",
                     daemon=True).start()
    runtime.events = TaskEvents(client.conn.send)
    runtime.log_file = open_log(client.session_dir, wid)
    threading.Thread(target=runtime.events.run_forever, name="unipar-task-events",
                     daemon=True).start()
    def label() -> str:
        return runtime.label
    sys.stdout = Forward("stdout", label, runtime.log_conn)  # type: ignore[assignment]
    sys.stderr = Forward("stderr", label, runtime.log_conn)  # type: ignore[assignment]
    if runtime.log_file is not None:   # what tasks print is also kept in the worker's log file
        sys.stdout.tee = sys.stderr.tee = runtime.log_file.write  # type: ignore[attr-defined]
    try:
        runtime.run()
    finally:
        os._exit(0)
