"""This process's session with its backend: starting and stopping it, and the calls that every
public function and remote object makes through it.

The public API imports downward; each module knows only those below it::

    __init__.py  api.py  remote.py     the public surface (api and remote wrap handles in refs)
    refs.py                            ObjectRef: ``future()`` asks this module for the backend
    _state.py                          this module: start/stop, the current backend (started on
                                       first use), submit / create_actor / call_actor with the
                                       cluster-wide resource checks
    backends/__init__.py               the table of backends, loaded by name
    backends/base.py                   the seam, and the slot the current backend sits in

Handles go up, values go down: this module returns backend handles; the modules above wrap them.
"""

from __future__ import annotations

import atexit
import logging
import threading
import warnings
from typing import Any, Hashable

from . import config
from .backends import load_backend
from .backends.base import ActorCall, ActorSpec, Backend, TaskSpec, current_backend, install_worker_backend
from ._strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy
from .exceptions import InfeasibleResourcesError, InfeasibleWarning, ResourcesBusyWarning
from .options import ActorOptions, InitOptions, TaskOptions, resource_demand

__all__ = ["lock", "current", "install", "already_running", "start", "stop", "backend", "submit",
           "create_actor", "call_actor"]

log = logging.getLogger("unipar")

#: Held while the current backend changes (init, shutdown), so two threads never start two.
lock = threading.RLock()
_totals: dict[str, float] = {}  # cluster totals as last seen, for the feasibility check
_nodes: list[dict[str, float]] = []   # each live node's resources as last seen (the same)
_fail_infeasible: list[bool | None] = [None]   # InitOptions.fail_infeasible of this session
_atexit_registered = False


def current() -> Backend | None:
    """The backend this process talks to, or None (before init, after shutdown)."""
    return current_backend()


def install(backend: Backend | None) -> None:
    """Make ``backend`` the current one (None: no backend)."""
    with lock:
        install_worker_backend(backend)


def already_running(ignore_reinit_error: bool) -> bool:
    """True when a backend is current and that is allowed; call with :data:`lock` held.

    Raises:
        RuntimeError: a backend is current and ``ignore_reinit_error`` is False.
    """
    running = current_backend()
    if running is None:
        return False
    if ignore_reinit_error:
        return True
    raise RuntimeError(
        f"unipar is already initialised (backend {running.name!r}); call "
        "unipar.shutdown() first, or pass ignore_reinit_error=True")


def start(name: str | None, options: InitOptions) -> None:
    """Start backend ``name`` (else ``UNIPAR_BACKEND``, else native) and make it current.

    Raises:
        RuntimeError: a backend is current already.
        ValueError: an unknown backend name.
        BackendUnavailableError: the backend's extra or service is missing.
    """
    global _atexit_registered
    with lock:
        already_running(ignore_reinit_error=False)
        instance: Backend = load_backend(name or config.backend_name())()
        try:
            instance.start(options)
        except BaseException:
            instance.shutdown()
            raise
        install_worker_backend(instance)
        _totals.clear()
        _nodes.clear()
        _fail_infeasible[0] = options.fail_infeasible
        if not _atexit_registered:
            atexit.register(stop)
            _atexit_registered = True
        log.info("unipar started backend %r", instance.name)


def stop() -> None:
    """Stop the current backend, if any. Safe to call any number of times."""
    with lock:
        running = current_backend()
        install_worker_backend(None)
        _totals.clear()
        _nodes.clear()
    if running is not None:
        running.shutdown()


def backend() -> Backend:
    """The current backend; the first use starts the default one, as in Ray."""
    running = current_backend()
    if running is None:
        with lock:
            if not already_running(ignore_reinit_error=True):
                start(None, InitOptions(address=config.address()))
            running = current_backend()
        assert running is not None
    return running


# -- tasks and actors ---------------------------------------------------------------------------

