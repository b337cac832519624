"""``Queue``: a first-in-first-out queue held by an actor, shared by drivers, tasks and actors.

Behaves like Ray's ``ray.util.queue.Queue``: the items live in one async actor; a ``Queue``
object is a small picklable handle to it, so passing it to a task or an actor shares the same
queue. Blocking ``put``/``get`` wait inside the actor (without holding a thread there), so
other callers go on using the queue meanwhile. Errors are the standard library's:
``queue.Empty`` and ``queue.Full`` (re-exported here as ``Empty`` and ``Full``).

::

    driver / task / actor                  _QueueActor (async, one per Queue)
    Queue.put(x) ── actor.put.remote ──▶    items: deque; waiters parked as futures
    Queue.get()  ── actor.get.remote ──▶    on the actor's event loop until an item
                 ◀── value / Empty ────     (or room) appears or the timeout passes
"""

from __future__ import annotations

import asyncio
import collections
from queue import Empty, Full
from typing import Any, Iterable

import unipar

__all__ = ["Queue", "Empty", "Full"]


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout < 0):
        raise ValueError("'timeout' must be a non-negative number")


class _Waiters:
    """Callers parked until the queue changes, each as a future on its running event loop.

    Futures are made per call on the loop that runs it (not at construction), so the actor works
    whether a backend runs all its calls on one loop or each on a new one.
    """

    def __init__(self) -> None:
        self._futures: collections.deque[asyncio.Future] = collections.deque()

    async def wait(self, timeout: float | None) -> bool:
        """Park until woken; False when ``timeout`` passed first."""
        fut = asyncio.get_running_loop().create_future()
        self._futures.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            if fut in self._futures:
                self._futures.remove(fut)

    def wake_one(self) -> None:
        while self._futures:
            fut = self._futures.popleft()
            if not fut.done():
                fut.set_result(None)
                return


