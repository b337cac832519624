"""What ``Pool``'s async calls return: ``AsyncResult`` and the ``imap`` iterators.

Each holds the refs of the chunks it is made of; waiting is ``unipar.wait``/``unipar.get`` with
the caller's timeout, and a timeout raises ``multiprocessing.TimeoutError`` as the standard
library does.
"""

from __future__ import annotations

import collections
import multiprocessing
import threading
from typing import Any, Callable, Iterator

import unipar

__all__ = ["AsyncResult", "IMapIterator", "IMapUnorderedIterator"]

Assemble = Callable[[list[Any]], Any]  # chunk values -> the result the caller sees


def _flatten(chunks: list[Any]) -> list[Any]:
    return [value for chunk in chunks for value in chunk]


def _single(chunks: list[Any]) -> Any:
    return chunks[0]


class AsyncResult:
    """The result of ``apply_async``/``map_async``/``starmap_async``.

    ``callback(result)`` or ``error_callback(exception)`` runs once, in a helper thread, when
    the result is ready; as in ``multiprocessing`` it should return quickly.
    """

    def __init__(self, refs: list["unipar.ObjectRef"], assemble: Assemble,
                 callback: Callable[[Any], Any] | None = None,
                 error_callback: Callable[[BaseException], Any] | None = None) -> None:
        self._refs = refs
        self._distinct = list(dict.fromkeys(refs))
        self._assemble = assemble
        if callback is not None or error_callback is not None:
            self._notify_when_done(callback, error_callback)

    def _notify_when_done(self, callback: Callable[[Any], Any] | None,
                          error_callback: Callable[[BaseException], Any] | None) -> None:
        left = [len(self._distinct)]
        lock = threading.Lock()

        def one_done(_: Any) -> None:
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            try:
                value = self.get(timeout=0)
            except Exception as exc:
                if error_callback is not None:
                    error_callback(exc)
                return
            if callback is not None:
                callback(value)
        if not self._distinct:
            left[0] = 1
            one_done(None)
        for ref in self._distinct:
            ref.future().add_done_callback(one_done)

    def ready(self) -> bool:
        """Whether the call has finished (successfully or not)."""
        ready, _ = unipar.wait(self._distinct, num_returns=len(self._distinct), timeout=0)
        return len(ready) == len(self._distinct)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is ready or ``timeout`` seconds pass."""
        unipar.wait(self._distinct, num_returns=len(self._distinct), timeout=timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The result, waiting up to ``timeout`` seconds (None: as long as it takes).

        Raises:
            multiprocessing.TimeoutError: not ready within ``timeout``.
            The exception the function raised (an instance of its own type).
        """
        try:
            values = unipar.get(self._refs, timeout=timeout)
        except unipar.GetTimeoutError:
            raise multiprocessing.TimeoutError from None
        return self._assemble(values)

    def successful(self) -> bool:
        """Whether the call finished without raising.

        Raises:
            ValueError: the call has not finished yet.
        """
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        try:
            self.get(timeout=0)
        except Exception:
            return False
        return True


class IMapIterator:
    """The iterator ``imap`` returns: results in input order; ``next(timeout)`` may time out."""

    def __init__(self, refs: list["unipar.ObjectRef"]) -> None:
        self._pending = list(refs)
        self._buffer: collections.deque[Any] = collections.deque()

    def __iter__(self) -> Iterator[Any]:
        return self

    def _take(self, timeout: float | None) -> "unipar.ObjectRef":
        """Remove and return the ref of the next chunk once it is done."""
        ready, _ = unipar.wait(self._pending[0], num_returns=1, timeout=timeout)
        if not ready:
            raise multiprocessing.TimeoutError
        return self._pending.pop(0)

    def next(self, timeout: float | None = None) -> Any:
        """The next result, waiting up to ``timeout`` seconds.

        Raises:
            StopIteration: no results are left.
            multiprocessing.TimeoutError: the next one was not ready within ``timeout``.
            The exception the function raised for it.
        """
        while not self._buffer:
            if not self._pending:
                raise StopIteration
            # A failed chunk raises here once; the iterator then goes on with the next one.
            self._buffer.extend(unipar.get(self._take(timeout)))
        return self._buffer.popleft()

    __next__ = next


class IMapUnorderedIterator(IMapIterator):
    """The iterator ``imap_unordered`` returns: each chunk's results as soon as it finishes."""

    def _take(self, timeout: float | None) -> "unipar.ObjectRef":
        ready, _ = unipar.wait(self._pending, num_returns=1, timeout=timeout)
        if not ready:
            raise multiprocessing.TimeoutError
        self._pending.remove(ready[0])
        return ready[0]
