"""Validated, frozen option objects for tasks, actors, actor methods and ``init``.

Every option is checked here, once, so backends receive values they can trust and users get one
error message per mistake whichever backend runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .runtime_env import validate as _check_runtime_env, with_job_env as _with_job_env
from ._strategies import normalize as _normalize_strategy

__all__ = ["TaskOptions", "ActorOptions", "MethodOptions", "InitOptions", "resource_demand",
           "split_returns", "check_bundles"]


def split_returns(result: Any, num_returns: int, name: str) -> list[Any]:
    """The values a task or actor method returned, one per declared return value.

    ``num_returns=1``: the result itself; ``0``: none (the result is dropped); ``n > 1``: the
    items of a tuple or list of exactly ``n`` values. Every backend and the native worker split
    results here, so the rule and its error are the same everywhere.

    Raises:
        ValueError: ``n > 1`` and the result is not a tuple or list of ``n`` values.
    """
    if num_returns == 1:
        return [result]
    if num_returns == 0:
        return []
    if not isinstance(result, (tuple, list)) or len(result) != num_returns:
        got = f"{len(result)} values" if isinstance(result, (tuple, list)) else type(result).__name__
        raise ValueError(f"{name} was declared with num_returns={num_returns} but returned {got}")
    return list(result)


def _check_number(name: str, value: Any, *, minimum: float = 0.0, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
        want = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {want} >= {minimum:g}, got {value!r}")


def _check_resources(resources: Any) -> None:
    if resources is None:
        return
    if not isinstance(resources, Mapping):
        raise TypeError(f"resources must be a dict of name -> amount, got {type(resources).__name__}")
    for key, amount in resources.items():
        if not isinstance(key, str):
            raise TypeError(f"resource names must be strings, got {key!r}")
        if key in ("CPU", "GPU"):
            raise ValueError(f"use num_cpus/num_gpus instead of resources={{{key!r}: ...}}")
        _check_number(f"resources[{key!r}]", amount)


class _Options:
    """Shared behaviour: ``merge(**overrides)`` validates names and values."""

    def merge(self, **overrides: Any):
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(
                f"unknown option(s) {', '.join(unknown)} for {type(self).__name__}; "
                f"valid options: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **overrides)  # type: ignore[type-var]

    @classmethod
    def create(cls, **options: Any):
        return cls().merge(**options)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TaskOptions(_Options):
    """Options of a remote function (``@remote(...)`` or ``f.options(...)``).

    ``max_retries`` counts re-runs after a *system* failure (the worker died); application
    exceptions are retried only when ``retry_exceptions`` is True or lists their types.
    """

    num_returns: int | str = 1     # or "streaming" / "dynamic" (generator functions)
    num_cpus: float = 1
    num_gpus: float = 0
    resources: Mapping[str, float] = field(default_factory=dict)
    max_retries: int = 3
    retry_exceptions: bool | tuple[type, ...] = False
    name: str | None = None
    # Ray's other options: what each does per backend is the table in docs/api.md.
    _generator_backpressure_num_objects: int = -1   # streaming: unconsumed values at most
    _num_objects_per_yield: int = 0
    max_calls: int = 0
    accelerator_type: str | None = None
    memory: float | None = None
    object_store_memory: float | None = None
    enable_task_events: bool = True
    label_selector: Mapping[str, str] | None = None
    _labels: Mapping[str, str] | None = None
    fallback_strategy: Any = None
    runtime_env: Mapping[str, Any] | None = None   # merged over init's (see runtime_env.py)
    # Where it runs (util/scheduling_strategies.py); placement_group/bundle_index (or Ray's
    # placement_group_bundle_index) are folded into scheduling_strategy, then cleared.
    scheduling_strategy: Any = None
    placement_group: Any = None
    bundle_index: int = -1
    placement_group_bundle_index: int = -1

    def __post_init__(self) -> None:
        _check_num_returns(self.num_returns)
        _check_ray_extras(self)
        _fold_strategy(self)
        object.__setattr__(self, "runtime_env", _check_runtime_env(self.runtime_env) or None)
        _check_number("num_cpus", self.num_cpus)
        _check_number("num_gpus", self.num_gpus)
        _check_resources(self.resources)
        if self.max_retries != -1:
            _check_number("max_retries", self.max_retries, integer=True)
        _check_retry_exceptions(self)
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"name must be a string, got {self.name!r}")
        object.__setattr__(self, "resources", dict(self.resources or {}))

    def should_retry(self, exc: BaseException) -> bool:
        """Whether an application exception ``exc`` may be retried under these options."""
        if self.retry_exceptions is True:
            return True
        if isinstance(self.retry_exceptions, tuple):
            return isinstance(exc, self.retry_exceptions)
        return False


def _fold_strategy(opts: "TaskOptions | ActorOptions") -> None:
    """One strategy in ``scheduling_strategy``: the short spellings folded in, then cleared
    (so a later ``.options(scheduling_strategy=...)`` replaces it cleanly)."""
    index = opts.bundle_index if opts.bundle_index != -1 else opts.placement_group_bundle_index
    strategy = _normalize_strategy(opts.scheduling_strategy, opts.placement_group, index)
    object.__setattr__(opts, "scheduling_strategy", strategy)
    object.__setattr__(opts, "placement_group", None)
    object.__setattr__(opts, "bundle_index", -1)
    object.__setattr__(opts, "placement_group_bundle_index", -1)


def check_bundles(bundles: Any) -> list[dict[str, float]]:
    """Placement-group bundles as a list of ``{resource: amount}`` dicts (``CPU``/``GPU`` are
    allowed here, unlike ``resources=``).

    Raises:
        ValueError: no bundles, an empty bundle, or a negative amount.
        TypeError: not a list of dicts of str -> number.
    """
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError(f"bundles must be a non-empty list of dicts, got {bundles!r}")
    checked = []
    for i, bundle in enumerate(bundles):
        if not isinstance(bundle, Mapping):
            raise TypeError(f"bundle {i} must be a dict of resource -> amount, got {bundle!r}")
        for key, amount in bundle.items():
            if not isinstance(key, str):
                raise TypeError(f"resource names must be strings, got {key!r} in bundle {i}")
            _check_number(f"bundle {i}[{key!r}]", amount)
        positive = {k: float(v) for k, v in bundle.items() if v > 0}
        if not positive:
            raise ValueError(f"bundle {i} asks for nothing ({dict(bundle)!r}): every bundle "
                             "needs some resource, e.g. {'CPU': 1}")
        checked.append(positive)
    return checked


def _check_num_returns(value: Any) -> None:
    if value not in ("streaming", "dynamic"):
        _check_number("num_returns", value, integer=True)


# Ray's options unipar accepts with a documented meaning (docs/api.md): name -> what it must be.
_EXTRA_CHECKS: dict[str, tuple[str, Any]] = {
    "_generator_backpressure_num_objects": ("an integer (-1: no bound)", lambda v: _int(v, -1)),
    "_actor_generator_backpressure_num_objects": ("an integer (-1: no bound)",
                                                  lambda v: _int(v, -1)),
    "_num_objects_per_yield": ("an integer >= 0", lambda v: _int(v, 0)),
    "max_calls": ("an integer >= 0", lambda v: _int(v, 0)),
    "max_pending_calls": ("an integer (-1: no bound)", lambda v: _int(v, -1)),
    "max_task_retries": ("an integer (-1: forever)", lambda v: _int(v, -1)),
    "memory": ("a number of bytes >= 0", lambda v: _num(v)),
    "object_store_memory": ("a number of bytes >= 0", lambda v: _num(v)),
    "accelerator_type": ("a string", lambda v: isinstance(v, str)),
    "namespace": ("a string", lambda v: isinstance(v, str)),
    "concurrency_group": ("a string", lambda v: isinstance(v, str)),
    "tensor_transport": ("a string", lambda v: isinstance(v, str)),
    "enable_task_events": ("True or False", lambda v: isinstance(v, bool)),
    "allow_out_of_order_execution": ("True or False", lambda v: isinstance(v, bool)),
    "enable_tensor_transport": ("True or False", lambda v: isinstance(v, bool)),
    "label_selector": ("a dict of str -> str", lambda v: _labels(v)),
    "_labels": ("a dict of str -> str", lambda v: _labels(v)),
    "concurrency_groups": ("a dict of group name -> max concurrency",
                           lambda v: isinstance(v, Mapping) and all(
                               isinstance(k, str) and _int(n, 1) for k, n in v.items())),
}


def _int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _labels(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items())


def _check_ray_extras(opts: Any) -> None:
    """Check the Ray options that are set (None means: not given)."""
    for name, (want, ok) in _EXTRA_CHECKS.items():
        value = getattr(opts, name, None)
        if value is not None and not ok(value):
            raise ValueError(f"{name} must be {want}, got {value!r}")


def _check_retry_exceptions(opts: TaskOptions) -> None:
    value = opts.retry_exceptions
    if isinstance(value, bool):
        return
    if isinstance(value, (list, tuple)) and all(
            isinstance(t, type) and issubclass(t, BaseException) for t in value):
        object.__setattr__(opts, "retry_exceptions", tuple(value))
        return
    raise TypeError("retry_exceptions must be True, False or a list of exception classes, "
                    f"got {value!r}")


@dataclass(frozen=True)
class ActorOptions(_Options):
    """Options of an actor class.

    An actor holds ``num_cpus`` (default 0, as Ray's actors hold no CPU while they run),
    ``num_gpus`` and ``resources`` for its whole life.
    """

    num_cpus: float = 0
    num_gpus: float = 0
    resources: Mapping[str, float] = field(default_factory=dict)
    max_restarts: int = 0
    max_task_retries: int = 0
    max_concurrency: int | None = None
    name: str | None = None
    get_if_exists: bool = False
    lifetime: str | None = None
    # Ray's other options: what each does per backend is the table in docs/api.md.
    _actor_generator_backpressure_num_objects: int = -1
    max_pending_calls: int = -1
    namespace: str | None = None
    concurrency_groups: Mapping[str, int] | None = None
    allow_out_of_order_execution: bool = False
    enable_tensor_transport: bool = False
    accelerator_type: str | None = None
    memory: float | None = None
    object_store_memory: float | None = None
    enable_task_events: bool = True
    label_selector: Mapping[str, str] | None = None
    _labels: Mapping[str, str] | None = None
    fallback_strategy: Any = None
    runtime_env: Mapping[str, Any] | None = None   # merged over init's (see runtime_env.py)
    scheduling_strategy: Any = None                 # as TaskOptions
    placement_group: Any = None
    bundle_index: int = -1
    placement_group_bundle_index: int = -1

    def __post_init__(self) -> None:
        _check_ray_extras(self)
        _fold_strategy(self)
        object.__setattr__(self, "runtime_env", _check_runtime_env(self.runtime_env) or None)
        _check_number("num_cpus", self.num_cpus)
        _check_number("num_gpus", self.num_gpus)
        _check_resources(self.resources)
        for name in ("max_restarts", "max_task_retries"):
            value = getattr(self, name)
            if value != -1:
                _check_number(name, value, integer=True)
        if self.max_concurrency is not None:
            _check_number("max_concurrency", self.max_concurrency, minimum=1, integer=True)
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ValueError(f"actor name must be a non-empty string, got {self.name!r}")
        if self.get_if_exists and self.name is None:
            raise ValueError("get_if_exists=True needs a name: use .options(name=..., get_if_exists=True)")
        if self.lifetime not in (None, "detached", "non_detached"):
            raise ValueError(f"lifetime must be None, 'detached' or 'non_detached', got {self.lifetime!r}")
        object.__setattr__(self, "resources", dict(self.resources or {}))

    def concurrency(self, is_async: bool) -> int:
        """Calls that may run at once: 1 for plain actors, 1000 for async ones (Ray's defaults)."""
        if self.max_concurrency is not None:
            return self.max_concurrency
        return 1000 if is_async else 1


@dataclass(frozen=True)
class MethodOptions(_Options):
    """Options of one actor method (``@unipar.method(num_returns=2)`` or ``.options(...)``)."""

    num_returns: int | str = 1     # or "streaming" / "dynamic" (generator methods)
    name: str | None = None
    # Ray's other method options (docs/api.md); None: the actor's setting.
    _generator_backpressure_num_objects: int | None = None
    _num_objects_per_yield: int = 0
    max_task_retries: int | None = None
    retry_exceptions: bool | tuple[type, ...] | None = None
    concurrency_group: str | None = None
    enable_task_events: bool = True
    tensor_transport: str | None = None
    _labels: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        _check_num_returns(self.num_returns)
        _check_ray_extras(self)
        if self.retry_exceptions is not None:
            _check_retry_exceptions(self)   # type: ignore[arg-type]


@dataclass(frozen=True)
class InitOptions(_Options):
    """What ``unipar.init`` was asked for; every backend receives the same object.

    ``backend_options`` carries engine-specific settings (for example a Spark conf dict) that
    the named backend documents.
    """

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    object_store_memory: int | None = None
    log_to_driver: bool = True
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    runtime_env: Mapping[str, Any] | None = None   # the job's default (see runtime_env.py)
    # A task or actor no node fits: fail at .remote() (True), or wait for a node that fits,
    # with an InfeasibleWarning (False). None: fail only where the cluster cannot grow.
    fail_infeasible: bool | None = None

    def __post_init__(self) -> None:
        if self.fail_infeasible not in (None, True, False):
            raise TypeError(f"fail_infeasible must be None, True or False, got {self.fail_infeasible!r}")
        # A driver run by `unipar job submit` takes the job's working dir as its default.
        object.__setattr__(self, "runtime_env",
                           _check_runtime_env(_with_job_env(self.runtime_env)) or None)
        if self.num_cpus is not None:
            _check_number("num_cpus", self.num_cpus, minimum=1, integer=True)
        if self.num_gpus is not None:
            _check_number("num_gpus", self.num_gpus, integer=True)
        if self.object_store_memory is not None:
            _check_number("object_store_memory", self.object_store_memory, minimum=1, integer=True)
        _check_resources(self.resources)
        object.__setattr__(self, "resources", dict(self.resources or {}))
        object.__setattr__(self, "backend_options", dict(self.backend_options or {}))


def resource_demand(opts: TaskOptions | ActorOptions) -> dict[str, float]:
    """The resources a task or actor asks for, as one dict with ``CPU``/``GPU`` keys.

    Computed once per options object (they are frozen) and shared: do not modify it."""
    cached = opts.__dict__.get("_demand")
    if cached is not None:
        return cached
    demand = {"CPU": float(opts.num_cpus), "GPU": float(opts.num_gpus)}
    demand.update({k: float(v) for k, v in opts.resources.items()})
    demand = {k: v for k, v in demand.items() if v > 0}
    object.__setattr__(opts, "_demand", demand)   # a cache, not a field: equality ignores it
    return demand
