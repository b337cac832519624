"""RayBackend: the seam over Ray — lifecycle, objects, tasks, cluster and placement groups.

Actors are :class:`~unipar.backends.ray.actors.RayActors`' job, the translation of errors and
options translate.py's, the private instance's environment and files session.py's.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import sys
import time
from typing import Any, Hashable, Sequence

import psutil

from ... import _state
from ...exceptions import GetTimeoutError, NotSupportedError, UniparError
from ...options import InitOptions, TaskOptions
from ..base import (ActorCall, ActorMeta, ActorSpec, Backend, Stream, TaskSpec,
                    install_worker_backend)
from .actors import RayActors
from .session import (AUTH_TOKEN, DEFAULT_NAMESPACE, DEFAULT_OBJECT_STORE_BYTES, IMPORT_ENV,
                      LOOPBACK_ENV, RAY_SET_ENV, SESSION_ENV, Environment, joins_loopback,
                      make_temp_dir, quiet, ray_module, reap)
from .translate import (public_resources, ray_args, ray_refs, reraise, share_pickle_by_value,
                        task_options, translate)
from .worker import task_body

__all__ = ["RayBackend", "backend_class"]

# How long one call to Ray's PlacementGroup.wait blocks before the group's state is read again.
_PG_WAIT_STEP_S = 1.0


def _ensure_worker_backend() -> None:
    """Make the public API work inside a Ray worker (nested tasks, get/wait in tasks)."""
    if _state.current() is None:
        install_worker_backend(RayBackend.for_worker())


class RayBackend(Backend):
    """unipar on Ray: a local private instance, or an existing cluster by address."""

    name = "ray"
    logs_location = ("Ray's session directory, /tmp/ray/session_latest/logs (or the "
                     "_temp_dir given to init); `ray logs` lists and prints them")

    def __init__(self) -> None:
        self._ray_mod: Any = None
        self._worker = False              # True inside a Ray worker: owns nothing
        self._own_instance = False        # a Ray instance this driver started (set by start)
        self._env = Environment()
        self._temp_dir: str | None = None
        self._functions: dict[tuple[str, int], Any] = {}   # (function_id, max_calls) -> ray fn
        self._configured: dict[str, tuple[TaskOptions, Any]] = {}  # function_id -> (opts, fn)
        self._actors = RayActors(self._live, _ensure_worker_backend)
        self._saved_cluster_flag: bool | None = None

    @classmethod
    def for_worker(cls) -> "RayBackend":
        """A backend for code running inside a Ray worker (already connected)."""
        backend = cls()
        backend._ray_mod = ray_module()
        backend._worker = True
        return backend

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, options: InitOptions) -> None:
        address = options.address
        local = address in (None, "local")
        self._own_instance = local   # started by this driver: it never grows
        loopback = local or (not address.startswith("ray://") and joins_loopback(address))
        imported = "ray" in sys.modules
        if not imported:
            self._env.set_default(IMPORT_ENV)
        if loopback:
            self._env.set_default(LOOPBACK_ENV)   # the Ray processes we start read it too
        self._env.set_default(SESSION_ENV)
        self._env.track(RAY_SET_ENV)
        ray = self._ray_mod = ray_module()
        if loopback and imported:
            # Ray was imported before (by the user, or an earlier session): it read the switch
            # already, so set what it read it into.
            from ray._private import ray_constants
            self._saved_cluster_flag = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
            flag = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"].lower() not in ("0", "false")
            ray_constants.ENABLE_RAY_CLUSTER = flag
        if ray.is_initialized():
            raise RuntimeError("Ray is already initialised in this process (ray.init was called "
                               "outside unipar); call ray.shutdown() first")
        kwargs: dict[str, Any] = {"namespace": DEFAULT_NAMESPACE,
                                  "log_to_driver": options.log_to_driver}
        if local:
            kwargs.update(self._local_init_kwargs(options))
        else:
            kwargs["address"] = address
            if loopback:
                kwargs["_node_ip_address"] = "127.0.0.1"
        if options.runtime_env:
            kwargs["runtime_env"] = dict(options.runtime_env)
        kwargs.update(options.backend_options)
        with quiet("ray._private.authentication.authentication_token_setup"):
            ray.init(**kwargs)

    def _local_init_kwargs(self, options: InitOptions) -> dict[str, Any]:
        if "RAY_AUTH_MODE" not in os.environ and not (
                {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ)):
            # Ray turns token auth on for a new local cluster and would save a token in
            # ~/.ray; an environment token keeps it on without writing anything.
            self._env.set_default({"RAY_AUTH_TOKEN": AUTH_TOKEN})
        self._temp_dir = make_temp_dir()
        kwargs: dict[str, Any] = {
            "address": "local", "_node_ip_address": "127.0.0.1", "include_dashboard": False,
            "_temp_dir": self._temp_dir,
            "object_store_memory": options.object_store_memory or DEFAULT_OBJECT_STORE_BYTES,
        }
        if options.num_cpus is not None:
            kwargs["num_cpus"] = options.num_cpus
        if options.num_gpus is not None:
            kwargs["num_gpus"] = options.num_gpus
        if options.resources:
            kwargs["resources"] = dict(options.resources)
        return kwargs

    def shutdown(self) -> None:
        if self._worker:
            return
        self._actors.clear()
        self._functions.clear()
        self._configured.clear()
        ray, self._ray_mod = self._ray_mod, None
        children = psutil.Process().children(recursive=True) if self._temp_dir else []
        try:
            if ray is not None and ray.is_initialized():
                ray.shutdown()
        finally:
            if self._temp_dir is not None:
                reap(self._temp_dir, children)
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None
            self._env.restore()
            if self._saved_cluster_flag is not None:
                from ray._private import ray_constants
                ray_constants.ENABLE_RAY_CLUSTER = self._saved_cluster_flag
                self._saved_cluster_flag = None

    def _live(self) -> Any:
        if self._ray_mod is None:
            raise UniparError("the ray backend is shut down")
        return self._ray_mod

    # -- objects -----------------------------------------------------------------------------
    def put(self, value: Any) -> Hashable:
        ray = self._live()
        share_pickle_by_value()
        return ray.put(value)

    def get(self, handles: Sequence[Hashable], timeout: float | None) -> list[Any]:
        ray = self._live()
        try:   # not a context manager: get is on every round trip's path
            return ray.get(handles if isinstance(handles, list) else list(handles),
                           timeout=timeout)
        except Exception as exc:
            reraise(exc)

    def handle_keys(self, handles: list[Hashable]) -> list[Hashable]:
        return handles   # hashing them is not this engine's cost of a wait

    def wait(self, handles: Sequence[Hashable], num_returns: int, timeout: float | None,
             fetch_local: bool) -> set[int]:
        ray = self._live()
        handles = list(handles)
        ready, _ = ray.wait(handles, num_returns=num_returns, timeout=timeout,
                            fetch_local=fetch_local)
        if len(ready) < len(handles):
            # Ray returns the first num_returns it saw done, not the first in input order;
            # unipar picks from all that are done, so poll for the rest.
            ready, _ = ray.wait(handles, num_returns=len(handles), timeout=0,
                                fetch_local=fetch_local)
        done = set(ready)
        return {i for i, h in enumerate(handles) if h in done}

    def cancel(self, handle: Hashable, force: bool, recursive: bool) -> None:
        ray = self._live()
        try:
            ray.cancel(handle, force=force, recursive=recursive)
        except ValueError:
            if not force:
                raise
            # Ray refuses force=True for actor method calls: cancel them the gentle way.
            ray.cancel(handle, force=False, recursive=recursive)

    def future(self, handle: Hashable) -> concurrent.futures.Future:
        ours: concurrent.futures.Future = concurrent.futures.Future()

        def done(theirs: concurrent.futures.Future) -> None:
            exc = theirs.exception()
            if exc is None:
                ours.set_result(theirs.result())
            else:
                ours.set_exception(translate(exc))
        handle.future().add_done_callback(done)  # type: ignore[attr-defined]
        return ours

    # -- tasks -------------------------------------------------------------------------------
    def _remote_function(self, spec: TaskSpec) -> Any:
        """The Ray remote function for ``spec``: wrapped once per function, configured once
        per distinct options (Ray pickles and exports it once, on first use)."""
        cached = self._configured.get(spec.function_id)
        opts = spec.options
        if cached is not None and (cached[0] is opts or cached[0] == opts):
            return cached[1]
        ray_options = task_options(opts)
        # Ray takes max_calls only where the remote function is made, never in .options().
        max_calls = ray_options.pop("max_calls", 0)
        base = self._functions.get((spec.function_id, max_calls))
        if base is None:
            share_pickle_by_value()
            make = self._live().remote(max_calls=max_calls) if max_calls else self._live().remote
            base = self._functions[(spec.function_id, max_calls)] = make(
                task_body(spec.function, _ensure_worker_backend))
        fn = base.options(**ray_options) if ray_options else base
        self._configured[spec.function_id] = (opts, fn)
        return fn

    def submit(self, spec: TaskSpec) -> list[Hashable]:
        fn = self._remote_function(spec)
        args, kwargs = ray_args(spec.args, spec.kwargs)
        return ray_refs(fn.remote(*args, **kwargs))

    # -- actors ------------------------------------------------------------------------------
    # -- actors ------------------------------------------------------------------------------
    def create_actor(self, spec: ActorSpec) -> Any:
        return self._actors.create(spec)

    def call_actor(self, actor_id: Any, call: ActorCall) -> list[Hashable]:
        return self._actors.call(actor_id, call)

    def submit_stream(self, spec: TaskSpec) -> "_RayStream":
        # num_returns="streaming" and the backpressure bound travel in the options.
        fn = self._remote_function(spec)
        args, kwargs = ray_args(spec.args, spec.kwargs)
        return _RayStream(fn.remote(*args, **kwargs), self)

    def call_actor_stream(self, actor_id: Any, call: ActorCall) -> "_RayStream":
        options: dict[str, Any] = {"num_returns": "streaming"}
        if call.backpressure != -1:
            options["_generator_backpressure_num_objects"] = call.backpressure
        method = getattr(actor_id, call.method).options(**options)
        args, kwargs = ray_args(call.args, call.kwargs)
        return _RayStream(method.remote(*args, **kwargs), self)

    def kill_actor(self, actor_id: Any, no_restart: bool) -> None:
        self._actors.kill(actor_id, no_restart)

    def get_actor(self, name: str) -> tuple[Any, ActorMeta]:
        return self._actors.get(name)

    # -- cluster -----------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        return [{"NodeID": n["NodeID"], "Alive": n["Alive"],
                 "NodeManagerAddress": n["NodeManagerAddress"],
                 "Resources": public_resources(n.get("Resources", {}))}
                for n in self._live().nodes()]

    def cluster_resources(self) -> dict[str, float]:
        return public_resources(self._live().cluster_resources())

    def available_resources(self) -> dict[str, float]:
        return public_resources(self._live().available_resources())

    # -- scheduling: Ray's own placement groups and runtime context ---------------------------
    def can_grow(self) -> bool:
        # A Ray cluster keeps infeasible work pending for nodes (or its autoscaler) to come;
        # the private instance unipar.init() starts gets no more nodes.
        return not self._own_instance

    def runtime_context(self) -> dict[str, Any]:
        ctx = self._live().get_runtime_context()
        return {"node_id": ctx.get_node_id(), "job_id": ctx.get_job_id(),
                "task_id": ctx.get_task_id(), "actor_id": ctx.get_actor_id()}

    def create_placement_group(self, bundles: list[dict[str, float]], strategy: str,
                               name: str | None) -> Any:
        from ray.util import placement_group
        try:
            return placement_group(bundles, strategy=strategy, name=name or "")
        except Exception as exc:   # a name taken: Ray raises its own error
            raise ValueError(str(exc)) from None

    def wait_placement_group(self, pg_id: Any, timeout: float | None) -> bool:
        # Ray's wait takes no None (and never ends for a removed group): wait in steps.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            table = self._live().util.placement_group_table(pg_id)
            if table.get("state") == "REMOVED":
                raise ValueError(f"placement group {pg_id.id.hex()} was removed")
            left = _PG_WAIT_STEP_S if deadline is None else deadline - time.monotonic()
            if pg_id.wait(max(min(left, _PG_WAIT_STEP_S), 0)):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def remove_placement_group(self, pg_id: Any) -> None:
        from ray.util import remove_placement_group
        remove_placement_group(pg_id)

    def placement_group_table(self) -> list[dict[str, Any]]:
        from ray._raylet import PlacementGroupID
        from ray.util.placement_group import PlacementGroup
        rows = []
        for pg_hex, row in self._live().util.placement_group_table().items():
            handle = PlacementGroup(PlacementGroupID.from_hex(pg_hex))
            rows.append({"placement_group_id": pg_hex, "handle": handle,
                         "name": row.get("name") or None, "strategy": row.get("strategy"),
                         "state": row.get("state"),
                         "bundles": {int(i): dict(b) for i, b in row.get("bundles", {}).items()},
                         "bundles_to_node_id": {int(i): n for i, n in
                                                row.get("bundles_to_node_id", {}).items()},
                         "error": ""})
        return rows

    def dashboard_url(self) -> str | None:
        try:
            url = self._live()._private.worker.get_dashboard_url()
        except (AttributeError, RuntimeError):
            return None
        if not url:   # a local cluster starts without Ray's dashboard
            return None
        return url if "://" in url else f"http://{url}"

    def timeline(self) -> list[dict[str, Any]]:
        raise NotSupportedError("unipar.timeline() is for the native backend; on ray use "
                                "ray.timeline(filename), Ray's own Chrome trace")


class _RayStream(Stream):
    """Ray's own streaming generator (``ray.ObjectRefGenerator``), behind the seam."""

    def __init__(self, generator: Any, backend: RayBackend) -> None:
        self._generator = generator
        self._backend = backend

    def next(self, timeout: float | None) -> Hashable:
        ref = self._generator._next_sync(timeout_s=timeout)   # StopIteration at the end
        if ref.is_nil():
            raise GetTimeoutError(f"no value from the generator within {timeout} s")
        return ref

    def cancel(self, force: bool) -> None:
        self._backend._live().cancel(self._generator, force=force)


backend_class = RayBackend
