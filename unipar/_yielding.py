"""Generator tasks and methods, the part that runs where the task runs (every backend's
workers, and the native engine's): wrappers that run a generator to completion.

Actor calls reach a wrapped method through a method-name prefix, so each actor host only has
to look methods up with :func:`bound_method`::

    ActorCall("__unipar_collect__:count", ...)  --host-->  bound_method(instance, name)
                                                           = collecting(instance.count)

The driver side (streams over these results) is :mod:`unipar.backends.streams`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from .backends.base import Backend, TaskSpec, current_backend
from .exceptions import capture_remote
from .generators import DynamicObjectRefGenerator
from .options import TaskOptions
from .refs import wrap

__all__ = ["COLLECT", "DYNAMIC", "Collected", "bound_method", "collecting", "dynamic",
           "failed_handle"]

COLLECT = "__unipar_collect__:"   # method-name prefix: run the generator to completion
DYNAMIC = "__unipar_dynamic__:"   # method-name prefix: num_returns="dynamic"

_RAISE_OPTIONS = TaskOptions(num_cpus=0, max_retries=0, name="unipar.generator_error")


@dataclass
class Collected:
    """What a generator run to completion produced: its values, and the error (already made
    with capture_remote) that ended it early, or None."""

    values: list
    error: BaseException | None = None


def _raise(error: BaseException) -> None:
    raise error


def failed_handle(backend: Backend, error: BaseException) -> Hashable:
    """A handle whose ``get`` raises ``error`` (a task that raises it: works on any backend)."""
    spec = TaskSpec(_raise, "unipar-generator-error", "unipar.generator_error", (error,), {},
                    _RAISE_OPTIONS)
    return backend.submit(spec)[0]


def _where(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", getattr(fn, "__name__", "generator"))


def collecting(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a generator function) run to completion: returns a :class:`Collected` (an
    awaitable of one for an async generator)."""
    def run(*args: Any, **kwargs: Any) -> Any:
        gen = fn(*args, **kwargs)
        if inspect.isasyncgen(gen):
            return _collect_async(gen, _where(fn))
        values: list = []
        try:
            for value in gen:
                values.append(value)
        except Exception as exc:
            return Collected(values, capture_remote(exc, _where(fn)))
        return Collected(values)
    return run


async def _collect_async(gen: Any, where: str) -> Collected:
    values: list = []
    try:
        async for value in gen:
            values.append(value)
    except Exception as exc:
        return Collected(values, capture_remote(exc, where))
    return Collected(values)


def dynamic(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a generator function) for ``num_returns="dynamic"``: each value is put where it
    runs; returns a DynamicObjectRefGenerator of their refs (an error ends it as one more ref
    that raises it)."""
    def run(*args: Any, **kwargs: Any) -> Any:
        collected = collecting(fn)(*args, **kwargs)
        if inspect.iscoroutine(collected):
            async def finish() -> DynamicObjectRefGenerator:
                return _put_all(await collected)
            return finish()
        return _put_all(collected)
    return run


def _put_all(collected: Collected) -> DynamicObjectRefGenerator:
    backend = current_backend()
    assert backend is not None, "a dynamic generator runs inside a task, where a backend is set"
    refs = [wrap(backend.put(value)) for value in collected.values]
    if collected.error is not None:
        refs.append(wrap(failed_handle(backend, collected.error)))
    return DynamicObjectRefGenerator(refs)


def bound_method(instance: Any, method: str) -> Callable[..., Any]:
    """``getattr(instance, method)``, where ``method`` may carry a COLLECT/DYNAMIC prefix:
    what every actor host uses to find the method a call names."""
    if method.startswith(COLLECT):
        return collecting(getattr(instance, method[len(COLLECT):]))
    if method.startswith(DYNAMIC):
        return dynamic(getattr(instance, method[len(DYNAMIC):]))
    return getattr(instance, method)
