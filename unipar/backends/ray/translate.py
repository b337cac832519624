"""unipar <-> Ray: errors, options, arguments and resources translated both ways.

Pure functions, no state. Ray is imported inside the functions that need it (this module is
imported before ``ray`` is, whose import sets up process-wide state: see session.py).
"""

from __future__ import annotations

import re
import sys
from typing import Any, Mapping, NoReturn

import cloudpickle

from ...exceptions import (ActorDiedError, GetTimeoutError, ObjectLostError, ObjectStoreFullError,
                           TaskCancelledError, TaskError, UniparError, WorkerCrashedError)
from ..._strategies import NodeAffinitySchedulingStrategy
from ...options import ActorOptions, TaskOptions
from ...refs import ObjectRef

__all__ = ["translate", "reraise", "task_options", "actor_options", "ray_refs", "ray_args",
           "share_pickle_by_value", "public_resources"]

# -- errors -------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")   # Ray colours the "ray::f()" header of tracebacks


def translate(exc: BaseException) -> BaseException:
    """The unipar error ``get`` raises for a Ray error (other exceptions pass unchanged)."""
    from ray import exceptions as rex
    if isinstance(exc, UniparError) or not isinstance(exc, rex.RayError):
        return exc
    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause
        if isinstance(cause, rex.RayError) and not isinstance(cause, rex.RayTaskError):
            return translate(cause)   # e.g. a task that called ray.get on a dead actor
        if isinstance(cause, UniparError):
            return cause               # unipar's own error from a nested get: the same error
        if not isinstance(cause, BaseException):
            cause = RuntimeError(str(exc))
        # The dual RayTaskError(<cause type>) Ray raises keeps only its message: the remote
        # traceback, headed by "ray::<function>() (pid=N, ip=...)".
        header, _, traceback = _ANSI.sub("", str(exc)).partition("\n")
        return TaskError.from_cause(cause, traceback, header.strip())
    for ray_types, ours in (
            ((rex.GetTimeoutError,), GetTimeoutError),
            ((rex.TaskCancelledError,), TaskCancelledError),
            ((rex.RayActorError,), ActorDiedError),
            ((rex.WorkerCrashedError, rex.NodeDiedError, rex.OutOfMemoryError,
              rex.LocalRayletDiedError), WorkerCrashedError),
            ((rex.ObjectLostError,), ObjectLostError),
            ((rex.ObjectStoreFullError, rex.OutOfDiskError), ObjectStoreFullError)):
        if isinstance(exc, ray_types):
            return ours(_ANSI.sub("", str(exc)))
    return UniparError(_ANSI.sub("", f"{type(exc).__name__}: {exc}"))


def reraise(exc: Exception) -> NoReturn:
    """Raise what unipar raises for ``exc`` (called from an ``except`` block)."""
    translated = translate(exc)
    if translated is exc:
        raise exc
    raise translated from None


# -- options ------------------------------------------------------------------------------------

_TASK_DEFAULTS = TaskOptions()   # equal to Ray's defaults (num_cpus=1, max_retries=3, ...)


def task_options(opts: TaskOptions) -> dict[str, Any]:
    """Ray options for the fields that differ from the defaults (both sides share them)."""
    out: dict[str, Any] = {}
    for key in ("num_returns", "num_cpus", "num_gpus", "max_retries", "name"):
        value = getattr(opts, key)
        if value != getattr(_TASK_DEFAULTS, key):
            out[key] = value
    if opts.resources:
        out["resources"] = dict(opts.resources)
    if opts.retry_exceptions is not False:
        value = opts.retry_exceptions
        out["retry_exceptions"] = value if isinstance(value, bool) else list(value)
    if opts.runtime_env:   # Ray's own keys and merge rule: passed as they are
        out["runtime_env"] = dict(opts.runtime_env)
    _strategy_option(opts.scheduling_strategy, out)
    _ray_extras(opts, _TASK_DEFAULTS, _TASK_EXTRAS, out)
    return out


# Ray options unipar only records (docs/api.md): passed to Ray when set.
_COMMON_EXTRAS = ("accelerator_type", "memory", "object_store_memory", "enable_task_events",
                  "label_selector", "_labels", "fallback_strategy")
