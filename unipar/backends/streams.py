"""Generator tasks and methods, the parts every backend shares.

Two ways to run a generator on an engine:

* **streaming**: the engine hands each yielded value back while the task runs (ray and local
  implement :class:`~unipar.backends.base.Stream` themselves; native's engine has its own
  stream, which :class:`EngineStream` adapts, and runs :func:`header_spec`'s task);
* **collected**: the worker runs the generator to completion and returns a :class:`Collected`
  (the values and the exception that ended it, if any); :class:`CollectedStream` then gives
  one handle per value. Dask and Spark run generators this way (tests/conformance/limits.py).

The worker side (the wrappers, and ``bound_method`` that actor hosts use) is
:mod:`unipar._yielding`. ``num_returns="dynamic"`` is the same on every backend: the worker
puts each value where it runs and returns a DynamicObjectRefGenerator of their refs.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any, Callable, Hashable

from .._yielding import COLLECT, DYNAMIC, collecting, dynamic, failed_handle
from ..exceptions import GetTimeoutError
from .base import ActorCall, Backend, Stream, TaskSpec

__all__ = ["CollectedStream", "EngineStream", "collect_spec", "collect_call", "dynamic_spec",
           "dynamic_call", "header_spec", "header_call"]


def _one_return(spec: TaskSpec, wrapper: Callable[..., Any], tag: str) -> TaskSpec:
    # A new function id: backends cache the pickled function by it.
    return dataclasses.replace(spec, function=wrapper(spec.function),
                               function_id=f"{spec.function_id}:{tag}",
                               options=spec.options.merge(num_returns=1))


def collect_spec(spec: TaskSpec) -> TaskSpec:
    """The task that runs ``spec``'s generator to completion (one return: a Collected)."""
    return _one_return(spec, collecting, "collect")


def dynamic_spec(spec: TaskSpec) -> TaskSpec:
    """The task that runs ``spec``'s generator for ``num_returns="dynamic"``."""
    return _one_return(spec, dynamic, "dynamic")


def header_spec(spec: TaskSpec, wrapper: Callable[..., Any], header: Any) -> TaskSpec:
    """The task that runs ``spec``'s generator through ``wrapper`` (an engine's streaming
    runner), called with ``header`` (what names the stream) before the user's arguments."""
    return dataclasses.replace(_one_return(spec, wrapper, "stream"), args=(header, *spec.args))


def header_call(call: ActorCall, prefix: str, header: Any) -> ActorCall:
    """The call of ``call``'s generator method as an engine's streaming runner (named by the
    method-name ``prefix``), with ``header`` before the user's arguments."""
    return ActorCall(prefix + call.method, (header, *call.args), call.kwargs, 1)


def collect_call(call: ActorCall) -> ActorCall:
    return ActorCall(COLLECT + call.method, call.args, call.kwargs, 1)


def dynamic_call(call: ActorCall) -> ActorCall:
    return ActorCall(DYNAMIC + call.method, call.args, call.kwargs, 1)


class EngineStream(Stream):
    """The seam's Stream over an engine's own stream object (its ``next(timeout)`` and
    ``cancel(force)`` keep the seam's contracts); engines know nothing of the seam."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def next(self, timeout: float | None) -> Hashable:
        return self._inner.next(timeout)

    def cancel(self, force: bool) -> None:
        self._inner.cancel(force)


class CollectedStream(Stream):
    """A Stream over one task that returns a :class:`Collected`: the values come once the
    task finished (no backpressure is needed: nothing runs ahead of the consumer)."""

    def __init__(self, backend: Backend, handle: Hashable) -> None:
        self._backend = backend
        self._handle = handle
        self._pending: collections.deque | None = None
        self._lock = threading.Lock()

    def next(self, timeout: float | None) -> Hashable:
        with self._lock:
            if self._pending is None:
                self._pending = self._resolve(timeout)
            if not self._pending:
                raise StopIteration
            return self._pending.popleft()

    def _resolve(self, timeout: float | None) -> collections.deque:
        try:
            collected = self._backend.get([self._handle], timeout)[0]
        except GetTimeoutError:
            raise
        except Exception:   # failed as a whole: one handle, whose get raises that failure
            return collections.deque([self._handle])
        handles = collections.deque(self._backend.put(v) for v in collected.values)
        if collected.error is not None:
            handles.append(failed_handle(self._backend, collected.error))
        return handles

    def cancel(self, force: bool) -> None:
        with self._lock:
            done = self._pending is not None
        if not done:
            self._backend.cancel(self._handle, force, True)
