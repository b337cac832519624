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
from ..wire.chunks import CHUNK_SIZE
from ..wire.transport import Connection
from .actor_calls import ActorCall, ActorRouter
from .direct import IDLE_GRACE, DirectPool, DirectTask, direct_values
from .head import HeadChannel
from .objects import ClusterGoneError, Entry, ObjectTable, load
from .packing import Packer
from .refs import TRACKER, ActorId, NativeRef
from .streams import StreamTable
from .transfer import Downloads, upload

__all__ = ["Client", "ClusterGoneError"]

REQUEST_TIMEOUT = 60.0


class Client:
    """A connection to one node daemon, shared by every thread of this process."""

    def __init__(self, node_address: str, secret: bytes, *, role: str = "driver",
                 worker_id: str = "", log_to_driver: bool = True,
                 handler: Callable[[P.Message], None] | None = None,
                 connect_timeout: float = 30.0) -> None:
        """Connect to the node at ``node_address`` and say hello (blocks until answered).

        ``role``: "driver", "remote" (a driver that cannot map the node's files), "worker" or
        "actor"; ``handler`` gets the messages meant for a worker (run_task, ...).
        Raises ClusterGoneError (or ConnectionError) when the node cannot be reached.
        """
        self.secret = secret
        self.role = role
        # A "remote" driver cannot map the node's files: it sends and receives object contents.
        self.remote = role == "remote"
        self.log_to_driver = log_to_driver
        self.handler = handler          # worker-side ops (run_task, ...), set by the worker
        self._prefix = os.urandom(8)
        self._counter = itertools.count(1)
        self._req_counter = itertools.count(1)
        self.objects = ObjectTable()
        self._reqs: dict[int, concurrent.futures.Future] = {}
        self.log_sink: Callable[[P.Log], None] | None = None   # a worker forwards nested output
        self._blocked_depth = 0
        self._block_lock = threading.Lock()
        self._hello: concurrent.futures.Future = concurrent.futures.Future()
        self.dead = False
        self.head: HeadChannel | None = None   # opened on first use (head.py)
        self._stop = threading.Event()
        self._later: list[Callable[[], None]] = []   # writes held back for a burst (later())
        self._connect(node_address, role, worker_id, connect_timeout)
        # Tasks go straight to leased workers on this node; a remote driver (no Unix socket
        # to the workers) submits everything through the node.
        self.direct = DirectPool(self) if not self.remote else None
        self.actor_calls = ActorRouter(self)
        self.streams = StreamTable(self, self._blocking)   # streaming generators we submitted
        self._flusher = threading.Thread(target=self._flush_refs, name="unipar-ref-flusher",
                                         daemon=True)
        self._flusher.start()

    def _connect(self, node_address: str, role: str, worker_id: str, timeout: float) -> None:
        """Open the node connection, start its reader and wait for HelloOk."""
        # Generous: a worker may connect while its node daemon is still importing.
        self.conn = Connection(node_address, self.secret, timeout=timeout)
        # Big objects reach a remote driver in chunks, assembled here (transfer.py).
        self._downloads = Downloads(self.conn.send, self._on_ready,
                                    self.objects.entries.__contains__)
        self._handlers: dict[str, Callable[[Any], None]] = {
            P.ObjectReady.op: self._on_object_ready,
            P.ObjectChunk.op: self._downloads.on_chunk,
            P.Reply.op: self._on_reply,
            P.Log.op: self.show_log,
            P.LeaseGranted.op: self._on_lease_granted,
            P.LeaseRefused.op: self._on_lease_refused,
            P.HelloOk.op: self._hello.set_result,
            P.StreamItem.op: lambda msg: self.stream_item(msg, self.conn),
        }
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
        self.head = HeadChannel(self.head_address, self.secret)
        # A remote driver sends up to a chunk inline (it cannot write the node's files).
        self.packer = Packer(self.conn.post, CHUNK_SIZE if self.remote else self.inline_max,
                             self._put_large)

    # -- plumbing ------------------------------------------------------------------------------
    def new_id(self) -> bytes:
        return self._prefix + next(self._counter).to_bytes(8, "big")

    def to_node(self, msg: P.Message, now: bool = False) -> None:
        """Send ``msg`` to our node now, or queue it for the flusher (within ~1 ms)."""
        if now:
            self.conn.send(msg)
        else:
            self.conn.post(msg)

    def wake_flusher(self) -> None:
        if not self.conn.posted.is_set():
            self.conn.posted.set()

    def _prelude(self) -> P.Message | None:
        if not TRACKER.changes:
            return None
        adds, releases = TRACKER.drain()
        if releases:
            self.objects.drop(releases, TRACKER.held)
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
                report = self.direct.queue_report()   # for the node's task counts
                if report is not None:
                    self.conn.post(report)
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
        with self.objects.cond:
            reqs, self._reqs = self._reqs, {}
        self.objects.wake_all()
        for fut in reqs.values():
            if not fut.done():
                fut.set_exception(error)
        if not self._hello.done():
            self._hello.set_exception(error)
        if self.handler is not None:
            self.handler(P.Shutdown())

    def _dispatch(self, msg: P.Message) -> None:
        """Messages from the node (and the head): by op through ``_handlers``; what is not
        ours is a worker's (run_task, ...), passed to ``handler``."""
        handle = self._handlers.get(msg.op)
        if handle is not None:
            handle(msg)
        elif self.handler is not None:
            self.handler(msg)

    def _on_object_ready(self, msg: P.ObjectReady) -> None:
        if msg.kind == "chunked":
            self._downloads.start(msg)
        else:
            self._on_ready(msg)

    def _on_reply(self, msg: P.Reply) -> None:
        fut = self._reqs.pop(msg.req_id, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def _on_lease_granted(self, msg: P.LeaseGranted) -> None:
        if self.direct is not None:
            self.direct.on_granted(msg)

    def _on_lease_refused(self, msg: P.LeaseRefused) -> None:
        if self.direct is not None:
            self.direct.on_refused(msg)

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
        self.objects.resolve(msg.oid, msg.kind, msg.payload, msg.path)

    # -- results of work pushed directly (called by DirectPool and ActorRouter) ----------------
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
        for oid in self.objects.resolve_many(found):
            if oid in at_node:
                self.conn.post(P.RefUpdates([], [oid]))   # dropped meanwhile: let it go

    def stream_item(self, msg: P.StreamItem, conn: Connection) -> None:
        self.streams.on_item(msg, conn)

    def fail_locally(self, return_ids: Sequence[bytes], payload: bytes) -> None:
        for oid in return_ids:
            self.objects.resolve(oid, "error", payload, "", local=True)

    def promote(self, oids: Sequence[bytes]) -> None:
        """Hand our local objects among ``oids`` to the node (a ref to them is about to leave
        this process); waits for ones still being computed. Later messages on our node
        connection are therefore handled after the node knows them."""
        pending = self.objects.local_pending(oids)
        if pending:
            self._wait_ready(pending, len(pending), None, stop_on_error=False)
        for oid, kind, payload in self.objects.take_local(oids):
            self.conn.post(P.PutObject(oid, kind, P.blob(payload), "", len(payload), []))

    def later(self, write: Callable[[], None]) -> None:
        """Run ``write`` (a flush held back so a burst shares writes) at the next get/wait,
        or from the flusher thread within about a millisecond."""
        self._later.append(write)
        self.wake_flusher()

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
        more of what it waits for is ready (see :meth:`ObjectTable.ready_for`)."""
        ready, unknown = self.objects.ready_for(direct, deps, contained, then)
        if unknown:
            self._subscribe(unknown)
            self.conn.flush()
        return ready

    def dep_values(self, deps: Sequence[bytes]) -> list | bytes:
        return self.objects.dep_values(deps)

    def call_via_node(self, actor_id: bytes, call: ActorCall) -> None:
        """Send a call through the node (the actor is elsewhere), which keeps it ordered."""
        self.promote(list(call.deps) + list(call.contained))
        self.objects.not_local(call.return_ids)
        self.conn.post(P.CallActor(actor_id, call.task_id, call.method, call.args, call.deps,
                                   call.contained, call.return_ids))
        self._release_dropped(call.return_ids)
        call.keep = []

    def code_blob(self, key: str) -> bytes:
        return self.packer.code_blob(key)

    def cancel_submitted(self) -> None:
        if self.direct is not None:
            self.direct.cancel_all()

    def request(self, make: Callable[[int], P.Message], *, head: bool = False,
                timeout: float = REQUEST_TIMEOUT) -> P.Reply:
        """Send a request and wait for its Reply; raises what the reply's error says
        (HeadUnavailableError when ``head`` and the head stays unreachable: head.py)."""
        if head:
            assert self.head is not None
            answer = self.head.request(make, f"ask it {make(0).op}", timeout)
        else:
            req_id = next(self._req_counter)
            fut: concurrent.futures.Future = concurrent.futures.Future()
            self._reqs[req_id] = fut
            self.conn.send(make(req_id))
            try:
                answer = fut.result(timeout=timeout)
            except concurrent.futures.TimeoutError:
                self._reqs.pop(req_id, None)
                answer = None
        if answer is None:
            raise GetTimeoutError(f"no answer from the {'head' if head else 'node'} within "
                                  f"{timeout} s") from None
        reply: P.Reply = answer
        if reply.error:
            if reply.error_kind == "store_full":
                raise ObjectStoreFullError(reply.error)
            if reply.error_kind == "value":
                raise ValueError(reply.error)
            raise UniparError(reply.error)
        return reply

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
        if self.head is not None:
            self.head.close()
        for thread in (self._reader, self._flusher):
            if thread is not threading.current_thread():
                thread.join(timeout=2)

    # -- tasks ---------------------------------------------------------------------------------
    def submit_task(self, function: Any, function_id: str, name: str, args: tuple,
                    kwargs: dict, *, num_returns: int, resources: dict[str, float],
                    max_retries: int, retry_exceptions: Any) -> list[NativeRef]:
        """Submit one task; returns a ref per return value.

        Direct (pushed to a leased worker) when every argument is a small value in hand (or a
        direct result still being computed here); through the node when it holds or must hold
        what the task needs: big arguments, refs nested in arguments, objects only it knows.
        """
        key = self.packer.code_key(function_id, function)
        payload, deps, contained, keep = self.packer.pack_args(args, kwargs, retry_exceptions)
        task = DirectTask(self.new_id(), key, name, payload, deps,
                          [self.new_id() for _ in range(num_returns)], resources, max_retries,
                          keep)
        direct = self.direct is not None and payload is not None and not contained
        ready = True   # every dependency's value is in hand (the usual case: none at all)
        with self.objects.cond:
            entries = self.objects.entries
            for oid in deps if direct else ():
                entry = entries.get(oid)
                if entry is None or entry.kind not in ("inline", "error", None) or (
                        entry.kind is None and not entry.local):
                    direct = False
                    break
                ready = ready and entry.kind is not None
            # Local until posted (submit_via_node says otherwise): a task using one of these
            # must not reach the node before this one, which may wait for local arguments.
            for oid in task.return_ids:
                entries[oid] = Entry(subscribed=True, local=True)
        refs = [NativeRef.owned(oid) for oid in task.return_ids]
        if not direct:
            # Until the node has the task (and pins what it names), we hold its arguments:
            # the caller may drop its own handles to refs nested in them at once.
            task.keep = keep + [NativeRef(oid) for oid in deps + contained]
            self.objects.when_local_ready(deps + contained,
                                          lambda: self.submit_via_node(task, contained))
        elif not deps:
            self.direct.submit(task)   # type: ignore[union-attr]
        else:
            task.keep = keep + [NativeRef(oid) for oid in deps]   # alive until it is done
            if ready:
                self._submit_direct(task)
            else:
                self.objects.when_local_ready(deps, lambda: self._submit_direct(task))
        return refs

    def _submit_direct(self, task: DirectTask) -> None:
        entries = self.objects.snapshot(task.deps)
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
        self.objects.not_local(task.return_ids)
        self.conn.post(P.SubmitTask(task.task_id, task.fn_key, task.name, task.args, task.deps,
                                    list(contained), task.return_ids, task.resources,
                                    task.retries_left))
        self._release_dropped(task.return_ids)
        task.keep = []

    def _release_dropped(self, return_ids: Sequence[bytes]) -> None:
        """Release the results of work just posted to the node that this process dropped
        before it posted it: their release went out first, while the node did not know them
        yet (it ignored it), and the node now holds them for us. A release drained after the
        post is queued behind it, so none is missed; one sent twice is harmless."""
        dropped = [oid for oid in return_ids if not TRACKER.held(oid)]
        if dropped:
            self.conn.post(P.RefUpdates([], dropped))

    # -- objects -------------------------------------------------------------------------------
    def put(self, value: Any) -> NativeRef:
        """Store ``value``; small ones stay here until a ref to them leaves this process."""
        data, buffers, contained = S.dumps(value)
        if contained:
            self.promote(contained)
        if S.payload_size(data, buffers) <= (CHUNK_SIZE if self.remote else self.inline_max):
            oid = self.new_id()
            packed = S.pack(data, buffers)
            # A small value holding no refs stays here until a ref to it leaves this process
            # (promote); one holding refs goes to the node now, which keeps those alive.
            entry = Entry(subscribed=True, local=not contained)
            entry.kind, entry.payload = "inline", packed
            self.objects.add(oid, entry)
            ref = NativeRef.owned(oid)   # before any wait: if the wait fails, it releases
            if contained:
                self.conn.post(P.PutObject(oid, "inline", P.blob(packed), "", len(packed),
                                           contained))
                # The value may reach a worker directly (a task's argument), which then asks
                # the node for the refs inside: the node must have them (and this value's
                # pins on them) first. A ping answered after them says it has.
                self.request(lambda r: P.Ping(r))
            return ref
        return self._put_large(data, buffers, contained)

    def _put_large(self, data: bytes, buffers: list[Any], contained: list[bytes]) -> NativeRef:
        self.promote(contained)
        if self.remote:   # in chunks, written by the node (transfer.py)
            return NativeRef.owned(upload(self, data, buffers, contained))
        oid = self.new_id()
        size = S.payload_size(data, buffers) + 64 * (len(buffers) + 2)
        path = self.request(lambda r: P.Alloc(r, oid, size)).value
        real = S.write_file(path, data, buffers)
        entry = Entry(subscribed=True)
        entry.kind, entry.path = "shm", path
        self.objects.add(oid, entry)
        self.conn.send(P.PutObject(oid, "shm", None, path, real, contained))
        return NativeRef.owned(oid)

    def _subscribe(self, oids: Sequence[bytes]) -> None:
        need = self.objects.unsubscribed(oids)
        if need:
            self.conn.post(P.Subscribe(need))

    def _blocking(self, blocked: bool) -> None:
        """A worker waiting in get/wait tells its node, which lends its CPU meanwhile."""
        if self.role != "worker":
            return
        with self._block_lock:
            self._blocked_depth += 1 if blocked else -1
            edge = self._blocked_depth == (1 if blocked else 0)
        if edge:
            self.conn.send(P.Blocked() if blocked else P.Unblocked())

    def _prepare_wait(self, pending: list[bytes]) -> None:
        self._subscribe(pending)
        self.flush_direct()
        self.conn.flush()   # what we wait for may still sit in our own outbox

    def _wait_ready(self, oids: Sequence[bytes], count: int, timeout: float | None,
                    stop_on_error: bool) -> Sequence[int]:
        return self.objects.wait_ready(oids, count, timeout, stop_on_error,
                                       self._prepare_wait, self._blocking)

    def get(self, refs: Sequence[NativeRef], timeout: float | None) -> list[Any]:
        """The values of ``refs``; raises the first remote error, or GetTimeoutError."""
        oids = [r.oid for r in refs]
        for _attempt in range(3):
            ready = self._wait_ready(oids, len(oids), timeout, stop_on_error=True)
            entries = self.objects.snapshot(oids)
            for entry in entries:
                if entry is not None and entry.kind == "error":
                    raise S.load_packed(entry.payload)
            if len(ready) < len(oids):
                raise GetTimeoutError(f"get timed out after {timeout} s: {len(oids) - len(ready)} "
                                      f"of {len(oids)} objects are not ready")
            try:
                return [load(e) for e in entries]  # type: ignore[arg-type]
            except FileNotFoundError:
                self.objects.forget_locations(oids)   # spilled meanwhile: ask where it is now
        raise ObjectLostError("an object's file vanished repeatedly while reading it")

    def wait(self, refs: Sequence[NativeRef], num_returns: int,
             timeout: float | None) -> Sequence[int]:
        """Positions of the ready ``refs`` (distinct, ascending)."""
        return self._wait_ready([r.oid for r in refs], num_returns, timeout, False)

    def future(self, ref: NativeRef) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def resolve() -> None:
            try:
                fut.set_result(self.get([ref], None)[0])
            except BaseException as exc:  # the future carries what get() would raise
                fut.set_exception(exc)
        self._subscribe([ref.oid])
        with self.objects.cond:
            entry = self.objects.entries.setdefault(ref.oid, Entry(subscribed=True))
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
        key = self.packer.code_key(class_id, cls)
        payload, deps, contained, keep = self.packer.pack_args(args, kwargs)
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
        payload, deps, contained, keep = self.packer.pack_args(args, kwargs)
        call = ActorCall(self.new_id(), method, payload, deps, contained,
                         [self.new_id() for _ in range(num_returns)], keep)
        for oid in call.return_ids:   # local until we know the call goes through the node
            self.objects.add(oid, Entry(subscribed=True, local=True))
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
