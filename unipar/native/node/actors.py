"""The node's actors: placement here, ordered calls, restarts and death.

::

    create_actor ─▶ deps ready ─▶ scheduler.add_actor ─▶ PlaceActor ─▶ new worker process
                 ─▶ hello ─▶ init_actor ─▶ actor_ready ─▶ alive
    call_actor   ─▶ the actor's FIFO ─▶ run_actor_task (in order, once its deps are ready)
    process dies ─▶ restart (max_restarts) and retry in-flight calls (max_task_retries),
                    or dead: every pending and later call fails with ActorDiedError

Actors that live on other nodes (created there, or calls for them) are remote_actors.py's,
reached through the :class:`~.ports.Elsewhere` interface.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Iterator

from ...exceptions import ActorDiedError
from ..wire import protocol as P
from ..wire import serialization as S
from ..wire.server import ServerConnection
from .events import death_cause
from .objects import ObjectDirectory
from .pool import WorkerPool
from .ports import Elsewhere, HeadPort
from .records import Actor, Task, WorkerProc, exit_code
from .scheduler import PlaceActor, Scheduler, env_of
from .tasks import TaskTable, cancelled_error

DEATHS_KEPT = 10_000   # dead actors whose own death later calls still raise (then a generic one)


class DeadActor:
    """What is kept of an actor that died for good: enough to answer later calls, address
    requests and the dashboard's listing (its creation message, queue and tasks are freed)."""

    __slots__ = ("class_name", "name", "restarts", "worker", "death")

    def __init__(self, class_name: str, name: str, restarts: int, worker: str,
                 death: bytes) -> None:
        self.class_name = class_name
        self.name = name
        self.restarts = restarts
        self.worker = worker
        self.death = death   # its packed ActorDiedError, with the cause


class Deaths:
    """The last ``limit`` actors that died, by actor id, oldest first. A node lives long and
    may see millions of actors: older deaths are forgotten (their calls then get a generic
    "dead or never created" error) so the table stays bounded."""

    def __init__(self, limit: int = DEATHS_KEPT) -> None:
        self.limit = limit
        self.records: OrderedDict[bytes, DeadActor] = OrderedDict()
        self._last_death = b""   # deaths in a row often read the same: they share one copy

    def __len__(self) -> int:
        return len(self.records)

    def add(self, aid: bytes, record: DeadActor) -> None:
        if record.death == self._last_death:
            record.death = self._last_death   # 200 bytes or more, 10,000 times
        self._last_death = record.death
        self.records[aid] = record
        self.records.move_to_end(aid)
        while len(self.records) > self.limit:
            self.records.popitem(last=False)

    def get(self, aid: object) -> DeadActor | None:
        return self.records.get(aid)   # type: ignore[call-overload]

    def discard(self, aid: bytes) -> None:
        """``aid`` lives again (re-created here): it is no longer dead."""
        self.records.pop(aid, None)

    def newest(self, limit: int) -> Iterator[tuple[bytes, DeadActor]]:
        """The ``limit`` most recent deaths, oldest first."""
        items = list(self.records.items())
        return iter(items[-limit:] if limit > 0 else [])


