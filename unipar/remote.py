"""``@remote`` and what it makes: remote functions, actor classes, actor handles and methods."""

from __future__ import annotations

import inspect
import itertools
import os
from typing import Any, Callable

from . import _state
from .backends.base import ActorCall, ActorMeta, ActorSpec, MethodMeta, TaskSpec
from .backends.streams import dynamic_call, dynamic_spec
from .generators import DYNAMIC, STREAMING, ObjectRefGenerator, check_num_returns
from .options import ActorOptions, MethodOptions, TaskOptions
from .refs import ObjectRef

__all__ = ["remote", "method", "RemoteFunction", "ActorClass", "ActorHandle", "ActorMethod"]

_ids = itertools.count()


def _new_id(kind: str) -> str:
    # Unique per process and per definition: backends cache pickled code by it.
    return f"{kind}-{os.getpid()}-{next(_ids)}"


def _is_generator(fn: Any) -> bool:
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


def _returns(handles: list[Any], num_returns: int) -> Any:
    """What ``.remote()`` returns: one ref, None (``num_returns=0``) or a list of refs."""
    if num_returns == 1:
        return ObjectRef(handles[0])
    if num_returns == 0:
        return None
    return [ObjectRef(h) for h in handles]


class RemoteFunction:
    """A function run as a task by ``.remote(...)``; made by ``@unipar.remote``."""

    def __init__(self, function: Callable[..., Any], options: TaskOptions,
                 function_id: str | None = None) -> None:
        check_num_returns(options.num_returns, _is_generator(function),
                          f"{getattr(function, '__qualname__', function)!s}")
        self._function = function
        self._options = options
        self._function_id = function_id or _new_id("fn")
        self._name = f"{function.__module__}.{function.__qualname__}"
        self.__doc__ = function.__doc__
        self.__name__ = getattr(function, "__name__", "remote_function")
        self.__qualname__ = getattr(function, "__qualname__", self.__name__)
        self.__module__ = function.__module__
        self.__wrapped__ = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Remote functions cannot be called directly; use {self.__name__}.remote(...) "
            f"to run it as a task (or {self.__name__}.__wrapped__(...) to call the plain function).")

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Start one task; returns an ObjectRef (a list of them when ``num_returns`` > 1, an
        ObjectRefGenerator for ``"streaming"``, see unipar.generators)."""
        spec = TaskSpec(self._function, self._function_id, self._options.name or self._name,
                        args, kwargs, self._options)
        if self._options.num_returns == STREAMING:
            return ObjectRefGenerator(_state.backend().submit_stream(spec))
        if self._options.num_returns == DYNAMIC:
            return ObjectRef(_state.submit(dynamic_spec(spec))[0])
        return _returns(_state.submit(spec), self._options.num_returns)

    def options(self, **options: Any) -> "RemoteFunction":
        """A copy with some options changed, e.g. ``f.options(num_cpus=2).remote(x)``."""
        return RemoteFunction(self._function, self._options.merge(**options), self._function_id)

    def __reduce__(self):
        # A remote function captured by a task (tasks that start tasks) keeps its id.
        return (RemoteFunction, (self._function, self._options, self._function_id))

    def __repr__(self) -> str:
        return f"<unipar remote function {self._name}>"


def _actor_meta(cls: type) -> ActorMeta:
    methods: dict[str, MethodMeta] = {}
    for name, member in inspect.getmembers(cls):
        if not callable(member) or (name.startswith("__") and name != "__call__"):
            continue
        opts: MethodOptions = getattr(member, "__unipar_method_options__", MethodOptions())
        is_async = inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
        num_returns = opts.num_returns
        if _is_generator(member) and num_returns == 1:   # Ray's default for generators
            num_returns = STREAMING
        check_num_returns(num_returns, _is_generator(member), f"{cls.__name__}.{name}")
        methods[name] = MethodMeta(is_async=is_async, num_returns=num_returns,
                                   is_generator=_is_generator(member))
    return ActorMeta(cls.__name__, methods, any(m.is_async for m in methods.values()))


class ActorClass:
    """A class whose instances live in a worker; ``.remote(...)`` starts one."""

    def __init__(self, cls: type, options: ActorOptions, class_id: str | None = None,
                 meta: ActorMeta | None = None) -> None:
        self._cls = cls
        self._options = options
        self._class_id = class_id or _new_id("cls")
        self._meta = meta or _actor_meta(cls)
        self.__doc__ = cls.__doc__
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actor classes cannot be instantiated directly; use {self.__name__}.remote(...) "
            "to start an actor.")

    def remote(self, *args: Any, **kwargs: Any) -> "ActorHandle":
        """Start an actor (or return the named one when ``get_if_exists=True``)."""
        spec = ActorSpec(self._cls, self._class_id, args, kwargs, self._options, self._meta)
        return ActorHandle(_state.create_actor(spec), self._meta)

    def options(self, **options: Any) -> "ActorClass":
        return ActorClass(self._cls, self._options.merge(**options), self._class_id, self._meta)

    def __reduce__(self):
        return (ActorClass, (self._cls, self._options, self._class_id, self._meta))

    def __repr__(self) -> str:
        return f"<unipar actor class {self._cls.__module__}.{self._cls.__qualname__}>"


class ActorHandle:
    """A handle to a live actor; picklable, so it can be passed to tasks and other actors."""

    def __init__(self, actor_id: Any, meta: ActorMeta) -> None:
        self._actor_id = actor_id
        self._meta = meta

    def __getattr__(self, name: str) -> "ActorMethod":
        meta = self.__dict__.get("_meta")
        if meta is None or name.startswith("__"):
            raise AttributeError(name)
        if name not in meta.methods:
            raise AttributeError(f"actor {meta.class_name} has no method {name!r}; "
                                 f"methods: {', '.join(sorted(meta.methods)) or 'none'}")
        bound = ActorMethod(self, name, MethodOptions(num_returns=meta.methods[name].num_returns))
        # Cached on the instance: later lookups skip __getattr__ (actor calls are a hot path).
        self.__dict__[name] = bound
        return bound

    def __reduce__(self):
        return (ActorHandle, (self._actor_id, self._meta))

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and self._actor_id == other._actor_id

    def __repr__(self) -> str:
        return f"ActorHandle({self._meta.class_name}, {self._actor_id!r})"


class ActorMethod:
    """``handle.method``: call it with ``.remote(...)``."""

    def __init__(self, handle: ActorHandle, name: str, options: MethodOptions) -> None:
        self._handle = handle
        self._name = name
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        num_returns = self._options.num_returns
        actor_id = self._handle._actor_id
        if num_returns == STREAMING:
            backpressure = self._options._generator_backpressure_num_objects
            call = ActorCall(self._name, args, kwargs, num_returns,
                             -1 if backpressure is None else backpressure)
            return ObjectRefGenerator(_state.backend().call_actor_stream(actor_id, call))
        if num_returns == DYNAMIC:
            call = dynamic_call(ActorCall(self._name, args, kwargs))
            return ObjectRef(_state.call_actor(actor_id, call)[0])
        call = ActorCall(self._name, args, kwargs, num_returns)
        return _returns(_state.call_actor(actor_id, call), num_returns)

    def options(self, **options: Any) -> "ActorMethod":
        merged = self._options.merge(**options)
        meta = self._handle._meta.methods[self._name]
        check_num_returns(merged.num_returns, meta.is_generator,
                          f"{self._handle._meta.class_name}.{self._name}")
        return ActorMethod(self._handle, self._name, merged)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"Actor methods cannot be called directly; use "
                        f"actor.{self._name}.remote(...)")


def remote(*args: Any, **options: Any) -> Any:
    """Make a function a remote function, or a class an actor class.

    Use bare (``@unipar.remote``) or with options (``@unipar.remote(num_cpus=2)``).
    """
    if len(args) == 1 and not options and (inspect.isfunction(args[0]) or inspect.isclass(args[0])
                                           or callable(args[0])):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("@unipar.remote takes a function or class, or keyword options only: "
                        "@unipar.remote or @unipar.remote(num_cpus=2)")
    return lambda target: _make_remote(target, options)


def _make_remote(target: Any, options: dict[str, Any]) -> Any:
    if inspect.isclass(target):
        return ActorClass(target, ActorOptions.create(**options))
    if callable(target):
        if inspect.iscoroutinefunction(target):
            # As Ray: a task's function runs to its result; a coroutine is not one (and cannot
            # be sent back). Async code belongs in an actor, whose methods may be async.
            raise ValueError(
                f"@unipar.remote: {getattr(target, '__qualname__', target)!r} is an 'async def' "
                "function, which cannot be a task; wrap it (def f(...): return "
                "asyncio.run(coro(...))), or make it a method of an async actor")
        if _is_generator(target) and "num_returns" not in options:
            options = {**options, "num_returns": STREAMING}   # Ray's default for generators
        return RemoteFunction(target, TaskOptions.create(**options))
    raise TypeError(f"@unipar.remote needs a function or a class, got {type(target).__name__}")


def method(**options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Set options of one actor method: ``@unipar.method(num_returns=2)``."""
    opts = MethodOptions.create(**options)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__unipar_method_options__ = opts  # type: ignore[attr-defined]
        return fn
    return decorate