_TASK_EXTRAS = _COMMON_EXTRAS + ("_generator_backpressure_num_objects",
                                 "_num_objects_per_yield", "max_calls")
_ACTOR_EXTRAS = _COMMON_EXTRAS + ("_actor_generator_backpressure_num_objects",
                                  "max_pending_calls", "namespace", "concurrency_groups",
                                  "allow_out_of_order_execution", "enable_tensor_transport")


def _ray_extras(opts: Any, defaults: Any, names: tuple[str, ...], out: dict[str, Any]) -> None:
    for key in names:
        value = getattr(opts, key)
        if value != getattr(defaults, key):
            out[key] = dict(value) if isinstance(value, Mapping) else value


def actor_options(opts: ActorOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"num_cpus": opts.num_cpus, "num_gpus": opts.num_gpus,
                           "max_restarts": opts.max_restarts,
                           "max_task_retries": opts.max_task_retries}
    if opts.resources:
        out["resources"] = dict(opts.resources)
    for key in ("max_concurrency", "name", "lifetime"):
        if getattr(opts, key) is not None:
            out[key] = getattr(opts, key)
    if opts.get_if_exists:
        out["get_if_exists"] = True
    if opts.runtime_env:
        out["runtime_env"] = dict(opts.runtime_env)
    _strategy_option(opts.scheduling_strategy, out)
    _ray_extras(opts, _ACTOR_DEFAULTS, _ACTOR_EXTRAS, out)
    return out


_ACTOR_DEFAULTS = ActorOptions()


# A Ray node id: 28 bytes in hex (hard affinity to another id is refused above the seam).
_RAY_NODE_ID = re.compile(r"[0-9a-f]{56}")


def _strategy_option(strategy: Any, out: dict[str, Any]) -> None:
    """unipar's scheduling strategy as Ray's own (passed through: Ray does the work)."""
    if strategy is None:
        return
    if isinstance(strategy, str):
        out["scheduling_strategy"] = strategy
        return
    from ray.util import scheduling_strategies as ray_strategies
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        if strategy.soft and not _RAY_NODE_ID.fullmatch(strategy.node_id):
            return   # Ray refuses a malformed id; soft affinity to no node is the default
        out["scheduling_strategy"] = ray_strategies.NodeAffinitySchedulingStrategy(
            strategy.node_id, soft=strategy.soft)
        return
    out["scheduling_strategy"] = ray_strategies.PlacementGroupSchedulingStrategy(
        strategy.placement_group.id, strategy.placement_group_bundle_index,
        strategy.placement_group_capture_child_tasks)


def ray_refs(result: Any) -> list[Any]:
    """Ray returns None, one ref or a list of refs; the seam wants a list."""
    if result is None:
        return []
    return list(result) if isinstance(result, list) else [result]


def share_pickle_by_value() -> None:
    """Modules registered with cloudpickle.register_pickle_by_value (unipar's test plugin does
    it for test modules) must be pickled by value by Ray's own copy of cloudpickle too."""
    from ray import cloudpickle as ray_cloudpickle
    wanted = cloudpickle.list_registry_pickle_by_value()
    for name in wanted - ray_cloudpickle.list_registry_pickle_by_value():
        module = sys.modules.get(name)
        if module is not None:
            ray_cloudpickle.register_pickle_by_value(module)


def ray_args(args: tuple, kwargs: Any) -> tuple[tuple, dict]:
    # Top-level unipar refs become Ray refs, which Ray resolves to values before the call.
    return (tuple(a._handle if type(a) is ObjectRef else a for a in args),
            {k: (v._handle if type(v) is ObjectRef else v) for k, v in kwargs.items()})


# -- resources ----------------------------------------------------------------------------------

_RAY_BOOKKEEPING = ("memory", "object_store_memory")


def public_resources(resources: dict[str, float]) -> dict[str, float]:
    """CPU, GPU, custom resources and ``node:<ip>`` (every backend shows it); Ray's
    bookkeeping ones (memory, the head's marker) left out."""
    out = {"CPU": 0.0, "GPU": 0.0}
    for key, value in resources.items():
        if key in _RAY_BOOKKEEPING or key == "node:__internal_head__" or \
                key.startswith("accelerator_type:"):
            continue
        out[key] = float(value)
    return out
