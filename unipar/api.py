"""The public functions: a thin, backend-neutral layer over :class:`~unipar.backends.base.Backend`.

Everything that must behave the same on every engine is decided here, once: argument checks,
``get(ref)`` vs ``get([refs])``, ``wait`` ordering and duplicates, resource feasibility,
auto-initialisation, idempotent shutdown.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Sequence

from . import _progress, _state
from . import config
from .options import InitOptions
from .generators import ObjectRefGenerator
from .refs import ObjectRef
from .remote import ActorHandle

__all__ = [
    "init", "shutdown", "is_initialized", "backend_name",
    "get", "put", "wait", "cancel", "kill", "get_actor",
    "nodes", "cluster_resources", "available_resources",
    "dashboard_url", "timeline", "progress",
]

log = logging.getLogger("unipar")


def init(address: str | None = None, *, backend: str | None = None, num_cpus: int | None = None,
         num_gpus: int | None = None, resources: dict[str, float] | None = None,
         object_store_memory: int | None = None, log_to_driver: bool = True,
         ignore_reinit_error: bool = False, backend_options: dict[str, Any] | None = None,
         runtime_env: dict[str, Any] | None = None,
         fail_infeasible: bool | None = None) -> None:
    """Start or connect to a backend for this process.

    Backend: ``backend``, else ``UNIPAR_BACKEND``, else ``"native"``. Address: ``address``, else
    ``UNIPAR_ADDRESS``, else a new local cluster. ``num_cpus`` etc. size a local cluster.
    ``runtime_env``: the job's default code and settings for its workers (docs/runtime-env.md).
    ``fail_infeasible``: a task or actor no node fits fails at ``.remote()`` (True) or waits
    for a node that fits with an InfeasibleWarning (False); None (default): it fails only
    where the cluster cannot grow (a cluster of this process, local), as Ray does.

    Raises:
        RuntimeError: already initialised (pass ``ignore_reinit_error=True`` to allow it).
        ValueError: an unknown backend name.
        BackendUnavailableError: the backend's extra or service is missing.
    """
    with _state.lock:
        if _state.already_running(ignore_reinit_error):
            return
        options = InitOptions(
            address=address if address is not None else config.address(),
            num_cpus=num_cpus, num_gpus=num_gpus, resources=resources or {},
            object_store_memory=object_store_memory, log_to_driver=log_to_driver,
            backend_options=backend_options or {}, runtime_env=runtime_env,
            fail_infeasible=fail_infeasible)
        _state.start(backend, options)


def shutdown() -> None:
    """Stop the backend this process started. Safe to call any number of times."""
    _state.stop()


def is_initialized() -> bool:
    return _state.current() is not None


def backend_name() -> str | None:
    """The name of the running backend (``"native"``, ``"dask"``, ...), or None before init."""
    backend = _state.current()
    return backend.name if backend is not None else None


# -- objects ------------------------------------------------------------------------------------

_JUST_REFS = frozenset({ObjectRef})


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout < 0):
        raise ValueError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")


def _as_ref_list(refs: Any, fn: str) -> list[ObjectRef]:
    if not isinstance(refs, (list, tuple)):
        raise TypeError(f"{fn}() takes an ObjectRef or a list of ObjectRefs, got {type(refs).__name__}")
    if set(map(type, refs)) <= _JUST_REFS:   # the common case, checked in C
        return list(refs)
    for item in refs:
        if not isinstance(item, ObjectRef):
            raise TypeError(f"{fn}() takes ObjectRefs (from .remote() or put()), but the list "
                            f"holds a {type(item).__name__}: {item!r:.80}")
    return list(refs)


def put(value: Any) -> ObjectRef:
    """Store a snapshot of ``value`` and return one ref to it (one, even for a list)."""
    if isinstance(value, ObjectRef):
        raise TypeError("put() of an ObjectRef is not allowed: pass the ref itself, or wrap it "
                        "in a list to store a reference to it")
    return ObjectRef(_state.backend().put(value))


def get(refs: ObjectRef | Sequence[ObjectRef], *, timeout: float | None = None,
        progress: bool = False) -> Any:
    """The value of a ref, or a list of values for a list (or tuple) of refs, in order.
    ``progress``: show a progress bar meanwhile (see :func:`progress`).

    Raises:
        TaskError: the task raised (also an instance of the original exception type).
        GetTimeoutError: not all values were ready within ``timeout`` seconds.
        TypeError: something that is not an ObjectRef was given.
    """
    if progress:
        return _get_with_progress(refs, timeout, "")
    _check_timeout(timeout)
    if isinstance(refs, ObjectRef):
        return _state.backend().get([refs._handle], timeout)[0]
    ref_list = _as_ref_list(refs, "get")
    if not ref_list:
        return []
    return _state.backend().get([r._handle for r in ref_list], timeout)


def wait(refs: ObjectRef | Sequence[ObjectRef], *, num_returns: int = 1,
         timeout: float | None = None, fetch_local: bool = True) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Wait until ``num_returns`` refs are done or ``timeout`` passes; returns ``(ready, not_ready)``.

    Both lists keep the order of ``refs``. A repeated ref counts once toward ``num_returns`` and
    each occurrence lands in the list its ref belongs to. ``timeout=0`` polls. ``ready`` holds at
    most ``num_returns`` distinct refs, the first ones in input order that are done.
    """
    _check_timeout(timeout)
    ref_list = [refs] if isinstance(refs, ObjectRef) else _as_ref_list(refs, "wait")
    # Refs are equal when their handles are, and handles when their keys are: the keys are
    # hashed (once each), not the refs (whose hash calls the handle's), and positions are
    # compared, not refs (wait on 1,000 finished refs is a benchmark: hashing was most of it).
    backend = _state.backend()
    handles = [r._handle for r in ref_list]
    keys = backend.handle_keys(handles)
    repeats = len(set(keys)) < len(keys)
    by_key = dict(zip(keys, handles)) if repeats else {}   # first occurrences, in order
    distinct = list(by_key.values()) if repeats else handles
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns < 0:
        raise ValueError(f"num_returns must be an integer >= 0, got {num_returns!r}")
    if num_returns > len(distinct):
        raise ValueError(f"num_returns={num_returns} is more than the {len(distinct)} distinct "
                         "refs given")
    if not distinct or num_returns == 0:
        return [], ref_list
    done = backend.wait(distinct, num_returns, timeout, fetch_local)
    if len(done) == num_returns == len(handles):   # all of them, no repeats: a batch's wait
        return ref_list, []
    chosen = set(sorted(done)[:num_returns])
    if repeats:   # each occurrence goes where its ref does
        distinct_keys = list(by_key)
        ready_keys = {distinct_keys[i] for i in chosen}
        chosen = {i for i, k in enumerate(keys) if k in ready_keys}
    ready = [r for i, r in enumerate(ref_list) if i in chosen]
    not_ready = [r for i, r in enumerate(ref_list) if i not in chosen]
    return ready, not_ready


