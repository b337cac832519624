"""The cluster dashboard: read-only web pages and a JSON API served from inside the head.

::

    browser ── GET /, /machines, /work, /actors, /logs ──▶ page.py (HTML shells; /static/*.js
            ── GET /static/* (scripts, uPlot, CSS)          fill them from the JSON below)
            ── GET /api/cluster, /api/nodes, /api/actors ──▶ aiohttp (the head's event loop)
                                          │ head.nodes (membership, last heartbeat figures)
                                          └─ thread: node_info ──▶ each live node (HMAC handshake)
    GET /api/machines, /api/tasks, /api/timeline, /api/logs/..., /metrics ──▶ api.py
    GET /api/jobs[/{id}[/log]] ──▶ jobs.py (the head's job table, read on its loop)

The same :func:`cluster_snapshot` feeds ``unipar status``, the pages and the API, so they
always agree. The starter binds the listening socket (:func:`bind`) and hands it to the head,
like the head's own port: a port in use is reported by ``unipar start`` before any daemon runs,
and the head imports aiohttp only after it has said it is ready, so start-up does not wait for
it. A request's path and a few query parameters (``limit``, ``name``, ``state``, ``since``,
``offset``, ``length``, ``refresh``) are all that is read of it, as plain strings and numbers:
nothing from HTTP is ever unpickled. Every JSON shape is documented in docs/observability.md;
the static files (uPlot, vendored: static/VENDORED.md) ship in the package, so the pages work
offline.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from ..wire import protocol as P
from ..cluster.connect import ConnectError, ask, explained
from ..wire.transport import Connection
from . import api, jobs
from .page import PAGES, num, render_body, render_page, size

__all__ = ["DEFAULT_PORT", "Binding", "bind", "cluster_snapshot", "num", "query_node", "size",
           "start_dashboard"]

DEFAULT_PORT = 8265          # Ray's
REFRESH_S = 2.0              # how often the pages refresh themselves (?refresh=S overrides)
REFRESH_RANGE = (0.25, 60.0)
CACHE_S = 1.0                # requests this close together share one round of node queries
NODE_TIMEOUT = 5.0           # a node silent this long shows "no answer" on the page
INSTALL_HINT = api.INSTALL_HINT
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}

log = logging.getLogger("unipar.native.head")


# -- data: shared with `unipar status` ---------------------------------------------------------
def query_node(address: str, secret: bytes, timeout: float) -> dict[str, Any]:
    """One node's own report (``node_info``): resources, tasks, actors, workers, store."""
    conn = explained(address, lambda: Connection(address, secret, timeout=timeout))
    try:
        return ask(conn, lambda r: P.NodeInfo(r), timeout=timeout)
    finally:
        conn.close()


def cluster_snapshot(nodes: list[dict[str, Any]], secret: bytes, head: str,
                     timeout: float = 30.0, history: bool = False) -> dict[str, Any]:
    """The cluster as JSON-able data: every node the head knows (``list_nodes`` records), each
    live one asked for its report, in parallel; a node that does not answer within ``timeout``
    keeps the head's figures (from its last heartbeat) and an ``error``. With ``history``, the
    snapshot also holds ``"history"``: node id -> its last five minutes of machine samples
    (``MachineSampler.columns``), which ``/api/cluster`` leaves out."""
    live = [n for n in nodes if n.get("Alive")]
    reports: dict[str, Any] = {}
    if live:
        with ThreadPoolExecutor(max_workers=min(16, len(live))) as pool:
            futures = {n["NodeID"]: pool.submit(query_node, n["Address"], secret, timeout)
                       for n in live}
        for node_id, future in futures.items():
            try:
                reports[node_id] = future.result()
            except ConnectError as exc:
                reports[node_id] = exc
    rows = [_node_row(n, reports.get(n["NodeID"])) for n in nodes]
    actors = [a for n in nodes if isinstance(reports.get(n["NodeID"]), dict)
              for a in _actor_rows(n["NodeID"], reports[n["NodeID"]])]
    snap = {"head": head, "time": time.time(), "nodes": rows, "actors": actors,
            "totals": _totals(rows)}
    if history:
        snap["history"] = {node_id: r.get("machine_history") for node_id, r in reports.items()
                           if isinstance(r, dict)}
    return snap


