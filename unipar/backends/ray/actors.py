"""Ray actors for unipar: created from the user's class, called, killed, looked up by name.

:class:`RayActors` owns the per-session actor state: the Ray class made once per unipar class,
and a handle to every named actor this driver created or looked up (Ray kills a named actor
whose last handle goes, and kill() must free the name before it returns).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Hashable

import cloudpickle

from ..._yielding import COLLECT, DYNAMIC
from ..base import ActorCall, ActorMeta, ActorSpec
from .translate import actor_options, ray_args, ray_refs, share_pickle_by_value
from .worker import actor_class

__all__ = ["RayActors"]

log = logging.getLogger("unipar.ray")

_KV_NAMESPACE = "unipar"                   # Ray's internal KV: actor metadata by actor name
_NAME_FREE_TIMEOUT_S = 30.0                # kill() waits this long for Ray to free a name


class RayActors:
    """The actor half of the ray backend.

    ``live()`` returns the ``ray`` module (raising once the backend is shut down); ``setup`` is
    what every actor runs before the user's constructor (see worker.py).
    """

    def __init__(self, live: Callable[[], Any], setup: Callable[[], None]) -> None:
        self._live = live
        self._setup = setup
        self._classes: dict[str, Any] = {}                         # class_id -> ray class
        self._named: dict[str, Any] = {}  # name -> handle: Ray kills a named actor whose
        #                                   last handle goes, so the driver keeps one
        self._looked_up: dict[str, Any] = {}  # name -> handle from get_actor (for kill)

    def clear(self) -> None:
        """Forget every class and handle (at shutdown: named actors then go with the driver)."""
        self._named.clear()
        self._looked_up.clear()
        self._classes.clear()

    def create(self, spec: ActorSpec) -> Any:
        """A new Ray actor for ``spec``; its metadata kept in Ray's KV when it is named."""
        ray = self._live()
        cls = self._classes.get(spec.class_id)
        if cls is None:
            share_pickle_by_value()
            cls = self._classes[spec.class_id] = ray.remote(actor_class(spec.cls, self._setup))
        args, kwargs = ray_args(spec.args, spec.kwargs)
        name = spec.options.name
        try:
            handle = cls.options(**actor_options(spec.options)).remote(*args, **kwargs)
        except ValueError as exc:
            if name is not None and "already" in str(exc):
                raise ValueError(f"an actor named {name!r} already exists; use get_actor(name) "
                                 "or .options(name=..., get_if_exists=True)") from None
            raise
        if name is not None:
            self._named[name] = handle
            from ray.experimental import internal_kv
            internal_kv._internal_kv_put(name, cloudpickle.dumps(spec.meta), overwrite=True,
                                         namespace=_KV_NAMESPACE)
        return handle

    def call(self, actor_id: Any, call: ActorCall) -> list[Hashable]:
        """One method call: a list of refs, one per return value."""
        args, kwargs = ray_args(call.args, call.kwargs)
        if call.method.startswith((COLLECT, DYNAMIC)):   # a wrapped generator method
            return ray_refs(actor_id.__unipar_call__.remote(call.method, *args, **kwargs))
        method = getattr(actor_id, call.method)
        if call.num_returns != 1:
            method = method.options(num_returns=call.num_returns)
        return ray_refs(method.remote(*args, **kwargs))

    def kill(self, actor_id: Any, no_restart: bool) -> None:
        """ray.kill; with ``no_restart`` returns once the actor refuses calls and its names
        are free."""
        ray = self._live()
        ray.kill(actor_id, no_restart=no_restart)
        names = {n for n, h in self._named.items() if h == actor_id}
        names |= {n for n, h in self._looked_up.items() if h == actor_id}
        for name in names:
            self._named.pop(name, None)
            self._looked_up.pop(name, None)
        if no_restart:
            self._wait_dead(actor_id)
            for name in names:
                self._wait_name_free(name, actor_id)

    def _wait_dead(self, actor_id: Any) -> None:
        """ray.kill() returns before the actor is gone, and a call made in that moment would
        still run; unipar's kill means later calls fail. Wait until the actor refuses calls."""
        ray = self._live()
        deadline = time.monotonic() + _NAME_FREE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                ray.get(actor_id.__ray_ready__.remote(), timeout=max(deadline - time.monotonic(), 0.01))
            except ray.exceptions.GetTimeoutError:
                break
            except ray.exceptions.RayError:
                return  # dead: calls now fail with RayActorError
            time.sleep(0.02)
        log.warning("Ray still runs calls on the killed actor after %.0f s", _NAME_FREE_TIMEOUT_S)

    def _wait_name_free(self, name: str, actor_id: Any) -> None:
        """Ray frees a name when the actor is dead, a moment after kill(): wait for it, so
        that get_actor(name) fails and the name can be reused as soon as kill returns."""
        ray = self._live()
        deadline = time.monotonic() + _NAME_FREE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if ray.get_actor(name) != actor_id:
                    return
            except ValueError:
                return
            time.sleep(0.02)
        log.warning("Ray still lists the killed actor %r after %.0f s", name, _NAME_FREE_TIMEOUT_S)

    def get(self, name: str) -> tuple[Any, ActorMeta]:
        """The live actor named ``name`` and the unipar metadata its creator stored."""
        ray = self._live()
        try:
            handle = ray.get_actor(name)
        except ValueError:
            raise ValueError(f"no live actor is named {name!r}") from None
        from ray.experimental import internal_kv
        meta = internal_kv._internal_kv_get(name, namespace=_KV_NAMESPACE)
        if meta is None:
            raise ValueError(f"the actor named {name!r} was not started by unipar")
        self._looked_up[name] = handle
        return handle, cloudpickle.loads(meta)

