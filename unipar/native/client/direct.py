"""The direct path: tasks pushed from a client straight to workers it leased from its node.

The node daemon is a scheduler of *leases*, not of tasks on this path::

    client                               node                         worker
      submit ─▶ queue (per shape) ─ RequestLease ─▶ scheduler ─ LeaseGranted ─▶ client
      connect to the worker's socket (once per worker), Attach(client id)
      RunTask, RunTask, ... ─────────────────────────────────────────────────▶ runs them in order
      ◀──────────────────────────────────────────────────────────────── TaskDone (result inline)
      ... the next ready task of the same shape reuses the lease ...
      ReturnLease (idle for IDLE_GRACE) ─▶ scheduler: the worker is free again

A lease carries up to ``depth`` tasks at once, where depth adapts to how long that function's
tasks take (about PIPELINE_BUDGET seconds of queued work per worker), so a thousand no-op tasks
share a few writes while a few long tasks spread over every worker. Nothing is queued behind a
task that may take long (unknown or slow function); and once a lease is idle with nothing left
to push, tasks queued behind others are taken back (``TakeBack``: the worker gives back those
not started) and run there, so a task never waits on a busy worker while a slot is free. Small
results stay with
the client that submitted the task (it *owns* them) until a ref to them leaves the process; the
client then hands them to its node first (:meth:`Client.promote`). Big results and results
holding refs are stored at the node by the worker on the owner's behalf (``PutFor``).

Failures: a worker that dies drops its connection; its unfinished tasks are retried on another
lease (within ``max_retries``) or fail with WorkerCrashedError. A task whose retry filter
matches (``retry_exceptions``) comes back with status "retry" and is queued again.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Protocol

from ...exceptions import TaskCancelledError, WorkerCrashedError
from ..wire import protocol as P
from ..wire import serialization as S
from ..wire.transport import Connection
from .delivery import Delivery

IDLE_GRACE = 0.02          # an idle lease is kept this long for the next task of its shape
PIPELINE_BUDGET = 0.004    # seconds of queued work a lease may carry
MAX_DEPTH = 64             # tasks in flight on one lease, at most
MAX_REQUESTS = 8           # lease requests outstanding per shape, at most
QUEUE_REPORT_S = 0.1       # how often, at most, the node hears what waits here (QueueReport)


class DirectTask:
    """One task on the direct path, from submission until its results are delivered."""

    __slots__ = ("task_id", "fn_key", "name", "args", "deps", "return_ids", "resources",
                 "retries_left", "keep", "cancelled", "lease", "pushed_at", "values", "solo", "asked")

    def __init__(self, task_id: bytes, fn_key: str, name: str, args: Any, deps: list[bytes],
                 return_ids: list[bytes], resources: dict, retries: int, keep: list) -> None:
        self.task_id = task_id
        self.fn_key = fn_key
        self.name = name
        self.args = args
        self.deps = deps
        self.return_ids = return_ids
        self.resources = resources
        self.retries_left = retries
        self.keep = keep                 # refs that must live until the task is done
        self.cancelled = False
        self.lease: _Lease | None = None
        self.pushed_at = 0.0
        self.values: list = []           # [oid, kind, payload, path] per dependency
        self.solo = False                # may take long: nothing is queued behind it
        self.asked = False               # its worker was asked to give it back


class _Lease:
    __slots__ = ("lease_id", "shape", "worker_id", "pid", "gpu_ids", "conn", "inflight",
                 "idle_since", "killed", "last_done", "solo", "yielded")

    def __init__(self, lease_id: bytes, shape: "_Shape") -> None:
        self.lease_id = lease_id
        self.shape = shape
        self.worker_id = ""
        self.pid = 0
        self.gpu_ids: list[int] = []
        self.conn: _WorkerConn | None = None
        self.inflight: dict[bytes, DirectTask] = {}
        self.idle_since = 0.0
        self.killed = False
        self.last_done = 0.0
        self.solo = 0              # tasks in flight that nothing may wait behind
        self.yielded = False       # gave back its queued tasks: takes no more until it drains

    def open(self) -> bool:
        """Whether tasks may be pushed onto this lease now."""
        return self.conn is not None and not self.killed and not self.yielded

    def backlog(self) -> bool:
        """Whether tasks wait here behind another (which another worker could run now)."""
        return len(self.inflight) > 1 and not self.killed


class _Shape:
    """Tasks of one resource demand: their queue and the leases that run them."""

    __slots__ = ("resources", "queue", "leases", "requested")

    def __init__(self, resources: dict) -> None:
        self.resources = resources
        self.queue: collections.deque[DirectTask] = collections.deque()
        self.leases: list[_Lease] = []
        self.requested: set[bytes] = set()


class _WorkerConn:
    """One connection to one worker's socket, reused by every lease on that worker."""

    __slots__ = ("worker_id", "conn", "fns", "lease")

    def __init__(self, worker_id: str, conn: Connection) -> None:
        self.worker_id = worker_id
        self.conn = conn
        self.fns: set[str] = set()       # functions this worker has been sent
        self.lease: _Lease | None = None


