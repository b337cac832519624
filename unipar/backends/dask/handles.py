"""Handles of the dask backend: a ref (one Dask future, maybe one element of it) and an actor id.

Both pickle to a key and rebuild in the receiving process as a Future of that process's Dask
client, registered with the scheduler (:func:`future_for_key`). :func:`map_error` turns Dask's
own failures behind a handle into unipar errors.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from ... import _state
from ...exceptions import (ActorDiedError, TaskCancelledError, UniparError, WorkerCrashedError,
                           capture_remote)
from . import actors as worker_side
from .actors import note_pickled

__all__ = ["DaskRef", "DaskActorId", "future_for_key", "map_error"]


def _process_client() -> Any:
    """The Dask client of this process: the running backend's, else the worker's own."""
    # Read by attribute, not by type: backend.py imports this module, not the other way round.
    client = getattr(_state.current(), "dask_client", None)
    if client is not None:
        return client
    from distributed import get_client
    return get_client()


class DaskRef:
    """A handle: one Dask future (its key), and which element of a multi-return it names.

    ``keep`` holds the futures of refs nested in this task's arguments, so they live at least
    as long as this handle (Dask would free them as soon as the driver dropped its own refs).
    ``call`` names the actor call behind it, so ``cancel`` can tell the actor to skip it.
    """

    __slots__ = ("key", "index", "future", "keep", "call", "__weakref__")

    def __init__(self, future: Any, index: int | None = None, keep: Any = None,
                 call: tuple | None = None) -> None:
        self.key = future.key
        self.index = index
        self.future = future
        self.keep = keep
        self.call = call

    def __reduce__(self):
        note_pickled(self.future)
        return (_rebuild_ref, (self.key, self.index, self.call))

    def __hash__(self) -> int:
        return hash((self.key, self.index))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DaskRef) and (self.key, self.index) == (other.key, other.index)

    def __repr__(self) -> str:
        return f"dask:{self.key}" + (f"[{self.index}]" if self.index is not None else "")



def future_for_key(key: str) -> Any:
    """A Future for ``key`` in this process, registered with the scheduler.

    Dask no longer tells the scheduler about Futures built from a key, so without the
    ``client-desires-keys`` message the Future would never learn its state.
    """
    from distributed import Future
    client = _process_client()
    future = Future(key, client)
    client._send_to_scheduler({"op": "client-desires-keys", "keys": [key]})
    return future


def _rebuild_ref(key: str, index: int | None, call: tuple | None) -> DaskRef:
    return DaskRef(future_for_key(key), index, None, call)


class DaskActorId:
    """An actor id: a stable key, and the future of the Dask actor hosting it now.

    ``key`` is the first host's Dask key and never changes; after a restart (its worker died)
    the creating process's backend knows the new host (see :mod:`.restarts`). ``retries`` is
    the actor's ``max_task_retries`` where it may be restarted (else 0): calls on such an actor
    are retried on the new host (see ``hosts.run_retrying_call``).
    """

    __slots__ = ("key", "future", "keep", "retries", "__weakref__")

    def __init__(self, future: Any, keep: Any = None, key: str | None = None,
                 retries: int = 0) -> None:
        self.key = key or future.key
        self.future = future
        self.keep = keep
        self.retries = retries

    def __reduce__(self):
        note_pickled(self.future)
        return (_rebuild_actor_id, (self.key, self.future.key, self.retries))

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DaskActorId) and self.key == other.key

    def __repr__(self) -> str:
        return f"dask-actor:{self.key}"


def _rebuild_actor_id(key: str, host_key: str, retries: int = 0) -> DaskActorId:
    return DaskActorId(future_for_key(host_key), None, key, retries)



def map_error(exc: BaseException, handle: DaskRef) -> BaseException:
    """Dask's own failures (not the task's) as unipar errors."""
    from distributed.scheduler import KilledWorker
    if isinstance(exc, UniparError):
        return exc
    if isinstance(exc, KilledWorker):
        if handle.call is not None:
            return ActorDiedError(f"the Dask worker running actor call {handle.key} kept dying: {exc}")
        return WorkerCrashedError(f"the Dask workers running task {handle.key} died "
                                  f"{worker_side.ALLOWED_FAILURES + 1} times: {exc}")
    if isinstance(exc, (concurrent.futures.CancelledError,)) or type(exc).__name__.endswith("CancelledError"):
        return TaskCancelledError(f"task {handle.key} was cancelled")
    if handle.call is not None:
        return ActorDiedError(f"actor call {handle.key} failed in Dask: {exc}")
    # Raised on the worker that ran the task (run_task stores its own failures as values).
    return capture_remote(exc, f"a Dask worker (task {handle.key})")
