"""The direct path, node side: workers lent to clients, which push tasks to them directly.

A lease request is queued in the scheduler like a task (its id is the lease id) until a worker
is free; the client then gets the worker's own address and pushes tasks of one resource shape
to it until it gives the lease back. In a cluster, a client whose node has no room now is told
"busy" (:func:`~.placement.lease_refusal`) and submits through the node, which spreads the
work over the peers; requests queued before a peer had room are refused once one has
(:meth:`Leases.reconsider`), so work queued before a node joined still spreads.

A lease whose client went away without giving it back has its worker stopped (whatever it
runs is nobody's now): asked to exit first, so it reports its last task events on the way out
(a driver that exits right after its last result must not leave its tasks counted as lost),
and killed if it is still there STOP_GRACE_S later.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Sequence

from ..wire import protocol as P
from ..wire.server import ServerConnection
from . import placement
from .pool import WorkerPool
from .records import Lease, Peer, WorkerProc
from .scheduler import Dispatch, Scheduler

STOP_GRACE_S = 2.0   # a worker asked to exit that is still there this much later is killed


class Leases:
    """Lease requests and granted leases of one node. ``live_peers()`` lists the peers
    placement may weigh; ``schedule()`` asks for a scheduling round soon."""

    def __init__(self, sched: Scheduler, pool: WorkerPool, schedule: Callable[[], None],
                 live_peers: Callable[[], Sequence[Peer]]) -> None:
        self.sched = sched
        self.pool = pool
        self.schedule = schedule
        self.live_peers = live_peers
        self.leases: dict[bytes, Lease] = {}

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self.leases

    def granted(self) -> int:
        return sum(1 for lease in self.leases.values() if lease.worker is not None)

    def waiting(self) -> int:
        return sum(1 for lease in self.leases.values() if lease.worker is None)

    def on_request_lease(self, conn: ServerConnection, msg: P.RequestLease) -> None:
        demand = msg.resources
        refusal = placement.lease_refusal(self.sched, demand, self.sched.fits_now(demand),
                                          self.live_peers())
        if refusal is not None:   # "busy": the client submits through us, and we forward
            conn.send(P.LeaseRefused(msg.lease_id, refusal))
            return
        self.leases[msg.lease_id] = Lease(msg.lease_id, conn, dict(demand))
        conn.info.setdefault("leases", set()).add(msg.lease_id)
        self.sched.add_task(msg.lease_id, demand, time.monotonic(), msg.label or "a task")
        self.schedule()

    def grant(self, action: Dispatch) -> bool:
        """The scheduler picked a worker for ``action.task_id``: grant it if that is a lease.
        False when it is not a lease (a task)."""
        lease = self.leases.get(action.task_id)   # type: ignore[arg-type]
        if lease is None:
            return False
        w = self.pool.get(action.worker_id)
        if w is None or w.conn is None or lease.conn.closed:
            self.sched.task_finished(action.worker_id, time.monotonic())
            if not lease.conn.closed:
                self.sched.add_task(lease.lease_id, lease.resources, time.monotonic(), front=True)
            else:
                self.leases.pop(lease.lease_id, None)
            self.schedule()
            return True
        lease.worker = w.wid
        lease.conn.send(P.LeaseGranted(lease.lease_id, w.wid, self.pool.direct_address(w.wid),
                                       w.proc.pid, list(action.gpu_ids)))
        return True

    def on_return_lease(self, conn: ServerConnection, msg: P.ReturnLease) -> None:
        self.end(msg.lease_id, msg.kill)

    def end(self, lease_id: bytes, kill: bool, client_gone: bool = False) -> None:
        """The lease is over (returned, or its client went away: ``kill`` stops its task; at
        once for a forced cancel, gently when ``client_gone``: see :meth:`_stop`)."""
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return
        lease.conn.info.get("leases", set()).discard(lease_id)
        if lease.worker is None:
            self.sched.remove_task(lease_id)
            return
        w = self.pool.get(lease.worker)
        if kill and w is not None:   # its death is noticed (and handled) like any other
            if client_gone:
                self._stop(w)
            else:
                self.pool.kill(w)
            return
        self.sched.task_finished(lease.worker, time.monotonic())
        self.schedule()

    def _stop(self, w: WorkerProc) -> None:
        """Ask ``w`` to exit (it sends its unsent task events first, and reports the task it
        runs as stopped, not failed); kill it if it has not gone within STOP_GRACE_S (a task
        holding the GIL keeps it from reading the request)."""
        try:
            later = asyncio.get_running_loop().call_later
        except RuntimeError:   # not on the node's loop (a unit test): no grace to wait out
            later = None
        if later is None or w.conn is None or w.conn.closed:
            self.pool.kill(w)
            return
        w.conn.send(P.Shutdown())
        later(STOP_GRACE_S, self.pool.kill, w)   # a no-op once it has exited

    def worker_lost(self, lease_id: object) -> None:
        """The leased worker died; its client sees the connection drop and retries or fails."""
        lease = self.leases.pop(lease_id, None)   # type: ignore[arg-type]
        if lease is not None:
            lease.conn.info.get("leases", set()).discard(lease_id)

    def disconnected(self, conn: ServerConnection) -> None:
        for lease_id in list(conn.info.get("leases", ())):
            # Its pushed tasks are nobody's now: stop them (a graceful client returns its
            # leases before it goes; what is left is a crash, a kill, or a lease granted to it
            # as it went, whose worker still holds events of the client's last tasks).
            self.end(lease_id, kill=True, client_gone=True)

    def reconsider(self) -> None:
        """A peer joined or reported room: requests still queued here that a peer could
        take now are refused ("busy"), so their clients send those tasks through this
        node, which forwards them."""
        peers = self.live_peers()
        if not peers:
            return
        queued = [(lease.lease_id, lease.resources) for lease in self.leases.values()
                  if lease.worker is None]
        for lease_id in placement.leases_to_refuse(queued, peers):
            lease = self.leases.pop(lease_id)   # type: ignore[arg-type]
            lease.conn.info.get("leases", set()).discard(lease_id)
            self.sched.remove_task(lease_id)
            lease.conn.send(P.LeaseRefused(lease.lease_id, "busy"))
