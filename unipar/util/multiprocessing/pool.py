"""``Pool``: ``multiprocessing.Pool``'s interface over unipar actors, on any backend.

::

    Pool.map(f, xs) ── chunks of xs ──▶ PoolWorker actors (``processes`` of them), round robin
                    ◀── one ref per chunk; AsyncResult / IMapIterator wait on those refs

Each worker runs one chunk at a time, so ``processes`` bounds how many run at once. Calls from
one handle run in submission order, so a worker's last ref being done means all its work is.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Sequence

import unipar

from .results import AsyncResult, IMapIterator, IMapUnorderedIterator, _flatten, _single
from .worker import PoolWorkerActor

__all__ = ["Pool"]

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"


class _Worker:
    """One worker actor and what the pool knows of it."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.calls = 0
        self.last: "unipar.ObjectRef | None" = None


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class Pool:
    """A drop-in for ``multiprocessing.Pool`` whose processes are unipar actors.

    Args:
        processes: how many workers (and so calls at once); default: the cluster's CPUs.
        initializer: run as ``initializer(*initargs)`` once in each worker when it starts.
        maxtasksperchild: a worker is replaced by a fresh one after this many chunks.
        context: accepted for compatibility, unused.
        actor_options: options for the worker actors (e.g. ``{"num_cpus": 1}``).

    Raises:
        ValueError: ``processes`` < 1, or ``maxtasksperchild`` is not a positive int.
        TypeError: ``initializer`` is not callable.

    Every method raises ``ValueError("Pool not running")`` after :meth:`close`/:meth:`terminate`.
    """

    def __init__(self, processes: int | None = None,
                 initializer: Callable[..., Any] | None = None, initargs: Sequence[Any] = (),
                 maxtasksperchild: int | None = None, context: Any = None,
                 actor_options: dict[str, Any] | None = None) -> None:
        if processes is None:
            processes = max(int(unipar.cluster_resources().get("CPU", 1)), 1)
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None and (
                not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        self._processes = processes
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._maxtasks = maxtasksperchild
        self._actor_options = dict(actor_options or {})
        self._state = RUN
        self._workers = [self._start_worker() for _ in range(processes)]
        self._retired: list[_Worker] = []
        self._turn = itertools.count()

    # -- workers ------------------------------------------------------------------------------
    def _start_worker(self) -> _Worker:
        actor = PoolWorkerActor.options(**self._actor_options)
        return _Worker(actor.remote(self._initializer, self._initargs))

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _next_worker(self) -> _Worker:
        slot = next(self._turn) % len(self._workers)
        worker = self._workers[slot]
        if self._maxtasks is not None and worker.calls >= self._maxtasks:
            # The old worker finishes what it has queued, then join()/terminate() stop it.
            self._retired.append(worker)
            worker = self._workers[slot] = self._start_worker()
        worker.calls += 1
        return worker

    def _run_chunk(self, func: Callable[..., Any], chunk: list[Any], star: bool) -> "unipar.ObjectRef":
        worker = self._next_worker()
        worker.last = worker.handle.run.remote(func, chunk, star)
        return worker.last

    def _chunk_refs(self, func: Callable[..., Any], iterable: Iterable[Any],
                    chunksize: int | None, star: bool) -> list["unipar.ObjectRef"]:
        self._check_running()
        items = list(iterable)
        if chunksize is None:
            # The standard library's choice: about four chunks per worker.
            chunksize, extra = divmod(len(items), len(self._workers) * 4)
            chunksize += 1 if extra else 0
        elif chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        return [self._run_chunk(func, chunk, star) for chunk in _chunks(items, max(chunksize, 1))]

    # -- the multiprocessing.Pool interface ------------------------------------------------------
    def apply(self, func: Callable[..., Any], args: Sequence[Any] = (),
              kwds: dict[str, Any] | None = None) -> Any:
        """``func(*args, **kwds)`` in a worker; waits for the result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable[..., Any], args: Sequence[Any] = (),
                    kwds: dict[str, Any] | None = None,
                    callback: Callable[[Any], Any] | None = None,
                    error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        """Start ``func(*args, **kwds)`` in a worker; returns an :class:`AsyncResult`."""
        self._check_running()
        worker = self._next_worker()
        worker.last = worker.handle.apply.remote(func, tuple(args), dict(kwds or {}))
        return AsyncResult([worker.last], _single, callback, error_callback)

    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any],
            chunksize: int | None = None) -> list[Any]:
        """``[func(x) for x in iterable]``, in parallel; raises the first error."""
        return self.map_async(func, iterable, chunksize).get()

    def map_async(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                  chunksize: int | None = None, callback: Callable[[Any], Any] | None = None,
                  error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        return AsyncResult(self._chunk_refs(func, iterable, chunksize, False), _flatten,
                           callback, error_callback)

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Sequence[Any]],
                chunksize: int | None = None) -> list[Any]:
        """``[func(*args) for args in iterable]``, in parallel."""
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Sequence[Any]],
                      chunksize: int | None = None, callback: Callable[[Any], Any] | None = None,
                      error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        return AsyncResult(self._chunk_refs(func, iterable, chunksize, True), _flatten,
                           callback, error_callback)

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any],
             chunksize: int = 1) -> IMapIterator:
        """An iterator of ``func(x)`` in input order (``next(timeout)`` may time out)."""
        return IMapIterator(self._chunk_refs(func, iterable, chunksize, False))

    def imap_unordered(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                       chunksize: int = 1) -> IMapUnorderedIterator:
        """Like :meth:`imap`, but each result comes as soon as it is ready."""
        return IMapUnorderedIterator(self._chunk_refs(func, iterable, chunksize, False))

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Accept no more work; the workers stop after what is queued (see :meth:`join`)."""
        if self._state == RUN:
            self._state = CLOSE

    def terminate(self) -> None:
        """Stop the workers now; unfinished results raise ``unipar.ActorDiedError``."""
        self._state = TERMINATE
        self._stop(self._workers + self._retired)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the queued work to finish, then stop the workers.

        ``timeout`` (an addition to the standard interface) bounds the wait.

        Raises:
            ValueError: the pool was neither closed nor terminated.
            unipar.GetTimeoutError: the work did not finish within ``timeout``.
        """
        if self._state == RUN:
            raise ValueError("Pool is still running")
        workers = self._workers + self._retired
        last = [w.last for w in workers if w.last is not None]
        if last:
            ready, _ = unipar.wait(last, num_returns=len(last), timeout=timeout)
            if len(ready) < len(last):
                raise unipar.GetTimeoutError(f"the pool's work did not finish within {timeout} s")
        self._stop(workers)

    def _stop(self, workers: list[_Worker]) -> None:
        for worker in workers:
            try:
                unipar.kill(worker.handle)
            except Exception:  # already gone (its session ended): nothing left to stop
                pass
        self._retired.clear()

    def __enter__(self) -> "Pool":
        self._check_running()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.terminate()

    def __repr__(self) -> str:
        return f"<unipar.util.multiprocessing.Pool state={self._state} pool_size={len(self._workers)}>"
