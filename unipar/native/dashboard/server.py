"""The cluster dashboard: a read-only web page and JSON API served from inside the head.

::

    browser ── GET / , /api/cluster ──▶ aiohttp (the head's event loop)
                                          │ head.nodes (membership, last heartbeat figures)
                                          └─ thread: node_info ──▶ each live node (HMAC handshake)
    GET /api/tasks, /api/timeline, /api/logs ──▶ thread: cluster.inspect ──▶ each live node
    GET /metrics ──▶ the snapshot as Prometheus text (metrics.py)

The same :func:`cluster_snapshot` feeds ``unipar status``, the page and the API, so the three
always agree. The starter binds the listening socket (:func:`bind`) and hands it to the head,
like the head's own port: a port in use is reported by ``unipar start`` before any daemon runs,
and the head imports aiohttp only after it has said it is ready, so start-up does not wait for
it. A request's path and a few query parameters (``limit``, ``name``, ``state``, ``since``)
are all that is read of it, as plain strings and numbers: nothing from HTTP is ever unpickled.
Every JSON shape is documented in docs/observability.md.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import importlib.util
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from ..wire import protocol as P
from ..cluster.connect import ConnectError, ask, explained
from ..cluster.inspect import cluster_logs, cluster_tasks, cluster_timeline
from ..wire.transport import Connection

DEFAULT_PORT = 8265          # Ray's
REFRESH_S = 2.0              # how often the page refreshes itself
CACHE_S = 1.0                # requests this close together share one round of node queries
NODE_TIMEOUT = 5.0           # a node silent this long shows "no answer" on the page
ACTORS_SHOWN = 1000          # rows of the actor table (alive first)
INSTALL_HINT = "pip install 'unipar[dashboard]'"
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
                     timeout: float = 30.0) -> dict[str, Any]:
    """The cluster as JSON-able data: every node the head knows (``list_nodes`` records), each
    live one asked for its report, in parallel; a node that does not answer within ``timeout``
    keeps the head's figures (from its last heartbeat) and an ``error``."""
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
    return {"head": head, "time": time.time(), "nodes": rows, "actors": actors,
            "totals": _totals(rows)}


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
                   leases=report.get("leases", 0))
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


def size(n: float) -> str:
    """Bytes for people: ``512 B``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def num(x: float) -> str:
    return f"{x:g}"


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


def script_hash(script: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline script."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


# -- the page ---------------------------------------------------------------------------------
# Rendered here, once, from the snapshot (every value escaped); the script only swaps in a fresh
# rendering of <main> every REFRESH_S, so the page also reads without JavaScript.
STYLE = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#f6f8fa;--ok:#1a7f37;--bad:#cf222e;
--warn:#9a6700;--bar:#0969da}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{display:flex;align-items:baseline;gap:16px;padding:14px 24px;background:#fff;
border-bottom:1px solid var(--line)}
header h1{font-size:18px;margin:0}
#status{margin-left:auto;font-size:12px;color:var(--muted)}
#status.down{color:var(--bad);font-weight:600}
main{padding:20px 24px;max-width:1400px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:12px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 14px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:600;margin:2px 0}
h2{font-size:15px;margin:28px 0 8px}
table{width:100%;border-collapse:separate;border-spacing:0;background:#fff;
border:1px solid var(--line);border-radius:8px}
th,td{text-align:left;padding:8px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600}
td{white-space:nowrap}
tr:last-child td{border-bottom:0}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.alive{background:#dafbe1;color:var(--ok)}.dead{background:#ffebe9;color:var(--bad)}
.other{background:#fff8c5;color:var(--warn)}
.bar{height:6px;background:#eaeef2;border-radius:3px;overflow:hidden;margin:3px 0;min-width:90px}
.bar span{display:block;height:100%;background:var(--bar)}
.scroll{overflow-x:auto}
.res{display:grid;grid-template-columns:auto minmax(90px,1fr);gap:0 10px;align-items:center}
.muted{color:var(--muted)}.small{font-size:12px}.err{color:var(--bad);font-size:12px}
footer{padding:4px 24px 24px;color:var(--muted);font-size:12px}
"""

