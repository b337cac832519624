"""The actor behind each ``Pool`` process: runs the initializer once, then chunks of work."""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import unipar

__all__ = ["PoolWorker"]


def _written_globals(initializer: Callable[..., Any], initargs: Sequence[Any]) -> dict[str, Any]:
    """Run ``initializer(*initargs)``; return the module globals it set or changed."""
    namespace = getattr(initializer, "__globals__", None)
    before = dict(namespace) if namespace is not None else {}
    initializer(*initargs)
    if namespace is None:
        return {}
    return {k: v for k, v in namespace.items() if k not in before or before[k] is not v}


class PoolWorker:
    """One pool process: ``initializer(*initargs)`` at start, then ``run``/``apply`` calls.

    Why globals are copied: a function that cloudpickle ships by value (defined in ``__main__``,
    a notebook or a test module) arrives with its own copy of its module's globals, one copy per
    payload, so what the initializer set (the usual ``global state`` pattern of
    ``multiprocessing``) would be invisible to the mapped function. Each call therefore writes the
    initializer's globals into the by-value function's namespace first. Functions of importable
    modules share the real module namespace already and are left alone.
    """

    def __init__(self, initializer: Callable[..., Any] | None, initargs: Sequence[Any]) -> None:
        self._module: str | None = None
        self._written: dict[str, Any] = {}
        if initializer is not None:
            self._module = getattr(initializer, "__module__", None)
            self._written = _written_globals(initializer, initargs)

    def _prepare(self, func: Callable[..., Any]) -> Callable[..., Any]:
        namespace = getattr(func, "__globals__", None)
        if not self._written or namespace is None or namespace.get("__name__") != self._module:
            return func
        module = sys.modules.get(self._module or "")
        if module is not None and namespace is vars(module):
            return func  # an importable module: the initializer wrote into this very namespace
        namespace.update(self._written)
        return func

    def run(self, func: Callable[..., Any], chunk: Sequence[Any], star: bool) -> list[Any]:
        """``[func(x) for x in chunk]``, or ``func(*x)`` when ``star``."""
        func = self._prepare(func)
        if star:
            return [func(*args) for args in chunk]
        return [func(arg) for arg in chunk]

    def apply(self, func: Callable[..., Any], args: Sequence[Any], kwds: dict[str, Any]) -> Any:
        """``func(*args, **kwds)``."""
        return self._prepare(func)(*args, **kwds)


PoolWorkerActor = unipar.remote(PoolWorker)
