"""The backend seam: one abstract class every engine adapter implements.

Everything shared lives *above* this seam, in the public API: option checks, wrapping handles
in :class:`~unipar.ObjectRef`, ``get(ref)`` vs ``get([refs])``, ``wait`` ordering, duplicate refs,
resource feasibility. A backend sees only:

* **handles** — its own objects naming one value (a Dask ``Future``, a Ray ``ObjectRef``, an id).
  Handles must be hashable, picklable, compare equal iff they name the same value, and stay
  usable when unpickled inside this backend's workers (tasks pass refs to tasks).
* **actor ids** — its own picklable objects naming one actor, usable from any worker.

Data flow of one task::

    f.remote(x, ref)  --api-->  TaskSpec(function, args=(x, ref), ...)  --submit-->  [handle]
                                            top-level ObjectRefs in args are the backend's to
                                            resolve to values before the function runs; refs
                                            nested in containers stay refs (use unwrap()).
    unipar.get(ref)   --api-->  backend.get([handle], timeout)  -->  [value]  or raises

Remote exceptions: a backend raises what :func:`unipar.exceptions.capture_remote` made where the
task ran (an instance of ``TaskError`` and of the user's exception type); a task whose argument
failed fails with that same error.

Worker side: code running inside a task calls ``unipar.get``/``.remote()`` too. A backend makes
that work by calling :func:`install_worker_backend` with a backend object valid in that process
before user code runs. That slot is the one the public API reads (through ``unipar._state``).

Backends find the public ObjectRef helpers (``is_ref``, ``unwrap``, ``wrap``) in
:mod:`unipar.refs`: this module is the bottom of the public API and imports nothing of it.
"""

from __future__ import annotations

import concurrent.futures
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Collection, Hashable, Mapping, Sequence

from ..options import ActorOptions, InitOptions, TaskOptions

__all__ = [
    "Backend",
    "TaskSpec",
    "ActorSpec",
    "ActorCall",
    "ActorMeta",
    "Stream",
    "install_worker_backend",
    "current_backend",
]


@dataclass(frozen=True)
class ActorMeta:
    """What a handle needs to know about its actor's class, kept with every handle."""

    class_name: str
    methods: Mapping[str, "MethodMeta"]
    is_async: bool = False  # any ``async def`` method: the actor runs an event loop


@dataclass(frozen=True)
class MethodMeta:
    is_async: bool = False
    num_returns: int | str = 1   # "streaming" / "dynamic": a generator method
    is_generator: bool = False   # the method yields


@dataclass(frozen=True)
class TaskSpec:
    """One ``f.remote(*args, **kwargs)`` call.

    ``function_id`` is stable for one remote function in one process (backends may cache the
    pickled function by it). ``args``/``kwargs`` are the user's objects; ObjectRefs among them are
    public :class:`~unipar.ObjectRef` instances.
    """

    function: Callable[..., Any]
    function_id: str
    name: str
    args: tuple
    kwargs: Mapping[str, Any]
    options: TaskOptions


@dataclass(frozen=True)
class ActorSpec:
    """One ``Cls.remote(*args, **kwargs)`` call."""

    cls: type
    class_id: str
    args: tuple
    kwargs: Mapping[str, Any]
    options: ActorOptions
    meta: ActorMeta


@dataclass(frozen=True)
class ActorCall:
    """One ``handle.method.remote(*args, **kwargs)`` call; args follow TaskSpec's rules."""

    method: str
    args: tuple
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    num_returns: int | str = 1     # "streaming" / "dynamic" for generator methods
    backpressure: int = -1         # streaming: unconsumed values at most (-1: no bound)


class Stream(ABC):
    """The backend side of one streaming generator (``num_returns="streaming"``): one handle
    per value the task or method yields, in order, each as soon as it is produced.

    An exception the generator raised comes as one last handle whose ``get`` raises it; a task
    that failed as a whole (cancelled, worker lost past its retries) the same way.
    """

    @abstractmethod
    def next(self, timeout: float | None) -> Hashable:
        """The handle of the next value.

        Raises:
            StopIteration: the generator finished and every handle was given.
            GetTimeoutError: no next value within ``timeout`` seconds (the stream goes on).
        """

    @abstractmethod
    def cancel(self, force: bool) -> None:
        """Stop the generator's task; later ``next`` calls end the stream (after at most one
        handle raising TaskCancelledError)."""


