"""Observability (issue #17; docs/observability.md): worker output, task events, queues,
task lists, timelines and log files.
"""

from __future__ import annotations

from .base import Message, message


@message
class Log(Message):
    """Lines a worker printed, already prefixed with ``(name pid=N) ``."""
    op = "log"
    stream: str              # "stdout" or "stderr"
    text: str


@message
class TaskEvents(Message):
    """Worker -> node, batched (at most every ~0.1 s, off the hot path): tasks and actor
    calls that started or ended here, whoever sent them. Each event is ``["start", task_id,
    time, name, kind]`` (kind "task" or "actor_call") or ``["end", task_id, time, status,
    error]`` (status as in TaskDone; error: the failure's text and traceback, or "")."""
    op = "task_events"
    events: list


@message
class QueueReport(Message):
    """Client -> node, when it changed (at most every ~0.1 s): tasks this client holds
    waiting for a worker of its node, as ``[[name, count], ...]`` (one entry per shape)."""
    op = "queue_report"
    queued: list


@message
class ListTasks(Message):
    """Reply.value: the node's tasks, newest first: running, queued, then finished ones (at
    most ``limit``), filtered by ``name`` (substring) and ``state`` ("" for any)."""
    op = "list_tasks"
    req_id: int
    limit: int
    name: str = ""
    state: str = ""


@message
class Timeline(Message):
    """Reply.value: one ``{"task_id", "name", "kind", "worker_id", "pid", "start", "end",
    "status"}`` per task that ran on this node since ``since`` (a Unix time)."""
    op = "timeline"
    req_id: int
    since: float


@message
class ListLogs(Message):
    """Reply.value: ``{"log_dir", "files": [{"name", "size", "mtime", "role", "pid",
    "worker_id", "actor_id", "class_name", "actor_name"}]}`` for this node's log files."""
    op = "list_logs"
    req_id: int


@message
class ReadLog(Message):
    """Reply.value: ``{"data": bytes, "offset", "size"}``: at most ``length`` bytes of the
    log file ``name`` (one listed by ListLogs) from ``offset`` (negative: from the end)."""
    op = "read_log"
    req_id: int
    name: str
    offset: int
    length: int
