"""The node daemon's actor half: placement, ordered calls, restarts and death.

Mixed into :class:`~.node.Node` (it uses the node's objects, tasks, workers and scheduler)::

    create_actor ─▶ deps ready ─▶ scheduler.add_actor ─▶ PlaceActor ─▶ new worker process
                 ─▶ hello ─▶ init_actor ─▶ actor_ready ─▶ alive
    call_actor   ─▶ the actor's FIFO ─▶ run_actor_task (in order, once its deps are ready)
    process dies ─▶ restart (max_restarts) and retry in-flight calls (max_task_retries),
                    or dead: every pending and later call fails with ActorDiedError
"""

from __future__ import annotations

import subprocess
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ...exceptions import ActorDiedError
from ..wire import protocol as P
from ..wire import serialization as S
from .scheduler import PlaceActor
from ..worker.process import direct_socket_path

if TYPE_CHECKING:
    from .daemon import Task, WorkerProc
    from ..wire.server import ServerConnection


class Actor:
    __slots__ = ("msg", "state", "worker", "queue", "inflight", "restarts", "death",
                 "init_task", "gpu_ids", "retries", "address_waiters")

    def __init__(self, msg: P.CreateActor) -> None:
        self.msg = msg
        self.state = "waiting"   # waiting (deps) | pending (resources) | starting | alive | dead
        self.worker: str | None = None
        self.queue: deque[Task] = deque()
        self.inflight: dict[bytes, Task] = {}
        self.restarts = 0
        self.death: bytes | None = None
        self.init_task: Task | None = None
        self.gpu_ids: tuple[int, ...] = ()
        self.retries: dict[bytes, int] = {}
        self.address_waiters: list[tuple[ServerConnection, int]] = []   # see on_actor_address