class Backend(ABC):
    """An engine adapter. Every method is abstract: a backend that forgets one fails at init.

    Contracts shared by all methods: timeouts are seconds (``None`` waits forever, ``0`` polls);
    a blocking call inside a task must not hold the task's slot while it waits (nested tasks
    must not deadlock the cluster).
    """

    name: ClassVar[str]
    # Where the engine keeps its logs, for people (``unipar logs --backend NAME``).
    logs_location: ClassVar[str]

    @abstractmethod
    def start(self, options: InitOptions) -> None:
        """Connect to ``options.address`` or start a local cluster.

        Raises:
            BackendUnavailableError: a library or service is missing; the message says how to fix it.
        """

    @abstractmethod
    def shutdown(self) -> None:
        """Stop what ``start`` started (processes, threads, shared memory). Idempotent."""

    @abstractmethod
    def submit(self, spec: TaskSpec) -> list[Hashable]:
        """Start one task; return ``spec.options.num_returns`` handles (none for 0)."""

    @abstractmethod
    def submit_stream(self, spec: TaskSpec) -> Stream:
        """Start a generator task (``num_returns="streaming"``); ``spec.options
        ._generator_backpressure_num_objects`` bounds the values produced but not yet taken
        by ``next`` (-1: no bound). Runs under the task's retry rules."""

    @abstractmethod
    def put(self, value: Any) -> Hashable:
        """Store a snapshot of ``value``; later changes to ``value`` must not show."""

    @abstractmethod
    def get(self, handles: Sequence[Hashable], timeout: float | None) -> list[Any]:
        """Values of ``handles`` in order; raises the first failure, or GetTimeoutError."""

    @abstractmethod
    def handle_keys(self, handles: list[Hashable]) -> list[Hashable]:
        """One hashable key per handle, equal exactly when the handles are equal: what
        ``wait`` deduplicates on. The handles themselves will do; an engine whose handles
        hash in Python code may return keys that hash in C (native: the object ids), because
        a ``wait`` on 1,000 refs is a benchmark and hashing was most of it."""

    @abstractmethod
    def wait(self, handles: Sequence[Hashable], num_returns: int, timeout: float | None,
             fetch_local: bool) -> Collection[int]:
        """Block until ``num_returns`` of the (distinct) handles are done, or the timeout passes.

        Returns the indices of the handles that are done (failed counts as done), each once, in
        any collection (a set, a list, a range); it may hold more than ``num_returns``. Never
        raises on timeout.
        """

    @abstractmethod
    def cancel(self, handle: Hashable, force: bool, recursive: bool) -> None:
        """Cancel an unfinished task; its ``get`` then raises TaskCancelledError.

        ``force`` kills the process running it. A finished task is left as it is.
        """

    @abstractmethod
    def future(self, handle: Hashable) -> concurrent.futures.Future:
        """A Future that resolves to the value (or the exception ``get`` would raise)."""

    @abstractmethod
    def create_actor(self, spec: ActorSpec) -> Any:
        """Start an actor (or find the named one when ``get_if_exists``); return its id.

        Raises:
            ValueError: the name is taken and ``get_if_exists`` is False.
        """

    @abstractmethod
    def call_actor(self, actor_id: Any, call: ActorCall) -> list[Hashable]:
        """Queue a method call; calls from one handle run in submission order."""

    @abstractmethod
    def call_actor_stream(self, actor_id: Any, call: ActorCall) -> Stream:
        """Queue a call of a generator method (``num_returns="streaming"``), as
        :meth:`submit_stream` for tasks; ``call.backpressure`` bounds unconsumed values."""

    @abstractmethod
    def kill_actor(self, actor_id: Any, no_restart: bool) -> None:
        """Stop the actor; pending and later calls raise ActorDiedError."""

    @abstractmethod
    def get_actor(self, name: str) -> tuple[Any, ActorMeta]:
        """The id and meta of the live actor called ``name``.

        Raises:
            ValueError: no live actor has that name.
        """

    @abstractmethod
    def nodes(self) -> list[dict[str, Any]]:
        """One dict per node: ``NodeID``, ``Alive``, ``NodeManagerAddress``, ``Resources``."""

    @abstractmethod
    def cluster_resources(self) -> dict[str, float]:
        """Total resources of live nodes (``CPU``, ``GPU``, custom names)."""

    @abstractmethod
    def available_resources(self) -> dict[str, float]:
        """Resources not held by running tasks or live actors right now."""

    @abstractmethod
    def dashboard_url(self) -> str | None:
        """The web UI of this session's engine (unipar's dashboard on native, Dask's
        dashboard, the Spark UI, Ray's dashboard), or None when none runs."""

    @abstractmethod
    def timeline(self) -> list[dict[str, Any]]:
        """Chrome-trace events (``ph``, ``ts``, ``dur``, ...) of the tasks of the last minutes.

        Raises:
            NotSupportedError: the engine keeps no such record; the message names its tool.
        """

    # -- scheduling (docs/scheduling.md) ------------------------------------------------------
    @abstractmethod
    def can_grow(self) -> bool:
        """Whether nodes may join this cluster later (``unipar start`` clusters, Ray, Dask or
        Spark clusters that add workers): a task no node fits then waits instead of failing."""

    @abstractmethod
    def runtime_context(self) -> dict[str, Any]:
        """Where the calling code runs: ``node_id``, ``job_id`` (strings), ``task_id`` and
        ``actor_id`` (strings, or None outside a task / an actor)."""

    @abstractmethod
    def create_placement_group(self, bundles: list[dict[str, float]], strategy: str,
                               name: str | None) -> Any:
        """Start reserving ``bundles`` together; return the group's id at once (picklable).

        Raises:
            ValueError: ``name`` is taken by a live group.
            NotSupportedError: the engine cannot reserve resources; the message says why.
        """

    @abstractmethod
    def wait_placement_group(self, pg_id: Any, timeout: float | None) -> bool:
        """True once every bundle is reserved, False when ``timeout`` passes first.

        Raises:
            InfeasibleResourcesError: the cluster can never hold it and cannot grow.
            ValueError: the group was removed.
        """

    @abstractmethod
    def remove_placement_group(self, pg_id: Any) -> None:
        """Release the group's reservations (idempotent)."""

    @abstractmethod
    def placement_group_table(self) -> list[dict[str, Any]]:
        """One row per group: ``placement_group_id`` (str), ``handle`` (the id
        create_placement_group returned), ``name``, ``strategy``, ``state`` (PENDING, CREATED,
        INFEASIBLE, REMOVED), ``bundles`` ({index: resources}), ``bundles_to_node_id``
        ({index: node id} of reserved bundles)."""


_current: Backend | None = None  # the one backend this process talks to


def install_worker_backend(backend: Backend | None) -> None:
    """Make ``backend`` the one the public API uses in this (worker) process."""
    global _current
    _current = backend


def current_backend() -> Backend | None:
    """The backend the public API uses in this process (None before init and after shutdown)."""
    return _current
