"""The engine's client: what a driver — and every worker — uses to submit, put, get and wait.

One :class:`Client` per process, holding one connection to its node daemon (and one to the head,
opened on first use for named actors and cluster views)::

    submit_task ─▶ [RegisterFunction once per function] + SubmitTask ─▶ node
    put         ─▶ PutObject (inline)  or  Alloc ─▶ write file ─▶ PutObject(path)
    get / wait  ─▶ Subscribe (for refs it did not create) ... ◀─ ObjectReady pushed by the node

Results of tasks a client submitted are pushed to it as soon as they exist, so ``get`` on them
costs no extra round trip. A worker blocked in ``get``/``wait`` tells its node (``blocked``), which
lends its CPU to other tasks until it resumes.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import os
import sys
import threading
import time
from typing import Any, Callable, Sequence

import cloudpickle

from ...exceptions import (GetTimeoutError, ObjectLostError, ObjectStoreFullError, UniparError)
from ..wire import protocol as P
from ..wire import serialization as S
from .actor_calls import ActorCall, ActorRouter
from .direct import IDLE_GRACE, DirectPool, DirectTask, direct_values
from .refs import TRACKER, ActorId, NativeRef
from ..wire.chunks import CHUNK_SIZE
from .transfer import Downloads, upload
from ..wire.transport import Connection

REQUEST_TIMEOUT = 60.0


class _Entry:
    """What this process knows about one object: pending (kind None) or its location.

    ``local``: the result of a task pushed directly; only this process knows it (until
    :meth:`Client.promote` hands it to the node)."""

    __slots__ = ("kind", "payload", "path", "subscribed", "callbacks", "waiters", "local")

    def __init__(self, subscribed: bool = False, local: bool = False) -> None:
        self.local = local
        self.kind: str | None = None
        self.payload: Any = None
        self.path = ""
        self.subscribed = subscribed
        self.callbacks: list[Callable[[], None]] = []
        self.waiters: list[_Waiter] = []


class _Waiter:
    """One blocked get/wait: done when ``remaining`` more objects are ready (or one failed)."""

    __slots__ = ("remaining", "stop_on_error", "done")

    def __init__(self, remaining: int, stop_on_error: bool) -> None:
        self.remaining = remaining
        self.stop_on_error = stop_on_error
        self.done = False

    def hit(self, kind: str) -> bool:
        self.remaining -= 1
        if self.remaining <= 0 or (kind == "error" and self.stop_on_error):
            self.done = True
        return self.done


class ClusterGoneError(UniparError):
    """The node daemon this process was connected to went away."""


class Client:
    """A connection to one node daemon, shared by every thread of this process."""

    def __init__(self, node_address: str, secret: bytes, *, role: str = "driver",
                 worker_id: str = "", log_to_driver: bool = True,
                 handler: Callable[[P.Message], None] | None = None,
                 connect_timeout: float = 30.0) -> None:
        self.secret = secret
        self.role = role
        # A "remote" driver cannot map the node's files: it sends and receives object contents.
        self.remote = role == "remote"
        self.log_to_driver = log_to_driver
        self.handler = handler          # worker-side ops (run_task, ...), set by the worker
        self._prefix = os.urandom(8)
        self._counter = itertools.count(1)
        self._req_counter = itertools.count(1)
        self._cond = threading.Condition()
        self._entries: dict[bytes, _Entry] = {}
        self._reqs: dict[int, concurrent.futures.Future] = {}
        self._fn_keys: dict[str, str] = {}
        self._fn_blobs: dict[str, bytes] = {}
        self._no_args: dict[Any, Any] = {}   # packed "no arguments", per retry filter
        self.log_sink: Callable[[P.Log], None] | None = None   # a worker forwards nested output
        self._blocked_depth = 0
        self._block_lock = threading.Lock()
        self._hello = concurrent.futures.Future()
        self.dead = False
        self._head: Connection | None = None
        self._head_lock = threading.Lock()
        self._stop = threading.Event()
        # Generous: a worker may connect while its node daemon is still importing.
        self.conn = Connection(node_address, secret, timeout=connect_timeout)
        # Big objects reach a remote driver in chunks, assembled here (transfer.py).
        self._downloads = Downloads(self.conn.send, self._on_ready, self._entries.__contains__)
        self._reader = threading.Thread(target=self._read, args=(self.conn,),
                                        name="unipar-client-reader", daemon=True)
        self._reader.start()
        self.conn.send(P.Hello(role, worker_id, os.getpid()))
        # Refcount changes go out only after Hello: some may concern a previous session.
        self.conn.prelude = self._prelude
        info: P.HelloOk = self._hello.result(timeout=REQUEST_TIMEOUT)
        self.client_id = info.client_id
        self.node_id = info.node_id
        self.session_dir = info.session_dir
        self.inline_max = info.inline_max
        self.head_address = info.head_address
        # Tasks go straight to leased workers on this node; a remote driver (no Unix socket
        # to the workers) submits everything through the node.
        self.direct = DirectPool(self) if not self.remote else None
        self.actor_calls = ActorRouter(self)
        self._later: list[Callable[[], None]] = []   # writes held back for a burst (later())
        self._flusher = threading.Thread(target=self._flush_refs, name="unipar-ref-flusher",
                                         daemon=True)
        self._flusher.start()

    # -- plumbing ------------------------------------------------------------------------------
    def new_id(self) -> bytes:
        return self._prefix + next(self._counter).to_bytes(8, "big")

    def _prelude(self) -> P.Message | None:
        if not TRACKER.changes:
            return None
        adds, releases = TRACKER.drain()
        if releases:
            with self._cond:
                for oid in releases:
                    if not TRACKER.held(oid):
                        self._entries.pop(oid, None)
        if not adds and not releases:
            return None
        return P.RefUpdates(adds, releases)

    def _flush_refs(self) -> None:
        # Posted messages go out within ~a millisecond (letting a burst of submissions gather
        # into one write); refs dropped while nothing else is sent reach the node within 0.1 s.
        posted = self.conn.posted
        timeout = 0.1
        while not self._stop.is_set():
            if posted.wait(timeout):
                posted.clear()
                time.sleep(0.0005)
            if self.dead:
                return
            timeout = 0.1
            if self.direct is not None:   # leases idle for a while go back to the node
                due = self.direct.return_idle(IDLE_GRACE)
                if due is not None:
                    timeout = min(timeout, max(due - time.monotonic(), 0.001))
            try:
                self.flush_direct()
                if TRACKER.changes:
                    self.conn.send(None)
                else:
                    self.conn.flush()
            except ConnectionError:
                return

    def _read(self, conn: Connection) -> None:
        conn.serve_forever(self._dispatch)
        if conn is self.conn:
            self._connection_lost()

    def _connection_lost(self) -> None:
        self.dead = True
        error = ClusterGoneError("the unipar node daemon went away (was the cluster shut down?)")
        with self._cond:
            reqs, self._reqs = self._reqs, {}
            self._cond.notify_all()
        for fut in reqs.values():
            if not fut.done():
                fut.set_exception(error)
        if not self._hello.done():
            self._hello.set_exception(error)
        if self.handler is not None:
            self.handler(P.Shutdown())

    def _dispatch(self, msg: P.Message) -> None:
        op = msg.op
        if op == "object_ready":
            if msg.kind == "chunked":  # type: ignore[attr-defined]
                self._downloads.start(msg)  # type: ignore[arg-type]
            else:
                self._on_ready(msg)  # type: ignore[arg-type]
        elif op == "object_chunk":
            self._downloads.on_chunk(msg)  # type: ignore[arg-type]
        elif op == "reply":
            fut = self._reqs.pop(msg.req_id, None)  # type: ignore[attr-defined]
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif op == "log":
            self.show_log(msg)  # type: ignore[arg-type]
        elif op == "lease_granted" and self.direct is not None:
            self.direct.on_granted(msg)  # type: ignore[arg-type]
        elif op == "lease_refused" and self.direct is not None:
            self.direct.on_refused(msg)  # type: ignore[arg-type]
        elif op == "hello_ok":
            self._hello.set_result(msg)
        elif self.handler is not None:
            self.handler(msg)

    def show_log(self, msg: P.Log) -> None:
        """Output of a task: printed here (a driver) or passed on (a worker)."""
        if self.log_sink is not None:
            self.log_sink(msg)
            return
        if self.log_to_driver:
            stream = sys.stderr if msg.stream == "stderr" else sys.stdout
            try:
                stream.write(msg.text)
                stream.flush()
            except (ValueError, OSError):  # the stream was closed under us
                pass

    def _on_ready(self, msg: P.ObjectReady) -> None:
        self._resolve_entry(msg.oid, msg.kind, msg.payload, msg.path)

    def _resolve_entry(self, oid: bytes, kind: str, payload: Any, path: str,
                       local: bool = False) -> bool:
        """Record an object's value; wakes waiters and runs callbacks. False when nobody
        here holds the object any more (or it was resolved already)."""
        return not self._resolve_many([(oid, kind, payload, path, local)])

    def _resolve_many(self, found: list[tuple[bytes, str, Any, str, bool]]) -> list[bytes]:
        """Record many objects' values under one lock, one wake-up; returns the ids nobody
        here holds any more (or that were resolved already)."""
        unwanted: list[bytes] = []
        callbacks: list[Callable[[], None]] = []
        woke = False
        with self._cond:
            entries = self._entries
            for oid, kind, payload, path, local in found:
                entry = entries.get(oid)
                if entry is None or entry.kind is not None:
                    unwanted.append(oid)
                    continue
                entry.kind = kind
                entry.payload = payload
                entry.path = path
                entry.local = local
                if entry.callbacks:
                    callbacks.extend(entry.callbacks)
                    entry.callbacks = []
                if entry.waiters:
                    for waiter in entry.waiters:
                        woke = waiter.hit(kind) or woke
                    entry.waiters = []
            if woke:
                self._cond.notify_all()
        for callback in callbacks:
            callback()
        return unwanted

    # -- results of tasks pushed directly (called by DirectPool) ------------------------------
    def deliver(self, results: list) -> None:
        """Record direct tasks' results. Small ones stay here (local); big ones and ones
        holding refs the worker stored at the node for us (we hold them there)."""
        found = []
        at_node = set()
        for oid, kind, payload, path, _size, contained in results:
            if kind == "shm" or contained:
                at_node.add(oid)
            elif payload is not None:
                payload = bytes(payload)   # the frame's view: keep only this object's bytes
            found.append((oid, kind, payload, path, oid not in at_node))
        for oid in self._resolve_many(found):
            if oid in at_node:
                self.conn.post(P.RefUpdates([], [oid]))   # dropped meanwhile: let it go

    def fail_locally(self, return_ids: list[bytes], payload: bytes) -> None:
        for oid in return_ids:
            self._resolve_entry(oid, "error", payload, "", local=True)

    def promote(self, oids: Sequence[bytes]) -> None:
        """Hand our local objects among ``oids`` to the node (a ref to them is about to leave
        this process); waits for ones still being computed. Later messages on our node
        connection are therefore handled after the node knows them."""
        pending = self._local_pending(oids)
        if pending:
            self._wait_ready(pending, len(pending), None, stop_on_error=False)
        with self._cond:
            moving = []
            for oid in oids:
                entry = self._entries.get(oid)
                if entry is not None and entry.local and entry.kind is not None:
                    entry.local = False
                    moving.append((oid, entry.kind, entry.payload))
        for oid, kind, payload in moving:
            self.conn.post(P.PutObject(oid, kind, P.blob(payload), "", len(payload), []))

    def _local_pending(self, oids: Sequence[bytes]) -> list[bytes]:
        with self._cond:
            return [oid for oid in oids if (e := self._entries.get(oid)) is not None
                    and e.local and e.kind is None]

    def later(self, write: Callable[[], None]) -> None:
        """Run ``write`` (a flush held back so a burst shares writes) at the next get/wait,
        or from the flusher thread within about a millisecond."""
        self._later.append(write)
        if not self.conn.posted.is_set():
            self.conn.posted.set()

    def flush_direct(self) -> None:
        """Write what the direct paths (tasks and actor calls) hold back."""
        if self.direct is not None:
            self.direct.flush()
        while self._later:
            try:
                write = self._later.pop()
            except IndexError:
                break
            write()

    def request_async(self, make: Callable[[int], P.Message],
                      then: Callable[[concurrent.futures.Future], None]) -> None:
        """Send a request; ``then(future)`` runs (on the reader thread) when it is answered."""
        req_id = next(self._req_counter)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._reqs[req_id] = fut
        fut.add_done_callback(then)
        try:
            self.conn.send(make(req_id))
        except ConnectionError as exc:
            self._reqs.pop(req_id, None)
            fut.set_exception(exc)

    def ready_for(self, direct: bool, deps: Sequence[bytes], contained: Sequence[bytes],
                  then: Callable[[], None]) -> bool:
        """Whether a call with these arguments can leave now; if not, ``then`` runs when one
        more of what it waits for is ready. Direct: every dependency's value must be here
        (subscribing to those the node has); through the node: only our own unfinished
        local results hold it back (the node waits for the rest itself)."""
        wait_for: bytes | None = None
        unknown: list[bytes] = []
        with self._cond:
            for oid in deps:
                entry = self._entries.get(oid)
                if entry is None and direct:
                    entry = self._entries[oid] = _Entry()
                    unknown.append(oid)
                if entry is not None and entry.kind is None and (direct or entry.local):
                    wait_for = oid
                    break
            if wait_for is None:
                for oid in contained:
                    entry = self._entries.get(oid)
                    if entry is not None and entry.local and entry.kind is None:
                        wait_for = oid
                        break
            if wait_for is not None:
                self._entries[wait_for].callbacks.append(then)
        if unknown:
            self._subscribe(unknown)
            self.conn.flush()
        return wait_for is None

    def dep_values(self, deps: Sequence[bytes]) -> list | bytes:
        """``[oid, kind, payload, path]`` per dependency (all ready), or the packed error of
        the first that failed."""
        values = []
        with self._cond:
            for oid in deps:
                entry = self._entries[oid]
                if entry.kind == "error":
                    return entry.payload
                if entry.kind == "shm":
                    values.append([oid, "shm", None, entry.path])
                else:
                    values.append([oid, entry.kind, P.blob(entry.payload), ""])
        return values

    def call_via_node(self, actor_id: bytes, call: ActorCall) -> None:
        """Send a call through the node (the actor is elsewhere), which keeps it ordered."""
        self.promote(list(call.deps) + list(call.contained))
        with self._cond:
            for oid in call.return_ids:
                entry = self._entries.get(oid)
                if entry is not None:
                    entry.local = False
        self.conn.post(P.CallActor(actor_id, call.task_id, call.method, call.args, call.deps,
                                   call.contained, call.return_ids))
        call.keep = []

    def code_blob(self, key: str) -> bytes:
        return self._fn_blobs[key]

    def cancel_submitted(self) -> None:
        if self.direct is not None:
            self.direct.cancel_all()

    def request(self, make: Callable[[int], P.Message], *, head: bool = False,
                timeout: float = REQUEST_TIMEOUT) -> P.Reply:
        """Send a request and wait for its Reply; raises what the reply's error says."""
        req_id = next(self._req_counter)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._reqs[req_id] = fut
        conn = self._head_conn() if head else self.conn
        conn.send(make(req_id))
        try:
            reply: P.Reply = fut.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            self._reqs.pop(req_id, None)
            raise GetTimeoutError(f"no answer from the {'head' if head else 'node'} within "
                                  f"{timeout} s") from None
        if reply.error:
            if reply.error_kind == "store_full":
                raise ObjectStoreFullError(reply.error)
            if reply.error_kind == "value":
                raise ValueError(reply.error)
            raise UniparError(reply.error)
        return reply

    def _head_conn(self) -> Connection:
        with self._head_lock:
            if self._head is None or self._head.closed:
                self._head = Connection(self.head_address, self.secret)
                threading.Thread(target=self._read, args=(self._head,), name="unipar-head-reader",
                                 daemon=True).start()
            return self._head

    def close(self) -> None:
        self.actor_calls.close()
        if self.direct is not None:
            self.direct.close()
        self._stop.set()
        self.conn.posted.set()   # wake the flusher now rather than at its next tick
        try:
            self.conn.send(None)   # last refcount changes
        except ConnectionError:
            pass
        self.conn.close()
        if self._head is not None:
            self._head.close()
        for thread in (self._reader, self._flusher):
            if thread is not threading.current_thread():
                thread.join(timeout=2)

    # -- code ----------------------------------------------------------------------------------
    def _code_key(self, code_id: str, code: Any) -> str:
        """Register pickled code with the node once per process; returns its content key."""
        key = self._fn_keys.get(code_id)
        if key is None:
            try:
                data = cloudpickle.dumps(code)
            except Exception as exc:
                raise TypeError(f"could not serialize {code!r}: {exc}") from exc
            key = hashlib.blake2b(data, digest_size=16).hexdigest()
            self.conn.post(P.RegisterFunction(key, P.blob(data)))
            self._fn_keys[code_id] = key
            self._fn_blobs[key] = data
        return key

    def _pack_args(self, args: tuple, kwargs: dict, extra: Any = None
                   ) -> tuple[Any, list[bytes], list[bytes], list[NativeRef]]:
        """``(args payload, dependency ids, contained ids, refs to keep until sent)``.

        Top-level refs become dependencies (resolved to values before the call); refs nested
        deeper stay refs and are recorded as contained.
        """
        if not args and not kwargs:   # no arguments: the same bytes every time
            try:
                return self._no_args[extra], [], [], []
            except (KeyError, TypeError):
                pass
        deps: list[bytes] = []
        keep: list[NativeRef] = []

        def slot(value: Any) -> Any:
            if type(value) is NativeRef:
                deps.append(value.oid)
                return S.DepSlot(len(deps) - 1)
            return value
        args2 = tuple(slot(a) for a in args)
        kwargs2 = {k: slot(v) for k, v in kwargs.items()}
        data, buffers, contained = S.dumps((args2, kwargs2, extra))
        # A remote driver sends up to a chunk inline (it cannot write the node's files).
        if S.payload_size(data, buffers) <= (CHUNK_SIZE if self.remote else self.inline_max):
            packed = P.blob(S.pack(data, buffers))
            if not args and not kwargs and not contained:
                try:
                    self._no_args[extra] = packed
                except TypeError:   # an unhashable retry filter: not cached
                    pass
            return packed, deps, contained, keep
        # Big arguments travel through the object store as an object of their own; the task
        # names it as its last dependency.
        ref = self._put_large(data, buffers, contained)
        keep.append(ref)
        return None, deps + [ref.oid], [], keep

    # -- tasks ---------------------------------------------------------------------------------
    def submit_task(self, function: Any, function_id: str, name: str, args: tuple,
                    kwargs: dict, *, num_returns: int, resources: dict[str, float],
                    max_retries: int, retry_exceptions: Any) -> list[NativeRef]:
        key = self._code_key(function_id, function)
        payload, deps, contained, keep = self._pack_args(args, kwargs, retry_exceptions)
        task = DirectTask(self.new_id(), key, name, payload, deps,
                          [self.new_id() for _ in range(num_returns)], resources, max_retries,
                          keep)
        # Direct when every argument is a small value in hand (or a direct result still
        # being computed here); through the node when it holds or must hold what the task
        # needs: big arguments, refs nested in arguments, objects only it knows.
        direct = self.direct is not None and payload is not None and not contained
        ready = True   # every dependency's value is in hand (the usual case: none at all)
        with self._cond:
            for oid in deps if direct else ():
                entry = self._entries.get(oid)
                if entry is None or entry.kind not in ("inline", "error", None) or (
                        entry.kind is None and not entry.local):
                    direct = False
                    break
                ready = ready and entry.kind is not None
            entries = self._entries
            for oid in task.return_ids:
                entries[oid] = _Entry(subscribed=True, local=direct)
        refs = [NativeRef.owned(oid) for oid in task.return_ids]
        if not direct:
            self._when_local_ready(deps + contained, lambda: self.submit_via_node(task, contained))
        elif not deps:
            self.direct.submit(task)   # type: ignore[union-attr]
        else:
            task.keep = keep + [NativeRef(oid) for oid in deps]   # alive until it is done
            if ready:
                self._submit_direct(task)
            else:
                self._when_local_ready(deps, lambda: self._submit_direct(task))
        return refs

    def _when_local_ready(self, oids: Sequence[bytes], then: Callable[[], None]) -> None:
        """Call ``then`` once none of ``oids`` is a local object still being computed (at
        once, usually; else on the thread that delivers the last of them)."""
        pending = self._local_pending(oids)
        if not pending:
            then()
            return
        remaining = [len(pending)]
        lock = threading.Lock()

        def one_ready() -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                then()
        with self._cond:
            late = 0
            for oid in pending:
                entry = self._entries.get(oid)
                if entry is not None and entry.kind is None:
                    entry.callbacks.append(one_ready)
                else:
                    late += 1
        for _ in range(late):
            one_ready()

    def _submit_direct(self, task: DirectTask) -> None:
        entries = self._snapshot(task.deps)
        for entry in entries:
            if entry is not None and entry.kind == "error":   # a failed argument fails it
                self.fail_locally(task.return_ids, entry.payload)
                return
        values = direct_values(entries, task.deps)
        if values is None:   # an argument turned out big (stored at the node)
            self.submit_via_node(task)
            return
        task.values = values
        self.direct.submit(task)   # type: ignore[union-attr]

    def submit_via_node(self, task: DirectTask, contained: Sequence[bytes] = ()) -> None:
        """Submit through the node (which pins the arguments and queues the task)."""
        self.promote(list(task.deps) + list(contained))
        with self._cond:
            for oid in task.return_ids:
                entry = self._entries.get(oid)
                if entry is not None:
                    entry.local = False
        self.conn.post(P.SubmitTask(task.task_id, task.fn_key, task.name, task.args, task.deps,
                                    list(contained), task.return_ids, task.resources,
                                    task.retries_left))
        task.keep = []

    # -- objects -------------------------------------------------------------------------------
    def put(self, value: Any) -> NativeRef:
        data, buffers, contained = S.dumps(value)
        if contained:
            self.promote(contained)
        if S.payload_size(data, buffers) <= (CHUNK_SIZE if self.remote else self.inline_max):
            oid = self.new_id()
            packed = S.pack(data, buffers)
            # A small value holding no refs stays here until a ref to it leaves this process
            # (promote); one holding refs goes to the node now, which keeps those alive.
            entry = _Entry(subscribed=True, local=not contained)
            entry.kind, entry.payload = "inline", packed
            with self._cond:
                self._entries[oid] = entry
            if contained:
                self.conn.post(P.PutObject(oid, "inline", P.blob(packed), "", len(packed),
                                           contained))
            return NativeRef.owned(oid)
        return self._put_large(data, buffers, contained)

    def _put_large(self, data: bytes, buffers: list[Any], contained: list[bytes]) -> NativeRef:
        self.promote(contained)
        if self.remote:   # in chunks, written by the node (transfer.py)
            return NativeRef.owned(upload(self, data, buffers, contained))
        oid = self.new_id()
        size = S.payload_size(data, buffers) + 64 * (len(buffers) + 2)
        path = self.request(lambda r: P.Alloc(r, oid, size)).value
        real = S.write_file(path, data, buffers)
        entry = _Entry(subscribed=True)
        entry.kind, entry.path = "shm", path
        with self._cond:
            self._entries[oid] = entry
        self.conn.send(P.PutObject(oid, "shm", None, path, real, contained))
        return NativeRef.owned(oid)

    def _subscribe(self, oids: Sequence[bytes]) -> None:
        need = []
        with self._cond:
            for oid in oids:
                entry = self._entries.get(oid)
                if entry is None:
                    entry = self._entries[oid] = _Entry()
                if not entry.subscribed:
                    entry.subscribed = True
                    need.append(oid)
        if need:
            self.conn.post(P.Subscribe(need))

    def _block(self) -> None:
        if self.role != "worker":
            return
        with self._block_lock:
            self._blocked_depth += 1
            first = self._blocked_depth == 1
        if first:
            self.conn.send(P.Blocked())

    def _unblock(self) -> None:
        if self.role != "worker":
            return
        with self._block_lock:
            self._blocked_depth -= 1
            last = self._blocked_depth == 0
        if last:
            self.conn.send(P.Unblocked())

    def _scan(self, oids: Sequence[bytes]) -> tuple[list[int], list[int], bool]:
        """``(ready indices, pending indices, any failed)``; call with the lock held."""
        ready, pending, failed = [], [], False
        entries = self._entries
        for i, oid in enumerate(oids):
            entry = entries.get(oid)
            if entry is not None and entry.kind is not None:
                ready.append(i)
                failed = failed or entry.kind == "error"
            else:
                pending.append(i)
        return ready, pending, failed

    def _wait_ready(self, oids: Sequence[bytes], count: int, timeout: float | None,
                    stop_on_error: bool) -> list[int]:
        """Indices of ready ``oids`` once ``count`` are ready (or one failed, if
        ``stop_on_error``) or the timeout passed. Each object's arrival costs O(1): the waiter
        is a counter hung on the pending entries, not a rescan of all ``oids``."""
        with self._cond:
            ready, pending, failed = self._scan(oids)
            if len(ready) >= count or (failed and stop_on_error):
                return ready
        self._subscribe([oids[i] for i in pending])
        self.flush_direct()
        self.conn.flush()   # what we wait for may still sit in our own outbox
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            ready, pending, failed = self._scan(oids)
            if len(ready) >= count or (failed and stop_on_error) or timeout == 0:
                return ready
            waiter = _Waiter(count - len(ready), stop_on_error)
            for i in pending:   # once per occurrence: a repeated ref counts each time
                entry = self._entries.get(oids[i])
                if entry is None:
                    entry = self._entries[oids[i]] = _Entry(subscribed=True)
                entry.waiters.append(waiter)
        self._block()
        try:
            with self._cond:
                while not waiter.done:
                    if self.dead:
                        raise ClusterGoneError("the unipar node daemon went away")
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._cond.wait(1.0 if remaining is None else min(remaining, 1.0))
                ready, _pending, _failed = self._scan(oids)
                return ready
        finally:
            self._unblock()

    def get(self, refs: Sequence[NativeRef], timeout: float | None) -> list[Any]:
        oids = [r.oid for r in refs]
        for _attempt in range(3):
            ready = self._wait_ready(oids, len(oids), timeout, stop_on_error=True)
            entries = self._snapshot(oids)
            for entry in entries:
                if entry is not None and entry.kind == "error":
                    raise S.load_packed(entry.payload)
            if len(ready) < len(oids):
                raise GetTimeoutError(f"get timed out after {timeout} s: {len(oids) - len(ready)} "
                                      f"of {len(oids)} objects are not ready")
            try:
                return [self._load(e) for e in entries]  # type: ignore[arg-type]
            except FileNotFoundError:
                self._forget_locations(oids)   # spilled meanwhile: ask where it is now
        raise ObjectLostError("an object's file vanished repeatedly while reading it")

    def _snapshot(self, oids: Sequence[bytes]) -> list[_Entry | None]:
        with self._cond:
            return [self._entries.get(oid) for oid in oids]

    def _forget_locations(self, oids: Sequence[bytes]) -> None:
        with self._cond:
            for oid in oids:
                entry = self._entries.get(oid)
                if entry is not None and entry.kind == "shm":
                    entry.kind, entry.subscribed = None, False

    def _load(self, entry: _Entry) -> Any:
        if entry.kind == "inline":
            return S.load_packed(entry.payload)
        if entry.kind == "shm":
            return S.load_file(entry.path)
        raise S.load_packed(entry.payload)

    def wait(self, refs: Sequence[NativeRef], num_returns: int, timeout: float | None) -> set[int]:
        return set(self._wait_ready([r.oid for r in refs], num_returns, timeout, False))

    def future(self, ref: NativeRef) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def resolve() -> None:
            try:
                fut.set_result(self.get([ref], None)[0])
            except BaseException as exc:  # the future carries what get() would raise
                fut.set_exception(exc)
        self._subscribe([ref.oid])
        with self._cond:
            entry = self._entries.setdefault(ref.oid, _Entry(subscribed=True))
            pending = entry.kind is None
            if pending:
                entry.callbacks.append(lambda: threading.Thread(target=resolve, daemon=True).start())
        if not pending:
            resolve()
        return fut

    def cancel(self, ref: NativeRef, force: bool, recursive: bool = True) -> None:
        if self.direct is not None and self.direct.cancel(ref.oid, force):
            return
        if self.actor_calls.cancel(ref.oid):
            return
        self.conn.send(P.Cancel(ref.oid, force, recursive))

    # -- actors --------------------------------------------------------------------------------
    def create_actor(self, cls: type, class_id: str, args: tuple, kwargs: dict, *,
                     class_name: str, name: str | None, get_if_exists: bool,
                     resources: dict[str, float], max_restarts: int, max_task_retries: int,
                     concurrency: int, is_async: bool, meta: Any,
                     detached: bool = False) -> ActorId:
        actor_id = ActorId(os.urandom(16), name)
        if name is not None:
            reply = self.request(lambda r: P.RegisterName(r, name, actor_id.id,
                                                          P.blob(cloudpickle.dumps(meta)),
                                                          get_if_exists), head=True)
            existing, _meta, created = reply.value
            if not created:
                return ActorId(existing, name)
        key = self._code_key(class_id, cls)
        payload, deps, contained, keep = self._pack_args(args, kwargs)
        self.promote(deps + contained)
        if self.direct is not None:   # idle leases would hold what the actor may need
            self.direct.return_idle()
        self.conn.send(P.CreateActor(actor_id.id, key, class_name, payload, deps, contained,
                                     resources, max_restarts, max_task_retries, concurrency,
                                     is_async, name or "", detached))
        del keep
        return actor_id

    def call_actor(self, actor_id: ActorId, method: str, args: tuple, kwargs: dict,
                   num_returns: int) -> list[NativeRef]:
        payload, deps, contained, keep = self._pack_args(args, kwargs)
        call = ActorCall(self.new_id(), method, payload, deps, contained,
                         [self.new_id() for _ in range(num_returns)], keep)
        with self._cond:
            for oid in call.return_ids:   # local until we know the call goes through the node
                self._entries[oid] = _Entry(subscribed=True, local=True)
        refs = [NativeRef.owned(oid) for oid in call.return_ids]
        if deps or contained:   # alive until the call is done
            call.keep = keep + [NativeRef(oid) for oid in deps + contained]
        self.actor_calls.call(actor_id.id, call)
        return refs

    def kill_actor(self, actor_id: ActorId, no_restart: bool) -> None:
        self.request(lambda r: P.KillActor(r, actor_id.id, no_restart))
        if actor_id.name is not None and no_restart:
            self.request(lambda r: P.UnregisterName(r, actor_id.name, actor_id.id), head=True)

    def get_actor(self, name: str) -> tuple[ActorId, Any]:
        reply = self.request(lambda r: P.LookupName(r, name), head=True)
        if reply.value is None:
            raise ValueError(f"no live actor is named {name!r}")
        actor_id, meta = reply.value
        return ActorId(actor_id, name), cloudpickle.loads(meta)

    # -- cluster -------------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        return self.request(lambda r: P.ListNodes(r), head=True).value

    def node_info(self) -> dict[str, Any]:
        if self.direct is not None:   # what we hold idle is free for the asking
            self.direct.return_idle()
        return self.request(lambda r: P.NodeInfo(r)).value