def _node_row(node: dict[str, Any], report: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"node_id": node["NodeID"], "alive": bool(node.get("Alive")),
                           "address": node.get("Address", ""),
                           "host": node.get("NodeManagerAddress", ""), "error": None}
    if isinstance(report, dict):
        total, available = report["total"], report["available"]
        store = report["store"]
        row.update(tasks_running=report.get("running", 0), tasks_waiting=report.get("queued", 0),
                   actors=report.get("actors", 0), workers=report.get("workers", 0),
                   drivers=report.get("drivers", 0),
                   store={"used": store["shm_used"], "limit": store["limit"],
                          "spilled": store["spill_used"],
                          "objects": report.get("objects", store["objects"])})
        row.update(tasks=report.get("tasks"), machine=report.get("machine"),
                   object_sizes=report.get("object_sizes"), log_dir=report.get("log_dir", ""),
                   leases=report.get("leases", 0), infeasible=report.get("infeasible", []))
        row["resources"] = {k: {"total": v, "in_use": v - available.get(k, 0.0)}
                            for k, v in total.items()}
    else:   # dead, or no answer: what the head last heard from its heartbeats
        available = node.get("Available", {})
        row["resources"] = {k: {"total": v, "in_use": v - available.get(k, v)}
                            for k, v in node.get("Resources", {}).items()}
        if report is not None:
            row["error"] = str(report)
    return row