class Actors:
    """Actors hosted on this node, by actor id, until they die for good; then only their
    :class:`DeadActor` record stays, in ``deaths`` (bounded). ``elsewhere`` is set once
    remote_actors.py exists; ``schedule()`` asks for a scheduling round soon."""

    def __init__(self, node_id: str, tasks: TaskTable, objects: ObjectDirectory,
                 sched: Scheduler, pool: WorkerPool, functions: dict[str, bytes],
                 head: HeadPort, schedule: Callable[[], None]) -> None:
        self.node_id = node_id
        self.tasks = tasks
        self.objects = objects
        self.sched = sched
        self.pool = pool
        self.functions = functions
        self.head = head
        self.schedule = schedule
        self.elsewhere: Elsewhere | None = None
        self.actors: dict[bytes, Actor] = {}   # not dead (a dead one moves to ``deaths``)
        self.deaths = Deaths()

    def get(self, aid: object) -> Actor | None:
        """The actor hosted here, None if it is not (or is dead: see ``deaths``)."""
        return self.actors.get(aid)   # type: ignore[call-overload]

    def live(self) -> int:
        return sum(1 for a in self.actors.values() if a.state != "dead")

    def table_size(self) -> dict[str, int]:
        """Its records, for ``node_info``: actors hosted (not dead), deaths kept, the bound,
        and (``remote_*``) those of actors on other nodes (:meth:`.Elsewhere.table_size`)."""
        sizes = {"hosted": len(self.actors), "deaths": len(self.deaths),
                 "deaths_kept": self.deaths.limit}
        if self.elsewhere is not None:
            sizes.update(self.elsewhere.table_size())
        return sizes

    # -- creation ------------------------------------------------------------------------------
    def on_create_actor(self, conn: ServerConnection, msg: P.CreateActor) -> None:
        if conn.info.get("role") in ("driver", "remote", "peer") and not msg.detached:
            # Fate-sharing, as in Ray: a driver's actors die when it disconnects (detached
            # ones live on until killed, or until the cluster stops).
            self._note_owner(conn, msg.actor_id)
        elsewhere = self.elsewhere
        if elsewhere is not None and elsewhere.create_elsewhere(conn, msg):
            return   # it asks for resources only another node has (now)
        self.head.tell(P.ActorLocation(msg.actor_id, self.node_id))
        actor = self.host(msg, conn)
        self.tasks.watch_deps(actor.init_task)   # type: ignore[arg-type]
        if elsewhere is not None and elsewhere.has_peers():
            # No node could ever hold it: dead, its calls raise why (not a hang).
            elsewhere.check_feasible(msg.resources, f"actor {msg.class_name}",
                                     lambda error: self._infeasible(actor, error))

    def _note_owner(self, conn: ServerConnection, aid: bytes) -> None:
        """Remember that ``conn`` owns ``aid``. A driver may create actors for days: ids of
        those no longer alive, here or on a peer, are dropped now and then (amortized: when
        the list doubled; before adding ``aid``, which is not recorded anywhere yet)."""
        owned = conn.info.setdefault("actors", [])
        if len(owned) >= conn.info.get("actors_prune_at", 1024):
            owned[:] = [a for a in owned if a in self.actors or self._named_death(a) or (
                self.elsewhere is not None and self.elsewhere.tracks(a))]
            conn.info["actors_prune_at"] = max(1024, 2 * len(owned))
        owned.append(aid)

    def host(self, msg: P.CreateActor, conn: ServerConnection | None) -> Actor:
        """Record an actor to host here; the caller then watches its constructor's deps."""
        self.deaths.discard(msg.actor_id)
        actor = Actor(msg)
        self.actors[msg.actor_id] = actor
        init = self.tasks.make_task(conn, msg.actor_id, f"{msg.class_name}.__init__", msg.args,
                                    msg.deps, msg.contained, [], msg.resources, 0)
        init.actor_id = msg.actor_id
        actor.init_task = init
        return actor

    def _infeasible(self, actor: Actor, error: Exception) -> None:
        if self.actors.get(actor.msg.actor_id) is actor and actor.state in ("waiting", "pending"):
            self.dead(actor, S.pack_error(error))

    def deps_ready(self, actor: Actor, task: Task) -> None:
        """A task of ``actor`` has its dependencies: its constructor, or a call."""
        if task is not actor.init_task:
            self.pump(actor)
            return
        if self.objects.failed_dep(task) is not None:
            self.dead(actor, S.pack_error(ActorDiedError(
                f"actor {actor.msg.class_name} could not start: an argument of its constructor "
                "failed")), keep_name=True)   # its creation failed, as a raising constructor
            return
        actor.state = "pending"
        self.sched.add_actor(actor.msg.actor_id, actor.msg.resources, time.monotonic(),
                             f"actor {actor.msg.class_name}")
        self.schedule()

    def place(self, action: PlaceActor) -> None:
        actor = self.actors.get(action.actor_id)   # type: ignore[arg-type]
        if actor is None or actor.state == "dead":
            self.sched.remove_actor(action.actor_id)
            return
        actor.gpu_ids = action.gpu_ids
        self._start_process(actor)
        self.head.status_changed()

    def _start_process(self, actor: Actor) -> None:
        actor.state = "starting"
        w = self.pool.spawn("actor", actor.msg.actor_id, actor.gpu_ids,
                            env_of(actor.msg.resources))
        actor.worker = w.wid

    def init_actor(self, w: WorkerProc) -> None:
        """The actor's process connected: run its constructor there."""
        actor = self.actors.get(w.actor_id)   # type: ignore[arg-type]
        if actor is None or actor.state == "dead" or w.conn is None:
            self.pool.retire(w.wid)
            return
        m = actor.msg
        init = actor.init_task
        assert init is not None
        w.conn.send(P.InitActor(m.actor_id, m.class_key, P.blob(self.functions[m.class_key]),
                                m.class_name, P.blob(m.args),
                                self.objects.dep_values(init, w.wid),
                                m.concurrency, m.is_async, list(actor.gpu_ids)))

    def on_actor_ready(self, conn: ServerConnection, msg: P.ActorReady) -> None:
        actor = self.actors.get(msg.actor_id)
        if actor is None or actor.state == "dead":
            return
        if msg.error is not None:
            self.dead(actor, bytes(msg.error), keep_name=True)
            return
        actor.state = "alive"
        self._answer_address_waiters(actor)
        self.pump(actor)

    # -- direct calls: clients on this node push calls to the actor's process themselves ----
    def on_actor_address(self, conn: ServerConnection, msg: P.ActorAddress) -> None:
        actor = self.actors.get(msg.actor_id)
        gone = self.deaths.get(msg.actor_id)
        if gone is not None and not conn.info.get("remote"):
            conn.send(P.Reply(msg.req_id, {"state": "dead", "death": gone.death}))
        elif actor is None or conn.info.get("remote"):
            conn.send(P.Reply(msg.req_id, {"state": "node"}))   # elsewhere: through the node
        elif actor.state in ("alive", "dead"):
            conn.send(P.Reply(msg.req_id, self._address(actor)))
        else:   # starting (or restarting): answered when it is alive or dead
            actor.address_waiters.append((conn, msg.req_id))

    def _address(self, actor: Actor) -> dict:
        if actor.state == "dead":
            return {"state": "dead", "death": actor.death}
        w = self.pool.workers[actor.worker]   # type: ignore[index]
        return {"state": "alive", "worker_id": w.wid, "address": self.pool.direct_address(w.wid),
                "pid": w.proc.pid, "restarts": actor.restarts,
                "max_task_retries": actor.msg.max_task_retries,
                "class_name": actor.msg.class_name}

    def _answer_address_waiters(self, actor: Actor) -> None:
        waiters, actor.address_waiters = actor.address_waiters, []
        for conn, req_id in waiters:
            conn.send(P.Reply(req_id, self._address(actor)))

    def leave(self, actor: Actor) -> None:
        """The actor moves to another node before it started here: whoever waits for its
        address calls it through this node (which forwards)."""
        self.sched.remove_actor(actor.msg.actor_id)
        del self.actors[actor.msg.actor_id]
        waiters, actor.address_waiters = actor.address_waiters, []
        for conn, req_id in waiters:
            conn.send(P.Reply(req_id, {"state": "node"}))

    # -- calls ---------------------------------------------------------------------------------
    def on_call_actor(self, conn: ServerConnection, msg: P.CallActor) -> None:
        actor = self.actors.get(msg.actor_id)
        gone = self.deaths.get(msg.actor_id)
        label = actor.msg.class_name if actor else gone.class_name if gone else ""
        name = f"{label}.{msg.method}" if label else msg.method
        task = self.tasks.make_task(conn, msg.task_id, name, msg.args, msg.deps, msg.contained,
                                    msg.return_ids, {}, 0)
        task.actor_id, task.method = msg.actor_id, msg.method
        if gone is not None:
            self.tasks.fail_task(task, gone.death)
            return
        if actor is None and self.elsewhere is not None and self.elsewhere.route_call(task):
            return   # it lives on another node
        if actor is None:   # (its death may have been forgotten: see Deaths)
            self.tasks.fail_task(task, S.pack_error(ActorDiedError(
                f"actor {msg.actor_id.hex()[:12]} is dead, or was never created on this node")))
            return
        task.state = "queued"
        actor.queue.append(task)
        self.tasks.watch_deps(task)

    def pump(self, actor: Actor) -> None:
        """Send queued calls to the actor, in order, while the next one's deps are ready."""
        if actor.state != "alive":
            return
        w = self.pool.get(actor.worker)
        if w is None or w.conn is None:
            return
        while actor.queue and actor.queue[0].missing == 0:
            task = actor.queue.popleft()
            error = self.objects.failed_dep(task)
            if error is not None:
                self.tasks.fail_task(task, error)
                continue
            task.state = "running"
            actor.inflight[task.task_id] = task
            w.conn.send(P.RunActorTask(task.task_id, task.method, P.blob(task.args),
                                       self.objects.dep_values(task, w.wid), task.return_ids))

    def cancel_queued(self, task: Task) -> None:
        """Cancel a call still queued for its actor (one already sent runs to the end)."""
        actor = self.actors.get(task.actor_id)   # type: ignore[arg-type]
        if actor is not None and task in actor.queue:
            actor.queue.remove(task)
            task.cancelled = True
            self.tasks.fail_task(task, cancelled_error(task))
            self.pump(actor)

    def task_done(self, w: WorkerProc, msg: P.TaskDone) -> None:
        actor = self.actors.get(w.actor_id)   # type: ignore[arg-type]
        task = actor.inflight.pop(msg.task_id, None) if actor else None
        if task is None or task.cancelled:
            self.tasks.discard_results(msg.results)
            return
        self.tasks.store_results(task, msg.results)

    # -- death and restarts --------------------------------------------------------------------
    def dead(self, actor: Actor, death: bytes, keep_name: bool = False) -> None:
        """The actor is dead for good: every pending and later call fails with ``death``.
        Only its :class:`DeadActor` record stays (in ``deaths``); the rest is freed. Its name
        is freed too, except when its creation failed (its constructor, or an argument of it,
        raised: ``keep_name``): as in Ray, that name
        stays taken (get_actor gives a handle whose calls raise) until the actor is killed or
        its driver leaves."""
        actor.state = "dead"
        actor.death = death
        aid = actor.msg.actor_id
        if self.actors.get(aid) is actor:
            del self.actors[aid]
            self.deaths.add(aid, DeadActor(actor.msg.class_name, actor.msg.name,
                                           actor.restarts, actor.worker or "", death))
        self._answer_address_waiters(actor)
        pending = list(actor.inflight.values()) + list(actor.queue)
        actor.inflight.clear()
        actor.queue.clear()
        for task in pending:
            self.tasks.fail_task(task, death)
        if actor.init_task is not None and actor.init_task.state != "done":
            self.tasks.finish(actor.init_task)
        self.sched.remove_actor(actor.msg.actor_id)
        if actor.worker in self.pool.workers:
            self.pool.retire(actor.worker)   # type: ignore[arg-type]
        self.head.status_changed()
        # Lookups: dead for good; its owner (another node, if any) learns why.
        self.head.tell(P.ActorLocation(actor.msg.actor_id, "", death))
        if actor.msg.name and not keep_name:
            self.head.tell(P.UnregisterName(0, actor.msg.name, actor.msg.actor_id))
        self.schedule()

    def _named_death(self, aid: bytes) -> bool:
        """Whether ``aid`` died here with a name, which it may still hold (see :meth:`dead`):
        its driver's leaving frees it (bounded by the deaths kept)."""
        record = self.deaths.get(aid)
        return record is not None and bool(record.name)

    def _free_kept_name(self, aid: bytes) -> None:
        """Free the name a dead actor kept (see :meth:`dead`); nothing if it kept none (the
        head ignores a name already freed or taken by another actor since)."""
        if self._named_death(aid):
            self.head.tell(P.UnregisterName(0, self.deaths.get(aid).name, aid))

    @staticmethod
    def _can_restart(actor: Actor) -> bool:
        limit = actor.msg.max_restarts
        return limit == -1 or actor.restarts < limit

    def process_died(self, w: WorkerProc) -> None:
        actor = self.actors.get(w.actor_id)   # type: ignore[arg-type]
        if actor is None or actor.state == "dead" or actor.worker != w.wid:
            return
        if not self._can_restart(actor):
            self.dead(actor, S.pack_error(ActorDiedError(
                f"actor {actor.msg.class_name} died: its process (pid {w.proc.pid}) exited "
                f"unexpectedly (exit code {exit_code(w.proc)})")))
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
                self.tasks.fail_task(task, S.pack_error(ActorDiedError(
                    f"actor {actor.msg.class_name} died while running {task.name} (it is "
                    "being restarted; set max_task_retries to retry such calls)")))
        actor.inflight.clear()
        for task in reversed(retry):
            task.state = "queued"
            actor.queue.appendleft(task)
        self._start_process(actor)

    def kill_owned(self, conn: ServerConnection) -> None:
        """``conn`` (a driver, or a peer on behalf of its drivers) went away: kill its actors."""
        for aid in conn.info.get("actors", ()):
            actor = self.actors.get(aid)
            if actor is None and self.deaths.get(aid) is not None:
                self._free_kept_name(aid)   # dead already: its name goes with its driver
                continue
            if actor is None and self.elsewhere is not None:
                self.elsewhere.kill_remote(aid, True)
            elif actor is not None and actor.state != "dead":
                self.dead(actor, S.pack_error(ActorDiedError(
                    f"actor {actor.msg.class_name} died: the driver that created it exited")))

    def on_kill_actor(self, conn: ServerConnection, msg: P.KillActor) -> None:
        actor = self.actors.get(msg.actor_id)
        if actor is None and msg.no_restart:
            self._free_kept_name(msg.actor_id)
        if actor is None and self.elsewhere is not None and self.deaths.get(msg.actor_id) is None:
            self.elsewhere.kill_remote(msg.actor_id, msg.no_restart)
        if actor is not None and actor.state != "dead":
            if msg.no_restart or not self._can_restart(actor):
                self.dead(actor, S.pack_error(ActorDiedError(
                    f"actor {actor.msg.class_name} was killed with unipar.kill()")))
            else:
                w = self.pool.get(actor.worker)
                if w is not None:
                    self.pool.kill(w)
        conn.send(P.Reply(msg.req_id, True))

    def listing(self, limit: int = 1000) -> list[dict]:
        """Up to ``limit`` actors of this node, for ``node_info`` (the dashboard): the most
        recent deaths, then the actors it hosts (the newest last)."""
        rows = [{"actor_id": aid.hex(), "class_name": d.class_name, "name": d.name,
                 "state": "dead", "restarts": d.restarts, "worker_id": d.worker, "pid": None,
                 "death": death_cause(d.death)} for aid, d in self.deaths.newest(limit)]
        rows += [{"actor_id": aid.hex(), "class_name": a.msg.class_name, "name": a.msg.name,
                  "state": a.state, "restarts": a.restarts, "worker_id": a.worker or "",
                  "pid": w.proc.pid if (w := self.pool.get(a.worker)) is not None else None,
                  "death": death_cause(a.death)}
                 for aid, a in list(self.actors.items())[-limit:]]
        return rows[-limit:]
