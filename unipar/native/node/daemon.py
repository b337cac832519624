"""The node daemon: worker pool, local scheduling, object directory and store of one machine.

One asyncio loop; every handler is synchronous and short. Decisions about *where and when* a
task runs are the :class:`~.scheduler.Scheduler`'s; this module is the I/O shell around it::

    submit_task ─▶ Task(waiting on deps) ──deps ready──▶ scheduler.add_task
                                                              │ schedule()
    run_task ◀── Dispatch(task, idle worker) ◀────────────────┘
    task_done ─▶ store results ─▶ object_ready to subscribers ─▶ dependents become ready

    (actors: see node_actors.py)

Objects live here as metadata plus small inline payloads; large ones are files in the store
(:mod:`.object_store`). An object is freed when no process holds a ref to it (``holders``) and
nothing pins it (pending tasks using it, objects containing it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from ...exceptions import (ObjectLostError, TaskCancelledError,
                          WorkerCrashedError)
from ..wire import protocol as P
from ..wire import serialization as S
from .store import ObjectStore, StoreFullError
from .boot import WorkerLauncher, report_ready, spawn_worker
from .actors import Actor, ActorHost, direct_address, exit_code
from .peers import PeerHost
from .scheduler import Dispatch, PlaceActor, RetireWorker, Scheduler, StartWorkers
from ..wire.server import ServerConnection, run_loop, serve
from ..wire.transport import Connection

log = logging.getLogger("unipar.native.node")

TICK = 0.25
INLINE_MAX = 100 * 1024


class Obj:
    __slots__ = ("kind", "payload", "path", "size", "holders", "pins", "subscribers",
                 "contained", "task_id", "readers")

    def __init__(self, task_id: bytes | None = None) -> None:
        self.kind: str | None = None
        self.payload: Any = None
        self.path = ""
        self.size = 0
        self.holders: set[int] = set()
        self.pins = 0
        self.subscribers: list[ServerConnection] = []
        self.contained: list[bytes] = []
        self.task_id = task_id
        self.readers: set[str] | None = None   # workers that may cache a mapping of its file


class Task:
    __slots__ = ("task_id", "fn_key", "name", "args", "deps", "contained", "return_ids",
                 "resources", "retries_left", "state", "worker", "missing", "actor_id",
                 "method", "cancelled", "parent", "from_peer", "remote_create")

    def __init__(self, task_id: bytes, name: str, args: Any, deps: list, contained: list,
                 return_ids: list, resources: dict, retries: int) -> None:
        self.task_id = task_id
        self.fn_key = ""
        self.name = name
        self.args = args
        self.deps = deps
        self.contained = contained
        self.return_ids = return_ids
        self.resources = resources
        self.retries_left = retries
        self.state = "waiting"          # waiting | queued | running | done
        self.worker: str | None = None
        self.missing = 0
        self.actor_id: bytes | None = None
        self.method = ""
        self.cancelled = False
        self.parent: bytes | None = None   # the task that submitted this one, if any
        self.from_peer = False             # sent here by another node (not sent on again)
        self.remote_create: Any = None     # CreateActor to send to a peer once deps are ready


class Lease:
    """A worker lent to one client, which pushes tasks of one resource shape to it directly.
    Queued in the scheduler like a task (its id is the lease id) until a worker is free."""

    __slots__ = ("lease_id", "conn", "resources", "worker")

    def __init__(self, lease_id: bytes, conn: ServerConnection, resources: dict) -> None:
        self.lease_id = lease_id
        self.conn = conn
        self.resources = resources
        self.worker: str | None = None   # set once granted


class WorkerProc:
    __slots__ = ("wid", "proc", "conn", "role", "actor_id", "fns", "started")

    def __init__(self, wid: str, proc: subprocess.Popen, role: str, actor_id: bytes | None) -> None:
        self.wid = wid
        self.proc = proc
        self.conn: ServerConnection | None = None
        self.role = role
        self.actor_id = actor_id
        self.fns: set[str] = set()
        self.started = time.monotonic()


class Node(ActorHost, PeerHost):
    """All state of one node daemon; handlers are plain methods called by the transport."""

    def __init__(self, *, node_id: str, session_dir: str, spill_dir: str, secret: bytes,
                 resources: dict, store_limit: int, spill_limit: int | None, head_address: str,
                 worker_setup: str, prestart: int, host: str = "127.0.0.1",
                 stuck_warning_after: float = 5.0, worker_idle_timeout: float = 10.0) -> None:
        self.node_id = node_id
        self.session_dir = session_dir
        self.secret = secret
        self.host = host
        self.head_address = head_address
        self.worker_setup = worker_setup
        self.prestart = prestart
        self.spill_dir = spill_dir
        self.store = ObjectStore(os.path.join(session_dir, "objects"), spill_dir, store_limit,
                                 spill_limit)
        os.makedirs(self.store.shm_dir, exist_ok=True)
        self.sched = Scheduler(resources, idle_timeout=worker_idle_timeout)
        self.stuck_warning_after = stuck_warning_after
        self.listen_fds: dict[str, int] = {}   # sockets bound by the starter, if any
        self.launcher: WorkerLauncher | None = None   # forks workers (boot.py), if given
        self.advertise = ""                    # the host others reach us at, if not self.host
        self.objects: dict[bytes, Obj] = {}
        self.tasks: dict[bytes, Task] = {}
        self.waiters: dict[bytes, list[Task]] = {}
        self.children: dict[bytes, set[bytes]] = {}   # task id -> ids of tasks it submitted
        self.workers: dict[str, WorkerProc] = {}
        self.leases: dict[bytes, Lease] = {}   # workers lent to clients that push tasks directly
        self.exited: list[WorkerProc] = []
        self.actors: dict[bytes, Actor] = {}
        self.functions: dict[str, bytes] = {}
        self.clients: dict[int, ServerConnection] = {}
        self.drivers: list[ServerConnection] = []
        self.next_client = 1
        self.next_worker = 1
        self.schedule_pending = False
        self.head: Connection | None = None
        self.address = ""
        self.unix_address = ""
        self.stopping = asyncio.Event()
        self.init_peers()
        self.handlers = {
            P.Hello.op: self.on_hello,
            P.RegisterFunction.op: self.on_register_function,
            P.SubmitTask.op: self.on_submit_task,
            P.TaskDone.op: self.on_task_done,
            P.PutObject.op: self.on_put_object,
            P.Alloc.op: self.on_alloc,
            P.Subscribe.op: self.on_subscribe,
            P.RefUpdates.op: self.on_ref_updates,
            P.Blocked.op: self.on_blocked,
            P.Unblocked.op: self.on_unblocked,
            P.Cancel.op: self.on_cancel,
            P.CreateActor.op: self.on_create_actor,
            P.ActorReady.op: self.on_actor_ready,
            P.CallActor.op: self.on_call_actor,
            P.KillActor.op: self.on_kill_actor,
            P.NodeInfo.op: self.on_node_info,
            P.Log.op: self.on_log,
            P.RequestLease.op: self.on_request_lease,
            P.ActorAddress.op: self.on_actor_address,
            P.Ping.op: lambda conn, msg: conn.send(P.Reply(msg.req_id, None)),
            P.ReturnLease.op: self.on_return_lease,
            P.PutFor.op: self.on_put_for,
            P.Shutdown.op: self.on_shutdown,
            # chunked transfer of big objects (transfer.py)
            P.FetchChunk.op: self.on_fetch_chunk,
            P.ObjectChunk.op: self.on_object_chunk,
            P.OfferObject.op: self.on_offer_object,
            P.PutChunk.op: self.on_put_chunk,
        }

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, prestarted: list[subprocess.Popen] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        unix_path = os.path.join(self.session_dir, "node.sock")
        self.unix_address = f"unix://{unix_path}"
        for proc in prestarted or []:   # spawned by boot.py as w1..wN before we were imported
            wid = f"w{self.next_worker}"
            self.next_worker += 1
            self.workers[wid] = WorkerProc(wid, proc, "task", None)
        self.sched.workers_requested(len(prestarted or []))
        servers = await serve(self, self.secret, self.host, 0, unix_path,
                              self.listen_fds.get("tcp"), self.listen_fds.get("unix"))
        port = servers[0].sockets[0].getsockname()[1]
        self.servers = servers
        self.address = f"tcp://{self.advertise or self.host}:{port}"
        if not prestarted:
            self._start_workers(self.prestart)
        asyncio.get_running_loop().call_later(TICK, self._tick)

    def join_head(self) -> None:
        """Register with the head and wait for its answer (blocking: run it on a thread; the
        head may still be starting). The starter learns we are ready only after this."""
        head = Connection(self.head_address, self.secret)
        answered = threading.Event()
        loop = self.loop

        def on_message(msg: P.Message) -> None:
            if not answered.is_set():
                answered.set()     # the first message is the answer to RegisterNode
                return
            loop.call_soon_threadsafe(self.on_head_message, msg)
        threading.Thread(target=head.serve_forever, args=(on_message,),
                         daemon=True, name="unipar-node-head").start()
        head.send(P.RegisterNode(1, self.node_id, self.address, self.sched.total))
        if not answered.wait(30):
            raise RuntimeError(f"the head at {self.head_address} did not answer")
        self.head = head

    def stop(self) -> None:
        """Kill every worker and remove this node's files. Idempotent."""
        for w in list(self.workers.values()) + self.exited:
            try:
                w.proc.kill()
            except OSError:
                pass
        for w in list(self.workers.values()) + self.exited:
            try:
                w.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.workers.clear()
        self.exited.clear()
        shutil.rmtree(self.session_dir, ignore_errors=True)
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        self.stopping.set()

    def on_disconnect(self, conn: ServerConnection) -> None:
        cid = conn.info.get("client_id")
        if cid is None:
            return
        self.transfers_disconnected(conn)
        self.clients.pop(cid, None)
        if conn in self.drivers:
            self.drivers.remove(conn)
        if conn.info.get("actors") and not self.stopping.is_set():
            self.kill_owned_actors(conn)
        for lease_id in list(conn.info.get("leases", ())):
            # Its pushed tasks are nobody's now: stop them (a graceful client returns its
            # leases before it goes, so this is a crash or a kill).
            self._end_lease(lease_id, kill=True)
        for oid in conn.info.get("held", ()):
            obj = self.objects.get(oid)
            if obj is not None:
                obj.holders.discard(cid)
                self._maybe_free(oid, obj)
        wid = conn.info.get("worker_id")
        if wid and wid in self.workers:
            self._worker_died(self.workers[wid])

    def _tick(self) -> None:
        if self.stopping.is_set():
            return
        now = time.monotonic()
        for w in list(self.workers.values()):
            if w.conn is None and w.proc.poll() is not None:
                log.warning("worker %s exited before connecting (code %s)", w.wid, w.proc.returncode)
                self._worker_died(w)
        self.exited = [w for w in self.exited if w.proc.poll() is None]
        for label, demand, free in self.sched.stuck(now, self.stuck_warning_after):
            self._warn(f"{label} has waited {self.stuck_warning_after:g} s for resources {demand}, "
                       f"which live actors hold (free now: {free}); it starts only when actors "
                       "holding them are killed. Give actors fewer resources, or the cluster more.")
        if self.head is not None:
            self.peers_tick()
        self._schedule_now()
        asyncio.get_running_loop().call_later(TICK, self._tick)

    def _warn(self, text: str) -> None:
        for conn in self.drivers:
            conn.send(P.Log("stderr", f"(unipar node={self.node_id[:8]}) warning: {text}\n"))

    # -- connections ---------------------------------------------------------------------------
    def on_hello(self, conn: ServerConnection, msg: P.Hello) -> None:
        cid = self.next_client
        self.next_client += 1
        conn.info.update(client_id=cid, role=msg.role, held=set(), pid=msg.pid)
        self.clients[cid] = conn
        conn.send(P.HelloOk(cid, self.node_id, self.session_dir, INLINE_MAX, self.head_address))
        if msg.role in ("driver", "remote", "peer"):
            # "remote": a driver that cannot map this node's files (reached over TCP, maybe
            # from another machine); it is sent object contents instead of paths. "peer":
            # another node, which talks to us as a remote driver would.
            conn.info["remote"] = msg.role != "driver"
            conn.info["peer"] = msg.role == "peer"
            if msg.role != "peer":
                self.drivers.append(conn)
            return
        w = self.workers.get(msg.worker_id)
        if w is None:
            conn.abort(f"unknown worker id {msg.worker_id!r}")
            return
        conn.info["worker_id"] = w.wid
        w.conn = conn
        if w.role == "task":
            self.sched.worker_registered(w.wid, time.monotonic())
            self._schedule()
        else:
            self._init_actor(w)

    def on_register_function(self, conn: ServerConnection, msg: P.RegisterFunction) -> None:
        if msg.key not in self.functions:
            self.functions[msg.key] = bytes(msg.blob)

    def on_log(self, conn: ServerConnection, msg: P.Log) -> None:
        for driver in self.drivers:
            driver.send(msg)
        if conn.info.get("worker_id"):   # our workers' output also reaches other nodes' drivers
            for peer in self.live_peers():
                self._send(peer, msg)

    def on_node_info(self, conn: ServerConnection, msg: P.NodeInfo) -> None:
        conn.send(P.Reply(msg.req_id, {"total": dict(self.sched.total),
                                       "available": self.sched.available(),
                                       "store": self.store.usage(),
                                       "workers": len(self.workers),
                                       # Busy task workers: tasks the node sent plus
                                       # workers leased to clients pushing tasks directly.
                                       "running": sum(1 for w in self.sched.workers.values()
                                                      if w.state != "idle"),
                                       "leases": sum(1 for lease in self.leases.values()
                                                     if lease.worker is not None),
                                       "queued": sum(1 for t in self.tasks.values()
                                                     if t.state in ("waiting", "queued"))
                                       + sum(1 for lease in self.leases.values()
                                             if lease.worker is None),
                                       "actors": sum(1 for a in self.actors.values()
                                                     if a.state != "dead"),
                                       "objects": len(self.objects),
                                       "drivers": len(self.drivers),
                                       "actor_list": self.actor_list()}))

    def on_shutdown(self, conn: ServerConnection, msg: P.Shutdown) -> None:
        self.stop()

    # -- objects -------------------------------------------------------------------------------
    def _hold(self, conn: ServerConnection, oid: bytes, obj: Obj) -> None:
        cid = conn.info["client_id"]
        obj.holders.add(cid)
        conn.info["held"].add(oid)

    def _new_result(self, conn: ServerConnection, oid: bytes, task_id: bytes) -> None:
        obj = Obj(task_id)
        self._hold(conn, oid, obj)
        obj.subscribers.append(conn)   # results are pushed to whoever submitted the task
        self.objects[oid] = obj

    def new_obj(self) -> Obj:
        return Obj()

    def on_put_object(self, conn: ServerConnection, msg: P.PutObject) -> None:
        known = self.objects.get(msg.oid)
        if known is not None:   # a peer pushed an object we have (or are fetching)
            self._hold(conn, msg.oid, known)
            if known.kind is None:
                self.fetching.pop(msg.oid, None)
                self._adopt(msg.oid, msg.kind, msg.payload, msg.size, msg.contained)
            return
        obj = Obj()
        self.objects[msg.oid] = obj
        self._hold(conn, msg.oid, obj)
        if conn.info.get("remote") and msg.kind == "inline":
            self._adopt(msg.oid, msg.kind, msg.payload, msg.size, msg.contained)
            return
        self._resolve(msg.oid, msg.kind, msg.payload, msg.path, msg.size, msg.contained)

    def on_alloc(self, conn: ServerConnection, msg: P.Alloc) -> None:
        try:
            path = self.store.alloc(msg.oid, msg.size)
        except StoreFullError as exc:
            self._forget_spilled()
            conn.send(P.Reply(msg.req_id, None, str(exc), "store_full"))
            return
        self._forget_spilled()
        conn.send(P.Reply(msg.req_id, path))

    def _resolve(self, oid: bytes, kind: str, payload: Any, path: str, size: int,
                 contained: list) -> None:
        """An object's value exists now: record it, tell subscribers, wake dependents."""
        obj = self.objects.get(oid)
        if obj is None or obj.kind is not None:
            if kind == "shm" and (obj is None or obj.path != path):
                self.store.free(oid)       # nobody wants it any more
            return
        obj.kind, obj.size = kind, size
        if kind == "shm":
            obj.path = self.store.seal(oid, size) or path
        else:
            obj.payload = payload
        obj.contained = list(contained)
        for inner in obj.contained:
            self._pin(inner)
        subscribers, obj.subscribers = obj.subscribers, []
        for conn in subscribers:
            self._send_ready(conn, oid, obj)
        for task in self.waiters.pop(oid, ()):
            task.missing -= 1
            if task.missing == 0:
                self._deps_ready(task)

    def _send_ready(self, conn: ServerConnection, oid: bytes, obj: Obj) -> None:
        if obj.kind == "shm" and conn.info.get("remote"):
            conn.send(self.ready_for_remote(oid, obj))   # contents, or "chunked": pull them
        elif obj.kind == "shm":
            conn.send(P.ObjectReady(oid, "shm", None, self.store.path(oid) or obj.path, obj.size))
        else:
            conn.send(P.ObjectReady(oid, obj.kind, P.blob(obj.payload), "", obj.size))  # type: ignore[arg-type]

    def _read_object(self, oid: bytes, obj: Obj) -> bytes:
        """The bytes of an object file (the same layout as an inline value), for a remote
        driver. Read on the loop: a very large object pauses this node while it is read."""
        with open(self.store.path(oid) or obj.path, "rb") as f:
            return f.read(obj.size)

    def on_subscribe(self, conn: ServerConnection, msg: P.Subscribe) -> None:
        for oid in msg.oids:
            obj = self.objects.get(oid)
            if obj is None and self.fetch(conn, oid):
                continue
            if obj is None:
                conn.send(P.ObjectReady(oid, "error", S.pack_error(ObjectLostError(
                    f"object {oid.hex()} no longer exists (every ref to it was dropped, or "
                    "its node was lost)")), "", 0))
            elif obj.kind is not None:
                self._send_ready(conn, oid, obj)
            elif conn not in obj.subscribers:
                obj.subscribers.append(conn)

    def on_ref_updates(self, conn: ServerConnection, msg: P.RefUpdates) -> None:
        cid = conn.info["client_id"]
        held = conn.info["held"]
        for oid in msg.adds:
            obj = self.objects.get(oid)
            if obj is not None:
                obj.holders.add(cid)
                held.add(oid)
            elif self.peers and not conn.info.get("peer"):
                # A ref to an object made on another node (it came nested in a result): copy
                # it here now, while the node that made it still keeps it for us.
                self.fetch(conn, oid, subscribe=False)
        for oid in msg.releases:
            held.discard(oid)
            obj = self.objects.get(oid)
            if obj is not None:
                obj.holders.discard(cid)
                self._maybe_free(oid, obj)

    def _pin(self, oid: bytes) -> None:
        obj = self.objects.get(oid)
        if obj is not None:
            obj.pins += 1

    def _unpin(self, oid: bytes) -> None:
        obj = self.objects.get(oid)
        if obj is not None:
            obj.pins -= 1
            self._maybe_free(oid, obj)

    def _maybe_free(self, oid: bytes, obj: Obj) -> None:
        if obj.holders or obj.pins > 0:
            return
        del self.objects[oid]
        if oid in self.remote_results:
            self.release_remote(oid)
        if obj.kind == "shm":
            self.store.free(oid)
            self._forget(oid, obj)
        for inner in obj.contained:
            self._unpin(inner)

    def _forget(self, oid: bytes, obj: Obj | None) -> None:
        """Tell workers that may have ``oid``'s file mapped to let go (it was freed or spilled:
        a cached mapping would keep its shared memory in use)."""
        if obj is None or not obj.readers:
            return
        for wid in obj.readers:
            w = self.workers.get(wid)
            if w is not None and w.conn is not None:
                w.conn.send(P.Forget([oid]))
        obj.readers = None

    def _forget_spilled(self) -> None:
        moved, self.store.moved = self.store.moved, []
        for oid in moved:
            self._forget(oid, self.objects.get(oid))

    # -- tasks ---------------------------------------------------------------------------------
    def _make_task(self, conn: ServerConnection, task_id: bytes, name: str, args: Any,
                   deps: list, contained: list, return_ids: list, resources: dict,
                   retries: int) -> Task:
        task = Task(task_id, name, args, deps, contained, return_ids, resources, retries)
        for oid in return_ids:
            self._new_result(conn, oid, task_id)
        for oid in contained:
            self._pin(oid)
        for oid in deps:
            self._pin(oid)
        self.tasks[task_id] = task
        return task

    def _watch_deps(self, task: Task) -> None:
        """Count the task's pending dependencies; calls ``_deps_ready`` when there are none."""
        missing = 0
        for oid in task.deps:
            obj = self.objects.get(oid)
            if obj is None and self.fetch(None, oid):   # made on another node: fetch it
                obj = self.objects[oid]
                obj.pins += 1                            # as _make_task would have
            if obj is not None and obj.kind is None:
                self.waiters.setdefault(oid, []).append(task)
                missing += 1
        task.missing = missing
        if missing == 0:
            self._deps_ready(task)

    def _failed_dep(self, task: Task) -> Any:
        """The error payload of the first failed or lost dependency, else None."""
        for oid in task.deps:
            obj = self.objects.get(oid)
            if obj is None:
                return S.pack_error(ObjectLostError(
                    f"an argument of {task.name} ({oid.hex()}) no longer exists"))
            if obj.kind == "error":
                return obj.payload
        return None

    def on_submit_task(self, conn: ServerConnection, msg: P.SubmitTask) -> None:
        task = self._make_task(conn, msg.task_id, msg.name, msg.args, msg.deps, msg.contained,
                               msg.return_ids, msg.resources, msg.max_retries)
        task.fn_key = msg.fn_key
        task.from_peer = bool(conn.info.get("peer"))
        wid = conn.info.get("worker_id")
        if wid is not None:   # submitted from inside a task: remember it for recursive cancel
            parent = self.sched.workers.get(wid)
            if parent is not None and parent.task_id is not None:
                task.parent = parent.task_id   # type: ignore[assignment]
                self.children.setdefault(task.parent, set()).add(task.task_id)
        self._watch_deps(task)

    def _deps_ready(self, task: Task) -> None:
        if task.cancelled:
            return
        if task.actor_id is not None:
            actor = self.actors.get(task.actor_id)
            if actor is not None:
                if task is actor.init_task:
                    self._actor_deps_ready(actor)
                else:
                    self._pump(actor)
            elif task.remote_create is not None:
                self.send_remote_create(task)
            else:
                self.pump_remote(task.actor_id)
            return
        error = self._failed_dep(task)
        if error is not None:
            self._fail_task(task, error)
            return
        if self.peers and self.maybe_forward(task, task.from_peer):
            return
        task.state = "queued"
        self.sched.add_task(task.task_id, task.resources, time.monotonic(), f"task {task.name}")
        self._schedule()

    def _schedule(self) -> None:
        if not self.schedule_pending:
            self.schedule_pending = True
            asyncio.get_running_loop().call_soon(self._schedule_now)

    def _schedule_now(self) -> None:
        self.schedule_pending = False
        if self.stopping.is_set():
            return
        for action in self.sched.schedule(time.monotonic()):
            if isinstance(action, Dispatch):
                self._dispatch(action)
            elif isinstance(action, StartWorkers):
                self._start_workers(action.count)
            elif isinstance(action, PlaceActor):
                self._place_actor(action)
            elif isinstance(action, RetireWorker):
                self._retire(action.worker_id)

    def _dep_values(self, task: Task, wid: str) -> list:
        """Dependency values for worker ``wid``; it may keep files mapped until told to
        forget them (``_forget``), so repeated use of a big argument costs no new mapping."""
        values = []
        for oid in task.deps:
            obj = self.objects[oid]
            if obj.kind == "shm":
                if obj.readers is None:
                    obj.readers = set()
                obj.readers.add(wid)
                values.append([oid, "shm", None, self.store.path(oid) or obj.path])
            else:
                values.append([oid, obj.kind, P.blob(obj.payload), ""])
        return values

    def _dispatch(self, action: Dispatch) -> None:
        lease = self.leases.get(action.task_id)   # type: ignore[arg-type]
        if lease is not None:
            self._grant(lease, action)
            return
        task = self.tasks.get(action.task_id)   # type: ignore[arg-type]
        w = self.workers.get(action.worker_id)
        if task is None or w is None or w.conn is None:
            self.sched.task_finished(action.worker_id, time.monotonic())
            if task is not None:
                self.sched.add_task(task.task_id, task.resources, time.monotonic(), front=True)
            self._schedule()
            return
        fn_blob = None
        if task.fn_key not in w.fns:
            fn_blob = P.blob(self.functions[task.fn_key])
            w.fns.add(task.fn_key)
        task.state, task.worker = "running", w.wid
        w.conn.send(P.RunTask(task.task_id, task.fn_key, fn_blob, task.name, P.blob(task.args),
                              self._dep_values(task, w.wid), task.return_ids,
                              list(action.gpu_ids)))

    # -- leases: the direct path -----------------------------------------------------------------
    def on_request_lease(self, conn: ServerConnection, msg: P.RequestLease) -> None:
        demand = msg.resources
        if self.live_peers() and not self.sched.fits_now(demand):
            # Another node may have room: the client submits through us, and we forward.
            conn.send(P.LeaseRefused(msg.lease_id, "busy"))
            return
        if not self.sched.fits_total(demand):
            conn.send(P.LeaseRefused(msg.lease_id, "infeasible"))
            return
        self.leases[msg.lease_id] = Lease(msg.lease_id, conn, dict(demand))
        conn.info.setdefault("leases", set()).add(msg.lease_id)
        self.sched.add_task(msg.lease_id, demand, time.monotonic(), msg.label or "a task")
        self._schedule()

    def _grant(self, lease: Lease, action: Dispatch) -> None:
        w = self.workers.get(action.worker_id)
        if w is None or w.conn is None or lease.conn.closed:
            self.sched.task_finished(action.worker_id, time.monotonic())
            if not lease.conn.closed:
                self.sched.add_task(lease.lease_id, lease.resources, time.monotonic(), front=True)
            else:
                self.leases.pop(lease.lease_id, None)
            self._schedule()
            return
        lease.worker = w.wid
        lease.conn.send(P.LeaseGranted(lease.lease_id, w.wid, direct_address(self, w.wid),
                                       w.proc.pid, list(action.gpu_ids)))

    def on_return_lease(self, conn: ServerConnection, msg: P.ReturnLease) -> None:
        self._end_lease(msg.lease_id, msg.kill)

    def _end_lease(self, lease_id: bytes, kill: bool) -> None:
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return
        lease.conn.info.get("leases", set()).discard(lease_id)
        if lease.worker is None:
            self.sched.remove_task(lease_id)
            return
        w = self.workers.get(lease.worker)
        if kill and w is not None:
            self._kill_worker(w)   # its death is noticed (and handled) like any other
            return
        self.sched.task_finished(lease.worker, time.monotonic())
        self._schedule()

    def on_put_for(self, conn: ServerConnection, msg: P.PutFor) -> None:
        owner = self.clients.get(msg.owner)
        if owner is None:   # the client that pushed the task is gone: nobody wants it
            if msg.kind == "shm":
                self.store.free(msg.oid)
            conn.send(P.Reply(msg.req_id, False))
            return
        obj = Obj()
        self.objects[msg.oid] = obj
        self._hold(owner, msg.oid, obj)
        self._resolve(msg.oid, msg.kind, msg.payload, msg.path, msg.size, msg.contained)
        conn.send(P.Reply(msg.req_id, True))

    def on_task_done(self, conn: ServerConnection, msg: P.TaskDone) -> None:
        wid = conn.info.get("worker_id")
        w = self.workers.get(wid) if wid else None
        if w is not None and w.role == "actor":
            self._actor_task_done(w, msg)
            return
        if w is not None:
            self.sched.task_finished(w.wid, time.monotonic())
            self._schedule()
        task = self.tasks.get(msg.task_id)
        if task is None or task.cancelled or task.state != "running":
            self._discard_results(msg.results)
            return
        if msg.status == "retry" and task.retries_left != 0:
            task.retries_left -= 1 if task.retries_left > 0 else 0
            self._discard_results(msg.results)
            self._requeue(task)
            return
        self._store_results(task, msg.results)

    def _requeue(self, task: Task) -> None:
        task.state, task.worker = "queued", None
        self.sched.add_task(task.task_id, task.resources, time.monotonic(), f"task {task.name}",
                            front=True)
        self._schedule()

    def _discard_results(self, results: list) -> None:
        for oid, kind, _payload, path, _size, _contained in results:
            if kind == "shm":
                obj = self.objects.get(oid)
                if obj is None or obj.path != path:
                    self.store.free(oid)

    def _store_results(self, task: Task, results: list) -> None:
        for oid, kind, payload, path, size, contained in results:
            self._resolve(oid, kind, payload, path, size, contained)
        self._finish(task)

    def _finish(self, task: Task) -> None:
        task.state = "done"
        self.tasks.pop(task.task_id, None)
        self.children.pop(task.task_id, None)
        if task.parent is not None:
            siblings = self.children.get(task.parent)
            if siblings is not None:
                siblings.discard(task.task_id)
        for oid in task.deps:
            self._unpin(oid)
        for oid in task.contained:
            self._unpin(oid)
        task.args = None

    def _fail_task(self, task: Task, payload: Any) -> None:
        for oid in task.return_ids:
            self._resolve(oid, "error", payload, "", 0, [])
        self._finish(task)

    def on_cancel(self, conn: ServerConnection, msg: P.Cancel) -> None:
        obj = self.objects.get(msg.oid)
        task = self.tasks.get(obj.task_id) if obj is not None and obj.task_id else None
        if task is not None:
            self._cancel(task, msg.force, msg.recursive)

    def _cancel(self, task: Task, force: bool, recursive: bool) -> None:
        """Cancel a task (and, if ``recursive``, what it submitted, children first)."""
        if task.state == "done" or task.cancelled:
            return
        if recursive:
            for child_id in list(self.children.get(task.task_id, ())):
                child = self.tasks.get(child_id)
                if child is not None:
                    self._cancel(child, force, True)
        error = S.pack_error(TaskCancelledError(f"task {task.name} was cancelled"))
        if task.actor_id is not None:
            actor = self.actors.get(task.actor_id)
            if actor is not None and task in actor.queue:
                actor.queue.remove(task)
                task.cancelled = True
                self._fail_task(task, error)
                self._pump(actor)
            return
        task.cancelled = True
        if task.state == "forwarded":
            self.cancel_remote(task, force, recursive)
        elif task.state == "queued":
            self.sched.remove_task(task.task_id)
        elif task.state == "running" and task.worker in self.workers:
            w = self.workers[task.worker]
            if force:
                self._kill_worker(w)
            elif w.conn is not None:
                w.conn.send(P.CancelTask(task.task_id))
        self._fail_task(task, error)

    def on_blocked(self, conn: ServerConnection, msg: P.Blocked) -> None:
        wid = conn.info.get("worker_id")
        if wid:
            self.sched.worker_blocked(wid)
            self._schedule()

    def on_unblocked(self, conn: ServerConnection, msg: P.Unblocked) -> None:
        wid = conn.info.get("worker_id")
        if wid:
            self.sched.worker_unblocked(wid)

    # -- workers -------------------------------------------------------------------------------
    def _spawn(self, role: str, actor_id: bytes | None = None,
               gpu_ids: tuple[int, ...] = ()) -> WorkerProc:
        wid = f"w{self.next_worker}"
        self.next_worker += 1
        cuda = ",".join(str(i) for i in gpu_ids) if role == "actor" else None
        start = self.launcher.start if self.launcher is not None else spawn_worker
        proc = start(wid, role, self.unix_address, self.worker_setup, self.secret.hex().encode(),
                     cuda)
        w = WorkerProc(wid, proc, role, actor_id)
        self.workers[wid] = w
        return w

    def _start_workers(self, count: int) -> None:
        for _ in range(count):
            self._spawn("task")
        self.sched.workers_requested(count)

    def _kill_worker(self, w: WorkerProc) -> None:
        try:
            w.proc.kill()
        except OSError:
            pass

    def _retire(self, wid: str) -> None:
        w = self.workers.pop(wid, None)
        if w is None:
            return
        if w.conn is not None:
            w.conn.info.pop("worker_id", None)
            w.conn.send(P.Shutdown())
        self._kill_worker(w)
        self.exited.append(w)

    def _worker_died(self, w: WorkerProc) -> None:
        self.workers.pop(w.wid, None)
        self._kill_worker(w)
        self.exited.append(w)
        if w.role == "actor":
            self._actor_process_died(w)
            return
        if w.conn is None:
            self.sched.worker_start_failed()
        task_id = self.sched.worker_lost(w.wid)
        lease = self.leases.pop(task_id, None) if task_id else None   # type: ignore[arg-type]
        if lease is not None:   # its client sees the connection drop and retries or fails
            lease.conn.info.get("leases", set()).discard(task_id)
        task = self.tasks.get(task_id) if task_id else None   # type: ignore[arg-type]
        if task is not None and not task.cancelled and task.state == "running":
            if task.retries_left != 0:
                task.retries_left -= 1 if task.retries_left > 0 else 0
                self._requeue(task)
            else:
                code = exit_code(w.proc)
                self._fail_task(task, S.pack_error(WorkerCrashedError(
                    f"the worker process (pid {w.proc.pid}) running task {task.name} died "
                    f"(exit code {code}) and its retries are used up")))
        self._schedule()


