"""Generator tasks and methods, the parts every backend shares.

Every backend streams: the engine hands each yielded value back while the task runs. Ray and
local implement :class:`~unipar.backends.base.Stream` themselves; native's engine has its own
stream, which :class:`EngineStream` adapts; native, dask and spark run :func:`header_spec`'s
task (the user's generator inside the engine's streaming runner, told which stream it feeds).

The worker side (the wrappers, and ``bound_method`` that actor hosts use) is
:mod:`unipar._yielding`. ``num_returns="dynamic"`` is the same on every backend: the worker
puts each value where it runs and returns a DynamicObjectRefGenerator of their refs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable

from .._yielding import DYNAMIC, dynamic
from .base import ActorCall, Stream, TaskSpec

__all__ = ["EngineStream", "dynamic_spec", "dynamic_call", "header_spec", "header_call"]


def _one_return(spec: TaskSpec, wrapper: Callable[..., Any], tag: str) -> TaskSpec:
    # A new function id: backends cache the pickled function by it.
    return dataclasses.replace(spec, function=wrapper(spec.function),
                               function_id=f"{spec.function_id}:{tag}",
                               options=spec.options.merge(num_returns=1))


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