class ActorHost:
    """Actor handling of a node (a mixin: state lives on the Node)."""

    actors: dict[bytes, Actor]

    def on_create_actor(self, conn: ServerConnection, msg: P.CreateActor) -> None:
        if conn.info.get("role") in ("driver", "remote", "peer") and not msg.detached:
            # Fate-sharing, as in Ray: a driver's actors die when it disconnects (detached
            # ones live on until killed, or until the cluster stops).
            conn.info.setdefault("actors", []).append(msg.actor_id)
        peer = self.maybe_forward_actor(msg) if self.peers else None
        if peer is not None:   # it asks for resources only another node has
            self.forward_actor(conn, msg, peer)
            return
        if self.head is not None:
            self.tell_head(P.ActorLocation(msg.actor_id, self.node_id))
        actor = Actor(msg)
        self.actors[msg.actor_id] = actor
        init = self._make_task(conn, msg.actor_id, f"{msg.class_name}.__init__", msg.args,
                               msg.deps, msg.contained, [], msg.resources, 0)
        init.actor_id = msg.actor_id
        actor.init_task = init
        self._watch_deps(init)
        if self.peers:   # no node could ever hold it: dead, its calls raise why (not a hang)
            self.check_feasible(msg.resources, f"actor {msg.class_name}",
                                lambda error: self._infeasible_actor(actor, error))

    def _infeasible_actor(self, actor: Actor, error: Exception) -> None:
        if self.actors.get(actor.msg.actor_id) is actor and actor.state in ("waiting", "pending"):
            self._actor_dead(actor, S.pack_error(error))

    def _actor_deps_ready(self, actor: Actor) -> None:
        error = self._failed_dep(actor.init_task)  # type: ignore[arg-type]
        if error is not None:
            self._actor_dead(actor, S.pack_error(ActorDiedError(
                f"actor {actor.msg.class_name} could not start: an argument of its constructor "
                "failed")))
            return
        actor.state = "pending"
        self.sched.add_actor(actor.msg.actor_id, actor.msg.resources, time.monotonic(),
                             f"actor {actor.msg.class_name}")
        self._schedule()

    def _place_actor(self, action: PlaceActor) -> None:
        actor = self.actors.get(action.actor_id)   # type: ignore[arg-type]
        if actor is None or actor.state == "dead":
            self.sched.remove_actor(action.actor_id)
            return
        actor.gpu_ids = action.gpu_ids
        self._start_actor_process(actor)
        self.status_changed()

    def _start_actor_process(self, actor: Actor) -> None:
        actor.state = "starting"
        w = self._spawn("actor", actor.msg.actor_id, actor.gpu_ids)
        actor.worker = w.wid

    def _init_actor(self, w: WorkerProc) -> None:
        actor = self.actors.get(w.actor_id)   # type: ignore[arg-type]
        if actor is None or actor.state == "dead" or w.conn is None:
            self._retire(w.wid)
            return
        m = actor.msg
        init = actor.init_task
        assert init is not None
        w.conn.send(P.InitActor(m.actor_id, m.class_key, P.blob(self.functions[m.class_key]),
                                m.class_name, P.blob(m.args), self._dep_values(init, w.wid),
                                m.concurrency, m.is_async, list(actor.gpu_ids)))

    def on_actor_ready(self, conn: ServerConnection, msg: P.ActorReady) -> None:
        actor = self.actors.get(msg.actor_id)
        if actor is None or actor.state == "dead":
            return
        if msg.error is not None:
            self._actor_dead(actor, bytes(msg.error))
            return
        actor.state = "alive"
        self._answer_address_waiters(actor)
        self._pump(actor)

    # -- direct calls: clients on this node push calls to the actor's process themselves ----
    def on_actor_address(self, conn: ServerConnection, msg: P.ActorAddress) -> None:
        actor = self.actors.get(msg.actor_id)
        if actor is None or conn.info.get("remote"):
            conn.send(P.Reply(msg.req_id, {"state": "node"}))   # elsewhere: through the node
        elif actor.state in ("alive", "dead"):
            conn.send(P.Reply(msg.req_id, self._actor_address(actor)))
        else:   # starting (or restarting): answered when it is alive or dead
            actor.address_waiters.append((conn, msg.req_id))

    def _actor_address(self, actor: Actor) -> dict:
        if actor.state == "dead":
            return {"state": "dead", "death": actor.death}
        w = self.workers[actor.worker]   # type: ignore[index]
        return {"state": "alive", "worker_id": w.wid, "address": direct_address(self, w.wid),
                "pid": w.proc.pid, "restarts": actor.restarts,
                "max_task_retries": actor.msg.max_task_retries,
                "class_name": actor.msg.class_name}

    def _answer_address_waiters(self, actor: Actor) -> None:
        waiters, actor.address_waiters = actor.address_waiters, []
        for conn, req_id in waiters:
            conn.send(P.Reply(req_id, self._actor_address(actor)))

    def actor_left(self, actor: Actor) -> None:
        """The actor moved to another node before it started here: whoever waits for its
        address calls it through this node (which forwards)."""
        waiters, actor.address_waiters = actor.address_waiters, []
        for conn, req_id in waiters:
            conn.send(P.Reply(req_id, {"state": "node"}))

    def on_call_actor(self, conn: ServerConnection, msg: P.CallActor) -> None:
        actor = self.actors.get(msg.actor_id)
        name = f"{actor.msg.class_name}.{msg.method}" if actor else msg.method
        task = self._make_task(conn, msg.task_id, name, msg.args, msg.deps, msg.contained,
                               msg.return_ids, {}, 0)
        task.actor_id, task.method = msg.actor_id, msg.method
        if actor is None and self.route_call(conn, task):
            return   # it lives on another node
        if actor is None:
            self._fail_task(task, S.pack_error(ActorDiedError(
                f"no such actor {msg.actor_id.hex()[:12]}: it was never created on this node")))
            return
        if actor.state == "dead":
            self._fail_task(task, actor.death)
            return
        task.state = "queued"
        actor.queue.append(task)
        self._watch_deps(task)

    def _pump(self, actor: Actor) -> None:
        """Send queued calls to the actor, in order, while the next one's deps are ready."""
        if actor.state != "alive":
            return
        w = self.workers.get(actor.worker or "")
        if w is None or w.conn is None:
            return
        while actor.queue and actor.queue[0].missing == 0:
            task = actor.queue.popleft()
            error = self._failed_dep(task)
            if error is not None:
                self._fail_task(task, error)
                continue
            task.state = "running"
            actor.inflight[task.task_id] = task
            w.conn.send(P.RunActorTask(task.task_id, task.method, P.blob(task.args),
                                       self._dep_values(task, w.wid), task.return_ids))

    def _actor_task_done(self, w: WorkerProc, msg: P.TaskDone) -> None:
        actor = self.actors.get(w.actor_id)   # type: ignore[arg-type]
        task = actor.inflight.pop(msg.task_id, None) if actor else None
        if task is None or task.cancelled:
            self._discard_results(msg.results)
            return
        self._store_results(task, msg.results)

    def _actor_dead(self, actor: Actor, death: bytes) -> None:
        actor.state = "dead"
        actor.death = death
        self._answer_address_waiters(actor)
        pending = list(actor.inflight.values()) + list(actor.queue)
        actor.inflight.clear()
        actor.queue.clear()
        for task in pending:
            self._fail_task(task, death)
        if actor.init_task is not None and actor.init_task.state != "done":
            self._finish(actor.init_task)
        self.sched.remove_actor(actor.msg.actor_id)
        w = self.workers.get(actor.worker or "")
        if w is not None:
            self._retire(w.wid)
        self.status_changed()
        self.tell_head(P.ActorLocation(actor.msg.actor_id, ""))   # lookups: dead for good
        if actor.msg.name and self.head is not None and not self.head.closed:
            try:
                self.head.send(P.UnregisterName(0, actor.msg.name, actor.msg.actor_id))
            except ConnectionError:
                pass
        self._schedule()

    def _can_restart(self, actor: Actor) -> bool:
        limit = actor.msg.max_restarts
        return limit == -1 or actor.restarts < limit

    def _actor_process_died(self, w: WorkerProc) -> None:
        actor = self.actors.get(w.actor_id)   # type: ignore[arg-type]
        if actor is None or actor.state == "dead" or actor.worker != w.wid:
            return
        code = exit_code(w.proc)
        if not self._can_restart(actor):
            self._actor_dead(actor, S.pack_error(ActorDiedError(
                f"actor {actor.msg.class_name} died: its process (pid {w.proc.pid}) exited "
                f"unexpectedly (exit code {code})")))
            return
        actor.restarts += 1
        retry: list[Task] = []
        for task in actor.inflight.values():
            used = actor.retries.get(task.task_id, 0)
            limit = actor.msg.max_task_retries
            if limit == -1 or used < limit:
                actor.retries[task.task_id] = used + 1
                retry.append(task)
            else:
                self._fail_task(task, S.pack_error(ActorDiedError(
                    f"actor {actor.msg.class_name} died while running {task.name} (it is "
                    "being restarted; set max_task_retries to retry such calls)")))
        actor.inflight.clear()
        for task in reversed(retry):
            task.state = "queued"
            actor.queue.appendleft(task)
        self._start_actor_process(actor)

    def kill_owned_actors(self, conn: ServerConnection) -> None:
        """``conn`` (a driver, or a peer on behalf of its drivers) went away: kill its actors."""
        for aid in conn.info.get("actors", ()):
            actor = self.actors.get(aid)
            if actor is None:
                self.kill_remote(aid, True)
            elif actor.state != "dead":
                self._actor_dead(actor, S.pack_error(ActorDiedError(
                    f"actor {actor.msg.class_name} died: the driver that created it exited")))

    def on_kill_actor(self, conn: ServerConnection, msg: P.KillActor) -> None:
        actor = self.actors.get(msg.actor_id)
        if actor is None:
            self.kill_remote(msg.actor_id, msg.no_restart)
        if actor is not None and actor.state != "dead":
            if msg.no_restart or not self._can_restart(actor):
                self._actor_dead(actor, S.pack_error(ActorDiedError(
                    f"actor {actor.msg.class_name} was killed with unipar.kill()")))
            else:
                w = self.workers.get(actor.worker or "")
                if w is not None:
                    self._kill_worker(w)
        conn.send(P.Reply(msg.req_id, True))

    def actor_list(self, limit: int = 1000) -> list[dict]:
        """The ``limit`` most recent actors of this node, for ``node_info`` (the dashboard)."""
        return [{"actor_id": aid.hex(), "class_name": a.msg.class_name, "name": a.msg.name,
                 "state": a.state, "restarts": a.restarts}
                for aid, a in list(self.actors.items())[-limit:]]


def direct_address(node: Any, worker_id: str) -> str:
    """The address of a worker's own socket, beside the node's (see worker.direct_socket_path)."""
    return "unix://" + direct_socket_path(node.unix_address, worker_id)


def exit_code(proc: subprocess.Popen) -> int | None:
    """The exit code of a process whose connection just closed (it is exiting or gone)."""
    try:
        return proc.wait(timeout=0.2)
    except subprocess.TimeoutExpired:
        return None