def _watch_parent(loop: asyncio.AbstractEventLoop, node: Node) -> None:
    """Stop the node when stdin closes: the process that started it is gone."""
    try:
        while sys.stdin.buffer.read(1 << 16):
            pass
    except OSError:
        pass
    loop.call_soon_threadsafe(node.stop)


def main(argv: list[str] | None = None, secret: bytes | None = None,
         prestarted: list[Any] | None = None, launcher: WorkerLauncher | None = None) -> None:
    """Run a node daemon. ``secret``, ``prestarted`` workers and the ``launcher`` (a fork
    server) come from boot.py; without them the secret is read from stdin and workers are
    started as new processes."""
    parser = argparse.ArgumentParser(prog="python -m unipar.native.node")
    parser.add_argument("--config", required=True, help="JSON settings (see cluster.py)")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config)
    if secret is None:
        secret = bytes.fromhex(sys.stdin.buffer.readline().strip().decode())
    logging.basicConfig(level=logging.WARNING, format="(unipar node) %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the driver's Ctrl-C is the driver's to handle

    async def run() -> None:
        loop = asyncio.get_running_loop()
        node = Node(node_id=cfg["node_id"], session_dir=cfg["session_dir"],
                    spill_dir=cfg["spill_dir"], secret=secret,
                    resources=cfg["resources"], store_limit=cfg["store_limit"],
                    spill_limit=cfg.get("spill_limit"), head_address=cfg.get("head_address", ""),
                    worker_setup=cfg.get("worker_setup", ""), prestart=cfg.get("prestart", 0),
                    host=cfg.get("host", "127.0.0.1"),
                    stuck_warning_after=cfg.get("stuck_warning_after", 5.0),
                    worker_idle_timeout=cfg.get("worker_idle_timeout", 10.0))
        node.listen_fds = {k: cfg[f"{k}_fd"] for k in ("tcp", "unix") if f"{k}_fd" in cfg}
        node.launcher = launcher
        node.advertise = cfg.get("advertise", "")
        loop.add_signal_handler(signal.SIGTERM, node.stop)
        if cfg.get("head_fd") is not None:   # a driver's one-machine cluster: the head is here
            from ..head.daemon import Head
            head_servers = await serve(Head(secret), secret, tcp_fd=cfg["head_fd"])  # noqa: F841
        await node.start(prestarted)
        if node.head_address:
            await loop.run_in_executor(None, node.join_head)
        report_ready(cfg, f"READY {node.address} {node.unix_address}\n")
        if not cfg.get("detached"):   # started by `unipar start`: runs until SIGTERM
            threading.Thread(target=_watch_parent, args=(loop, node), daemon=True).start()
        await node.stopping.wait()
        for server in node.servers:
            server.close()

    try:
        run_loop(run())
    finally:
        shutil.rmtree(cfg["session_dir"], ignore_errors=True)
        shutil.rmtree(cfg["spill_dir"], ignore_errors=True)
    os._exit(0)

