"""The node's worker processes: started, registered, retired, killed, noticed dead.

Task workers are a pool the scheduler sizes (:class:`~.scheduler.StartWorkers`,
:class:`~.scheduler.RetireWorker`); each actor gets a process of its own. Processes come from
the fork server (boot.py) when the node was started by boot.py, else as
new ``python -m unipar.native.worker`` processes.
"""

from __future__ import annotations

import logging
import subprocess
from typing import Any

from ..wire import protocol as P
from ..wire.server import ServerConnection
from ..worker.process import direct_socket_path
from .spawn import Launcher, spawn_worker
from .records import WorkerProc
from .scheduler import Scheduler

log = logging.getLogger("unipar.native.node")


class WorkerPool:
    """Every worker process of one node, by worker id (``w1``, ``w2``, ...)."""

    def __init__(self, sched: Scheduler, secret: bytes, worker_setup: str) -> None:
        self.sched = sched
        self.secret = secret
        self.worker_setup = worker_setup
        self.unix_address = ""                        # the node's socket, once it listens
        self.launcher: Launcher | None = None   # forks workers (boot.py), if given
        self.workers: dict[str, WorkerProc] = {}
        self.exited: list[WorkerProc] = []            # killed or retired, not yet reaped
        self.next_worker = 1

    def __len__(self) -> int:
        return len(self.workers)

    def get(self, wid: str | None) -> WorkerProc | None:
        return self.workers.get(wid) if wid else None

    def conn_of(self, wid: str) -> ServerConnection | None:
        w = self.workers.get(wid)
        return w.conn if w is not None else None

    def direct_address(self, wid: str) -> str:
        """The address of a worker's own socket, beside the node's (see
        worker.direct_socket_path)."""
        return "unix://" + direct_socket_path(self.unix_address, wid)

    def _next_id(self) -> str:
        wid = f"w{self.next_worker}"
        self.next_worker += 1
        return wid

    def adopt(self, prestarted: list[Any]) -> None:
        """Workers boot.py spawned as w1..wN before the node was imported."""
        for proc in prestarted:
            wid = self._next_id()
            self.workers[wid] = WorkerProc(wid, proc, "task", None)
        self.sched.workers_requested(len(prestarted))

    def spawn(self, role: str, actor_id: bytes | None = None,
              gpu_ids: tuple[int, ...] = (), env: str = "") -> WorkerProc:
        """Start a worker; ``env`` (a runtime env's tag) dedicates it to that env's work."""
        wid = self._next_id()
        cuda = ",".join(str(i) for i in gpu_ids) if role == "actor" else None
        start = self.launcher.start if self.launcher is not None else spawn_worker
        proc = start(wid, role, self.unix_address, self.worker_setup, self.secret.hex().encode(),
                     cuda, env)
        w = WorkerProc(wid, proc, role, actor_id)
        w.env = env
        self.workers[wid] = w
        return w

    def start_workers(self, count: int, env: str = "") -> None:
        for _ in range(count):
            self.spawn("task", env=env)
        self.sched.workers_requested(count, env)

    @staticmethod
    def kill(w: WorkerProc) -> None:
        """Kill its process; its death is noticed (and handled) like any other."""
        try:
            w.proc.kill()
        except OSError:
            pass

    def retire(self, wid: str) -> None:
        """Ask a worker to exit (and make sure it does); it is no longer ours."""
        w = self.workers.pop(wid, None)
        if w is None:
            return
        if w.conn is not None:
            w.conn.info.pop("worker_id", None)
            w.conn.send(P.Shutdown())
        self.kill(w)
        self.exited.append(w)

    def remove(self, w: WorkerProc) -> None:
        """A worker died (or must): forget it, make sure it is gone."""
        self.workers.pop(w.wid, None)
        self.kill(w)
        self.exited.append(w)
        if w.conn is None and w.role == "task":
            self.sched.worker_start_failed(w.env)

    def died_unconnected(self) -> list[WorkerProc]:
        """Workers whose process exited before they connected; reaps exited ones."""
        dead = []
        for w in list(self.workers.values()):
            if w.conn is None and w.proc.poll() is not None:
                log.warning("worker %s exited before connecting (code %s)", w.wid,
                            w.proc.returncode)
                dead.append(w)
        self.exited = [w for w in self.exited if w.proc.poll() is None]
        return dead

    def stop(self) -> None:
        """Kill every worker and wait for them (a few seconds at most). Idempotent."""
        every = list(self.workers.values()) + self.exited
        for w in every:
            self.kill(w)
        for w in every:
            try:
                w.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.workers.clear()
        self.exited.clear()
