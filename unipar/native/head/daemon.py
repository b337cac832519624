"""The head: cluster membership, resources per node and the directory of named actors.

It is not on the per-task path. Nodes register when they start (and count as dead when their
connection drops); drivers and workers ask it for the node list and for named actors::

    node    ── register_node ──▶ head          driver ── register_name / lookup_name ──▶ head
    node    ── unregister_name (actor died) ─▶ head   driver ── list_nodes ──▶ head

A node whose connection drops, or that sends no ``node_status`` for ``--node-timeout`` seconds,
is declared dead for good. If it was only frozen or cut off, it is told so
(``node_declared_dead``) when it wakes up and everything it sends is dropped; it exits, as
Ray's raylet does, and a node started again joins under a new id::

    head ── node_declared_dead ──▶ node (stops its workers and actors, exits)

The head of ``unipar start`` keeps its tables in a snapshot (journal.py). Killed and started
again on the same port, it reloads them: nodes and drivers reconnect by themselves and named
actors resolve again; a node that does not come back within ``--node-timeout`` is declared dead
as if it had gone silent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from ..wire import protocol as P
from ..cluster import session
from ..node.memory import return_big_buffers
from ..node.spawn import report_ready
from ..wire.server import ServerConnection, run_loop, serve
from .actor_table import ActorTable
from .groups import PlacementGroups
from .jobs import Jobs
from .journal import Journal, decode_state, encode_state
from .packages import PackageTable


log = logging.getLogger("unipar.native.head")


class Head:
    """Membership and names; handlers are plain methods called by the transport."""

    def __init__(self, secret: bytes, journal: Journal | None = None) -> None:
        self.secret = secret
        self.journal = journal or Journal("")
        self._save_scheduled = False
        self.nodes: dict[str, dict[str, Any]] = {}
        self.names: dict[str, tuple[bytes, bytes]] = {}   # name -> (actor id, pickled meta)
        self.actor_table = ActorTable()   # where actors live, who owns them (bounded)
        self.last_seen: dict[str, float] = {}               # node id -> its last status (monotonic)
        self.conns: dict[str, ServerConnection] = {}
        self.dead: dict[str, str] = {}                      # node id -> why it was declared dead
        self.stopping = asyncio.Event()
        self.handlers = {
            P.RegisterNode.op: self.on_register_node,
            P.ListNodes.op: self.on_list_nodes,
            P.RegisterName.op: self.on_register_name,
            P.LookupName.op: self.on_lookup_name,
            P.UnregisterName.op: self.on_unregister_name,
            P.ActorLocation.op: self.on_actor_location,
            P.NodeStatus.op: self.on_node_status,
            P.LookupActor.op: self.on_lookup_actor,
            P.ActorOwner.op: self.on_actor_owner,
            P.Shutdown.op: self.on_shutdown,
            P.Reply.op: self.on_reply,
        }
        self.groups = PlacementGroups(self.nodes, self._send_node)
        self.handlers.update(self.groups.handlers())
        self.jobs = Jobs(os.path.join(session.state_dir(), "jobs"), self.dirty)
        self.handlers.update(self.jobs.handlers())
        self.packages = PackageTable(lambda nid: nid in self.nodes and nid not in self.dead)
        self.handlers.update(self.packages.handlers())

    # -- durability --------------------------------------------------------------------------
    def restore(self) -> bool:
        """Reload the last snapshot, if any; True when there was one. Every node it lists as
        alive counts as just heard from: it has ``--node-timeout`` seconds to reconnect."""
        data = self.journal.load()
        if data is None:
            return False
        (self.nodes, self.dead, self.names, actor_nodes, actor_owners) = decode_state(data)
        self.actor_table.load(actor_nodes, actor_owners)
        self.groups.nodes = self.nodes
        self.jobs.restore(data.get("jobs", {}))
        now = time.monotonic()
        self.last_seen = {nid: now for nid, node in self.nodes.items() if node.get("Alive")}
        return True

    def dirty(self) -> None:
        """Save the tables at the end of this loop turn: after every change the turn makes,
        before the replies it sends (scheduled first, so it runs first)."""
        if not self._save_scheduled and self.journal.path:
            self._save_scheduled = True
            asyncio.get_running_loop().call_soon(self._save)

    def _save(self) -> None:
        self._save_scheduled = False
        self.journal.save(dict(encode_state(self.nodes, self.dead, self.names,
                                            self.actor_nodes, self.actor_owners),
                               jobs=self.jobs.snapshot()))

    # -- handlers ------------------------------------------------------------------------------
    def on_disconnect(self, conn: ServerConnection) -> None:
        node_id = conn.info.get("node_id")
        if node_id in self.nodes:
            if self.conns.get(node_id) is conn:
                del self.conns[node_id]
            if node_id not in self.dead:
                self._declare_dead(node_id, "its connection to the head closed")

    def on_register_node(self, conn: ServerConnection, msg: P.RegisterNode) -> None:
        conn.info["node_id"] = msg.node_id
        if msg.node_id in self.dead:
            # Its work was retried or failed elsewhere: it may not come back as itself.
            if msg.req_id:
                conn.send(P.Reply(msg.req_id, None, f"node {msg.node_id} was declared dead",
                                  "dead"))
            self._told_dead(conn)
            return
        self.last_seen[msg.node_id] = time.monotonic()
        self.conns[msg.node_id] = conn
        host = msg.address.rpartition("://")[2].rpartition(":")[0]
        self.nodes[msg.node_id] = {"NodeID": msg.node_id, "Alive": True,
                                   "NodeManagerAddress": host, "Address": msg.address,
                                   "Resources": dict(msg.resources),
                                   "Available": dict(msg.resources)}
        self.dirty()
        if msg.req_id:
            conn.send(P.Reply(msg.req_id, True))
        self.groups.retry()   # a group waiting for room (or for a node that fits) may fit now

    def _send_node(self, node_id: str, msg: P.Message) -> bool:
        conn = self.conns.get(node_id)
        if conn is None or node_id in self.dead:
            return False
        conn.send(msg)
        return True

    def on_reply(self, conn: ServerConnection, msg: P.Reply) -> None:
        """A node answers a question the head asked it (placement-group reservations)."""
        if not self._told_dead(conn):
            self.groups.on_reply(msg)

    def on_list_nodes(self, conn: ServerConnection, msg: P.ListNodes) -> None:
        if self._told_dead(conn):
            return
        conn.send(P.Reply(msg.req_id, list(self.nodes.values())))

    def on_register_name(self, conn: ServerConnection, msg: P.RegisterName) -> None:
        existing = self.names.get(msg.name)
        if existing is None:
            self.names[msg.name] = (msg.actor_id, bytes(msg.meta))
            self.dirty()
            conn.send(P.Reply(msg.req_id, [msg.actor_id, None, True]))
        elif msg.get_if_exists:
            conn.send(P.Reply(msg.req_id, [existing[0], None, False]))
        else:
            conn.send(P.Reply(msg.req_id, None,
                              f"an actor named {msg.name!r} already exists; use "
                              "unipar.get_actor(name) or .options(name=..., get_if_exists=True)",
                              "value"))

    def on_lookup_name(self, conn: ServerConnection, msg: P.LookupName) -> None:
        found = self.names.get(msg.name)
        conn.send(P.Reply(msg.req_id, list(found) if found else None))

    def on_unregister_name(self, conn: ServerConnection, msg: P.UnregisterName) -> None:
        found = self.names.get(msg.name)
        if found is not None and found[0] == msg.actor_id:
            del self.names[msg.name]
            self.dirty()
        if msg.req_id:
            conn.send(P.Reply(msg.req_id, True))

    def on_node_status(self, conn: ServerConnection, msg: P.NodeStatus) -> None:
        if self._told_dead(conn):
            return
        node = self.nodes.get(msg.node_id)
        if node is not None and node["Alive"]:
            node["Available"] = dict(msg.available)
            self.last_seen[msg.node_id] = time.monotonic()
            self.groups.retry()

    def check_heartbeats(self, timeout: float) -> None:
        """Declare dead every node silent for ``timeout`` s (a node sends its status every
        second): a frozen process, or a machine cut off the network."""
        now = time.monotonic()
        for node_id, node in self.nodes.items():
            if node["Alive"] and now - self.last_seen.get(node_id, now) > timeout:
                log.warning("node %s sent nothing for %g s: declared dead", node_id[:8], timeout)
                self._declare_dead(node_id, f"the head heard nothing from it for {timeout:g} s "
                                            "(--node-timeout)")

    def _declare_dead(self, node_id: str, reason: str) -> None:
        """Mark a node dead for good (the others learn it from ``list_nodes`` within a second,
        retry its tasks and fail calls to its actors) and free the names of its actors.

        Its connection is kept, not closed: a node that is only frozen or cut off still reads
        it when it wakes up, and learns from ``node_declared_dead`` (sent on it now; on a new
        connection, in answer to the first thing it sends) that it must stop. Closing it
        instead would leave such a node running, unaware, with stale work."""
        self.nodes[node_id]["Alive"] = False
        self.dead[node_id] = reason
        self.dirty()
        for name, (actor_id, _meta) in list(self.names.items()):
            owner = self.actor_owners.get(actor_id)
            if owner is not None and owner != node_id and owner not in self.dead:
                continue   # its owner re-creates it elsewhere (or frees the name)
            if self.actor_nodes.get(actor_id) == node_id or owner == node_id:
                del self.names[name]
        conn = self.conns.get(node_id)
        if conn is not None:
            self._told_dead(conn)
        self.groups.node_dead(node_id)
        self.packages.node_dead(node_id)

    def _told_dead(self, conn: ServerConnection) -> bool:
        """True if ``conn`` is a node declared dead: it is told so (once per connection),
        and what it sent is dropped. False for live nodes, drivers and workers."""
        node_id = conn.info.get("node_id")
        reason = self.dead.get(node_id) if node_id is not None else None
        if reason is None:
            return False
        if not conn.info.get("told_dead"):
            conn.info["told_dead"] = True
            conn.send(P.NodeDeclaredDead(node_id, reason))
        return True

    @property
    def actor_nodes(self) -> dict[bytes, str]:
        """Actor id -> hosting node id ("": dead for good; the last DEAD_KEPT of those)."""
        return self.actor_table.nodes

    @property
    def actor_owners(self) -> dict[bytes, str]:
        """Actor id -> the node that re-creates it elsewhere (until it dies for good)."""
        return self.actor_table.owners

    def on_actor_location(self, conn: ServerConnection, msg: P.ActorLocation) -> None:
        if self._told_dead(conn):
            return
        changed, owner = self.actor_table.located(msg.actor_id, msg.node_id)
        if changed:
            self.dirty()
        if owner is not None and owner != conn.info.get("node_id"):
            # It died on another node than its owner's: the owner drops what it kept to
            # re-create it, and keeps its death (the cause) for later calls from there.
            self._send_node(owner, P.ActorLocation(msg.actor_id, "", msg.death))

    def on_actor_owner(self, conn: ServerConnection, msg: P.ActorOwner) -> None:
        if self._told_dead(conn):
            return
        if self.actor_table.owned(msg.actor_id, msg.node_id):
            self.dirty()

    def on_lookup_actor(self, conn: ServerConnection, msg: P.LookupActor) -> None:
        if self._told_dead(conn):
            return
        conn.send(P.Reply(msg.req_id, self.actor_nodes.get(msg.actor_id)))

    def on_shutdown(self, conn: ServerConnection, msg: P.Shutdown) -> None:
        self.stopping.set()


def journal_path(cfg: dict[str, Any]) -> str:
    """Where this head keeps its snapshot: ``state_file`` if given; for the head of
    ``unipar start`` (detached) the state directory; a driver's own cluster keeps none."""
    if cfg.get("state_file") is not None:
        return str(cfg["state_file"])
    return session.head_state_path() if cfg.get("detached") else ""


