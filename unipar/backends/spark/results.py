"""The spark backend's result table: object id -> pickled value or error, with ref counts.

:class:`ResultTable` is a mixin of :class:`~unipar.backends.spark.backend.SparkBackend` (the
actor table and the executors' handles reach both through that one object). It owns
``entries``, the queues of ref-count changes that handles append to (``counts``,
``actor_counts``; handles may change counts inside GC, so they only queue) and the sets of
escaped objects and actors. It uses the class's ``lock``/``cond``, ``session_id`` and
``actors``. Every method is called with the lock held.
"""

from __future__ import annotations

import collections
import itertools
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ...exceptions import ObjectLostError
from .executor import SparkRef

if TYPE_CHECKING:
    from .actors import ActorTable

__all__ = ["Entry", "ResultTable"]


class Entry:
    """One object in the result table."""

    __slots__ = ("done", "value", "error", "broadcast", "count", "seen", "producer", "waiters")

    def __init__(self, producer: int | None = None) -> None:
        self.done = False
        self.value: bytes | None = None
        self.error: BaseException | None = None
        self.broadcast: Any = None
        self.count = 0
        self.seen = False            # a handle counted it once: only then may it be freed
        self.producer = producer     # the task id that makes it
        self.waiters: list[Callable[[], None]] = []  # run (under the lock) when it is done

class ResultTable:
    """Object id -> :class:`Entry`; ids come from one counter shared with tasks and runners."""

    lock: "threading.RLock"
    cond: threading.Condition
    session_id: str
    actors: "ActorTable"

    def _init_results(self) -> None:
        self.entries: dict[int, Entry] = {}
        self.counts: collections.deque = collections.deque()  # (oid, delta) from SparkRef
        self.escaped: set[int] = set()
        self.actor_counts: collections.deque = collections.deque()  # (number, delta), SparkActorId
        self.actors_escaped: set[int] = set()
        self._ids = itertools.count(1)

    def new_entry(self, producer: int | None = None) -> tuple[int, SparkRef]:
        oid = next(self._ids)
        self.entries[oid] = Entry(producer)
        return oid, SparkRef(self.session_id, oid)

    def finish(self, oid: int, value: bytes | None = None, error: BaseException | None = None) -> None:
        """Record the outcome of ``oid`` (first outcome wins) and wake whoever waits on it."""
        entry = self.entries.get(oid)
        if entry is None or entry.done:
            return
        entry.done, entry.value, entry.error = True, value, error
        waiters, entry.waiters = entry.waiters, []
        for waiter in waiters:
            waiter()
        self.cond.notify_all()
        if entry.seen and entry.count <= 0 and oid not in self.escaped:
            self._free_entry(oid)

    def _free_entry(self, oid: int) -> None:
        entry = self.entries.pop(oid, None)
        if entry is not None and entry.broadcast is not None:
            broadcast = entry.broadcast
            threading.Thread(target=_destroy_broadcast, args=(broadcast,), daemon=True).start()

    def drain_counts(self) -> None:
        """Apply ref-count changes SparkRef queued (it may run inside GC, so it only queues)."""
        if self.actor_counts:
            changes = []
            while self.actor_counts:
                changes.append(self.actor_counts.popleft())
            self.actors.count_handles(changes, self.actors_escaped)
        while self.counts:
            oid, delta = self.counts.popleft()
            entry = self.entries.get(oid)
            if entry is None:
                continue
            entry.count += delta
            entry.seen = True
            if entry.count <= 0 and entry.done and oid not in self.escaped:
                self._free_entry(oid)

    def pin(self, oids: Sequence[int]) -> None:
        """Keep ``oids`` while a task or call that takes them as arguments still needs them."""
        for oid in oids:
            self.entry(oid).count += 1

    def unpin(self, oids: Sequence[int]) -> None:
        for oid in oids:
            entry = self.entries.get(oid)
            if entry is not None:
                entry.count -= 1
                if entry.seen and entry.count <= 0 and entry.done and oid not in self.escaped:
                    self._free_entry(oid)

    def entry(self, oid: int) -> Entry:
        entry = self.entries.get(oid)
        if entry is None:
            raise ObjectLostError(f"object {oid} is not in the spark session's result table "
                                  "(it was freed, or belongs to a session that ended)")
        return entry

    def when_done(self, oids: Sequence[int], callback: Callable[[BaseException | None], None]) -> int:
        """Call ``callback(first_error_or_None)`` once every ``oids`` entry is done.

        Returns how many were still missing (0: the callback already ran).
        """
        missing = [oid for oid in oids if not self.entry(oid).done]
        state = {"left": len(missing)}

        def one_done() -> None:
            state["left"] -= 1
            if state["left"] == 0:
                callback(self._first_error(oids))
        for oid in missing:
            self.entries[oid].waiters.append(one_done)
        if not missing:
            callback(self._first_error(oids))
        return len(missing)

    def _first_error(self, oids: Sequence[int]) -> BaseException | None:
        for oid in oids:
            entry = self.entries.get(oid)
            if entry is None:
                return ObjectLostError(f"object {oid} was freed before a task could use it")
            if entry.error is not None:
                return entry.error
        return None

    def dep_values(self, oids: Sequence[int]) -> list[bytes]:
        return [self.entries[oid].value for oid in oids]  # type: ignore[misc]


def _destroy_broadcast(broadcast: Any) -> None:
    try:
        broadcast.destroy()
    except Exception:  # the context may be stopping; Spark drops it with the context anyway
        pass

