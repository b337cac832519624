"""The node's view of itself for people: machine figures, tasks, logs (issue #17).

::

    Node ── handlers() ──▶ Observer ─┬─ task_log  TaskLog        task events, client queues
                                     ├─ logs      LogFiles       node.log, worker-*.log
                                     └─ machine   MachineSampler CPU, memory, disk, net, GPUs

A part like the others (daemon.py composes it): it reads what workers and clients report and
answers queries (``list_tasks``, ``timeline``, ``list_logs``, ``read_log``); ``report()`` is
its share of ``node_info``. It decides nothing, so nothing else asks it anything. Shapes of
every answer: docs/observability.md.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from ..wire import protocol as P
from ..wire.server import ServerConnection
from .events import TIMELINE_S, TaskLog
from .logfiles import LogFiles, link_session
from .machine import MachineSampler

LIST_MAX = 10_000   # tasks one ListTasks answers at most


def pending_of(tasks: dict[bytes, Any]) -> Iterable[tuple[str, str]]:
    """``(name, waits_for)`` of the node's tasks (``TaskTable.tasks``) that wait here. An
    actor's constructor record stays "waiting" for the actor's life: it is not a task."""
    for task in list(tasks.values()):
        if task.name.endswith(".__init__") and task.actor_id is not None and not task.method:
            continue
        if task.state == "waiting":
            yield task.name, "dependencies"
        elif task.state == "queued":
            yield task.name, "resources"


class Observer:
    """Figures, task events and log files of one node. ``pending()``: see :func:`pending_of`;
    ``objects()``: the object directory's records (``ObjectDirectory.objects``), for sizes."""

    def __init__(self, node_id: str, session_dir: str, spill_dir: str, log_dir: str,
                 pending: Callable[[], Iterable[tuple[str, str]]],
                 objects: Callable[[], dict[bytes, Any]]) -> None:
        self.task_log = TaskLog(node_id, pending)
        self.objects = objects
        self.logs = LogFiles(log_dir)
        if log_dir:
            link_session(session_dir, log_dir)
        self.machine = MachineSampler({"session": session_dir, "spill": spill_dir})

    def handlers(self) -> dict[str, Callable[[ServerConnection, Any], None]]:
        return {P.TaskEvents.op: self.on_task_events, P.QueueReport.op: self.on_queue_report,
                P.ListTasks.op: self.on_list_tasks, P.Timeline.op: self.on_timeline,
                P.ListLogs.op: self.on_list_logs, P.ReadLog.op: self.on_read_log}

    def start(self) -> None:
        self.machine.start()

    def stop(self) -> None:
        self.machine.stop()

    # -- reports -------------------------------------------------------------------------------
    def on_task_events(self, conn: ServerConnection, msg: P.TaskEvents) -> None:
        self.task_log.on_events(conn.info.get("worker_id", ""), conn.info.get("pid", 0),
                                msg.events)

    def on_queue_report(self, conn: ServerConnection, msg: P.QueueReport) -> None:
        self.task_log.on_queue_report(conn.info.get("client_id", 0), msg.queued)

    def disconnected(self, conn: ServerConnection) -> None:
        """A client or worker went away: its queue is gone, its running tasks ended."""
        self.task_log.client_gone(conn.info.get("client_id", 0))
        wid = conn.info.get("worker_id", "")
        if wid:
            self.task_log.worker_gone(wid, time.time())
        elif conn.info.get("role") not in ("driver", "remote", "peer"):
            wid = self.logs.writer_of(conn.info.get("pid", 0))   # retired: the pool forgot it
        if wid:
            self.logs.gone(wid)   # its file stays; its record goes to a bounded table

    def worker_connected(self, worker_id: str, pid: int, role: str,
                         actor: P.CreateActor | None) -> None:
        """Remember who writes ``worker-<worker_id>-<pid>.log`` (it outlives the worker)."""
        self.logs.note(worker_id, role=role, pid=pid)
        if actor is not None:
            self.logs.note(worker_id, actor_id=actor.actor_id.hex(),
                           class_name=actor.class_name, actor_name=actor.name or "")

    # -- queries -------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Its share of ``node_info``: ``tasks`` counts, ``machine`` figures (the newest, and
        ``machine_history``: the last five minutes as columns), ``log_dir``, ``object_sizes``
        (``count``, ``bytes`` and ``largest`` of the objects it knows)."""
        sizes = [obj.size for obj in list(self.objects().values()) if obj.kind is not None]
        return {"tasks": self.task_log.summary(), "machine": self.machine.latest(),
                "machine_history": self.machine.columns(),
                "log_dir": self.logs.log_dir, "log_writers": self.logs.table_size(),
                "object_sizes": {"count": len(sizes), "bytes": sum(sizes),
                                 "largest": max(sizes, default=0)}}

    def on_list_tasks(self, conn: ServerConnection, msg: P.ListTasks) -> None:
        rows = self.task_log.listing(max(0, min(msg.limit, LIST_MAX)), msg.name, msg.state)
        conn.send(P.Reply(msg.req_id, rows))

    def on_timeline(self, conn: ServerConnection, msg: P.Timeline) -> None:
        since = msg.since if msg.since > 0 else time.time() - TIMELINE_S
        conn.send(P.Reply(msg.req_id, self.task_log.timeline(since)))

    def on_list_logs(self, conn: ServerConnection, msg: P.ListLogs) -> None:
        conn.send(P.Reply(msg.req_id, self.logs.listing()))

    def on_read_log(self, conn: ServerConnection, msg: P.ReadLog) -> None:
        try:
            page = self.logs.read(msg.name, msg.offset, msg.length)
        except (ValueError, OSError) as exc:
            conn.send(P.Reply(msg.req_id, None, str(exc)))
            return
        page["data"] = P.blob(page["data"])
        conn.send(P.Reply(msg.req_id, page))