def main(argv: list[str] | None = None) -> None:
    """``python -m unipar.native.head --config JSON``, the cluster secret (hex) on stdin: serve
    until SIGTERM, a Shutdown message, or (when not detached) stdin closing."""
    parser = argparse.ArgumentParser(prog="python -m unipar.native.head")
    parser.add_argument("--config", required=True)
    cfg = json.loads(parser.parse_args(argv).config)
    secret = bytes.fromhex(sys.stdin.buffer.readline().strip().decode())
    logging.basicConfig(level=logging.WARNING, format="(unipar head) %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return_big_buffers()   # big requests (job uploads) must not leave the RSS stepped up
    run_loop(_serve_head(cfg, secret))
    os._exit(0)   # nothing left to flush: skip interpreter teardown, shutdown stays fast


async def _serve_head(cfg: dict[str, Any], secret: bytes) -> None:
    """Restore the head, serve it (and its dashboard), say READY, and return once it stops."""
    loop = asyncio.get_running_loop()
    head = Head(secret, Journal(journal_path(cfg)))
    began = time.monotonic()
    if head.restore():
        log.warning("restarted: reloaded %d node(s) and %d named actor(s) from %s in "
                    "%.2f s", len(head.nodes), len(head.names), head.journal.path,
                    time.monotonic() - began)
    loop.add_signal_handler(signal.SIGTERM, head.stopping.set)
    servers = await serve(head, secret, cfg.get("host", "127.0.0.1"), cfg.get("port", 0),
                          tcp_fd=cfg.get("tcp_fd"))
    port = servers[0].sockets[0].getsockname()[1]
    shown = cfg.get("advertise") or cfg.get("host", "127.0.0.1")
    report_ready(cfg, f"READY tcp://{shown}:{port}\n")
    dashboard = None
    if cfg.get("dashboard_fd") is not None:   # after READY: start-up does not wait for it
        from ..dashboard.server import start_dashboard
        dashboard = await start_dashboard(head, secret, f"tcp://{shown}:{port}",
                                          cfg["dashboard_fd"])
    if not cfg.get("detached"):   # started by `unipar start`: runs until SIGTERM
        threading.Thread(target=_watch_stdin, args=(loop, head.stopping), daemon=True).start()
    checker = _check_heartbeats(head, float(cfg.get("node_timeout") or 0))  # referenced: kept
    await head.stopping.wait()
    for server in servers:
        server.close()
    if dashboard is not None:
        await dashboard.cleanup()
    if checker is not None:
        checker.cancel()   # what asyncio.run would do next anyway


def _watch_stdin(loop: asyncio.AbstractEventLoop, stopping: asyncio.Event) -> None:
    """Set ``stopping`` once stdin closes: the process that started us is gone (a thread)."""
    try:
        while sys.stdin.buffer.read(1 << 16):
            pass
    except OSError:
        pass
    loop.call_soon_threadsafe(stopping.set)


def _check_heartbeats(head: Head, timeout: float) -> asyncio.Future[None] | None:
    """Every second, declare dead the nodes silent for ``timeout`` s (0: never, as in a
    driver's own cluster, which has one node); the caller keeps the task referenced."""
    if timeout <= 0:
        return None

    async def heartbeats() -> None:
        while True:
            await asyncio.sleep(1.0)
            head.check_heartbeats(timeout)
    return asyncio.ensure_future(heartbeats())
