"""``ActorPool``: spread work over a fixed set of actors, one call per actor at a time.

Behaves like Ray's ``ray.util.ActorPool``: ``fn(actor, value)`` starts one call and returns its
ref; a value waits in a local queue until an actor is idle; results come back in submission
order (``get_next``, ``map``) or as they finish (``get_next_unordered``, ``map_unordered``).
Only the public unipar API is used, so it runs on every backend.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import unipar

__all__ = ["ActorPool"]

Call = Callable[[Any, Any], Any]  # fn(actor, value) -> ObjectRef (or a list of them)
_TIMEOUT_MSG = "Timed out waiting for result"


def _key(ref: Any) -> Any:
    # A call with num_returns > 1 returns a list of refs: the tuple of them names the call.
    return tuple(ref) if isinstance(ref, list) else ref


def _first_ref(ref: Any) -> "unipar.ObjectRef":
    return ref[0] if isinstance(ref, (list, tuple)) else ref


class ActorPool:
    """A pool of actor handles that runs ``fn(actor, value)`` on whichever actor is idle.

    Args:
        actors: the actor handles to use (at least one); the pool does not own them (it never
            kills them).

    Raises:
        ValueError: ``actors`` is empty.
    """

    def __init__(self, actors: Iterable[Any]) -> None:
        self._idle_actors: list[Any] = list(actors)
        if not self._idle_actors:
            raise ValueError("ActorPool needs at least one actor, got an empty list")
        self._future_to_actor: dict[Any, tuple[int, Any]] = {}  # key -> (index, actor)
        self._index_to_future: dict[int, Any] = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: list[tuple[Call, Any]] = []

    # -- submitting ---------------------------------------------------------------------------
    def submit(self, fn: Call, value: Any) -> None:
        """Start ``fn(actor, value)`` on an idle actor, or queue it until one is idle.

        Raises:
            ValueError: the pool has no actors at all (all were taken out with ``pop_idle``),
                so the value could never run.
        """
        if self._idle_actors:
            actor = self._idle_actors.pop()
            ref = fn(actor, value)
            self._future_to_actor[_key(ref)] = (self._next_task_index, actor)
            self._index_to_future[self._next_task_index] = ref
            self._next_task_index += 1
        elif self._future_to_actor:
            self._pending_submits.append((fn, value))
        else:
            raise ValueError("ActorPool has no actors left (pop_idle took them all); "
                             "push() an actor before submitting")

    def map(self, fn: Call, values: Iterable[Any]) -> Iterator[Any]:
        """Apply ``fn`` to every value; yields the results in the order of ``values``.

        Results of earlier submissions that were not fetched are dropped first, as in Ray.
        """
        self._drop_unfetched()
        for value in values:
            self.submit(fn, value)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next()
        return results()

    def map_unordered(self, fn: Call, values: Iterable[Any]) -> Iterator[Any]:
        """Like :meth:`map`, but yields each result as soon as it is ready."""
        self._drop_unfetched()
        for value in values:
            self.submit(fn, value)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next_unordered()
        return results()

    def _drop_unfetched(self) -> None:
        while self.has_next():
            try:
                # timeout=0: a call still running is dropped now, not waited for.
                self.get_next_unordered(timeout=0, ignore_if_timedout=True)
            except Exception:  # their values (or errors) were never asked for
                pass

    # -- results ------------------------------------------------------------------------------
    def has_next(self) -> bool:
        """Whether a submitted call's result has not been fetched yet."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The result of the oldest unfetched submission, waiting up to ``timeout`` seconds.

        Raises:
            StopIteration: nothing is left to fetch.
            TimeoutError: not ready within ``timeout`` (a ``unipar.GetTimeoutError``); with
                ``ignore_if_timedout=True`` that result is dropped and the pool moves on.
            ValueError: called after ``get_next_unordered`` fetched a later result.
            The error of the call itself, if it raised.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index not in self._index_to_future:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        ref = self._index_to_future[self._next_return_index]
        timed_out = False
        if timeout is not None:
            ready, _ = unipar.wait([_first_ref(ref)], num_returns=1, timeout=timeout)
            if not ready:
                if not ignore_if_timedout:
                    raise unipar.GetTimeoutError(_TIMEOUT_MSG)
                timed_out = True
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(_key(ref))
        self._return_actor(actor)
        if timed_out:
            raise unipar.GetTimeoutError(f"{_TIMEOUT_MSG}. The task {ref!r} has been ignored.")
        return unipar.get(ref)

    def get_next_unordered(self, timeout: float | None = None,
                           ignore_if_timedout: bool = False) -> Any:
        """The result of whichever unfetched submission finishes first.

        Raises:
            StopIteration: nothing is left to fetch.
            TimeoutError: none was ready within ``timeout`` (a ``unipar.GetTimeoutError``);
                with ``ignore_if_timedout=True`` the oldest one is dropped.
            The error of the call itself, if it raised.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        by_first = {_first_ref(ref): ref for ref in self._index_to_future.values()}
        ready, _ = unipar.wait(list(by_first), num_returns=1, timeout=timeout)
        if ready:
            ref = by_first[ready[0]]
        elif ignore_if_timedout:
            ref = self._index_to_future[min(self._index_to_future)]
        else:
            raise unipar.GetTimeoutError(_TIMEOUT_MSG)
        index, actor = self._future_to_actor.pop(_key(ref))
        del self._index_to_future[index]
        self._next_return_index = max(self._next_return_index, index + 1)
        self._return_actor(actor)
        if not ready:
            raise unipar.GetTimeoutError(f"{_TIMEOUT_MSG}. The task {ref!r} has been ignored.")
        return unipar.get(ref)

    # -- actors -------------------------------------------------------------------------------
    def _return_actor(self, actor: Any) -> None:
        self._idle_actors.append(actor)
        if self._pending_submits:
            self.submit(*self._pending_submits.pop(0))

    def has_free(self) -> bool:
        """Whether an actor is idle and no submission is waiting for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> Any | None:
        """Take an idle actor out of the pool (None when none is free)."""
        return self._idle_actors.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Add an actor to the pool; it starts on a waiting submission at once.

        Raises:
            ValueError: the actor is already in this pool.
        """
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)
