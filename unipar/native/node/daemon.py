"""The node daemon: one machine's worker pool, scheduler, objects, actors and links to peers.

One asyncio loop; every handler is synchronous and short. The daemon is composed of parts that
own their state, each handed only what it may ask of the others (:mod:`.ports`, or a few
callables)::

    Node ─┬─ pool        WorkerPool     worker processes (pool.py)
          ├─ sched       Scheduler      when and where here; sans-I/O (scheduler.py)
          ├─ objects     ObjectDirectory values, holders, pins, waiters (objects.py, store.py)
          ├─ tasks       TaskTable      tasks from submission to results (tasks.py)
          ├─ leases      Leases         workers lent to clients: the direct path (leases.py)
          ├─ actors      Actors         actors hosted here (actors.py)
          ├─ head        HeadLink       registration, node list, actor locations (head_link.py)
          ├─ links       PeerLinks      other nodes: connect, lose (peers.py)
          ├─ forwarding  Forwarding     tasks to peers, objects from them (forwarding.py)
          ├─ remote      RemoteActors   actors on peers, their fail-over (remote_actors.py)
          ├─ transfers   Transfers      chunked copies of big objects (transfers.py)
          └─ observe     Observer       machine figures, task events, log files (observe.py)

Where work goes across nodes is :mod:`.placement` (sans-I/O). Messages are dispatched by the
``handlers`` table (op -> the part's method); the scheduler's actions by :meth:`Node.run_actions`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from typing import Any

from ... import config
from ..wire import protocol as P
from ..wire.server import ServerConnection, run_loop, serve
from .actors import Actors
from .forwarding import Forwarding
from .head_link import HeadLink
from .leases import Leases
from .logfiles import setup_daemon_log
from .memory import return_big_buffers
from .objects import ObjectDirectory
from .observe import Observer, pending_of
from .packages import Packages
from .peers import PeerLinks
from .pool import WorkerPool
from .placement import bundle_reservation
from .records import INLINE_MAX, Peer, Task, WorkerProc
from .remote_actors import RemoteActors, calls_in_flight
from .scheduler import Dispatch, PlaceActor, RetireWorker, Scheduler, StartWorkers
from .spawn import Launcher, report_ready
from .store import ObjectStore
from .streams import StreamRelay
from .tasks import TaskTable
from .transfers import Transfers

log = logging.getLogger("unipar.native.node")

TICK = 0.25


class Node:
    """One node daemon: its parts, the handlers table, and the lifecycle around them."""

    def __init__(self, *, node_id: str, session_dir: str, spill_dir: str, secret: bytes,
                 resources: dict, store_limit: int, spill_limit: int | None, head_address: str,
                 worker_setup: str, prestart: int, host: str = "127.0.0.1",
                 stuck_warning_after: float = 5.0, worker_idle_timeout: float = 10.0,
                 log_dir: str = "") -> None:
        self.node_id = node_id
        self.session_dir = session_dir
        self.spill_dir = spill_dir
        self.secret = secret
        self.host = host
        self.prestart = prestart
        self.stuck_warning_after = stuck_warning_after
        self.listen_fds: dict[str, int] = {}   # sockets bound by the starter, if any
        self.advertise = ""                    # the host others reach us at, if not self.host
        self.address = ""
        self.unix_address = ""
        self.functions: dict[str, bytes] = {}
        self.clients: dict[int, ServerConnection] = {}
        self.drivers: list[ServerConnection] = []
        self.next_client = 1
        self.schedule_pending = False
        self.stopping = asyncio.Event()
        store = ObjectStore(os.path.join(session_dir, "objects"), spill_dir, store_limit,
                            spill_limit)
        os.makedirs(store.shm_dir, exist_ok=True)
        # ``node:<id>``: only this node has it, so work pinned here (node affinity) asks for it.
        self.sched = Scheduler({**resources, f"node:{node_id}": 1.0},
                               idle_timeout=worker_idle_timeout)
        self._compose(store, head_address, worker_setup)
        self.observe = Observer(node_id, session_dir, spill_dir, log_dir,
                                lambda: pending_of(self.tasks.tasks), lambda: self.objects.objects)
        self.packages = Packages(self.objects, os.path.join(session_dir, "runtime_envs"),
                                 lambda: {w.env for w in self.pool.workers.values() if w.env},
                                 config.runtime_env_grace(), node_id=node_id, head=self.head,
                                 fetch=lambda oid: self.forwarding.fetch(None, oid))
        self.handlers = {**self._handlers(), **self.observe.handlers(),
                         **self.packages.handlers()}

    def _compose(self, store: ObjectStore, head_address: str, worker_setup: str) -> None:
        """Build the parts and hand each what it may ask of the others."""
        self.pool = WorkerPool(self.sched, self.secret, worker_setup)
        self.objects = ObjectDirectory(store, self.clients, self._deps_ready, self.pool.conn_of)
        self.tasks = TaskTable(self.objects, self.sched, self.pool, self.functions,
                               self.schedule)
        self.head = HeadLink(self.node_id, head_address, self.secret, self.sched)
        self.links = PeerLinks(self.node_id, self.secret, self.sched, self.head, self.drivers)
        self.leases = Leases(self.sched, self.pool, self.schedule, self.links.live)
        self.actors = Actors(self.node_id, self.tasks, self.objects, self.sched, self.pool,
                             self.functions, self.head, self.schedule)
        self.transfers = Transfers(self.objects)
        self.streams = StreamRelay(self.clients)
        self.forwarding = Forwarding(self.node_id, self.links, self.objects, self.tasks,
                                     self.sched, self.transfers, self.functions)
        self.remote = RemoteActors(self.node_id, self.links, self.forwarding, self.head,
                                   self.tasks, self.actors, self.sched)
        self.objects.fetcher = self.forwarding
        self.actors.elsewhere = self.remote
        self.tasks.actor_deps_ready = self._actor_deps_ready
        self.tasks.forward = self.forwarding.maybe_forward
        self.tasks.cancel_actor_call = self.actors.cancel_queued
        self.tasks.cancel_remote = self.forwarding.cancel_remote
        self.transfers.pull_ended = self.forwarding.pull_ended
        self.transfers.pull_source_lost = self.forwarding.pull_source_lost
        self.head.declared_dead = self.links.declared_dead
        self.head.gave_up = self._declared_dead   # the head stayed away: warn drivers, stop
        self.links.on_message = self.forwarding.on_peer_message
        self.links.on_connected = self._peer_connected
        self.links.on_lost = self._peer_lost
        self.links.on_refresh = self._peers_refreshed
        self.links.stop = self._declared_dead
        self.head.handlers = {P.ReserveBundles.op: self._reserve_bundles,
                              P.ReleaseBundles.op: self._release_bundles,
                              P.ActorLocation.op: self.remote.died_elsewhere}

    def _handlers(self) -> dict[str, Any]:
        """The protocol's table of contents: op -> the part that handles it."""
        return {
            P.Hello.op: self.on_hello,
            P.RegisterFunction.op: self.on_register_function,
            P.SubmitTask.op: self.tasks.on_submit_task,
            P.TaskDone.op: self.on_task_done,
            P.PutObject.op: self.objects.on_put_object,
            P.Alloc.op: self.objects.on_alloc,
            P.Subscribe.op: self.objects.on_subscribe,
            P.RefUpdates.op: self.objects.on_ref_updates,
            P.Blocked.op: self.tasks.on_blocked,
            P.Unblocked.op: self.tasks.on_unblocked,
            P.Cancel.op: self.tasks.on_cancel,
            P.CreateActor.op: self.actors.on_create_actor,
            P.ActorReady.op: self.actors.on_actor_ready,
            P.CallActor.op: self.actors.on_call_actor,
            P.KillActor.op: self.actors.on_kill_actor,
            P.NodeInfo.op: self.on_node_info,
            P.Log.op: self.on_log,
            P.RequestLease.op: self.leases.on_request_lease,
            P.ActorAddress.op: self.actors.on_actor_address,
            P.Ping.op: lambda conn, msg: conn.send(P.Reply(msg.req_id, None)),
            P.ReturnLease.op: self.leases.on_return_lease,
            P.PutFor.op: self.objects.on_put_for,
            P.Shutdown.op: lambda conn, msg: self.stop(),
            # chunked transfer of big objects (transfers.py)
            P.FetchChunk.op: self.transfers.on_fetch_chunk,
            P.ObjectChunk.op: self.transfers.on_object_chunk,
            P.OfferObject.op: self.forwarding.on_offer_object,
            P.PutChunk.op: self.transfers.on_put_chunk,
            P.StreamItem.op: self.streams.on_stream_item,
            P.StreamAck.op: self.streams.on_stream_ack,
        }

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, prestarted: list[Any] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        unix_path = os.path.join(self.session_dir, "node.sock")
        self.unix_address = self.pool.unix_address = f"unix://{unix_path}"
        self.pool.adopt(prestarted or [])   # spawned by boot.py before we were imported
        servers = await serve(self, self.secret, self.host, 0, unix_path,
                              self.listen_fds.get("tcp"), self.listen_fds.get("unix"))
        port = servers[0].sockets[0].getsockname()[1]
        self.servers = servers
        self.address = f"tcp://{self.advertise or self.host}:{port}"
        if not prestarted:
            self.pool.start_workers(self.prestart)
        asyncio.get_running_loop().call_later(TICK, self._tick)
        self.observe.start()

    def join_head(self) -> None:
        """Register with the head (blocking: run it on a thread)."""
        self.head.join(self.loop, self.address)

    def stop(self) -> None:
        """Kill every worker and remove this node's files. Idempotent."""
        self.links.stopping = True
        self.observe.stop()
        self.pool.stop()
        shutil.rmtree(self.session_dir, ignore_errors=True)
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        self.stopping.set()

    def _declared_dead(self, text: str) -> None:
        self._warn(text)   # drivers connected here: their pending gets raise next
        self.stop()

    def on_disconnect(self, conn: ServerConnection) -> None:
        cid = conn.info.get("client_id")
        if cid is None:
            return
        self.transfers.disconnected(conn)
        self.observe.disconnected(conn)
        self.clients.pop(cid, None)
        if conn in self.drivers:
            self.drivers.remove(conn)
        if conn.info.get("actors") and not self.stopping.is_set():
            self.actors.kill_owned(conn)
        self.leases.disconnected(conn)
        for oid in conn.info.get("held", ()):
            self.objects.release(conn, oid)
        w = self.pool.get(conn.info.get("worker_id"))
        if w is not None:
            self.streams.disconnected(conn)
            self._worker_died(w)

    def _tick(self) -> None:
        if self.stopping.is_set():
            return
        for w in self.pool.died_unconnected():
            self._worker_died(w)
        for label, demand, free in self.sched.stuck(time.monotonic(), self.stuck_warning_after):
            self._warn(f"{label} has waited {self.stuck_warning_after:g} s for resources {demand}, "
                       f"which live actors hold (free now: {free}); it starts only when actors "
                       "holding them are killed. Give actors fewer resources, or the cluster more.")
        if self.head.joined:
            self.links.tick()
        self._schedule_now()
        self.packages.sweep(time.monotonic())
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
        conn.send(P.HelloOk(cid, self.node_id, self.session_dir, INLINE_MAX, self.head.address))
        if msg.role in ("driver", "remote", "peer"):
            # "remote": a driver that cannot map this node's files (reached over TCP, maybe
            # from another machine); it is sent object contents instead of paths. "peer":
            # another node, which talks to us as a remote driver would.
            conn.info["remote"] = msg.role != "driver"
            conn.info["peer"] = msg.role == "peer"
            if msg.role != "peer":
                self.drivers.append(conn)
            return
        w = self.pool.get(msg.worker_id)
        if w is None:
            conn.abort(f"unknown worker id {msg.worker_id!r}")
            return
        conn.info["worker_id"] = w.wid
        w.conn = conn
        actor = self.actors.get(w.actor_id) if w.actor_id is not None else None
        self.observe.worker_connected(w.wid, msg.pid, w.role, actor.msg if actor else None)
        if w.role == "task":
            self.sched.worker_registered(w.wid, time.monotonic(), w.env)
            self.schedule()
        else:
            self.actors.init_actor(w)

    def on_register_function(self, conn: ServerConnection, msg: P.RegisterFunction) -> None:
        if msg.key not in self.functions:
            self.functions[msg.key] = bytes(msg.blob)

    def on_log(self, conn: ServerConnection, msg: P.Log) -> None:
        for driver in self.drivers:
            driver.send(msg)
        if conn.info.get("worker_id"):   # our workers' output also reaches other nodes' drivers
            for peer in self.links.live():
                self.links.send(peer, msg)

    def on_node_info(self, conn: ServerConnection, msg: P.NodeInfo) -> None:
        seen = self.observe.report()   # tasks as their workers and clients report them
        conn.send(P.Reply(msg.req_id, {**seen,
            "total": dict(self.sched.total),
            "available": self.sched.available(),
            "store": self.objects.store.usage(),
            "workers": len(self.pool),
            "running": seen["tasks"]["running"],
            "busy_workers": self.sched.busy_workers(),   # incl. leased ones with nothing to do
            "leases": self.leases.granted(),
            "leases_waiting": self.leases.waiting(),
            "queued": seen["tasks"]["queued"],
            "actors": self.actors.live(),
            "actor_table": self.actors.table_size(),
            "infeasible": self.links.infeasible_today(),
            "objects": len(self.objects),
            "drivers": len(self.drivers),
            "runtime_envs": self.packages.report(),
            "actor_list": self.actors.listing()}))

    def on_task_done(self, conn: ServerConnection, msg: P.TaskDone) -> None:
        w = self.pool.get(conn.info.get("worker_id"))
        if w is not None and w.role == "actor":
            self.actors.task_done(w, msg)
        else:
            self.tasks.task_done(w, msg)

    # -- routing between parts -----------------------------------------------------------------
    def _deps_ready(self, task: Task) -> None:
        self.tasks.deps_ready(task)

    def _actor_deps_ready(self, task: Task) -> None:
        actor = self.actors.get(task.actor_id)
        if actor is not None:
            self.actors.deps_ready(actor, task)
        else:
            self.remote.deps_ready(task)

    def _worker_died(self, w: WorkerProc) -> None:
        self.pool.remove(w)
        if w.role == "actor":
            self.actors.process_died(w)
            return
        task_id = self.sched.worker_lost(w.wid)
        if task_id in self.leases:
            self.leases.worker_lost(task_id)
        else:
            self.tasks.worker_lost(w, task_id)
        self.schedule()

    def _reserve_bundles(self, msg: P.ReserveBundles) -> None:
        """The head places bundles of a placement group here: hold them now, or say no."""
        take, adds = bundle_reservation(msg.pg_id, [(i, b) for i, b in msg.bundles])
        ok = self.sched.reserve_bundles(msg.pg_id, take, adds)
        self.head.tell(P.Reply(msg.req_id, ok))
        if ok:
            self.head.status_changed()
            self.schedule()   # work waiting for the bundle's resources may run now

    def _release_bundles(self, msg: P.ReleaseBundles) -> None:
        if self.sched.release_bundles(msg.pg_id):
            self.head.status_changed()
            self.schedule()

    def _peer_connected(self, peer: Peer) -> None:
        self.forwarding.place_stranded()
        self.forwarding.pull_to(peer)
        self.leases.reconsider()
        self.remote.peer_connected(peer)

    def _peers_refreshed(self) -> None:
        """A new node list (every second): room elsewhere is used by work queued here."""
        self.remote.move_waiting_actors()
        self.leases.reconsider()
        self.forwarding.spread()

    def _peer_lost(self, peer: Peer) -> None:
        calls = calls_in_flight(peer)   # before its tasks are counted out
        self.forwarding.peer_lost(peer, self.tasks.deps_ready)
        self.remote.peer_lost(peer, calls)
        self.forwarding.fetches_lost(peer)

    # -- the scheduler's actions ---------------------------------------------------------------
    def schedule(self) -> None:
        """Run a scheduling round soon (once, however many ask before it runs)."""
        if not self.schedule_pending:
            self.schedule_pending = True
            asyncio.get_running_loop().call_soon(self._schedule_now)

    def _schedule_now(self) -> None:
        self.schedule_pending = False
        if self.stopping.is_set():
            return
        self.run_actions()

    def run_actions(self) -> None:
        for action in self.sched.schedule(time.monotonic()):
            if isinstance(action, Dispatch):
                if not self.leases.grant(action):
                    self.tasks.dispatch(action)
            elif isinstance(action, StartWorkers):
                self.pool.start_workers(action.count, action.env)
            elif isinstance(action, PlaceActor):
                self.actors.place(action)
            elif isinstance(action, RetireWorker):
                self.pool.retire(action.worker_id)


