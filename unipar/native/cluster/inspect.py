"""Questions asked of every node at once: tasks, timeline, log files (issue #17).

::

    dashboard (/api/tasks, /api/timeline, /api/logs)  ─┐
    unipar logs, unipar.timeline()                     ─┼─▶ ask_nodes ── thread per node ──▶ node
                                                        │     (one connection each, HMAC)
                                                        └◀── {node_id: value | ConnectError}

Each node answers for itself (node/observe.py); here the answers are merged. Shapes:
docs/observability.md.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ..wire import protocol as P
from ..wire.transport import Connection
from .connect import ConnectError, explained

TIMEOUT = 10.0


class NodeLink:
    """One connection to a node for several requests in turn (``unipar logs -f``)."""

    def __init__(self, address: str, secret: bytes, timeout: float = TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout
        self.conn = explained(address, lambda: Connection(address, secret, timeout=timeout))
        self.replies: queue.Queue = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self.conn.serve_forever, args=(self.replies.put,),
                         name="unipar-inspect", daemon=True).start()

    def ask(self, make: Callable[[int], P.Message]) -> Any:
        """Send one request and return its reply's value.

        Raises:
            ConnectError: no answer within the timeout, or the node answered an error.
        """
        self.next_id += 1
        self.conn.send(make(self.next_id))
        while True:
            try:
                reply = self.replies.get(timeout=self.timeout)
            except queue.Empty:
                raise ConnectError(f"no answer from {self.address} within "
                                   f"{self.timeout:g} s") from None
            if getattr(reply, "req_id", None) == self.next_id:
                break
        if reply.error:
            raise ConnectError(reply.error)
        return reply.value

    def close(self) -> None:
        self.conn.close()


def ask_node(address: str, secret: bytes, make: Callable[[int], P.Message],
             timeout: float = TIMEOUT) -> Any:
    link = NodeLink(address, secret, timeout)
    try:
        return link.ask(make)
    finally:
        link.close()


def ask_nodes(nodes: list[dict[str, Any]], secret: bytes, make: Callable[[int], P.Message],
              timeout: float = TIMEOUT) -> dict[str, Any]:
    """Ask every live node (``list_nodes`` records) in parallel: node id -> the reply's
    value, or the ConnectError that stood in its way."""
    live = [n for n in nodes if n.get("Alive")]
    out: dict[str, Any] = {}
    if not live:
        return out
    with ThreadPoolExecutor(max_workers=min(16, len(live))) as pool:
        futures = {n["NodeID"]: pool.submit(ask_node, n["Address"], secret, make, timeout)
                   for n in live}
    for node_id, future in futures.items():
        try:
            out[node_id] = future.result()
        except (ConnectError, OSError) as exc:
            out[node_id] = exc if isinstance(exc, ConnectError) else ConnectError(str(exc))
    return out


def cluster_tasks(nodes: list[dict[str, Any]], secret: bytes, limit: int = 1000,
                  name: str = "", state: str = "") -> dict[str, Any]:
    """Tasks of every node: ``{"tasks": [...], "errors": {node_id: text}}``; running first,
    then queued, then finished (newest first), at most ``limit``."""
    answers = ask_nodes(nodes, secret, lambda r: P.ListTasks(r, limit, name, state))
    rows = [row for value in answers.values() if isinstance(value, list) for row in value]
    order = {"running": 0, "queued": 1}
    rows.sort(key=lambda r: (order.get(r["state"], 2), -(r.get("end") or r.get("start") or 0)))
    return {"tasks": rows[:limit], "errors": _errors(answers)}


def cluster_timeline(nodes: list[dict[str, Any]], secret: bytes,
                     since: float = 0.0) -> dict[str, Any]:
    """Every node's timeline rows (see :class:`~..wire.protocol.Timeline`), oldest first."""
    answers = ask_nodes(nodes, secret, lambda r: P.Timeline(r, since))
    rows = [row for value in answers.values() if isinstance(value, list) for row in value]
    rows.sort(key=lambda r: r["start"])
    return {"timeline": rows, "errors": _errors(answers)}


def cluster_logs(nodes: list[dict[str, Any]], secret: bytes) -> dict[str, Any]:
    """Every node's log files: ``{"nodes": [{"node_id", "log_dir", "files"}], "errors"}``."""
    answers = ask_nodes(nodes, secret, lambda r: P.ListLogs(r))
    listed = [dict(value, node_id=node_id) for node_id, value in answers.items()
              if isinstance(value, dict)]
    return {"nodes": listed, "errors": _errors(answers)}


def _errors(answers: dict[str, Any]) -> dict[str, str]:
    return {node_id: str(v) for node_id, v in answers.items() if isinstance(v, Exception)}


def chrome_trace(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Timeline rows as Chrome trace events (chrome://tracing, Perfetto), like
    ``ray.timeline()``: one complete event ("ph": "X") per task, a process per node and a
    thread per worker process, times in microseconds."""
    events: list[dict[str, Any]] = []
    named: set[tuple[str, int]] = set()
    for row in rows:
        node = f"node {row['node_id'][:8]}"
        pid = row.get("pid") or 0
        if (node, pid) not in named:
            named.add((node, pid))
            events.append({"name": "thread_name", "ph": "M", "pid": node, "tid": pid,
                           "args": {"name": f"worker {row.get('worker_id', '')} pid={pid}"}})
        end = row.get("end") or row["start"]
        events.append({"name": row["name"], "cat": row.get("kind", "task"), "ph": "X",
                       "ts": row["start"] * 1e6, "dur": max(0.0, end - row["start"]) * 1e6,
                       "pid": node, "tid": pid,
                       "args": {"task_id": row["task_id"], "state": row["state"],
                                "worker_id": row.get("worker_id", "")}})
    return events
