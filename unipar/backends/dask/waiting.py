"""Blocking on Dask futures for the dask backend: get's gather, wait's polling, the thread slot.

A Dask task that blocks in ``get``/``wait`` gives its worker thread back while it waits
(:func:`slot_released`: secede, then rejoin), so nested tasks never deadlock. Functions only:
the state they read is the handles' futures and the current task's context (actors.py).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, Sequence

from ...exceptions import GetTimeoutError, ObjectLostError, TaskCancelledError
from . import actors as worker_side
from .actors import extract, load
from .handles import DaskRef, map_error

__all__ = ["slot_released", "get_values", "wait_done", "dask_wait", "now"]

now = time.monotonic


@contextlib.contextmanager
def slot_released() -> Iterator[None]:
    """Inside a Dask task thread, give the thread slot back while blocked (secede/rejoin)."""
    ctx = worker_side.current_context()
    if ctx is None or not ctx.in_task or ctx.seceded:
        yield
        return
    from distributed import rejoin, secede
    secede()
    ctx.seceded = True
    try:
        yield
    finally:
        ctx.seceded = False
        rejoin()


def dask_wait(client: Any, futures: list[Any], timeout: float | None, return_when: str) -> None:
    """``distributed.wait`` on our client (the public one uses the default client)."""
    from distributed.client import _wait
    client.sync(_wait, futures, timeout=timeout, return_when=return_when)


def get_values(client: Any, handles: Sequence[DaskRef], timeout: float | None) -> list[Any]:
    """The values behind ``handles``, in order; the first failure in input order is raised.

    Raises:
        GetTimeoutError: not all were ready within ``timeout``.
        ObjectLostError: a ``put`` value's worker died.
    """
    futures = list({h.key: h.future for h in handles}.values())
    for future in futures:
        if future.status == "lost" and str(future.key).startswith("bytes-"):
            # put() values are not in Dask's graph: lost with their worker, for good.
            raise ObjectLostError(f"the value of {future.key} (from put) was on a Dask worker "
                                  "that died; Dask cannot recompute put() values")
    if timeout is None:
        # The common case in one trip to the event loop: gather waits by itself.
        try:
            with slot_released():
                gathered = client.gather(futures)
        except Exception:  # a Dask-level failure: sort it out below, in input order
            pass
        else:
            values = dict(zip((f.key for f in futures), gathered, strict=True))
            return [load(extract(values[h.key], h.index)) for h in handles]
    if not all(f.done() for f in futures):
        _await_all(client, futures, timeout)
    return _finished_values(client, handles, futures)


def _await_all(client: Any, futures: list[Any], timeout: float | None) -> None:
    if timeout == 0:
        raise GetTimeoutError(f"{len(futures)} object(s) not ready within timeout=0")
    with slot_released():
        try:
            dask_wait(client, futures, timeout, "ALL_COMPLETED")
        except TimeoutError:
            raise GetTimeoutError(
                f"not all of {len(futures)} object(s) were ready within {timeout} s") from None


def _finished_values(client: Any, handles: Sequence[DaskRef], futures: list[Any]) -> list[Any]:
    finished = [f for f in futures if f.status == "finished"]
    try:
        values = dict(zip((f.key for f in finished), client.gather(finished), strict=True))
    except BaseException as exc:
        raise map_error(exc, handles[0]) from None
    out = []
    for handle in handles:  # the first failure in input order wins, stored or Dask's own
        status = handle.future.status
        if status == "cancelled":
            raise TaskCancelledError(f"task {handle.key} was cancelled")
        if handle.key not in values:
            raise map_error(handle.future.exception(), handle)
        out.append(load(extract(values[handle.key], handle.index)))
    return out


def wait_done(client: Any, handles: Sequence[DaskRef], num_returns: int,
              timeout: float | None) -> set[int]:
    """Indices of the done handles, once ``num_returns`` are done or ``timeout`` passes."""
    by_key: dict[str, Any] = {h.key: h.future for h in handles}

    def finished() -> set[int]:
        return {i for i, h in enumerate(handles) if by_key[h.key].done()}
    done = finished()
    if len(done) >= num_returns or timeout == 0:
        return done
    deadline = None if timeout is None else now() + timeout
    with slot_released():
        while len(done) < num_returns:
            remaining = None if deadline is None else deadline - now()
            if remaining is not None and remaining <= 0:
                break
            pending = [f for f in by_key.values() if not f.done()]
            try:
                dask_wait(client, pending, remaining, "FIRST_COMPLETED")
            except TimeoutError:
                pass
            done = finished()
    return done