def _watch_parent(loop: asyncio.AbstractEventLoop, node: Node) -> None:
    """Stop the node when stdin closes: the process that started it is gone."""
    try:
        while sys.stdin.buffer.read(1 << 16):
            pass
    except OSError:
        pass
    loop.call_soon_threadsafe(node.stop)


def _node_ip(cfg: dict) -> str:
    """The IP this node advertises (what ``node:<ip>`` names, as in Ray)."""
    host = cfg.get("advertise") or cfg.get("host") or "127.0.0.1"
    try:
        return socket.gethostbyname(host) if host != "0.0.0.0" else "127.0.0.1"
    except OSError:   # a name that does not resolve here: keep it as given
        return host


def _make_node(cfg: dict, secret: bytes, launcher: Launcher | None) -> Node:
    # ``node:<ip>`` = 1 on every node, as in Ray: work pinned to a machine asks for a sliver.
    resources = {**cfg["resources"], f"node:{_node_ip(cfg)}": 1.0}
    node = Node(node_id=cfg["node_id"], session_dir=cfg["session_dir"],
                spill_dir=cfg["spill_dir"], secret=secret,
                resources=resources, store_limit=cfg["store_limit"],
                spill_limit=cfg.get("spill_limit"), head_address=cfg.get("head_address", ""),
                worker_setup=cfg.get("worker_setup", ""), prestart=cfg.get("prestart", 0),
                host=cfg.get("host", "127.0.0.1"),
                stuck_warning_after=cfg.get("stuck_warning_after", 5.0),
                worker_idle_timeout=cfg.get("worker_idle_timeout", 10.0),
                log_dir=cfg.get("log_dir", ""))
    node.listen_fds = {k: cfg[f"{k}_fd"] for k in ("tcp", "unix") if f"{k}_fd" in cfg}
    node.pool.launcher = launcher
    node.advertise = cfg.get("advertise", "")
    return node


