"""``ObjectRef``: the public, backend-neutral name of one value that exists or will exist."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Hashable

from . import _state

if TYPE_CHECKING:
    import concurrent.futures

__all__ = ["ObjectRef", "is_ref", "unwrap", "wrap"]


class ObjectRef:
    """A reference to a task result or a ``put`` value.

    Hashable and comparable (two refs are equal when they name the same value), picklable (a ref
    inside a list, dict or object passed to a task arrives as a ref), awaitable in asyncio and
    convertible to a ``concurrent.futures.Future`` with :meth:`future`.
    """

    __slots__ = ("_handle", "__weakref__")

    def __init__(self, handle: Hashable) -> None:
        self._handle = handle

    def __hash__(self) -> int:
        return hash(self._handle)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and self._handle == other._handle

    def __repr__(self) -> str:
        return f"ObjectRef({self._handle!r})"

    def __reduce__(self):
        return (ObjectRef, (self._handle,))

    def __bool__(self) -> bool:
        return True

    def future(self) -> "concurrent.futures.Future":
        """A Future resolving to the value, or raising what ``unipar.get`` would raise.

        Cancelling the Future does not cancel the task; use ``unipar.cancel(ref)``.
        """
        import concurrent.futures
        # The backend resolves its own Future, which nobody else sees; the caller gets a copy
        # they may cancel without the backend's resolver failing on a cancelled Future.
        ours: concurrent.futures.Future = concurrent.futures.Future()
        _state.backend().future(self._handle).add_done_callback(
            lambda theirs: _copy_outcome(theirs, ours))
        return ours

    def __await__(self):
        import asyncio  # only code that awaits pays for importing asyncio
        return asyncio.wrap_future(self.future()).__await__()


def _copy_outcome(theirs: "concurrent.futures.Future", ours: "concurrent.futures.Future") -> None:
    """Settle the caller's Future like the backend's, unless its holder cancelled it."""
    if not ours.set_running_or_notify_cancel():
        return   # cancelled: from now on nobody else settles it, so this cannot race
    exc = theirs.exception()
    if exc is None:
        ours.set_result(theirs.result())
    else:
        ours.set_exception(exc)


# -- for backends: what they may know of public refs ---------------------------------------------

def is_ref(value: Any) -> bool:
    """Whether ``value`` is a public ObjectRef (top-level args that are refs get resolved)."""
    return isinstance(value, ObjectRef)


def unwrap(ref: ObjectRef) -> Hashable:
    """The backend handle inside a public ObjectRef."""
    return ref._handle


def wrap(handle: Hashable) -> ObjectRef:
    """A public ObjectRef around a backend handle."""
    return ObjectRef(handle)