class TaskOwner(Delivery, Protocol):
    """What the direct path may ask of its client besides delivering results."""

    def code_blob(self, key: str) -> bytes:
        """The pickled function registered under ``key`` (sent once per worker)."""

    def submit_via_node(self, task: DirectTask) -> None:
        """Take over a task this pool cannot run (no lease to be had): through the node."""


class DirectPool:
    """The client's leases and the tasks it pushes over them. Thread-safe: ``lock`` guards
    all state; messages are queued under it and written after it is released."""

    def __init__(self, client: TaskOwner) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.shapes: dict[tuple, _Shape] = {}
        self.shape_of: dict[int, _Shape] = {}           # id(resources dict) -> its shape
        self.pending_leases: dict[bytes, _Shape] = {}
        self.tasks: dict[bytes, DirectTask] = {}        # by return id, until done
        self.conns: dict[str, _WorkerConn] = {}         # by worker id
        self.durations: dict[str, float] = {}           # per function: smoothed run time
        self.unflushed: set[Connection] = set()         # pushed to, not yet written
        self.closed = False
        self.reported: list = []                        # the last QueueReport sent
        self.reported_at = 0.0

    # -- submitting ----------------------------------------------------------------------------
    def submit(self, task: DirectTask) -> None:
        """Queue a task whose dependencies are all ready here (inline values).

        A task pushed to an idle worker is written at once (latency); one pushed behind
        others waits for :meth:`flush` — the next ``get``/``wait``, the client's flusher
        within a millisecond, or a write of many — so a burst leaves in a few writes."""
        writes: list[Connection] = []
        with self.lock:
            # Demands come from frozen task options, one dict per options object: look the
            # shape up by the dict's identity first (the shape keeps the dict alive).
            shape = self.shape_of.get(id(task.resources))
            if shape is None:
                shape_key = tuple(sorted(task.resources.items()))
                shape = self.shapes.get(shape_key)
                if shape is None:
                    shape = self.shapes[shape_key] = _Shape(task.resources)
                if shape.resources is task.resources:
                    self.shape_of[id(task.resources)] = shape
            for oid in task.return_ids:
                self.tasks[oid] = task
            shape.queue.append(task)
            self._pump(shape, writes)
            lease = task.lease
            now = lease is not None and len(lease.inflight) == 1
            if writes and not now:
                self.unflushed.update(writes)
        if now:
            self._write(writes)
        elif writes:
            self.client.wake_flusher()

    def flush(self) -> None:
        """Write what was pushed but not yet written."""
        if not self.unflushed:
            return
        with self.lock:
            writes, self.unflushed = list(self.unflushed), set()
        self._write(writes)

    def _depth(self, fn_key: str) -> int:
        took = self.durations.get(fn_key)
        if took is None:
            return 1   # unknown yet: one at a time until the first one tells how long it takes
        return max(1, min(MAX_DEPTH, int(PIPELINE_BUDGET / max(took, 1e-6))))

    def _pump(self, shape: _Shape, writes: list[Connection]) -> None:
        """Push queued tasks onto leases with room; ask for more leases if tasks still wait.

        Pipelining (tasks queued on a worker behind the one it runs) is only for tasks known
        to be short, and never behind one that may take long (``solo``); once nothing is left
        to push and a lease is idle, what waits behind others is taken back (:meth:`_steal`).
        """
        for lease in shape.leases:
            if not shape.queue:
                break
            if not lease.open() or (lease.inflight and lease.solo):
                continue
            depth = self._depth(shape.queue[0].fn_key)
            if len(lease.inflight) >= depth:
                continue
            while shape.queue and len(lease.inflight) < depth and not lease.solo:
                self._push(lease, shape.queue.popleft())
            if lease.conn.conn not in writes:   # type: ignore[union-attr]
                writes.append(lease.conn.conn)   # type: ignore[union-attr]
        backlog = False
        if not shape.queue:
            backlog = self._steal(shape, writes)
        want = min(len(shape.queue) + backlog, MAX_REQUESTS) - len(shape.requested)
        label = f"task {shape.queue[0].name}" if shape.queue else "a task"
        for _ in range(max(want, 0)):
            lease_id = self.client.new_id()
            shape.requested.add(lease_id)
            self.pending_leases[lease_id] = shape
            self.client.to_node(P.RequestLease(lease_id, shape.resources, label))

    def _steal(self, shape: _Shape, writes: list[Connection]) -> bool:
        """With a lease of ``shape`` idle, take back the later half of the tasks queued
        behind others (the workers answer "returned" for those not started; halves, so the
        end of a burst evens out in a few rounds instead of bouncing). Without an idle
        lease, returns whether any task waits behind another: one more lease is then worth
        asking for."""
        backlogged = [lease for lease in shape.leases if lease.backlog()]
        if not backlogged:
            return False
        if not any(lease.open() and not lease.inflight for lease in shape.leases):
            return True
        for lease in backlogged:
            behind = [task for task in list(lease.inflight.values())[1:] if not task.asked]
            if not behind:
                continue
            lease.yielded = True   # no more pushes onto it until it drains
            take = behind[len(behind) // 2:]
            for task in take:
                task.asked = True
            conn = lease.conn.conn   # type: ignore[union-attr]
            conn.post(P.TakeBack([task.task_id for task in take]))
            if conn not in writes:
                writes.append(conn)
        return False

    def _push(self, lease: _Lease, task: DirectTask) -> None:
        wc = lease.conn
        assert wc is not None
        fn_blob = None
        if task.fn_key not in wc.fns:
            fn_blob = P.blob(self.client.code_blob(task.fn_key))
            wc.fns.add(task.fn_key)
        task.lease = lease
        task.pushed_at = time.perf_counter()
        task.solo = self._depth(task.fn_key) == 1
        task.asked = False
        lease.solo += task.solo
        lease.inflight[task.task_id] = task
        wc.conn.post(P.RunTask(task.task_id, task.fn_key, fn_blob, task.name, task.args,
                               task.values, task.return_ids, lease.gpu_ids))

    @staticmethod
    def _write(writes: list[Connection]) -> None:
        for conn in writes:
            try:
                conn.flush()
            except ConnectionError:
                pass   # its reader sees the drop and retries the tasks

    # -- node replies --------------------------------------------------------------------------
    def on_granted(self, msg: P.LeaseGranted) -> None:
        with self.lock:
            shape = self.pending_leases.pop(msg.lease_id, None)
            if shape is not None:
                shape.requested.discard(msg.lease_id)
            wanted = shape is not None and not self.closed and (
                bool(shape.queue) or any(lease.backlog() for lease in shape.leases))
        if not wanted:
            self.client.to_node(P.ReturnLease(msg.lease_id))
            return
        try:
            wc = self._connect(msg.worker_id, msg.address)
        except (OSError, ConnectionError, P.ProtocolError):
            # The worker died between grant and connect: the node notices and frees it.
            self.client.to_node(P.ReturnLease(msg.lease_id))
            self.on_refused(P.LeaseRefused(msg.lease_id, "worker gone"))
            return
        writes: list[Connection] = []
        with self.lock:
            lease = _Lease(msg.lease_id, shape)   # type: ignore[arg-type]
            lease.worker_id, lease.pid, lease.gpu_ids = msg.worker_id, msg.pid, list(msg.gpu_ids)
            lease.conn, wc.lease = wc, lease
            shape.leases.append(lease)   # type: ignore[union-attr]
            self._pump(shape, writes)     # type: ignore[arg-type]
        self._write(writes)

    def _connect(self, worker_id: str, address: str) -> _WorkerConn:
        wc = self.conns.get(worker_id)
        if wc is not None and not wc.conn.closed:
            return wc
        conn = Connection(address, self.client.secret)
        wc = _WorkerConn(worker_id, conn)
        conn.send(P.Attach(self.client.client_id))
        self.conns[worker_id] = wc
        threading.Thread(target=self._read, args=(wc,), name="unipar-direct-reader",
                         daemon=True).start()
        return wc

    def on_refused(self, msg: P.LeaseRefused) -> None:
        """No lease from this node now: what waits for one goes through the node instead."""
        with self.lock:
            shape = self.pending_leases.pop(msg.lease_id, None)
            if shape is None:
                return
            shape.requested.discard(msg.lease_id)
            moved = list(shape.queue)
            shape.queue.clear()
            for task in moved:
                for oid in task.return_ids:
                    self.tasks.pop(oid, None)
        for task in moved:
            self.client.submit_via_node(task)

    # -- worker replies ------------------------------------------------------------------------
    def _read(self, wc: _WorkerConn) -> None:
        # Results of one read are handled as a batch: one lock, one round of pushes (the
        # next tasks), one wake-up of the threads waiting for them.
        done: list[P.TaskDone] = []

        def on_message(msg: P.Message) -> None:
            if msg.op == "task_done":
                done.append(msg)  # type: ignore[arg-type]
            elif msg.op == "log":
                self._settle(wc, done)   # output keeps its place before later results
                self.client.show_log(msg)  # type: ignore[arg-type]
            elif msg.op == "stream_item":   # a generator's value, before its task's end
                self.client.stream_item(msg, wc.conn)  # type: ignore[arg-type]
        wc.conn.serve_forever(on_message, lambda: self._settle(wc, done))
        self._settle(wc, done)
        self._worker_lost(wc)

    def _settle(self, wc: _WorkerConn, done: list[P.TaskDone]) -> None:
        if not done:
            return
        writes: list[Connection] = []
        results: list = []
        cancelled: list[DirectTask] = []
        with self.lock:
            lease = wc.lease
            returned: list[DirectTask] = []
            for msg in done:
                task = lease.inflight.pop(msg.task_id, None) if lease is not None else None
                if task is None:
                    continue
                lease.solo -= task.solo   # type: ignore[union-attr]
                task.lease = None
                if msg.status == "returned":   # taken back unstarted: runs elsewhere
                    (cancelled if task.cancelled else returned).append(task)
                    continue
                self._learn(lease, task)   # type: ignore[arg-type]
                if msg.status == "retry" and task.retries_left != 0 and not task.cancelled:
                    task.retries_left -= 1 if task.retries_left > 0 else 0
                    lease.shape.queue.appendleft(task)   # type: ignore[union-attr]
                else:   # (a "retry" with no retries left carries error records)
                    self._forget_task(task)
                    results.extend(msg.results)
            done.clear()
            if lease is not None:
                lease.shape.queue.extendleft(reversed(returned))
                if not lease.inflight:
                    lease.idle_since = time.monotonic()
                    lease.yielded = False
                self._pump(lease.shape, writes)
            for task in cancelled:
                self._forget_task(task)
        self._write(writes)
        if results:
            self.client.deliver(results)
        for task in cancelled:
            self.client.fail_locally(task.return_ids, S.pack_error(
                TaskCancelledError(f"task {task.name} was cancelled")))

    def _learn(self, lease: _Lease, task: DirectTask) -> None:
        """Update the function's smoothed run time from this completion."""
        now = time.perf_counter()
        # With others queued behind it on the worker, the time since the previous completion
        # is its run time; alone, it is the round trip (an upper bound: fine for sizing).
        took = now - max(task.pushed_at, lease.last_done)
        lease.last_done = now
        old = self.durations.get(task.fn_key)
        self.durations[task.fn_key] = took if old is None else 0.8 * old + 0.2 * took

    def _forget_task(self, task: DirectTask) -> None:
        for oid in task.return_ids:
            self.tasks.pop(oid, None)
        task.keep = []
        task.lease = None

    def _worker_lost(self, wc: _WorkerConn) -> None:
        """The worker's connection dropped: it died (or was killed by a forced cancel)."""
        failed: list[DirectTask] = []
        writes: list[Connection] = []
        with self.lock:
            if self.conns.get(wc.worker_id) is wc:
                del self.conns[wc.worker_id]
            wc.conn.close()
            lease, wc.lease = wc.lease, None
            if lease is None:
                return
            shape = lease.shape
            if lease in shape.leases:
                shape.leases.remove(lease)
            for task in reversed(list(lease.inflight.values())):
                if task.cancelled:
                    continue   # already failed with TaskCancelledError
                if lease.killed:   # another task's forced cancel took this one down with it
                    shape.queue.appendleft(task)
                elif task.retries_left != 0:
                    task.retries_left -= 1 if task.retries_left > 0 else 0
                    shape.queue.appendleft(task)
                else:
                    self._forget_task(task)
                    failed.append(task)
            lease.inflight.clear()
            self._pump(shape, writes)
        self._write(writes)
        for task in failed:
            error = WorkerCrashedError(
                f"the worker process (pid {lease.pid}) running task {task.name} died and its "
                "retries are used up")
            self.client.fail_locally(task.return_ids, S.pack_error(error))

    # -- cancel, idle leases, close ------------------------------------------------------------
    def cancel(self, oid: bytes, force: bool) -> bool:
        """Cancel the direct task making ``oid``; False if none (not direct, or done)."""
        with self.lock:
            task = self.tasks.get(oid)
            if task is None or task.cancelled:
                return task is not None
            task.cancelled = True
            lease = task.lease
            if lease is None:   # still queued here
                for shape in self.shapes.values():
                    if task in shape.queue:
                        shape.queue.remove(task)
                self._forget_task(task)
            elif force:
                lease.killed = True
            conn = lease.conn.conn if lease is not None and lease.conn is not None else None
        error = S.pack_error(TaskCancelledError(f"task {task.name} was cancelled"))
        if lease is None or force:
            self.client.fail_locally(task.return_ids, error)
        if lease is not None and force:
            self.client.to_node(P.ReturnLease(lease.lease_id, True), now=True)
        elif conn is not None:
            try:
                conn.send(P.CancelTask(task.task_id))
            except ConnectionError:
                pass
        return True

    def cancel_all(self) -> None:
        """Cancel every task this client pushed that is not done (its parent was cancelled)."""
        with self.lock:
            oids = [task.return_ids[0] for task in set(self.tasks.values()) if task.return_ids]
        for oid in oids:
            self.cancel(oid, False)

    def return_idle(self, older_than: float = 0.0) -> float | None:
        """Give back leases idle for ``older_than`` seconds; returns when the next idle lease
        is due (a monotonic time), or None when none is idle."""
        now = time.monotonic()
        due: float | None = None
        with self.lock:
            for shape in self.shapes.values():
                for lease in list(shape.leases):
                    if lease.inflight or shape.queue:
                        continue
                    if now - lease.idle_since >= older_than:
                        shape.leases.remove(lease)
                        if lease.conn is not None:
                            lease.conn.lease = None
                        self.client.to_node(P.ReturnLease(lease.lease_id))
                    else:
                        at = lease.idle_since + older_than
                        due = at if due is None else min(due, at)
        return due

    def queue_report(self) -> P.QueueReport | None:
        """What waits here for a worker (queued, or pipelined behind another task), for the
        node's task counts: a QueueReport when it changed, at most every QUEUE_REPORT_S."""
        now = time.monotonic()
        if now - self.reported_at < QUEUE_REPORT_S:
            return None
        self.reported_at = now
        queued = []
        with self.lock:
            for shape in self.shapes.values():
                behind = [t for lease in shape.leases for t in list(lease.inflight.values())[1:]]
                count = len(shape.queue) + len(behind)
                if count:
                    queued.append([(shape.queue[0] if shape.queue else behind[0]).name, count])
        if queued == self.reported:
            return None
        self.reported = queued
        return P.QueueReport(queued)

    def busy(self) -> bool:
        with self.lock:
            return bool(self.tasks)

    def close(self) -> None:
        """Return every lease and close the worker connections."""
        with self.lock:
            self.closed = True
            for shape in self.shapes.values():
                for lease in shape.leases:
                    self.client.to_node(P.ReturnLease(lease.lease_id))
                shape.leases.clear()
            conns = list(self.conns.values())
            self.conns.clear()
        for wc in conns:
            wc.lease = None
            wc.conn.close()


def direct_values(entries: list[Any], deps: list[bytes]) -> list | None:
    """``[oid, kind, payload, path]`` per dependency, from this process's entries, when all
    are small values (or errors) in hand; None otherwise."""
    values = []
    for oid, entry in zip(deps, entries):
        if entry is None or entry.kind not in ("inline", "error"):
            return None
        values.append([oid, entry.kind, P.blob(entry.payload), ""])
    return values

