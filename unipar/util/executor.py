"""``UniparExecutor``: a ``concurrent.futures.Executor`` whose calls run as unipar tasks.

::

    submit(fn, *a) ──▶ [local queue, only with max_workers] ──▶ _call.remote(fn, a, kw) ──▶ ref
        ▲                                                                               │
        └──────── _TaskFuture ◀── copied from ref.future() when the task finishes ◀──────┘

Its futures are plain ``concurrent.futures.Future`` objects, so ``as_completed``, ``wait`` and
``Executor.map`` work as with any executor. Cancelling one cancels its task (``unipar.cancel``).
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from typing import Any, Callable

import unipar

__all__ = ["UniparExecutor"]


def _run(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


# One remote function for every call: fn travels as an argument, so lambdas, partials and
# builtins work and no remote function is defined per submit.
_call = unipar.remote(_run)


class _TaskFuture(concurrent.futures.Future):
    """A Future for one task; it stays pending until the task finishes.

    ``cancel()`` succeeds while the task has not finished and cancels the task too: unipar
    cannot tell a queued task from a running one, so both count as pending.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ref: "unipar.ObjectRef | None" = None
        self._cancel_lock = threading.Lock()

    def cancel(self) -> bool:
        with self._cancel_lock:
            if self.cancelled():
                return True  # a second cancel() changes nothing
            if not super().cancel():
                return False
            # CANCELLED -> CANCELLED_AND_NOTIFIED now: concurrent.futures.wait/as_completed count
            # a cancelled future as done only once its executor has notified it.
            self.set_running_or_notify_cancel()
        ref = self.ref
        if ref is not None:
            try:
                unipar.cancel(ref)
            except Exception:  # the session ended or the task is gone: nothing left to stop
                pass
        return True


def _settle(source: concurrent.futures.Future, target: _TaskFuture) -> None:
    """Copy the outcome of the task's future into the user's one (unless it was cancelled)."""
    if target.cancelled():
        return
    try:
        exc = source.exception()
        if exc is None:
            target.set_result(source.result())
        else:
            target.set_exception(exc)
    except concurrent.futures.InvalidStateError:  # cancelled meanwhile
        pass


class UniparExecutor(concurrent.futures.Executor):
    """Runs ``fn(*args, **kwargs)`` as unipar tasks on the current backend.

    Args:
        max_workers: at most this many tasks at once (the rest wait in this process); None
            leaves it to the cluster's resources.
        **task_options: options for every task, as ``@unipar.remote(...)`` takes them
            (``num_cpus``, ``max_retries``, ...).

    Raises:
        ValueError: ``max_workers`` is not positive.
    """

    def __init__(self, max_workers: int | None = None, **task_options: Any) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._max_workers = max_workers
        self._remote = _call.options(**task_options) if task_options else _call
        self._lock = threading.Condition()
        self._shutdown = False
        self._queued: collections.deque[tuple[_TaskFuture, Callable[..., Any], tuple, dict]] = \
            collections.deque()
        self._unfinished: set[_TaskFuture] = set()
        self._running = 0
        self._dispatcher: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Start ``fn(*args, **kwargs)`` as a task; returns its Future.

        Raises:
            RuntimeError: the executor was shut down.
        """
        future = _TaskFuture()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._unfinished.add(future)
            if self._max_workers is not None:
                self._queued.append((future, fn, args, kwargs))
                self._start_dispatcher()
                self._lock.notify_all()
                return future
        self._start_task(future, fn, args, kwargs)
        return future

    def _start_task(self, future: _TaskFuture, fn: Callable[..., Any], args: tuple,
                    kwargs: dict[str, Any]) -> None:
        if future.cancelled():
            self._finished(future)
            return
        try:
            future.ref = self._remote.remote(fn, args, kwargs)
        except Exception as exc:  # e.g. an argument that cannot be pickled: the future says so
            if not future.cancelled():
                future.set_exception(exc)
            self._finished(future)
            return
        if future.cancelled():  # cancelled while the task was being submitted
            unipar.cancel(future.ref)
        source = future.ref.future()
        source.add_done_callback(lambda src: (_settle(src, future), self._finished(future)))

    def _finished(self, future: _TaskFuture) -> None:
        # Runs on a backend's callback thread: only bookkeeping here, no remote calls.
        with self._lock:
            self._unfinished.discard(future)
            if self._max_workers is not None:
                self._running -= 1
                self._lock.notify_all()

    def _start_dispatcher(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = threading.Thread(target=self._dispatch, daemon=True,
                                                name="unipar-executor-dispatch")
            self._dispatcher.start()

    def _dispatch(self) -> None:
        """Start queued calls while fewer than ``max_workers`` run; exits after shutdown."""
        assert self._max_workers is not None
        while True:
            with self._lock:
                while not (self._queued and self._running < self._max_workers):
                    if self._shutdown and not self._queued:
                        return
                    self._lock.wait()
                item = self._queued.popleft()
                self._running += 1
            self._start_task(*item)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; optionally wait for the unfinished ones or cancel them.

        ``cancel_futures=True`` cancels every call not finished yet (its task too). Safe to
        call more than once.
        """
        with self._lock:
            self._shutdown = True
            pending = list(self._unfinished)
            self._lock.notify_all()
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            if self._dispatcher is not None:
                self._dispatcher.join()
            concurrent.futures.wait(pending)
