"""What Ray runs in its workers for unipar: the task body and the actor subclass.

Both run ``setup`` before any user code, so the public API (``unipar.get``, nested
``.remote()``) works inside tasks and actors. ``setup`` is a module-level function (the backend
module's), so cloudpickle sends it by reference: the worker imports it, it is not copied.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable

from ..._yielding import bound_method

__all__ = ["task_body", "actor_class"]


def task_body(function: Callable[..., Any], setup: Callable[[], None]) -> Callable[..., Any]:
    """What Ray runs for a unipar task: the user's function, after ``setup()``."""
    def body(*args: Any, **kwargs: Any) -> Any:
        setup()
        return function(*args, **kwargs)

    # Ray streams only what it sees is a generator function: keep that kind.
    def generator_body(*args: Any, **kwargs: Any) -> Any:
        setup()
        yield from function(*args, **kwargs)

    async def async_generator_body(*args: Any, **kwargs: Any) -> Any:
        setup()
        async for value in function(*args, **kwargs):
            yield value
    if inspect.isgeneratorfunction(function):
        body = generator_body
    elif inspect.isasyncgenfunction(function):
        body = async_generator_body   # type: ignore[assignment]
    # Ray names the task (and its print prefix) after these.
    for attr in ("__name__", "__qualname__", "__doc__"):
        with contextlib.suppress(AttributeError, TypeError):
            setattr(body, attr, getattr(function, attr))
    return body


def actor_class(cls: type, setup: Callable[[], None]) -> type:
    """A subclass of the user's class whose constructor runs ``setup()`` first.

    A subclass keeps everything Ray looks at: the class name (the print prefix), the methods,
    and which of them are ``async def`` (an async actor runs an event loop).
    """
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        setup()
        cls.__init__(self, *args, **kwargs)
    def __unipar_call__(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        return bound_method(self, method)(*args, **kwargs)   # a wrapped method (_yielding)

    async def __unipar_call_async__(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        result = bound_method(self, method)(*args, **kwargs)
        return (await result) if inspect.isawaitable(result) else result
    # An async one only on async actors: one async method makes Ray run the actor on a loop.
    is_async = any(inspect.iscoroutinefunction(m) or inspect.isasyncgenfunction(m)
                   for _, m in inspect.getmembers(cls, callable))
    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
                                       "__unipar_call__": __unipar_call_async__ if is_async
                                       else __unipar_call__})