class _QueueActor:
    """The actor that holds the items; every method is async so waiting blocks no thread."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.items: collections.deque[Any] = collections.deque()
        self.getters = _Waiters()
        self.putters = _Waiters()

    def _full(self) -> bool:
        return 0 < self.maxsize <= len(self.items)

    async def qsize(self) -> int:
        return len(self.items)

    async def put(self, item: Any, timeout: float | None = None) -> None:
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while self._full():
            left = None if deadline is None else max(deadline - asyncio.get_running_loop().time(), 0)
            if not await self.putters.wait(left) and self._full():
                raise Full
        self.items.append(item)
        self.getters.wake_one()
        if not self._full():
            self.putters.wake_one()  # room is left: the next waiting putter need not wait

    async def get(self, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while not self.items:
            left = None if deadline is None else max(deadline - asyncio.get_running_loop().time(), 0)
            if not await self.getters.wait(left) and not self.items:
                raise Empty
        item = self.items.popleft()
        self.putters.wake_one()
        if self.items:
            self.getters.wake_one()  # items are left: the next waiting getter need not wait
        return item

    async def put_nowait(self, item: Any) -> None:
        if self._full():
            raise Full
        self.items.append(item)
        self.getters.wake_one()

    async def put_nowait_batch(self, items: list[Any]) -> None:
        if self.maxsize > 0 and len(items) + len(self.items) > self.maxsize:
            raise Full(f"Cannot add {len(items)} items to queue of size {len(self.items)} "
                       f"and maxsize {self.maxsize}.")
        self.items.extend(items)
        for _ in items:
            self.getters.wake_one()

    async def get_nowait(self) -> Any:
        if not self.items:
            raise Empty
        item = self.items.popleft()
        self.putters.wake_one()
        return item

    async def get_nowait_batch(self, num_items: int) -> list[Any]:
        if num_items > len(self.items):
            raise Empty(f"Cannot get {num_items} items from queue of size {len(self.items)}.")
        batch = [self.items.popleft() for _ in range(num_items)]
        for _ in batch:
            self.putters.wake_one()
        return batch


_QueueActorClass = unipar.remote(_QueueActor)


def _plain(error: BaseException) -> BaseException:
    """``queue.Empty``/``queue.Full`` as the stdlib class itself (not unipar's dual TaskError)."""
    for kind in (Empty, Full):
        if isinstance(error, kind):
            return kind(*error.args)
    return error


class Queue:
    """A FIFO queue that drivers, tasks and actors share; picklable.

    Args:
        maxsize: the most items it holds; 0 (or less) means no bound.
        actor_options: options for the actor that holds the items, e.g. ``{"name": "jobs"}``.

    ``qsize``/``empty``/``full`` are snapshots: other processes may change the queue right after.
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an integer, got {maxsize!r}")
        self.maxsize = maxsize
        self.actor: Any = _QueueActorClass.options(**(actor_options or {})).remote(maxsize)

    def _live(self) -> Any:
        if self.actor is None:
            raise RuntimeError("this Queue was shut down")
        return self.actor

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue now."""
        return unipar.get(self._live().qsize.remote())

    def qsize(self) -> int:
        """The number of items in the queue now."""
        return self.size()

    def empty(self) -> bool:
        return self.size() == 0

    def full(self) -> bool:
        return 0 < self.maxsize <= self.size()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item`` at the end, waiting up to ``timeout`` seconds for room (None: forever).

        Raises:
            queue.Full: no room (at once when ``block`` is False, else after ``timeout``).
            ValueError: ``timeout`` is negative.
        """
        _check_timeout(timeout)
        ref = self._live().put.remote(item, timeout) if block else self._live().put_nowait.remote(item)
        try:
            unipar.get(ref)
        except Full as exc:
            raise _plain(exc) from None

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """:meth:`put` for asyncio code: awaits instead of blocking the thread."""
        _check_timeout(timeout)
        ref = self._live().put.remote(item, timeout) if block else self._live().put_nowait.remote(item)
        try:
            await ref
        except Full as exc:
            raise _plain(exc) from None

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the first item, waiting up to ``timeout`` seconds (None: forever).

        Raises:
            queue.Empty: no item (at once when ``block`` is False, else after ``timeout``).
            ValueError: ``timeout`` is negative.
        """
        _check_timeout(timeout)
        ref = self._live().get.remote(timeout) if block else self._live().get_nowait.remote()
        try:
            return unipar.get(ref)
        except Empty as exc:
            raise _plain(exc) from None

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """:meth:`get` for asyncio code: awaits instead of blocking the thread."""
        _check_timeout(timeout)
        ref = self._live().get.remote(timeout) if block else self._live().get_nowait.remote()
        try:
            return await ref
        except Empty as exc:
            raise _plain(exc) from None

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``: raises ``queue.Full`` at once when there is no room."""
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        """``get(block=False)``: raises ``queue.Empty`` at once when there is no item."""
        return self.get(block=False)

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Add all ``items`` at once, or none of them.

        Raises:
            TypeError: ``items`` is not iterable.
            queue.Full: they do not all fit.
        """
        if not isinstance(items, Iterable):
            raise TypeError("Argument 'items' must be an Iterable")
        try:
            unipar.get(self._live().put_nowait_batch.remote(list(items)))
        except Full as exc:
            raise _plain(exc) from None

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Remove and return the first ``num_items`` items at once, or none.

        Raises:
            TypeError: ``num_items`` is not an integer.
            ValueError: ``num_items`` is negative.
            queue.Empty: fewer than ``num_items`` items are in the queue.
        """
        if isinstance(num_items, bool) or not isinstance(num_items, int):
            raise TypeError("Argument 'num_items' must be an int")
        if num_items < 0:
            raise ValueError("'num_items' must be nonnegative")
        try:
            return unipar.get(self._live().get_nowait_batch.remote(num_items))
        except Empty as exc:
            raise _plain(exc) from None

    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """Stop the actor holding the items (they are lost). Safe to call twice.

        ``force`` and ``grace_period_s`` are accepted for Ray compatibility: the actor is
        always stopped at once (calls in progress on it raise ``unipar.ActorDiedError``). Copies of this Queue held elsewhere then raise ``unipar.ActorDiedError``.
        """
        actor, self.actor = self.actor, None
        if actor is not None:
            unipar.kill(actor)
