"""The ``native`` backend: a thin adapter from the seam to unipar's own engine (unipar.native).

Handles are :class:`unipar.native.client.refs.NativeRef`; actor ids are
:class:`unipar.native.client.refs.ActorId`. The adapter's one real job is argument translation:
top-level ObjectRefs become bare NativeRefs, which the engine treats as dependencies (resolved to
values before the call); refs nested deeper pickle as themselves and arrive as refs.

In workers, :func:`worker_setup` (named to the engine as ``UNIPAR_WORKER_SETUP``) installs a
backend bound to the worker's own client, so tasks can call ``unipar.get``/``.remote()``.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Hashable, Sequence

from ..exceptions import BackendUnavailableError
from ..native.client.refs import ActorId, NativeRef
from ..native.node.scheduler import ENV_TAG
from ..native.worker.events import running
from ..native.worker.streaming import STREAM, Streaming
from ..options import ActorOptions, InitOptions, TaskOptions, resource_demand
from ..native.wire import protocol as P
from ..runtime_env import Package, canonical, merge, pack, spec_digests
from ..refs import is_ref, unwrap
from .base import (ActorCall, ActorMeta, ActorSpec, Backend, Stream, TaskSpec,
                   install_worker_backend)
from .streams import EngineStream, header_call, header_spec
from .native_scheduling import NativeScheduling, user_view

if TYPE_CHECKING:
    from ..native.client.client import Client

WORKER_SETUP = "unipar.backends.native:worker_setup"
ENV_FETCH_TIMEOUT = 300.0   # seconds to get the parent's env spec in a nested task


def _deps(args: tuple, kwargs: Any) -> tuple[tuple, dict]:
    """Top-level ObjectRefs -> NativeRef (a dependency); everything else unchanged."""
    def one(value: Any) -> Any:
        return unwrap(value) if is_ref(value) else value
    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


class NativeBackend(Backend):
    """unipar's own engine: a head, a node daemon, worker processes, a shared-memory store."""

    name = "native"
    logs_location = ("each node's log directory: `unipar logs` lists and prints them "
                     "(node.log, one file per worker and actor process); docs/observability.md")

    def __init__(self, client: Client | None = None) -> None:
        self._client = client
        self._cluster: Any = None   # a LocalCluster on the driver; workers have none
        self._connected = False     # a driver of a cluster started by `unipar start`
        self._job_env: dict[str, Any] = {}
        # A worker's tasks inherit its runtime env (as in Ray): its tag, "" for none.
        self._inherited = os.environ.get("UNIPAR_RUNTIME_ENV", "") if client is not None else ""
        self._env_tags: dict[str, str] = {}          # canonical env -> its tag
        self._env_specs: list[NativeRef] = []         # shipped specs: held while we live
        self._parent_env: dict[str, Any] | None = None   # the inherited env's shipped spec
        self._demands: dict[tuple, dict[str, float]] = {}
        self._env_lock = threading.Lock()
        self._fail_infeasible: bool | None = None
        self._scheduling = NativeScheduling(lambda: self.client, self.can_grow)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, options: InitOptions) -> None:
        self._job_env = dict(options.runtime_env or {})
        self._fail_infeasible = options.fail_infeasible
        if options.address not in (None, "local"):
            self._connect(options)
            return
        from ..native.cluster.launcher import ClusterConfig, LocalCluster   # drivers only: keeps workers lean
        extra = dict(options.backend_options)
        known = {"spill_limit", "stuck_warning_after", "worker_idle_timeout", "dashboard_port"}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise ValueError(f"unknown native backend_options: {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
        self._cluster = LocalCluster(ClusterConfig(
            num_cpus=options.num_cpus, num_gpus=options.num_gpus,
            resources=dict(options.resources), object_store_memory=options.object_store_memory,
            spill_limit=extra.get("spill_limit"), worker_setup=WORKER_SETUP,
            stuck_warning_after=float(extra.get("stuck_warning_after", 5.0)),
            worker_idle_timeout=float(extra.get("worker_idle_timeout", 10.0)),
            dashboard_port=extra.get("dashboard_port")))   # none by default: cold start
        # The engine's client code loads while the daemons start (cold start).
        loading = threading.Thread(target=_load_client, name="unipar-import")
        loading.start()
        try:
            self._cluster.start()
        finally:
            loading.join()
        from ..native.client.client import Client
        if "dashboard_port" in extra:   # asked for: say where it is, or why it is not
            where = self._cluster.dashboard_url or f"off: {self._cluster.dashboard_problem}"
            print(f"unipar dashboard: {where}", file=sys.stderr)
        self._client = Client(self._cluster.node_unix_address, self._cluster.secret,
                              role="driver", log_to_driver=options.log_to_driver)

    def _connect(self, options: InitOptions) -> None:
        """Join a running cluster (``unipar start``) as a driver: it is not ours to stop."""
        from ..native.cluster.connect import ConnectError, connect_client
        try:
            self._client = connect_client(str(options.address), options.log_to_driver)
        except ConnectError as exc:
            raise BackendUnavailableError(str(exc)) from None
        self._connected = True

    def shutdown(self) -> None:
        if self._connected:   # a cluster we joined: only disconnect
            client, self._client, self._connected = self._client, None, False
            if client is not None:
                client.close()
            return
        if self._cluster is None and self._client is not None:
            # In a worker: the cluster is the driver's to stop. Stay installed, so a stray
            # unipar.shutdown() in a task cannot make the next call start a second cluster.
            install_worker_backend(self)
            return
        client, self._client = self._client, None
        cluster, self._cluster = self._cluster, None
        if client is not None and cluster is not None:
            client.close()
        if cluster is not None:
            cluster.stop()

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("the native backend is shut down")
        return self._client

    # -- tasks and objects ---------------------------------------------------------------------
    def submit(self, spec: TaskSpec) -> list[Hashable]:
        args, kwargs = _deps(spec.args, spec.kwargs)
        opts = spec.options
        return self.client.submit_task(
            spec.function, spec.function_id, spec.name, args, kwargs,
            num_returns=opts.num_returns, resources=self._demand(opts),
            max_retries=opts.max_retries, retry_exceptions=opts.retry_exceptions)

    # -- runtime envs (docs/runtime-env.md) ---------------------------------------------------
    def _demand(self, opts: TaskOptions | ActorOptions) -> dict[str, float]:
        """What to ask the engine for: the resources, plus the runtime env's tag (a key
        with amount 0), which sends the work to workers set up for that env only."""
        demand = self._scheduling.demand(opts.scheduling_strategy, resource_demand(opts))
        tag = self._env_tag(opts.runtime_env)
        if not tag:
            return demand
        key = (tuple(sorted(demand.items())), tag)
        found = self._demands.get(key)
        if found is None:   # one dict per shape: the client groups leases by it
            found = self._demands[key] = {**demand, tag: 0.0}
        return found

    def _env_tag(self, task_env: Any) -> str:
        env = merge(self._job_env, task_env)
        if not env:
            return self._inherited
        key = canonical(env)
        with self._env_lock:
            tag = self._env_tags.get(key)
            if tag is None:
                tag = self._env_tags[key] = self._ship(env)
        return tag

    def _ship(self, env: dict[str, Any]) -> str:
        """Pack ``env`` and put it in the object store (once per distinct env): nodes pull
        the spec and packages from there when a worker of this env starts. In a task of an
        env, ``env`` is merged over that env (as in Ray: a nested task inherits its
        parent's env, and its own keys override, env_vars key by key)."""
        packed = pack(env)
        spec, packages = packed.spec, self._upload(packed.packages)
        if self._inherited:
            parent = self._inherited_env()
            spec = merge(parent["spec"], spec)
            packages = {d: packages.get(d) or parent["packages"][d] for d in spec_digests(spec)}
        spec = self.client.put({"spec": spec, "packages": packages})
        self.client.promote([spec.oid])   # workers name it by id: the node must know it
        self._env_specs.append(spec)
        return ENV_TAG + spec.oid.hex()

    def _inherited_env(self) -> dict[str, Any]:
        """The shipped spec of the env this worker runs in (its packages as refs)."""
        if self._parent_env is None:
            oid = bytes.fromhex(self._inherited.partition(":")[2])
            [self._parent_env] = self.client.get([NativeRef(oid)], ENV_FETCH_TIMEOUT)
        return self._parent_env

    def _upload(self, packages: dict[str, Package]) -> dict[str, tuple[str, NativeRef]]:
        """Each package as (kind, ref): the node's kept copy when the cluster has one (an
        earlier driver uploaded the same content), else a new upload, which the node then
        keeps for later drivers (node/packages.py)."""
        if not packages:
            return {}
        found = self.client.request(lambda r: P.FindPackages(r, list(packages))).value
        refs = {d: (packages[d].kind, NativeRef(oid)) for d, oid in found.items()}
        new = {d: (p.kind, self.client.put(p.data)) for d, p in packages.items()
               if d not in found}
        if new:
            self.client.promote([ref.oid for _, ref in new.values()])
            self.client.request(lambda r: P.KeepPackages(
                r, {d: ref.oid for d, (_, ref) in new.items()}))
        return {**refs, **new}

    def put(self, value: Any) -> Hashable:
        return self.client.put(value)

    def get(self, handles: Sequence[NativeRef], timeout: float | None) -> list[Any]:
        return self.client.get(handles, timeout)

    def handle_keys(self, handles: list[NativeRef]) -> list[bytes]:
        return [h.oid for h in handles]

    def wait(self, handles: Sequence[NativeRef], num_returns: int, timeout: float | None,
             fetch_local: bool) -> Sequence[int]:
        return self.client.wait(handles, num_returns, timeout)

    def cancel(self, handle: NativeRef, force: bool, recursive: bool) -> None:
        self.client.cancel(handle, force, recursive)

    def future(self, handle: NativeRef) -> concurrent.futures.Future:
        return self.client.future(handle)

    # -- actors --------------------------------------------------------------------------------
    def create_actor(self, spec: ActorSpec) -> ActorId:
        args, kwargs = _deps(spec.args, spec.kwargs)
        opts = spec.options
        return self.client.create_actor(
            spec.cls, spec.class_id, args, kwargs, class_name=spec.meta.class_name,
            name=opts.name, get_if_exists=opts.get_if_exists, resources=self._demand(opts),
            max_restarts=opts.max_restarts, max_task_retries=opts.max_task_retries,
            concurrency=opts.concurrency(spec.meta.is_async), is_async=spec.meta.is_async,
            meta=spec.meta, detached=opts.lifetime == "detached")

    def call_actor(self, actor_id: ActorId, call: ActorCall) -> list[Hashable]:
        args, kwargs = _deps(call.args, call.kwargs)
        return self.client.call_actor(actor_id, call.method, args, kwargs, call.num_returns)

    # Generators stream: each value comes back as the worker yields it (client/streams.py).
    def submit_stream(self, spec: TaskSpec) -> Stream:
        stream = self.client.streams.open(spec.options._generator_backpressure_num_objects)
        stream.start(self.submit(header_spec(spec, Streaming, stream.header))[0])
        return EngineStream(stream)

    def call_actor_stream(self, actor_id: Any, call: ActorCall) -> Stream:
        stream = self.client.streams.open(call.backpressure)
        stream.start(self.call_actor(actor_id, header_call(call, STREAM, stream.header))[0])
        return EngineStream(stream)

    def kill_actor(self, actor_id: ActorId, no_restart: bool) -> None:
        self.client.kill_actor(actor_id, no_restart)

    def get_actor(self, name: str) -> tuple[ActorId, ActorMeta]:
        return self.client.get_actor(name)

    # -- cluster -------------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        return [{**{k: v for k, v in n.items() if k not in ("Address", "Available")},
                 "Resources": user_view(n["Resources"])} for n in self.client.nodes()]

    def cluster_resources(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for node in self.client.nodes():
            if node["Alive"]:
                for key, value in user_view(node["Resources"]).items():
                    total[key] = total.get(key, 0.0) + value
        return total

    def available_resources(self) -> dict[str, float]:
        nodes = [n for n in self.client.nodes() if n["Alive"]]
        if len(nodes) <= 1:   # one node: ask it (exact, now)
            return user_view(self.client.node_info()["available"])
        free: dict[str, float] = {}   # several: what each reported in the last second
        for node in nodes:
            for key, value in user_view(node.get("Available", node["Resources"])).items():
                free[key] = free.get(key, 0.0) + value
        return free

    def dashboard_url(self) -> str | None:
        if self._cluster is not None:
            return self._cluster.dashboard_url or None
        if self._connected:   # a cluster `unipar start` started on this machine says where
            from ..native.cluster.session import read_state
            state = read_state()
            if state.get("head") == self.client.head_address:
                return state.get("dashboard") or None
        return None

    def timeline(self) -> list[dict[str, Any]]:
        from ..native.cluster.inspect import chrome_trace, cluster_timeline
        rows = cluster_timeline(self.client.nodes(), self.client.secret)["timeline"]
        return chrome_trace(rows)

    # -- scheduling (native_scheduling.py, docs/scheduling.md) --------------------------------
    def can_grow(self) -> bool:
        return self._cluster is None   # a cluster of `unipar start`: nodes may join it

    def runtime_context(self) -> dict[str, Any]:
        return self._scheduling.runtime_context(*running())

    def create_placement_group(self, bundles: list[dict[str, float]], strategy: str,
                               name: str | None) -> str:
        return self._scheduling.create(bundles, strategy, name)

    def wait_placement_group(self, pg_id: str, timeout: float | None) -> bool:
        return self._scheduling.wait(pg_id, timeout, self._fail_infeasible)

    def remove_placement_group(self, pg_id: str) -> None:
        self._scheduling.remove(pg_id)

    def placement_group_table(self) -> list[dict[str, Any]]:
        return self._scheduling.table()


def _load_client() -> None:
    import unipar.native.client.client  # noqa: F401


def worker_setup(client: Client) -> None:
    """Called by the engine in each worker: route the public API through this worker's client."""
    install_worker_backend(NativeBackend(client))