def _check_feasible(running: Backend, opts: TaskOptions | ActorOptions, what: str) -> None:
    """Refuse (or, where the cluster may grow, warn about) work no node could run today.

    Work in a placement group is checked against its bundle instead: the group reserved it."""
    strategy = opts.scheduling_strategy
    demand = resource_demand(opts)
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        _check_fits_bundle(strategy, demand, what)
        return
    if isinstance(strategy, NodeAffinitySchedulingStrategy) and not strategy.soft:
        alive = {n["NodeID"] for n in running.nodes() if n["Alive"]}
        if strategy.node_id not in alive:
            raise InfeasibleResourcesError(
                f"{what} is pinned to node {strategy.node_id!r} (NodeAffinitySchedulingStrategy, "
                "soft=False), which is not alive: unipar.nodes() lists the live ones; pass "
                "soft=True to run elsewhere when it is gone")
    if not demand or _fits_a_node(running, demand):
        return
    biggest = _biggest_node(demand)
    fail = _fail_infeasible[0]
    if fail is False or (fail is None and running.can_grow()):
        # As in Ray: on a cluster that nodes may join, it waits for one that fits.
        warnings.warn(
            f"{what} asks for {demand} but no node has that much today (the biggest has "
            f"{biggest}); it waits until a node that fits joins (unipar status lists it as "
            "infeasible). Pass unipar.init(fail_infeasible=True) to fail instead.",
            InfeasibleWarning, stacklevel=4)
        return
    raise InfeasibleResourcesError(
        f"{what} asks for {demand} but no node has that much (the biggest has {biggest}); it "
        "could never run. Ask for less, or start the cluster with more (unipar.init("
        "num_cpus=..., num_gpus=..., resources={...}) or bigger nodes).")


def _fits(have: dict[str, float], demand: dict[str, float]) -> bool:
    return all(have.get(k, 0.0) + 1e-9 >= v for k, v in demand.items())


def _fits_a_node(running: Backend, demand: dict[str, float]) -> bool:
    """Whether one live node has ``demand`` (a task runs on one node, as in Ray). The nodes
    as last seen are asked first: the backend is asked again only when none of them fits."""
    if any(_fits(node, demand) for node in _nodes):
        return True
    _nodes[:] = [dict(n.get("Resources", {})) for n in running.nodes() if n.get("Alive", True)]
    _totals.clear()
    _totals.update(running.cluster_resources())
    return any(_fits(node, demand) for node in _nodes)


def _biggest_node(demand: dict[str, float]) -> dict[str, float]:
    """What the node closest to ``demand`` has of it (for the error message)."""
    if not _nodes:
        return {k: 0.0 for k in demand}
    best = max(_nodes, key=lambda n: sum(min(n.get(k, 0.0), v) / v
                                         for k, v in demand.items() if v > 0))
    return {k: best.get(k, 0.0) for k in demand}


def _check_fits_bundle(strategy: PlacementGroupSchedulingStrategy, demand: dict[str, float],
                       what: str) -> None:
    bundles = strategy.placement_group.bundle_specs
    index = strategy.placement_group_bundle_index
    candidates = bundles if index == -1 else [bundles[index]]
    if any(all(b.get(k, 0.0) + 1e-9 >= v for k, v in demand.items()) for b in candidates):
        return
    where = "any bundle" if index == -1 else f"bundle {index} ({bundles[index]})"
    raise InfeasibleResourcesError(
        f"{what} asks for {demand} but {where} of its placement group holds less; it could "
        "never run there. Ask for at most what the bundle reserves.")


def _warn_if_busy(running: Backend, demand: dict[str, float], what: str) -> None:
    free = running.available_resources()
    short = {k: v for k, v in demand.items() if free.get(k, 0.0) < v}
    if short:
        # stacklevel 4: this function, create_actor, ActorClass.remote, the user's line.
        warnings.warn(
            f"{what} waits for {short}: only {({k: max(free.get(k, 0.0), 0.0) for k in short})} "
            f"of {({k: _totals.get(k, 0.0) for k in short})} are free, the rest held by running "
            "tasks and live actors. It starts when they release them (unipar.kill(actor) frees "
            "an actor's).", ResourcesBusyWarning, stacklevel=4)


def submit(spec: TaskSpec) -> list[Hashable]:
    """Start one task; one handle per return value.

    Raises:
        InfeasibleResourcesError: no node could ever give what it asks for.
    """
    running = backend()
    _check_feasible(running, spec.options, f"task {spec.name}")
    return running.submit(spec)


def create_actor(spec: ActorSpec) -> Any:
    """Start an actor and return its id; warns (ResourcesBusyWarning) when it must wait.

    Raises:
        InfeasibleResourcesError: no node could ever give what it asks for.
    """
    running = backend()
    what = f"actor {spec.meta.class_name}"
    demand = resource_demand(spec.options)
    _check_feasible(running, spec.options, what)
    if demand and not isinstance(spec.options.scheduling_strategy,
                                 PlacementGroupSchedulingStrategy):
        # Actors hold resources for life: a user who starts more than fit must hear why the
        # next one does not start, instead of a silent hang.
        _warn_if_busy(running, demand, what)
    return running.create_actor(spec)


def call_actor(actor_id: Any, call: ActorCall) -> list[Hashable]:
    """Queue one actor method call; one handle per return value."""
    return backend().call_actor(actor_id, call)
