"""Tasks: code, submission, running, results, cancellation; the direct path's leases;
streaming generators.
"""

from __future__ import annotations

from typing import Any

from .base import Message, message


@message
class RegisterFunction(Message):
    op = "register_function"
    key: str
    blob: Any


@message
class SubmitTask(Message):
    op = "submit_task"
    task_id: bytes
    fn_key: str
    name: str
    args: Any
    deps: list
    contained: list
    return_ids: list
    resources: dict
    max_retries: int


@message
class RunTask(Message):
    """Node -> worker. ``deps`` holds ``[oid, kind, payload, path]`` for each dependency."""
    op = "run_task"
    task_id: bytes
    fn_key: str
    fn_blob: Any
    name: str
    args: Any
    deps: list
    return_ids: list
    gpu_ids: list


@message
class TaskDone(Message):
    """Worker -> node (or client). ``status``: "ok", "error", "retry", or "returned" (a task
    given back unstarted, see TakeBack); results are ``[oid, kind, payload, path, size,
    contained]``."""
    op = "task_done"
    task_id: bytes
    status: str
    results: list


@message
class Blocked(Message):
    op = "blocked"


@message
class Unblocked(Message):
    op = "unblocked"


@message
class Cancel(Message):
    """Cancel the task producing ``oid``; ``recursive`` also cancels the tasks it submitted."""
    op = "cancel"
    oid: bytes
    force: bool
    recursive: bool = True


@message
class CancelTask(Message):
    """Node -> worker: raise KeyboardInterrupt in the task if it is still running."""
    op = "cancel_task"
    task_id: bytes


# The direct path (docs/architecture.md, "The path of one task"): a client leases a worker from
# its node and pushes tasks to it over a connection of their own; the node sees only the lease.

@message
class RequestLease(Message):
    """Client -> node: a worker with ``resources`` free, for tasks of that shape."""
    op = "request_lease"
    lease_id: bytes
    resources: dict
    label: str = ""          # what waits for it, for the "waited for resources" warning


@message
class LeaseGranted(Message):
    """Node -> client: connect to ``address`` (the worker's own socket) and push tasks."""
    op = "lease_granted"
    lease_id: bytes
    worker_id: str
    address: str
    pid: int
    gpu_ids: list


@message
class LeaseRefused(Message):
    """Node -> client: no lease now (another node may have room): submit through the node."""
    op = "lease_refused"
    lease_id: bytes
    reason: str


@message
class ReturnLease(Message):
    """Client -> node: the lease (granted or still queued) is no longer needed. ``kill``:
    stop its worker first (a forced cancel of the task it runs)."""
    op = "return_lease"
    lease_id: bytes
    kill: bool = False


@message
class Attach(Message):
    """Client -> leased worker, first on a direct connection: who is pushing tasks (its
    client id at the node, so big results can be registered on its behalf)."""
    op = "attach"
    client_id: int


@message
class TakeBack(Message):
    """Client -> leased worker: give back these pushed tasks unless they have started (a
    slot elsewhere is free). Each one given back is answered ``TaskDone(task_id,
    "returned", [])``; one that started is answered as usual when it ends."""
    op = "take_back"
    task_ids: list


# Streaming generators (num_returns="streaming"): each value a task or actor call yields goes
# to the client that submitted it while the task runs (worker/streaming.py, client/streams.py).

@message
class StreamItem(Message):
    """Worker -> client (directly, or through the node, which passes it to client ``owner``):
    value number ``index`` of stream ``stream_id``; ``result`` is a result record as in
    TaskDone (big values are stored at the node for ``owner`` first). ``index`` -1 (result
    None): the producer ended; only the node needs it (to forget the stream's route)."""
    op = "stream_item"
    stream_id: bytes
    owner: int
    index: int
    result: Any


@message
class StreamAck(Message):
    """Client -> worker (the way its items came): ``consumed`` values were taken, so the
    producer may run up to ``consumed`` + its backpressure bound; -1: stop producing (the
    stream was cancelled or dropped)."""
    op = "stream_ack"
    stream_id: bytes
    consumed: int
