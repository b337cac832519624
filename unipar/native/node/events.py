"""What ran on this node: tasks and actor calls by state, recent ones, and their timeline.

::

    worker ── TaskEvents [start|end ...] (batched, ~0.1 s) ──▶ TaskLog.on_events
    client ── QueueReport [[name, count]] (when it changes) ──▶ TaskLog.on_queue_report
    node_info / ListTasks / Timeline ◀── summary() / listing() / timeline()

Every task that runs here reports itself, whichever way it came (pushed directly by a client
holding a lease, or sent by this node): the worker that runs it sends its start and end, off
its hot path. Tasks waiting are counted where they wait: at a client for a worker of this node
(its QueueReport), at this node for their dependencies or resources (``pending()`` of the task
table, passed in). Figures are a view: a task's events reach the node up to ~0.1 s late.
Nothing here decides anything; the node's other parts never read it.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Callable, Iterable

from ..wire import serialization as S

KEEP = 10_000          # finished tasks kept for the list and the timeline
TIMELINE_S = 300.0     # default window of the timeline: the last five minutes
ERROR_MAX = 8192       # characters of a failure's text kept


class TaskRecord:
    """One task or actor call that started on this node."""

    __slots__ = ("task_id", "name", "kind", "worker_id", "pid", "start", "end", "status",
                 "error")

    def __init__(self, task_id: bytes, name: str, kind: str, worker_id: str, pid: int,
                 start: float) -> None:
        self.task_id = task_id
        self.name = name
        self.kind = kind
        self.worker_id = worker_id
        self.pid = pid
        self.start = start
        self.end: float | None = None
        self.status = "running"
        self.error = ""

    def as_dict(self, node_id: str) -> dict[str, Any]:
        end = self.end
        return {"task_id": self.task_id.hex(), "name": self.name, "kind": self.kind,
                "state": self.status if end is not None else "running",
                "node_id": node_id, "worker_id": self.worker_id, "pid": self.pid,
                "start": self.start, "end": end,
                "duration": None if end is None else max(0.0, end - self.start),
                "error": self.error}


# A task's end status (TaskDone) -> its state in listings and counts.
# "stopped": its worker was asked to exit (its driver left); only "died" is a crash.
_STATES = {"ok": "finished", "error": "failed", "retry": "failed", "returned": "returned",
           "died": "failed", "stopped": "stopped"}


class TaskLog:
    """Tasks of one node as its workers and clients report them.

    ``pending()`` lists the tasks this node holds that wait, as ``(name, waits_for)`` pairs
    (waits_for: "dependencies" or "resources")."""

    def __init__(self, node_id: str, pending: Callable[[], Iterable[tuple[str, str]]],
                 keep: int = KEEP) -> None:
        self.node_id = node_id
        self.pending = pending
        self.running: dict[bytes, TaskRecord] = {}
        self.done: collections.deque[TaskRecord] = collections.deque(maxlen=keep)
        self.counts: collections.Counter[str] = collections.Counter()
        self.client_queues: dict[int, list] = {}   # client id -> [[name, count], ...]

    # -- reports -------------------------------------------------------------------------------
    def on_events(self, worker_id: str, pid: int, events: list) -> None:
        """A worker's batch of start/end events, in the order they happened."""
        for event in events:
            kind, task_id, when = event[0], event[1], event[2]
            if kind == "start":
                self.running[task_id] = TaskRecord(task_id, event[3], event[4], worker_id,
                                                   pid, when)
            else:
                self._ended(task_id, when, event[3], event[4])

    def _ended(self, task_id: bytes, when: float, status: str, error: str) -> None:
        record = self.running.pop(task_id, None)
        if record is None:   # its start came before we listened (or never): nothing to count
            return
        record.end = when
        record.status = _STATES.get(status, status)
        record.error = error[:ERROR_MAX] if error else ""
        self.counts[record.status] += 1
        self.done.append(record)

    def worker_gone(self, worker_id: str, when: float) -> None:
        """The worker died: what it was running ended with it."""
        for task_id in [t for t, r in self.running.items() if r.worker_id == worker_id]:
            self._ended(task_id, when, "died", "the worker process died while running it")

    def on_queue_report(self, client_id: int, queued: list) -> None:
        if queued:
            self.client_queues[client_id] = queued
        else:
            self.client_queues.pop(client_id, None)

    def client_gone(self, client_id: int) -> None:
        self.client_queues.pop(client_id, None)

    # -- views ---------------------------------------------------------------------------------
    def _queued(self) -> list[tuple[str, str, int]]:
        """``(name, waits_for, count)`` of every waiting task, grouped."""
        grouped: collections.Counter[tuple[str, str]] = collections.Counter()
        for name, why in self.pending():
            grouped[(name, why)] += 1
        for queued in self.client_queues.values():
            for name, count in queued:
                grouped[(name, "worker")] += count
        return [(name, why, n) for (name, why), n in grouped.items()]

    def summary(self) -> dict[str, Any]:
        """Counts: ``running``, ``queued`` (total) and ``queued_by`` (what they wait for:
        "dependencies", "resources", "worker"), ``finished`` and ``failed`` (since start)."""
        by: dict[str, int] = {"dependencies": 0, "resources": 0, "worker": 0}
        for _, why, n in self._queued():
            by[why] = by.get(why, 0) + n
        return {"running": len(self.running), "queued": sum(by.values()), "queued_by": by,
                "finished": self.counts["finished"], "failed": self.counts["failed"]}

    def listing(self, limit: int, name: str = "", state: str = "") -> list[dict[str, Any]]:
        """Running, then queued (grouped by name: ``count``), then recent finished tasks,
        newest first; at most ``limit``, filtered by name substring and state."""
        out: list[dict[str, Any]] = []
        if state in ("", "running"):
            out += [r.as_dict(self.node_id) for r in reversed(list(self.running.values()))
                    if name in r.name]
        if state in ("", "queued"):
            out += [{"name": n, "state": "queued", "waits_for": why, "count": count,
                     "node_id": self.node_id} for n, why, count in self._queued() if name in n]
        for record in reversed(self.done):
            if len(out) >= limit:
                break
            if (state in ("", record.status)) and name in record.name:
                out.append(record.as_dict(self.node_id))
        return out[:limit]

    def timeline(self, since: float) -> list[dict[str, Any]]:
        """Every task that ran (or runs) here and ended after ``since``, oldest first."""
        rows = [r.as_dict(self.node_id) for r in self.done if (r.end or 0.0) >= since]
        return rows + [r.as_dict(self.node_id) for r in self.running.values()]


@functools.lru_cache(maxsize=1024)
def death_cause(death: bytes | None) -> str:
    """The text of an actor's death (its packed ActorDiedError, made by the node or by the
    worker whose constructor failed), for listings; "" when it did not die."""
    if not death:
        return ""
    try:
        return str(S.load_packed(death))[:ERROR_MAX]
    except Exception as exc:   # a listing must not fail on one record
        return f"(cause unreadable: {type(exc).__name__})"