SCRIPT = """
(function () {
  var main = document.getElementById("main"), status = document.getElementById("status");
  var every = Number(document.body.dataset.refresh) * 1000;
  function refresh() {
    fetch("/_body", {cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (text) {
      main.innerHTML = text;
      status.textContent = "live \u00b7 updated " + new Date().toLocaleTimeString();
      status.className = "";
    }).catch(function (e) {
      status.textContent = "cannot reach the head (" + e.message + "); retrying";
      status.className = "down";
    });
  }
  setInterval(refresh, every);
})();
"""

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               f"script-src {script_hash(SCRIPT)}; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def render_page(snap: dict[str, Any], refresh_s: float) -> str:
    """The whole page: header, the body of :func:`render_body`, and the refreshing script."""
    when = time.strftime("%H:%M:%S", time.localtime(snap["time"]))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>unipar dashboard</title><style>{STYLE}</style></head>'
            f'<body data-refresh="{refresh_s:g}"><header><h1>unipar cluster</h1>'
            f'<span class="muted">head <span class="mono">{esc(snap["head"])}</span></span>'
            f'<span id="status">updated {when}</span></header>'
            f'<main id="main">{render_body(snap)}</main>'
            f'<footer>Read-only; refreshes every {refresh_s:g} s. JSON: '
            f'<a href="/api/cluster">/api/cluster</a> · <a href="/api/nodes">/api/nodes</a> · '
            f'<a href="/api/actors">/api/actors</a></footer>'
            f'<script>{SCRIPT}</script></body></html>')


def render_body(snap: dict[str, Any]) -> str:
    return _cards(snap["totals"]) + _nodes_table(snap["nodes"]) + _actors_table(snap["actors"])


def _bar(used: float, total: float) -> str:
    width = 0.0 if total <= 0 else max(0.0, min(100.0, 100.0 * used / total))
    return f'<div class="bar"><span style="width:{width:.1f}%"></span></div>'


def _card(key: str, value: str, note: str = "", bar: str = "") -> str:
    return (f'<div class="card"><div class="k">{esc(key)}</div><div class="v">{esc(value)}</div>'
            f'{bar}<div class="muted small">{esc(note)}</div></div>')


def _cards(t: dict[str, Any]) -> str:
    cards = [_card("Nodes", f"{t['nodes_alive']} alive", f"{t['nodes_dead']} dead")]
    for key in ("CPU", "GPU"):
        fig = t["resources"].get(key)
        if fig and fig["total"] > 0:
            cards.append(_card(key, f"{num(fig['in_use'])} / {num(fig['total'])}", "in use",
                               _bar(fig["in_use"], fig["total"])))
    cards.append(_card("Tasks", f"{t['tasks_running']} running", f"{t['tasks_waiting']} waiting"))
    cards.append(_card("Actors", f"{t['actors']} alive"))
    cards.append(_card("Object store", size(t["store_used"]), f"of {size(t['store_limit'])}",
                       _bar(t["store_used"], t["store_limit"])))
    return f'<div class="cards">{"".join(cards)}</div>'


def _badge(state: str) -> str:
    kind = state if state in ("alive", "dead") else "other"
    return f'<span class="badge {kind}">{esc(state)}</span>'


def _resources(resources: dict[str, dict[str, float]]) -> str:
    cells = "".join(f'<span>{esc(k)} {num(f["in_use"])}/{num(f["total"])}</span>'
                    f'{_bar(f["in_use"], f["total"])}'
                    for k, f in resources.items() if f["total"] > 0)
    return f'<div class="res">{cells}</div>'


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _node_cells(n: dict[str, Any]) -> str:
    if not n["alive"]:   # what it had; nothing runs there any more
        had = " · ".join(f"{esc(k)} {num(f['total'])}" for k, f in n["resources"].items()
                         if f["total"] > 0)
        return (f'<td class="muted">{had}</td>'
                '<td colspan="4" class="muted">no longer part of the cluster</td>')
    if "store" not in n:   # alive for the head, but it did not answer us
        return (f'<td>{_resources(n["resources"])}</td>'
                f'<td colspan="4" class="err">{esc(n["error"] or "no report")}</td>')
    st = n["store"]
    return (f'<td>{_resources(n["resources"])}</td>'
            f'<td>{n["tasks_running"]} running<br><span class="muted">{n["tasks_waiting"]} '
            f'waiting</span></td><td>{n["actors"]}</td>'
            f'<td>{_count(n["workers"], "worker")}<br>'
            f'<span class="muted">{_count(n["drivers"], "driver")}</span></td>'
            f'<td>{size(st["used"])} of {size(st["limit"])}{_bar(st["used"], st["limit"])}'
            f'<span class="muted small">{size(st["spilled"])} spilled · '
            f'{_count(st["objects"], "object")}</span></td>')