def _actor_rows(node_id: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The node's actors (nodes too old to list them only give a count)."""
    return [dict(a, node_id=node_id) for a in report.get("actor_list", [])]


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    alive = [r for r in rows if r["alive"]]
    resources: dict[str, dict[str, float]] = {}
    for row in alive:
        for key, fig in row["resources"].items():
            acc = resources.setdefault(key, {"total": 0.0, "in_use": 0.0})
            acc["total"] += fig["total"]
            acc["in_use"] += fig["in_use"]
    reported = [r for r in alive if "store" in r]
    counted = [r["tasks"] for r in reported if r.get("tasks")]
    queued_by: dict[str, int] = {}
    for tasks in counted:
        for why, n in tasks["queued_by"].items():
            queued_by[why] = queued_by.get(why, 0) + n
    sizes = [r["object_sizes"] for r in reported if r.get("object_sizes")]
    return {"nodes_alive": len(alive), "nodes_dead": len(rows) - len(alive),
            "resources": resources,
            "tasks_running": sum(r["tasks_running"] for r in reported),
            "tasks_waiting": sum(r["tasks_waiting"] for r in reported),
            "tasks_queued_by": queued_by,
            "tasks_finished": sum(t["finished"] for t in counted),
            "tasks_failed": sum(t["failed"] for t in counted),
            "actors": sum(r["actors"] for r in reported),
            "objects": sum(r["store"]["objects"] for r in reported),
            "object_bytes": sum(s["bytes"] for s in sizes),
            "largest_object": max((s["largest"] for s in sizes), default=0),
            "store_used": sum(r["store"]["used"] for r in reported),
            "store_limit": sum(r["store"]["limit"] for r in reported),
            "store_spilled": sum(r["store"]["spilled"] for r in reported)}


# -- the listening socket (bound by the starter) -----------------------------------------------
class Binding(NamedTuple):
    sock: socket.socket | None   # listening, to hand to the head; None: no dashboard
    url: str                     # where people open it ("" when off)
    problem: str                 # why it is off ("" when on)


def bind(host: str, port: int, shown: str) -> Binding:
    """Bind the dashboard's port here, so a clash is known before any daemon starts.

    Never raises: a dashboard that cannot start leaves the cluster running, and ``problem``
    says what to do. ``shown`` is the address people reach ``host`` at."""
    try:
        missing = importlib.util.find_spec("aiohttp") is None
    except (ImportError, ValueError):
        missing = True
    if missing:
        return Binding(None, "", f"aiohttp is not installed; {INSTALL_HINT} turns it on")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        return Binding(None, "", f"cannot listen on {host}:{port} ({exc.strerror}); choose "
                       "another dashboard port (0: any free port)")
    return Binding(sock, f"http://{shown}:{sock.getsockname()[1]}", "")


HEADERS = {
    # Scripts and styles from /static/ only: no inline script, no style= attribute (page.py).
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


# -- the server (in the head) ------------------------------------------------------------------
class Snapshots:
    """Snapshots of the head's cluster, taken off the event loop and shared by requests that
    arrive within ``CACHE_S`` of each other (several open pages cost one round of queries)."""

    def __init__(self, head: Any, secret: bytes, address: str) -> None:
        self.head, self.secret, self.address = head, secret, address
        self.task: asyncio.Future | None = None
        self.taken = 0.0

    async def get(self) -> dict[str, Any]:
        now = time.monotonic()
        if self.task is None or (self.task.done() and now - self.taken > CACHE_S):
            nodes = [dict(n) for n in self.head.nodes.values()]   # copied on the loop thread
            self.taken = now
            self.task = asyncio.ensure_future(asyncio.to_thread(
                cluster_snapshot, nodes, self.secret, self.address, NODE_TIMEOUT, True))
        snap = await asyncio.shield(self.task)
        # The head's own table of placement groups, read now on the loop thread (no query).
        return dict(snap, placement_groups=[g.row() for g in self.head.groups.groups.values()])


def _allowed_hosts(sock: socket.socket) -> set[str] | None:
    """Host names a request may name when we listen on loopback only: a page from elsewhere
    that rebinds its DNS name to 127.0.0.1 still sends its own name, and is refused."""
    bound = sock.getsockname()[0]
    return LOOPBACK_NAMES | {bound} if bound.startswith("127.") else None


async def start_dashboard(head: Any, secret: bytes, address: str, fd: int) -> Any:
    """Serve the dashboard on the listening socket ``fd`` (from :func:`bind`) on this loop.

    Returns the aiohttp runner (``await runner.cleanup()`` closes the port), or None when the
    dashboard cannot start: the head carries on without it and logs why."""
    sock = socket.socket(fileno=fd)
    try:
        from aiohttp import web
    except ImportError as exc:
        sock.close()
        log.warning("dashboard off: %s; %s turns it on", exc, INSTALL_HINT)
        return None
    try:
        app = _app(web, Snapshots(head, secret, address), _allowed_hosts(sock))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except Exception:   # the dashboard is a view: the cluster must not die with it
        log.exception("dashboard off: it could not start")
        sock.close()
        return None
    return runner


def _app(web: Any, snapshots: Snapshots, allowed: set[str] | None) -> Any:
    """GET routes only; a request's path and a few query parameters are all that is read."""
    @web.middleware
    async def guard(request: Any, handler: Any) -> Any:
        try:
            name = request.url.host or ""
        except ValueError:
            name = ""
        if allowed is not None and name.strip("[]") not in allowed:
            return web.Response(status=421, text="unknown host name\n")
        response = await handler(request)
        response.headers.update(HEADERS)
        return response

    def page(key: str) -> Any:
        async def handler(request: Any) -> Any:
            refresh = api.query_number(request, "refresh", REFRESH_S, *REFRESH_RANGE)
            snap = await snapshots.get() if key == "overview" else None
            return web.Response(text=render_page(key, snapshots.address, refresh, snap),
                                content_type="text/html")
        return handler

    async def body(request: Any) -> Any:
        return web.Response(text=render_body(await snapshots.get()), content_type="text/html")

    def whole(part: str | None) -> Any:
        async def handler(request: Any) -> Any:
            snap = await snapshots.get()
            if part is None:
                return web.json_response({k: v for k, v in snap.items() if k != "history"})
            return web.json_response(snap[part])
        return handler

    def nodes() -> list[dict[str, Any]]:
        return [dict(n) for n in snapshots.head.nodes.values()]   # on the loop thread

    def job_rows() -> list[dict[str, Any]]:
        return list(snapshots.head.jobs.snapshot().values())   # on the loop thread: copies

    sources = api.Sources(snapshots.get, nodes, snapshots.secret)
    app = web.Application(middlewares=[guard])
    app.add_routes([web.get("/", page("overview")), web.get("/_body", body),
                    *[web.get("/" + key, page(key)) for key in PAGES if key != "overview"],
                    web.static("/static", STATIC_DIR),
                    web.get("/api/cluster", whole(None)), web.get("/api/nodes", whole("nodes")),
                    web.get("/api/actors", whole("actors")),
                    web.get("/api/placement_groups", whole("placement_groups")),
                    *jobs.routes(web, job_rows, snapshots.head.jobs.log_path),
                    *api.routes(web, sources)])
    return app
