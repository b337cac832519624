"""The node's tasks: from submission, through their dependencies and the scheduler, to results.

::

    submit_task ─▶ Task(waiting on deps) ──deps ready──▶ (a peer?) ─▶ scheduler.add_task
                                                              │ schedule()
    run_task ◀── Dispatch(task, idle worker) ◀────────────────┘
    task_done ─▶ store results ─▶ object_ready to subscribers ─▶ dependents become ready

Actor calls and constructors are tasks too (their records live here); when their
dependencies are ready they go to ``actor_deps_ready`` (actors.py / remote_actors.py), not to
the scheduler. Where a ready task runs is placement's (``forward`` sends it to a peer).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ...exceptions import TaskCancelledError, WorkerCrashedError
from ..wire import protocol as P
from ..wire import serialization as S
from ..wire.server import ServerConnection
from .objects import ObjectDirectory
from .pool import WorkerPool
from .records import Task, WorkerProc, exit_code
from .scheduler import Dispatch, Scheduler


class TaskTable:
    """Every task and actor call this node owns, until done.

    ``schedule()`` asks for a scheduling round soon; ``actor_deps_ready(task)`` takes an
    actor task whose dependencies are ready; ``forward(task) -> bool`` sends a ready task to
    a peer if placement says so; ``cancel_actor_call(task)`` and ``cancel_remote(task, force,
    recursive)`` cancel a queued actor call and a task sent to a peer."""

    def __init__(self, objects: ObjectDirectory, sched: Scheduler, pool: WorkerPool,
                 functions: dict[str, bytes], schedule: Callable[[], None]) -> None:
        self.objects = objects
        self.sched = sched
        self.pool = pool
        self.functions = functions
        self.schedule = schedule
        self.actor_deps_ready: Callable[[Task], None] = lambda task: None
        self.forward: Callable[[Task], bool] = lambda task: False
        self.cancel_actor_call: Callable[[Task], None] = lambda task: None
        self.cancel_remote: Callable[[Task, bool, bool], None] = lambda task, f, r: None
        self.tasks: dict[bytes, Task] = {}
        self.children: dict[bytes, set[bytes]] = {}   # task id -> ids of tasks it submitted

    def get(self, task_id: Any) -> Task | None:
        return self.tasks.get(task_id)

    def pending(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state in ("waiting", "queued"))

    # -- submission ----------------------------------------------------------------------------
    def make_task(self, conn: ServerConnection | None, task_id: bytes, name: str, args: Any,
                  deps: list, contained: list, return_ids: list, resources: dict,
                  retries: int) -> Task:
        """Record a task: its results exist (pending), its arguments are pinned."""
        task = Task(task_id, name, args, deps, contained, return_ids, resources, retries)
        for oid in return_ids:
            self.objects.new_result(conn, oid, task_id)
        for oid in contained:
            self.objects.pin(oid)
        for oid in deps:
            self.objects.pin(oid)
        self.tasks[task_id] = task
        return task

    def watch_deps(self, task: Task) -> None:
        """Wait for the task's dependencies; :meth:`deps_ready` runs once there are none."""
        if self.objects.watch(task) == 0:
            self.deps_ready(task)

    def on_submit_task(self, conn: ServerConnection, msg: P.SubmitTask) -> None:
        task = self.make_task(conn, msg.task_id, msg.name, msg.args, msg.deps, msg.contained,
                              msg.return_ids, msg.resources, msg.max_retries)
        task.fn_key = msg.fn_key
        task.from_peer = bool(conn.info.get("peer"))
        wid = conn.info.get("worker_id")
        parent = self.sched.task_of(wid) if wid is not None else None
        if parent is not None:   # submitted from inside a task: remember it for recursive cancel
            task.parent = parent   # type: ignore[assignment]
            self.children.setdefault(task.parent, set()).add(task.task_id)
        self.watch_deps(task)

    def deps_ready(self, task: Task) -> None:
        if task.cancelled:
            return
        if task.actor_id is not None:
            self.actor_deps_ready(task)
            return
        error = self.objects.failed_dep(task)
        if error is not None:
            self.fail_task(task, error)
            return
        if self.forward(task):
            return
        task.state = "queued"
        self.sched.add_task(task.task_id, task.resources, time.monotonic(), f"task {task.name}")
        self.schedule()

    def requeue(self, task: Task) -> None:
        """Queue the task again, first in line (a retry, or a dispatch that found no worker)."""
        task.state, task.worker = "queued", None
        self.sched.add_task(task.task_id, task.resources, time.monotonic(), f"task {task.name}",
                            front=True)
        self.schedule()

    # -- running -------------------------------------------------------------------------------
    def dispatch(self, action: Dispatch) -> None:
        """Run a queued task on the worker the scheduler picked."""
        task = self.tasks.get(action.task_id)   # type: ignore[arg-type]
        w = self.pool.get(action.worker_id)
        if task is None or w is None or w.conn is None:
            self.sched.task_finished(action.worker_id, time.monotonic())
            if task is not None:
                self.sched.add_task(task.task_id, task.resources, time.monotonic(), front=True)
            self.schedule()
            return
        fn_blob = None
        if task.fn_key not in w.fns:
            fn_blob = P.blob(self.functions[task.fn_key])
            w.fns.add(task.fn_key)
        task.state, task.worker = "running", w.wid
        w.conn.send(P.RunTask(task.task_id, task.fn_key, fn_blob, task.name, P.blob(task.args),
                              self.objects.dep_values(task, w.wid), task.return_ids,
                              list(action.gpu_ids)))

    def task_done(self, w: WorkerProc | None, msg: P.TaskDone) -> None:
        """A task worker (``w``; None once it is gone) finished ``msg.task_id``."""
        if w is not None:
            self.sched.task_finished(w.wid, time.monotonic())
            self.schedule()
        task = self.tasks.get(msg.task_id)
        if task is None or task.cancelled or task.state != "running":
            self.discard_results(msg.results)
            return
        if msg.status == "retry" and task.retries_left != 0:
            task.retries_left -= 1 if task.retries_left > 0 else 0
            self.discard_results(msg.results)
            self.requeue(task)
            return
        self.store_results(task, msg.results)

    def worker_lost(self, w: WorkerProc, task_id: Any) -> None:
        """The task worker ``w`` died while running ``task_id``: retry it or fail it."""
        task = self.tasks.get(task_id) if task_id else None
        if task is None or task.cancelled or task.state != "running":
            return
        if task.retries_left != 0:
            task.retries_left -= 1 if task.retries_left > 0 else 0
            self.requeue(task)
            return
        code = exit_code(w.proc)
        self.fail_task(task, S.pack_error(WorkerCrashedError(
            f"the worker process (pid {w.proc.pid}) running task {task.name} died "
            f"(exit code {code}) and its retries are used up")))

    def discard_results(self, results: list) -> None:
        for oid, kind, _payload, path, _size, _contained in results:
            if kind == "shm":
                obj = self.objects.get(oid)
                if obj is None or obj.path != path:
                    self.objects.store.free(oid)

    def store_results(self, task: Task, results: list) -> None:
        for oid, kind, payload, path, size, contained in results:
            self.objects.resolve(oid, kind, payload, path, size, contained)
        self.finish(task)

    def finish(self, task: Task) -> None:
        """The task is over: forget it, unpin its arguments."""
        task.state = "done"
        self.tasks.pop(task.task_id, None)
        self.children.pop(task.task_id, None)
        if task.parent is not None:
            siblings = self.children.get(task.parent)
            if siblings is not None:
                siblings.discard(task.task_id)
        for oid in task.deps:
            self.objects.unpin(oid)
        for oid in task.contained:
            self.objects.unpin(oid)
        task.args = None

    def fail_task(self, task: Task, payload: Any) -> None:
        """Every result of ``task`` is the error ``payload`` (packed); the task is over."""
        for oid in task.return_ids:
            self.objects.resolve(oid, "error", payload, "", 0, [])
        self.finish(task)

    # -- cancelling and blocking ---------------------------------------------------------------
    def on_cancel(self, conn: ServerConnection, msg: P.Cancel) -> None:
        obj = self.objects.get(msg.oid)
        task = self.tasks.get(obj.task_id) if obj is not None and obj.task_id else None
        if task is not None:
            self.cancel(task, msg.force, msg.recursive)

    def cancel(self, task: Task, force: bool, recursive: bool) -> None:
        """Cancel a task (and, if ``recursive``, what it submitted, children first)."""
        if task.state == "done" or task.cancelled:
            return
        if recursive:
            for child_id in list(self.children.get(task.task_id, ())):
                child = self.tasks.get(child_id)
                if child is not None:
                    self.cancel(child, force, True)
        if task.actor_id is not None:
            self.cancel_actor_call(task)
            return
        task.cancelled = True
        if task.state == "forwarded":
            self.cancel_remote(task, force, recursive)
        elif task.state == "queued":
            self.sched.remove_task(task.task_id)
        elif task.state == "running":
            w = self.pool.get(task.worker)
            if w is not None and force:
                self.pool.kill(w)
            elif w is not None and w.conn is not None:
                w.conn.send(P.CancelTask(task.task_id))
        self.fail_task(task, cancelled_error(task))

    def on_blocked(self, conn: ServerConnection, msg: P.Blocked) -> None:
        wid = conn.info.get("worker_id")
        if wid:
            self.sched.worker_blocked(wid)
            self.schedule()

    def on_unblocked(self, conn: ServerConnection, msg: P.Unblocked) -> None:
        wid = conn.info.get("worker_id")
        if wid:
            self.sched.worker_unblocked(wid)


def cancelled_error(task: Task) -> bytes:
    return S.pack_error(TaskCancelledError(f"task {task.name} was cancelled"))
