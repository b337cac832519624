"""Actor calls pushed straight to the actor's process, in order, per caller.

The node stays the authority on an actor's life (placement, restarts, death); a caller on the
same node asks it once where the actor lives (``ActorAddress``, answered when the actor is
alive) and then talks to the actor's process itself::

    caller                                      node                    actor process
      a.f.remote() ─▶ route queue ─ ActorAddress ─▶ (alive) ─ address ─▶ caller
      connect, Attach; RunActorTask, RunActorTask, ... ────────────────────────▶ runs them
      ◀────────────────────────────────────────────────────────── TaskDone (results inline)

Calls leave in submission order: the first call still waiting for an argument holds back the
ones after it, as on the node. An actor on another node (or a caller that cannot reach the
actor's socket: a remote driver) gets every call through the node, which keeps the order.

When the connection drops, the caller asks again: a restarted actor gets the calls that were
in flight again (within ``max_task_retries``); a dead one fails them with its death.

A driver may call millions of actors over its life: a dead actor's route is dropped, keeping
only its death (the last :data:`DEAD_KEPT`, for later calls), and idle routes through the node
(which hold nothing) are dropped now and then (a later call asks the node again).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any, Callable, Protocol, Sequence

from ...exceptions import ActorDiedError, TaskCancelledError
from ..wire import protocol as P
from ..wire import serialization as S
from ..wire.transport import Connection
from .delivery import Delivery

RETRY_RESOLVE = 0.02   # seconds before asking again when the node's answer was stale
DEAD_KEPT = 10_000     # dead actors whose death later calls raise here (then the node answers)
PRUNE_FIRST = 1024     # routes kept before idle ones are first dropped


class ActorCall:
    """One call from submission until its results are delivered."""

    __slots__ = ("task_id", "method", "args", "deps", "contained", "return_ids", "keep",
                 "tries", "cancelled", "synced")

    def __init__(self, task_id: bytes, method: str, args: Any, deps: list[bytes],
                 contained: list[bytes], return_ids: list[bytes], keep: list) -> None:
        self.task_id = task_id
        self.method = method
        self.args = args
        self.deps = deps
        self.contained = contained
        self.return_ids = return_ids
        self.keep = keep            # refs that must live until the call is done
        self.tries = 0
        self.cancelled = False
        # True: may leave; False: refs inside, the node must know them first; None: asked it
        self.synced: bool | None = not contained


class CallOwner(Delivery, Protocol):
    """What actor calls may ask of their client besides delivering results."""

    remote: bool   # cannot reach actors' sockets: every call goes through the node

    def request_async(self, make: Callable[[int], P.Message],
                      then: Callable[[Any], None]) -> None:
        """Send a request to the node; ``then(future)`` runs when it is answered."""

    def ready_for(self, direct: bool, deps: Sequence[bytes], contained: Sequence[bytes],
                  then: Callable[[], None]) -> bool:
        """Whether a call with these arguments can leave now; else ``then`` runs later."""

    def dep_values(self, deps: Sequence[bytes]) -> list | bytes:
        """``[oid, kind, payload, path]`` per (ready) dependency, or the first packed error."""

    def promote(self, oids: Sequence[bytes]) -> None:
        """Hand our local objects among ``oids`` to the node."""

    def call_via_node(self, actor_id: bytes, call: ActorCall) -> None:
        """Send a call through the node (the actor is elsewhere)."""

    def later(self, write: Callable[[], None]) -> None:
        """Run ``write`` at the next get/wait or within about a millisecond."""


class _Route:
    """How this process reaches one actor: its queue, calls in flight, its connection."""

    __slots__ = ("actor_id", "state", "queue", "inflight", "conn", "info", "death", "lost")

    def __init__(self, actor_id: bytes) -> None:
        self.actor_id = actor_id
        self.state = "resolving"          # resolving | direct | node | dead
        self.queue: deque[ActorCall] = deque()
        self.inflight: dict[bytes, ActorCall] = {}
        self.conn: Connection | None = None
        self.info: dict = {}
        self.death: bytes | None = None
        self.lost: list[ActorCall] = []    # in flight when the connection dropped


class ActorRouter:
    """The actor calls of one client. ``lock`` guards all routes; pushing happens under it
    so two threads cannot reorder one actor's calls."""

    def __init__(self, client: CallOwner) -> None:
        self.client = client
        self.lock = threading.RLock()
        self.routes: dict[bytes, _Route] = {}
        self.dead: OrderedDict[bytes, bytes] = OrderedDict()   # actor id -> death, oldest first
        self.dead_kept = DEAD_KEPT
        self._prune_at = PRUNE_FIRST
        self.closed = False

    # -- submitting ----------------------------------------------------------------------------
    def call(self, actor_id: bytes, call: ActorCall) -> None:
        with self.lock:
            death = self.dead.get(actor_id)
            if death is not None:
                self.client.fail_locally(call.return_ids, death)
                return
            route = self.routes.get(actor_id)
            fresh = route is None
            if route is None:
                self._prune()
                route = self.routes[actor_id] = _Route(actor_id)
                if self.client.remote:
                    route.state = "node"
            if route.state == "dead":
                self.client.fail_locally(call.return_ids, route.death)  # type: ignore[arg-type]
                return
            route.queue.append(call)
            if not fresh or route.state == "node":
                self._pump(route)
                return
        self._resolve(route)

    def _prune(self) -> None:
        """Drop idle routes through the node (they hold nothing: a later call asks the node
        again), amortized: when the table doubled since the last time. Under the lock."""
        if len(self.routes) < self._prune_at:
            return
        for aid, route in list(self.routes.items()):
            if route.state == "node" and not (route.queue or route.inflight or route.lost):
                del self.routes[aid]
        self._prune_at = max(PRUNE_FIRST, 2 * len(self.routes))

    def _resolve(self, route: _Route) -> None:
        def answered(fut: Any) -> None:
            try:
                reply = fut.result()
            except Exception as exc:   # the node is gone: nothing can reach the actor
                self._dead(route, S.pack_error(ActorDiedError(f"actor unreachable: {exc}")))
                return
            self._resolved(route, reply.value)
        self.client.request_async(lambda r: P.ActorAddress(r, route.actor_id), answered)

    def _resolved(self, route: _Route, value: dict) -> None:
        if value["state"] == "dead":
            self._dead(route, bytes(value["death"]))
            return
        if value["state"] == "node":
            with self.lock:
                route.state = "node"
                route.queue.extendleft(reversed(route.lost))
                route.lost = []
                self._pump(route)
            return
        stale = route.info.get("worker_id") == value["worker_id"] and route.lost
        try:
            if stale:
                raise ConnectionError("the node has not yet seen the actor's process die")
            conn = Connection(value["address"], self.client.secret)
        except (OSError, ConnectionError, P.ProtocolError):
            # Its process died before the node noticed: ask again shortly (a daemon timer: it
            # must never hold the interpreter's exit).
            if not self.closed:
                timer = threading.Timer(RETRY_RESOLVE, self._resolve, args=(route,))
                timer.daemon = True
                timer.start()
            return
        conn.send(P.Attach(self.client.client_id))
        with self.lock:
            restarted = bool(route.info) and value["restarts"] > route.info.get("restarts", 0)
            route.conn, route.info, route.state = conn, value, "direct"
            self._requeue_lost(route, restarted)
            self._pump(route)
        threading.Thread(target=self._read, args=(route, conn), daemon=True,
                         name="unipar-actor-reader").start()

    def _requeue_lost(self, route: _Route, restarted: bool) -> None:
        """Calls that were running when the process died: again, within max_task_retries."""
        limit = route.info.get("max_task_retries", 0)
        again, failed = [], []
        for call in route.lost:
            if call.cancelled:
                continue
            if restarted and (limit == -1 or call.tries < limit):
                call.tries += 1
                again.append(call)
            else:
                failed.append(call)
        route.lost = []
        route.queue.extendleft(reversed(again))
        name = route.info.get("class_name", "actor")
        for call in failed:
            self.client.fail_locally(call.return_ids, S.pack_error(ActorDiedError(
                f"actor {name} died while running {name}.{call.method} (it is being restarted; "
                "set max_task_retries to retry such calls)")))

    def _pump(self, route: _Route) -> None:
        """Push queued calls, in order, while the first one's arguments are ready."""
        if route.state not in ("direct", "node"):
            return
        wrote = False
        first = not route.inflight
        while route.queue:
            call = route.queue[0]
            if not self.client.ready_for(route.state == "direct", call.deps, call.contained,
                                         lambda: self.pump(route)):
                break
            if route.state == "node":
                route.queue.popleft()
                self.client.call_via_node(route.actor_id, call)
                continue
            if call.synced is not True:
                # Refs inside the arguments: the actor may ask the node for them, so the node
                # must have them first. Hand them over, and push once the node answers a ping
                # sent after them (never wait here: this may run on the node's reader thread).
                if call.synced is False:
                    call.synced = None   # asked
                    self.client.promote(call.contained)
                    self.client.request_async(lambda r: P.Ping(r),
                                              lambda _f: self._synced(route, call))
                break
            route.queue.popleft()
            values = self.client.dep_values(call.deps)
            if isinstance(values, bytes):   # a failed argument fails the call
                self.client.fail_locally(call.return_ids, values)
                continue
            route.inflight[call.task_id] = call
            route.conn.post(P.RunActorTask(call.task_id, call.method, call.args,  # type: ignore[union-attr]
                                           values, call.return_ids))
            wrote = True
        if wrote:
            if first:
                self._flush(route)
            else:
                self.client.later(lambda: self._flush(route))

    def pump(self, route: _Route) -> None:
        with self.lock:
            self._pump(route)

    def _synced(self, route: _Route, call: ActorCall) -> None:
        call.synced = True
        self.pump(route)

    @staticmethod
    def _flush(route: _Route) -> None:
        conn = route.conn
        if conn is not None:
            try:
                conn.flush()
            except ConnectionError:
                pass   # its reader sees the drop

    # -- results -------------------------------------------------------------------------------
    def _read(self, route: _Route, conn: Connection) -> None:
        done: list[P.TaskDone] = []

        def on_message(msg: P.Message) -> None:
            if msg.op == "task_done":
                done.append(msg)  # type: ignore[arg-type]
            elif msg.op == "log":
                settle()
                self.client.show_log(msg)  # type: ignore[arg-type]
            elif msg.op == "stream_item":   # a generator's value, before its call's end
                self.client.stream_item(msg, conn)  # type: ignore[arg-type]

        def settle() -> None:
            if not done:
                return
            results: list = []
            with self.lock:
                for msg in done:
                    call = route.inflight.pop(msg.task_id, None)
                    if call is not None:
                        call.keep = []
                        results.extend(msg.results)
                done.clear()
            if results:
                self.client.deliver(results)
        conn.serve_forever(on_message, settle)
        settle()
        self._connection_lost(route, conn)

    def _connection_lost(self, route: _Route, conn: Connection) -> None:
        with self.lock:
            if route.conn is not conn or self.closed:
                return
            route.conn = None
            route.state = "resolving"
            route.lost = list(route.inflight.values())
            route.inflight.clear()
        conn.close()
        self._resolve(route)

    def _dead(self, route: _Route, death: bytes) -> None:
        with self.lock:
            route.state, route.death = "dead", death
            calls = route.lost + list(route.inflight.values()) + list(route.queue)
            route.lost, route.queue = [], deque()
            route.inflight.clear()
            if self.routes.get(route.actor_id) is route:   # only its death stays
                del self.routes[route.actor_id]
                self.dead[route.actor_id] = death
                while len(self.dead) > self.dead_kept:
                    self.dead.popitem(last=False)
        for call in calls:
            if not call.cancelled:
                self.client.fail_locally(call.return_ids, death)

    # -- cancel, close -------------------------------------------------------------------------
    def cancel(self, oid: bytes) -> bool:
        """Cancel a call still queued here; True when ``oid`` is a call's result here."""
        with self.lock:
            for route in self.routes.values():
                for call in route.queue:
                    if oid in call.return_ids:
                        route.queue.remove(call)
                        call.cancelled = True
                        break
                else:
                    if any(oid in c.return_ids for c in route.inflight.values()):
                        return True   # running: as in Ray, an actor call runs to its end
                    continue
                break
            else:
                return False
        self.client.fail_locally(call.return_ids, S.pack_error(
            TaskCancelledError(f"actor call {call.method} was cancelled")))
        return True

    def close(self) -> None:
        with self.lock:
            self.closed = True
            conns = [r.conn for r in self.routes.values() if r.conn is not None]
        for conn in conns:
            conn.close()
