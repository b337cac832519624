"""The dashboard's JSON endpoints beyond the snapshot: one node, actor or task by id, the machine
history, tasks, timeline, log files and pages of one log, and ``/metrics``.

::

    GET /api/nodes/{id}, /api/actors/{id}   ── the snapshot (shared, CACHE_S) ── 404 if unknown
    GET /api/machines                       ── the snapshot's machine_history columns
    GET /api/tasks[/{id}], /api/timeline, /api/logs ── thread: cluster.inspect ── every node
    GET /api/logs/{node_id}/{name}?offset=&length=  ── thread: ReadLog ── that node, one page

Handlers get what they may use as two callables (:class:`Sources`): the snapshot and the
head's node records; they never see the head itself. An id may be given whole or as a prefix
that names one thing; anything else is a 404 whose JSON ``error`` says what exists. Shapes:
docs/observability.md.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Awaitable, Callable, NamedTuple

from ..cluster.connect import ConnectError
from ..cluster.inspect import ask_node, cluster_logs, cluster_tasks, cluster_timeline
from ..wire import protocol as P

LOG_PAGE = 64 * 1024         # bytes of a log page by default
LOG_PAGE_MAX = 256 * 1024    # and at most: a huge log is read a page at a time, never whole
TASK_SEARCH = 10_000         # ended tasks searched for /api/tasks/{id} (what nodes keep)
INSTALL_HINT = "pip install 'unipar[dashboard]'"


class Sources(NamedTuple):
    snapshot: Callable[[], Awaitable[dict[str, Any]]]   # the shared snapshot (with history)
    nodes: Callable[[], list[dict[str, Any]]]            # the head's node records, copied
    secret: bytes


def not_found(web: Any, what: str) -> Any:
    return web.json_response({"error": what}, status=404)


def query_number(request: Any, key: str, default: float, low: float, high: float) -> float:
    """A numeric query parameter, clamped to [low, high]; ``default`` when absent or bad."""
    try:
        value = float(request.query.get(key, default))
    except ValueError:
        return default
    return default if math.isnan(value) else min(high, max(low, value))


def pick(items: list[dict[str, Any]], key: str, wanted: str, noun: str,
         also: str = "") -> dict[str, Any] | str:
    """The one item whose ``key`` is ``wanted`` or starts with it (or whose ``also`` field
    equals it: an actor's name, which a dead actor may have held before a live one); else the
    text of a 404 naming what exists."""
    exact = [i for i in items if i.get(key) == wanted or (also and i.get(also) == wanted)]
    if len(exact) > 1:
        exact = [i for i in exact if i.get("state") != "dead"] or exact
    found = exact or [i for i in items if wanted and str(i.get(key, "")).startswith(wanted)]
    if len(found) == 1:
        return found[0]
    known = ", ".join(str(i.get(key, ""))[:12] for i in items[:20]) or "none"
    if found:
        return f"{len(found)} {noun}s match {wanted!r}; give more of the id"
    return f"no {noun} {wanted!r} (known: {known})"


def machines(snap: dict[str, Any]) -> dict[str, Any]:
    """``/api/machines``: each alive node's newest sample and its last five minutes."""
    history = snap.get("history", {})
    return {"time": snap["time"],
            "nodes": [{"node_id": n["node_id"], "host": n["host"], "alive": n["alive"],
                       "machine": n.get("machine"), "history": history.get(n["node_id"])}
                      for n in snap["nodes"]]}


def log_page(data: bytes, offset: int, size: int) -> dict[str, Any]:
    """A page of a log as JSON: the text, cut before a UTF-8 character the page splits (the
    next page starts with it), and ``next``: the offset to ask for next."""
    text = data.decode("utf-8", errors="replace")
    for cut in range(1, min(4, len(data)) + 1):   # a multi-byte character cut at the end
        lead = data[-cut]
        if lead & 0xC0 == 0xC0:                   # its first byte: is the character whole?
            need = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
            if need > cut:
                data = data[:-cut]
                text = data.decode("utf-8", errors="replace")
            break
        if lead < 0x80:
            break
    return {"text": text, "offset": offset, "next": offset + len(data), "size": size}


def routes(web: Any, src: Sources) -> list[Any]:
    """The routes of this module (GET only)."""
    async def node(request: Any) -> Any:
        got = pick((await src.snapshot())["nodes"], "node_id", request.match_info["id"], "node")
        return not_found(web, got) if isinstance(got, str) else web.json_response(got)

    async def actor(request: Any) -> Any:
        got = pick((await src.snapshot())["actors"], "actor_id", request.match_info["id"],
                   "actor", also="name")
        return not_found(web, got) if isinstance(got, str) else web.json_response(got)

    async def machine_history(request: Any) -> Any:
        return web.json_response(machines(await src.snapshot()))

    async def tasks(request: Any) -> Any:
        limit = int(query_number(request, "limit", 1000, 1, 10_000))
        name, state = request.query.get("name", "")[:200], request.query.get("state", "")[:20]
        return web.json_response(await asyncio.to_thread(
            cluster_tasks, src.nodes(), src.secret, limit, name, state))

    async def task(request: Any) -> Any:
        found = await asyncio.to_thread(cluster_tasks, src.nodes(), src.secret, TASK_SEARCH)
        rows = [t for t in found["tasks"] if "task_id" in t]
        got = pick(rows, "task_id", request.match_info["id"], "task")
        return not_found(web, got) if isinstance(got, str) else web.json_response(got)

    async def timeline(request: Any) -> Any:
        since = query_number(request, "since", 0.0, 0.0, 1e12)
        return web.json_response(await asyncio.to_thread(
            cluster_timeline, src.nodes(), src.secret, since))

    async def logs(request: Any) -> Any:
        return web.json_response(await asyncio.to_thread(cluster_logs, src.nodes(),
                                                         src.secret))

    return [web.get("/api/nodes/{id}", node), web.get("/api/actors/{id}", actor),
            web.get("/api/machines", machine_history), web.get("/api/tasks", tasks),
            web.get("/api/tasks/{id}", task), web.get("/api/timeline", timeline),
            web.get("/api/logs", logs), web.get("/api/logs/{node}/{name}", _log_reader(web, src)),
            web.get("/metrics", _metrics(web, src)),
            web.route("*", "/api/{rest:.*}", _unknown(web))]


def _log_reader(web: Any, src: Sources) -> Callable[[Any], Awaitable[Any]]:
    """``/api/logs/{node}/{name}?offset=0&length=65536``: one page of one log file, read by
    its node (``offset`` < 0: that many bytes before the end)."""
    async def read(request: Any) -> Any:
        alive = [n for n in src.nodes() if n.get("Alive")]
        got = pick([{"node_id": n["NodeID"], "address": n["Address"]} for n in alive],
                   "node_id", request.match_info["node"], "alive node")
        if isinstance(got, str):
            return not_found(web, got)
        name = request.match_info["name"]
        offset = int(query_number(request, "offset", 0, -1e15, 1e15))
        length = int(query_number(request, "length", LOG_PAGE, 0, LOG_PAGE_MAX))
        try:
            page = await asyncio.to_thread(ask_node, got["address"], src.secret,
                                           lambda r: P.ReadLog(r, name, offset, length))
        except ConnectError as exc:
            missing = "no log file" in str(exc)
            return web.json_response({"error": str(exc)}, status=404 if missing else 502)
        body = log_page(bytes(page["data"]), page["offset"], page["size"])
        return web.json_response(dict(body, node_id=got["node_id"], name=name))
    return read


def _metrics(web: Any, src: Sources) -> Callable[[Any], Awaitable[Any]]:
    async def metrics(request: Any) -> Any:
        from .metrics import CONTENT_TYPE, render   # prometheus_client: only when asked
        try:
            text = render(await src.snapshot())
        except ImportError:
            return web.Response(status=501, text=f"prometheus_client is not installed; "
                                f"{INSTALL_HINT} adds it\n")
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE})
    return metrics


def _unknown(web: Any) -> Callable[[Any], Awaitable[Any]]:
    async def unknown(request: Any) -> Any:
        if request.method != "GET":
            return web.json_response({"error": "the dashboard is read-only"}, status=405)
        return not_found(web, f"no endpoint {request.path!r}; see docs/observability.md")
    return unknown