def _nodes_table(nodes: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<tr><td><span class="mono" title="{esc(n["node_id"])}">{esc(n["node_id"][:12])}'
        f'</span><br><span class="muted small">{esc(n["host"])}</span></td>'
        f'<td>{_badge("alive" if n["alive"] else "dead")}</td>'
        f'<td class="mono">{esc(n["address"])}</td>{_node_cells(n)}</tr>' for n in nodes)
    if not rows:
        rows = '<tr><td colspan="8" class="muted">No node has registered yet.</td></tr>'
    return ('<h2>Nodes</h2><div class="scroll"><table><thead><tr><th>Node</th><th>State</th>'
            '<th>Address</th>'
            '<th>Resources in use</th><th>Tasks</th><th>Actors</th><th>Processes</th>'
            f'<th>Object store</th></tr></thead><tbody>{rows}</tbody></table></div>')


def _actors_table(actors: list[dict[str, Any]]) -> str:
    shown = sorted(actors, key=lambda a: a.get("state") == "dead")[:ACTORS_SHOWN]
    rows = "".join(
        f'<tr><td>{esc(a.get("class_name", ""))}</td><td>{esc(a.get("name") or "—")}</td>'
        f'<td>{_badge(str(a.get("state", "?")))}</td>'
        f'<td class="mono">{esc(a["node_id"][:12])}</td>'
        f'<td class="mono muted">{esc(a.get("actor_id", ""))}</td>'
        f'<td>{a.get("restarts", 0)}</td></tr>' for a in shown)
    if not rows:
        rows = '<tr><td colspan="6" class="muted">No actors.</td></tr>'
    more = len(actors) - len(shown)
    note = f'<p class="muted small">{more} more not shown.</p>' if more > 0 else ""
    return ('<h2>Actors</h2><div class="scroll"><table><thead><tr><th>Class</th><th>Name</th>'
            '<th>State</th>'
            '<th>Node</th><th>Actor ID</th><th>Restarts</th></tr></thead>'
            f'<tbody>{rows}</tbody></table></div>{note}')


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
                cluster_snapshot, nodes, self.secret, self.address, NODE_TIMEOUT))
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
    """GET routes only; a request's path is all that is read of it."""
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

    async def index(request: Any) -> Any:
        return web.Response(text=render_page(await snapshots.get(), REFRESH_S),
                            content_type="text/html")

    async def body(request: Any) -> Any:
        return web.Response(text=render_body(await snapshots.get()), content_type="text/html")

    def api(part: str | None) -> Any:
        async def handler(request: Any) -> Any:
            snap = await snapshots.get()
            return web.json_response(snap if part is None else snap[part])
        return handler

    app = web.Application(middlewares=[guard])
    app.add_routes([web.get("/", index), web.get("/_body", body),
                    web.get("/api/cluster", api(None)), web.get("/api/nodes", api("nodes")),
                    web.get("/api/actors", api("actors")),
                    web.get("/api/placement_groups", api("placement_groups")),
                    *_inspect_routes(web, snapshots)])
    return app


def _query_number(request: Any, key: str, default: float, low: float, high: float) -> float:
    """A numeric query parameter, clamped to [low, high]; ``default`` when absent or bad."""
    try:
        return min(high, max(low, float(request.query.get(key, default))))
    except ValueError:
        return default


def _inspect_routes(web: Any, snapshots: Snapshots) -> list[Any]:
    """``/api/tasks``, ``/api/timeline``, ``/api/logs`` (asked of every node) and ``/metrics``."""
    def nodes() -> list[dict[str, Any]]:
        return [dict(n) for n in snapshots.head.nodes.values()]   # on the loop thread

    async def tasks(request: Any) -> Any:
        limit = int(_query_number(request, "limit", 1000, 1, 10_000))
        name, state = request.query.get("name", "")[:200], request.query.get("state", "")[:20]
        return web.json_response(await asyncio.to_thread(
            cluster_tasks, nodes(), snapshots.secret, limit, name, state))

    async def timeline(request: Any) -> Any:
        since = _query_number(request, "since", 0.0, 0.0, 1e12)
        return web.json_response(await asyncio.to_thread(
            cluster_timeline, nodes(), snapshots.secret, since))

    async def logs(request: Any) -> Any:
        return web.json_response(await asyncio.to_thread(cluster_logs, nodes(),
                                                         snapshots.secret))

    async def metrics(request: Any) -> Any:
        from .metrics import CONTENT_TYPE, render
        try:
            text = render(await snapshots.get())
        except ImportError:
            return web.Response(status=501, text=f"prometheus_client is not installed; "
                                f"{INSTALL_HINT} adds it\n")
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE})

    return [web.get("/api/tasks", tasks), web.get("/api/timeline", timeline),
            web.get("/api/logs", logs), web.get("/metrics", metrics)]
