"""The dashboard's HTML: the overview rendered here from the snapshot, and the shells of the other
pages, which their scripts (static/*.js) fill from the JSON endpoints.

::

    GET /            render_page(snap, "overview")  the overview, readable without JavaScript;
                     static/overview.js swaps in GET /_body every refresh
    GET /machines    render_page(None, "machines")  an empty shell: static/machines.js draws it
    GET /work, /actors, /jobs, /logs                the same, each with its own script

Every value from the cluster is escaped. The Content-Security-Policy (server.HEADERS) allows
scripts and styles from this server's /static/ only, so no page carries inline script or style:
widths are ``<meter>`` values, not ``style=`` attributes.
"""

from __future__ import annotations

import html
import time
from typing import Any

ACTORS_SHOWN = 1000          # rows of the overview's actor table (alive first)

# path -> (title, the page's own script); the order is the navigation's
PAGES: dict[str, tuple[str, str]] = {
    "overview": ("Overview", "overview.js"),
    "machines": ("Machines", "machines.js"),
    "work": ("Work", "work.js"),
    "actors": ("Actors & objects", "actors.js"),
    "jobs": ("Jobs", "jobs.js"),
    "logs": ("Logs", "logs.js"),
}
NEEDS_CHARTS = {"machines", "work"}   # pages that load uPlot


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def size(n: float) -> str:
    """Bytes for people: ``512 B``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def num(x: float) -> str:
    return f"{x:g}"


def render_page(page: str, head: str, refresh_s: float, snap: dict[str, Any] | None) -> str:
    """One page: header with navigation, its ``<main>`` (the overview's body when ``snap`` is
    given, else empty for the page's script to fill), and its scripts.

    Raises:
        KeyError: ``page`` is not one of :data:`PAGES`.
    """
    title, script = PAGES[page]
    charts = page in NEEDS_CHARTS
    here = ' class="here" aria-current="page"'
    links = "".join(
        f'<a href="{"/" if key == "overview" else "/" + key}"{here if key == page else ""}>'
        f'{esc(name)}</a>' for key, (name, _) in PAGES.items())
    when = time.strftime("%H:%M:%S", time.localtime(snap["time"])) if snap else ""
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>unipar dashboard{"" if page == "overview" else " · " + esc(title)}</title>'
            + ('<link rel="stylesheet" href="/static/uPlot.min.css">' if charts else "")
            + '<link rel="stylesheet" href="/static/dashboard.css">'
            '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml"></head>'
            f'<body data-page="{esc(page)}" data-refresh="{refresh_s:g}">'
            f'<header><h1>unipar</h1><nav>{links}</nav>'
            f'<span class="muted head">head <span class="mono">{esc(head)}</span></span>'
            f'<span id="status">{"updated " + when if when else "loading…"}</span></header>'
            '<main id="main">'
            f'{render_body(snap) if snap else ""}</main>'
            f'<footer>Read-only; refreshes every {refresh_s:g} s. JSON: '
            '<a href="/api/cluster">/api/cluster</a> · <a href="/api/machines">/api/machines</a>'
            ' · <a href="/api/tasks">/api/tasks</a> · <a href="/api/timeline">/api/timeline</a>'
            ' · <a href="/api/jobs">/api/jobs</a> · <a href="/api/logs">/api/logs</a>'
            ' · <a href="/metrics">/metrics</a></footer>'
            + ('<script src="/static/uPlot.iife.min.js"></script>' if charts else "")
            + '<script src="/static/dashboard.js"></script>'
            f'<script src="/static/{script}"></script></body></html>')


def render_body(snap: dict[str, Any]) -> str:
    """The overview's ``<main>``: totals, nodes, actors."""
    return _cards(snap["totals"]) + _nodes_table(snap["nodes"]) + _actors_table(snap["actors"])


def _bar(used: float, total: float) -> str:
    return f'<meter min="0" max="{max(total, 0):g}" value="{max(0.0, min(used, total)):g}">' \
           '</meter>'


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
                    for k, f in resources.items() if f["total"] > 0 and ":" not in k)
    return f'<div class="res">{cells}</div>'


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _node_cells(n: dict[str, Any]) -> str:
    if not n["alive"]:   # what it had; nothing runs there any more
        had = " · ".join(f"{esc(k)} {num(f['total'])}" for k, f in n["resources"].items()
                         if f["total"] > 0 and ":" not in k)
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
