"""Generator tasks and actor methods, as in Ray: a task that ``yield``s gives its values one
by one, each as its own ref, while it runs.

* ``num_returns="streaming"`` (the default for a generator function or method): ``.remote()``
  returns an :class:`ObjectRefGenerator`; iterating it (``for`` or ``async for``) gives one
  :class:`~unipar.ObjectRef` per yielded value as soon as that value exists. An exception the
  generator raises arrives in its place: the ref after the last good value raises it on
  ``get``. ``unipar.cancel(gen)`` stops the task.
* ``num_returns="dynamic"``: ``.remote()`` returns one ref whose value, once the generator
  finished, is a :class:`DynamicObjectRefGenerator` (iterating it gives refs).

The backend side is :class:`unipar.backends.base.Stream`; docs/generators.md says how each
backend runs them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Hashable, Iterator, Sequence

from .refs import ObjectRef

__all__ = ["ObjectRefGenerator", "DynamicObjectRefGenerator", "STREAMING", "DYNAMIC",
           "check_num_returns"]

STREAMING = "streaming"
DYNAMIC = "dynamic"


def check_num_returns(num_returns: Any, is_generator: bool, what: str) -> None:
    """Ray's rule: ``"streaming"``/``"dynamic"`` only for generator functions and methods.

    Raises:
        ValueError: the same message as Ray's for a function that does not ``yield``.
    """
    if num_returns in (STREAMING, DYNAMIC) and not is_generator:
        raise ValueError(
            f"num_returns='{num_returns}' can only be used with generator functions "
            f"(functions that use 'yield'). {what} is not a generator function.")


class ObjectRefGenerator:
    """The refs a streaming generator task yields, in order, as they are produced.

    Iterate it once (``for ref in gen`` or ``async for ref in gen``); ``next(gen)`` blocks
    until the next value exists. Values the task produced but nobody took yet count against
    ``_generator_backpressure_num_objects``: the task pauses at that many.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream      # a unipar.backends.base.Stream
        self._finished = False

    def __iter__(self) -> Iterator[ObjectRef]:
        return self

    def __next__(self) -> ObjectRef:
        return self.next(timeout=None)

    def next(self, timeout: float | None = None) -> ObjectRef:
        """The next ref, waiting at most ``timeout`` seconds.

        Raises:
            StopIteration: the generator is exhausted.
            GetTimeoutError: no next value within ``timeout`` (call again to keep waiting).
        """
        if self._finished:
            raise StopIteration
        try:
            handle: Hashable = self._stream.next(timeout)
        except StopIteration:
            self._finished = True
            raise
        return ObjectRef(handle)

    def __aiter__(self) -> "ObjectRefGenerator":
        return self

    async def __anext__(self) -> ObjectRef:
        # The backend's next() blocks: it waits in a thread so the event loop keeps running
        # (StopIteration cannot cross a Future: the end comes back as None).
        ref = await asyncio.to_thread(self._next_or_none)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def _next_or_none(self) -> ObjectRef | None:
        try:
            return self.next(None)
        except StopIteration:
            return None

    def is_finished(self) -> bool:
        """Whether iteration reached the end (every ref was given)."""
        return self._finished

    def cancel(self, force: bool = False) -> None:
        """Stop the task; what ``unipar.cancel(gen)`` does."""
        self._stream.cancel(force)

    def __reduce__(self):
        raise TypeError("an ObjectRefGenerator cannot be passed to a task or pickled: iterate "
                        "it where it was made and pass the refs (or use num_returns='dynamic')")

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({'finished' if self._finished else 'running'})"


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` task: the refs of what it yielded, in order.

    Picklable (it holds refs only), so it may be passed on to other tasks.
    """

    def __init__(self, refs: Sequence[ObjectRef]) -> None:
        self._refs = list(refs)

    def __iter__(self) -> Iterator[ObjectRef]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __reduce__(self):
        return (DynamicObjectRefGenerator, (self._refs,))

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"

