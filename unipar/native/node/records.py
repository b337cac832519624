"""The node's shared records: objects, tasks, leases, worker processes, actors and peers.

Plain state, no behaviour beyond bookkeeping of their own fields: every part of the node
daemon (objects.py, tasks.py, leases.py, pool.py, actors.py, peers.py, remote_actors.py)
reads and writes them, and none of those parts imports another to get them.
"""

from __future__ import annotations

import subprocess
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..wire import protocol as P

if TYPE_CHECKING:
    from ..wire.server import ServerConnection
    from ..wire.transport import Connection

INLINE_MAX = 100 * 1024   # objects up to this size travel inside messages, not as files


class Obj:
    """An object this node knows: its value (inline payload or store file) once resolved
    (``kind`` is None until then), who holds refs to it and what pins it."""

    __slots__ = ("kind", "payload", "path", "size", "holders", "pins", "subscribers",
                 "contained", "task_id", "readers")

    def __init__(self, task_id: bytes | None = None) -> None:
        self.kind: str | None = None
        self.payload: Any = None
        self.path = ""
        self.size = 0
        self.holders: set[int] = set()
        self.pins = 0
        self.subscribers: list[ServerConnection] = []
        self.contained: list[bytes] = []
        self.task_id = task_id
        self.readers: set[str] | None = None   # workers that may cache a mapping of its file


class Task:
    """A task or actor call, from submission until its results are stored (or it fails)."""

    __slots__ = ("task_id", "fn_key", "name", "args", "deps", "contained", "return_ids",
                 "resources", "retries_left", "state", "worker", "missing", "actor_id",
                 "method", "cancelled", "parent", "from_peer", "remote_create")

    def __init__(self, task_id: bytes, name: str, args: Any, deps: list, contained: list,
                 return_ids: list, resources: dict, retries: int) -> None:
        self.task_id = task_id
        self.fn_key = ""
        self.name = name
        self.args = args
        self.deps = deps
        self.contained = contained
        self.return_ids = return_ids
        self.resources = resources
        self.retries_left = retries
        self.state = "waiting"          # waiting | queued | running | forwarded | done
        self.worker: str | None = None  # worker id, or the peer's node id when forwarded
        self.missing = 0
        self.actor_id: bytes | None = None
        self.method = ""
        self.cancelled = False
        self.parent: bytes | None = None   # the task that submitted this one, if any
        self.from_peer = False             # sent here by another node (not sent on again)
        self.remote_create: Any = None     # CreateActor to send to a peer once deps are ready


class Lease:
    """A worker lent to one client, which pushes tasks of one resource shape to it directly.
    Queued in the scheduler like a task (its id is the lease id) until a worker is free."""

    __slots__ = ("lease_id", "conn", "resources", "worker")

    def __init__(self, lease_id: bytes, conn: ServerConnection, resources: dict) -> None:
        self.lease_id = lease_id
        self.conn = conn
        self.resources = resources
        self.worker: str | None = None   # set once granted


class WorkerProc:
    """A worker process of this node (``role`` "task", or "actor" for one actor's process)."""

    __slots__ = ("wid", "proc", "conn", "role", "actor_id", "fns", "started", "env")

    def __init__(self, wid: str, proc: Any, role: str, actor_id: bytes | None) -> None:
        self.wid = wid
        self.proc = proc      # a subprocess.Popen, or boot.ForkedWorker (the same interface)
        self.conn: ServerConnection | None = None
        self.role = role
        self.actor_id = actor_id
        self.fns: set[str] = set()
        self.started = time.monotonic()
        self.env = ""         # the runtime env it is dedicated to (scheduler.env_of), if any


class Actor:
    """An actor hosted on this node."""

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


class Peer:
    """Another node, as seen from this one."""

    def __init__(self, node_id: str, address: str, total: dict[str, float]) -> None:
        self.node_id = node_id
        self.address = address
        self.total = dict(total)
        self.conn: Connection | None = None
        self.connecting = False
        self.alive = True
        self.fns: set[str] = set()
        self.inflight: dict[bytes, Task] = {}     # task id -> Task sent there, not finished
        self.used: dict[str, float] = {}         # resources of the tasks in ``inflight``
        self.pushed: dict[bytes, int] = {}       # object id -> tasks there that use our copy
        self.avail: dict[str, float] = dict(total)   # its free resources, as last reported

    def add(self, task: Task) -> None:
        self.inflight[task.task_id] = task
        for key, amount in task.resources.items():
            self.used[key] = self.used.get(key, 0.0) + amount

    def remove(self, task_id: bytes) -> Task | None:
        task = self.inflight.pop(task_id, None)
        if task is not None:
            for key, amount in task.resources.items():
                self.used[key] = self.used.get(key, 0.0) - amount
        return task

    def room(self, demand: dict[str, float]) -> bool:
        """Could it take one more task of ``demand``, counting what we sent and did not get back?"""
        return all(self.total.get(k, 0.0) + 1e-9 >= self.used.get(k, 0.0) + v
                   for k, v in demand.items() if v > 0)

    def has(self, demand: dict[str, float]) -> bool:
        return all(self.total.get(k, 0.0) >= v for k, v in demand.items() if v > 0)


def exit_code(proc: subprocess.Popen) -> int | None:
    """The exit code of a process whose connection just closed (it is exiting or gone)."""
    try:
        return proc.wait(timeout=0.2)
    except subprocess.TimeoutExpired:
        return None