def cancel(ref: ObjectRef | ObjectRefGenerator, *, force: bool = False,
           recursive: bool = True) -> None:
    """Cancel the task behind ``ref`` (or a streaming generator's task); its ``get`` raises
    TaskCancelledError (also a TaskError). Finished tasks stay."""
    if isinstance(ref, ObjectRefGenerator):
        ref.cancel(force)
        return
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"cancel() takes an ObjectRef, got {type(ref).__name__}")
    _state.backend().cancel(ref._handle, force, recursive)


# -- actors -------------------------------------------------------------------------------------

def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Stop an actor now; its pending and later calls raise ActorDiedError."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() takes an actor handle, got {type(actor).__name__}")
    _state.backend().kill_actor(actor._actor_id, no_restart)


def get_actor(name: str) -> ActorHandle:
    """The handle of the live actor started with ``.options(name=name)``.

    Raises:
        ValueError: no live actor has that name.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"get_actor() takes an actor name (a non-empty string), got {name!r}")
    actor_id, meta = _state.backend().get_actor(name)
    return ActorHandle(actor_id, meta)


# -- cluster ------------------------------------------------------------------------------------

def nodes() -> list[dict[str, Any]]:
    """One dict per node: ``NodeID``, ``Alive``, ``NodeManagerAddress``, ``Resources``."""
    return _state.backend().nodes()


def cluster_resources() -> dict[str, float]:
    """Total resources of the cluster, e.g. ``{"CPU": 4.0, "GPU": 0.0}``."""
    return _state.backend().cluster_resources()


def available_resources() -> dict[str, float]:
    """Resources not held by running tasks or live actors."""
    return _state.backend().available_resources()


# -- seeing what runs (docs/observability.md) ---------------------------------------------------

def dashboard_url() -> str | None:
    """The web UI of the running engine: unipar's dashboard on native (None unless it runs),
    Dask's dashboard, the Spark UI, Ray's dashboard; None when the engine shows none."""
    return _state.backend().dashboard_url()


def timeline(filename: str | None = None) -> list[dict[str, Any]] | None:
    """The tasks of the last minutes as Chrome-trace events (chrome://tracing, Perfetto), as
    ``ray.timeline()`` gives them: written to ``filename`` as JSON, else returned.

    Raises:
        NotSupportedError: on backends other than native (the message names their own tool).
    """
    events = _state.backend().timeline()
    if filename is None:
        return events
    with open(filename, "w") as f:
        json.dump(events, f)
    return None


def progress(refs: ObjectRef | Sequence[ObjectRef], *, timeout: float | None = None,
             description: str = "") -> Any:
    """``get(refs, timeout=timeout)``, showing a progress bar of finished refs meanwhile
    when stderr is a terminal (quiet otherwise). Same results and errors as :func:`get`."""
    return _get_with_progress(refs, timeout, description)


def _get_with_progress(refs: ObjectRef | Sequence[ObjectRef], timeout: float | None,
                       description: str) -> Any:
    _check_timeout(timeout)
    ref_list = [refs] if isinstance(refs, ObjectRef) else _as_ref_list(refs, "progress")
    _progress.track(ref_list, lambda pending, wait_s: wait(
        pending, num_returns=len(pending), timeout=wait_s)[0], timeout, description)
    return get(refs, timeout=timeout)