async def _run(cfg: dict, secret: bytes, prestarted: list[Any] | None,
               launcher: Launcher | None) -> None:
    loop = asyncio.get_running_loop()
    node = _make_node(cfg, secret, launcher)
    loop.add_signal_handler(signal.SIGTERM, node.stop)
    if cfg.get("head_fd") is not None:   # a driver's one-machine cluster: the head is here
        from ..head.daemon import Head
        head = Head(secret)
        head.groups.can_grow = False   # a driver's own cluster: no node joins it
        node.links.can_grow = False
        head_servers = await serve(head, secret, tcp_fd=cfg["head_fd"])  # noqa: F841
    await node.start(prestarted)
    if node.head.address:
        await loop.run_in_executor(None, node.join_head)
    report_ready(cfg, f"READY {node.address} {node.unix_address}\n")
    if not cfg.get("detached"):   # started by `unipar start`: runs until SIGTERM
        threading.Thread(target=_watch_parent, args=(loop, node), daemon=True).start()
    await node.stopping.wait()
    for server in node.servers:
        server.close()


def main(argv: list[str] | None = None, secret: bytes | None = None,
         prestarted: list[Any] | None = None, launcher: Launcher | None = None) -> None:
    """Run a node daemon. ``secret``, ``prestarted`` workers and the ``launcher`` (a fork
    server) come from boot.py; without them the secret is read from stdin and workers are
    started as new processes."""
    parser = argparse.ArgumentParser(prog="python -m unipar.native.node")
    parser.add_argument("--config", required=True, help="JSON settings (see cluster.py)")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config)
    if secret is None:
        secret = bytes.fromhex(sys.stdin.buffer.readline().strip().decode())
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s (unipar node) %(levelname)s %(message)s")
    setup_daemon_log(cfg.get("log_dir", ""), cfg.get("log_level", "info"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the driver's Ctrl-C is the driver's to handle
    return_big_buffers()   # objects passing through must not leave the RSS stepped up
    try:
        run_loop(_run(cfg, secret, prestarted, launcher))
    finally:
        shutil.rmtree(cfg["session_dir"], ignore_errors=True)
        shutil.rmtree(cfg["spill_dir"], ignore_errors=True)
        if cfg.get("log_dir") and not cfg.get("keep_logs"):
            shutil.rmtree(cfg["log_dir"], ignore_errors=True)
    os._exit(0)
