"""The ``ray`` backend: unipar tasks and actors as Ray's own remote functions and actors.

Mostly a pass-through. Handles are Ray ``ObjectRef`` s and actor ids are Ray ``ActorHandle`` s
(both hashable, picklable and usable inside Ray workers). What this module adds is where Ray's
behaviour differs from unipar's contract::

    f.remote(ref, [ref2])  --api-->  TaskSpec  --submit-->
                                ray_fn.remote(ray_ref, [ObjectRef(ray_ref2)])
                                       top-level unipar refs become Ray refs (Ray resolves them);
                                       nested ones stay unipar refs wrapping Ray refs (Ray leaves
                                       nested refs alone, which is unipar's rule too)
    ray_fn = ray.remote(_task_body(f))  cached per function_id; the body installs a worker-side
                                       RayBackend before user code, so unipar.get/.remote work
                                       inside tasks (Ray releases the CPU while they block)
    get/wait/future    Ray errors become unipar's: RayTaskError -> TaskError-and-original-type,
                       ActorDiedError -> ActorDiedError, GetTimeoutError -> GetTimeoutError, ...

Where it runs: with no address it starts a private local Ray instance bound to 127.0.0.1, with
usage stats off, token authentication on (a per-process token kept in the environment, never
written to ``~/.ray``) and its session files in a temporary directory removed at shutdown. With
an address (``auto``, ``host:port``, ``ray://host:10001``) it joins that cluster.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Hashable, Iterator, Mapping, NoReturn, Sequence

import cloudpickle
import psutil

from .. import _state
from .._yielding import COLLECT, DYNAMIC, bound_method
from ..exceptions import (ActorDiedError, GetTimeoutError, ObjectLostError, ObjectStoreFullError,
                          TaskCancelledError, TaskError, UniparError, WorkerCrashedError)
from .._strategies import NodeAffinitySchedulingStrategy
from ..options import ActorOptions, InitOptions, TaskOptions
from ..refs import ObjectRef
from .base import (ActorCall, ActorMeta, ActorSpec, Backend, Stream, TaskSpec,
                   install_worker_backend)

__all__ = ["RayBackend", "backend_class"]

log = logging.getLogger("unipar.ray")

DEFAULT_OBJECT_STORE_BYTES = 2 * 1024**3   # the machine is shared; Ray's default is 30% of RAM
DEFAULT_NAMESPACE = "unipar"               # one namespace, so named actors are cluster-wide
_KV_NAMESPACE = "unipar"                   # Ray's internal KV: actor metadata by actor name
_NAME_FREE_TIMEOUT_S = 30.0                # kill() waits this long for Ray to free a name

# Ray reads these when it is imported (and hands them to the processes it starts); set only
# where the user has not chosen otherwise.
_IMPORT_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",        # every worker line reaches the driver, as on other backends
}
# Read on every forwarded line: no colour codes before the "(name pid=N)" prefix.
_SESSION_ENV = {"RAY_COLOR_PREFIX": "0"}
# Ray replaces 127.0.0.1 by the machine's routable address unless it thinks it runs on one
# machine (the knob is named for macOS/Windows, where that is the default).
_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# One token per driver process: Ray's C++ side caches the token it first read.
_AUTH_TOKEN = secrets.token_hex(32)
# Ray's ray.init() sets RAY_AUTH_MODE=token for a new local cluster and leaves it set; left there,
# the next session would take it for the user's choice, start no token of its own, and the new
# cluster's daemons would refuse the driver (InvalidAuthToken). Put back to what it was before.
_RAY_SET_ENV = ("RAY_AUTH_MODE",)


def _ray() -> Any:
    import ray
    return ray


def _joins_loopback(address: str) -> bool:
    """Whether the cluster at ``address`` listens on loopback (so must this driver: Ray would
    otherwise bind it to the machine's routable address, which such a cluster cannot reach).

    ``auto`` means ``RAY_ADDRESS``, else the cluster ``ray start`` last recorded on this machine.
    """
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
            record = os.path.join(base, "ray", "ray_current_cluster")   # as Ray looks for it
            with contextlib.suppress(OSError):
                with open(record) as file:
                    address = file.read().strip()
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


# -- errors -------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")   # Ray colours the "ray::f()" header of tracebacks


def _translate(exc: BaseException) -> BaseException:
    """The unipar error ``get`` raises for a Ray error (other exceptions pass unchanged)."""
    from ray import exceptions as rex
    if isinstance(exc, UniparError) or not isinstance(exc, rex.RayError):
        return exc
    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause
        if isinstance(cause, rex.RayError) and not isinstance(cause, rex.RayTaskError):
            return _translate(cause)   # e.g. a task that called ray.get on a dead actor
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


def _reraise(exc: Exception) -> NoReturn:
    """Raise what unipar raises for ``exc`` (called from an ``except`` block)."""
    translated = _translate(exc)
    if translated is exc:
        raise exc
    raise translated from None


# -- worker side --------------------------------------------------------------------------------

def _ensure_worker_backend() -> None:
    """Make the public API work inside a Ray worker (nested tasks, get/wait in tasks)."""
    if _state.current() is None:
        install_worker_backend(RayBackend.for_worker())


def _task_body(function: Callable[..., Any]) -> Callable[..., Any]:
    """What Ray runs for a unipar task: the user's function, after the worker setup."""
    def body(*args: Any, **kwargs: Any) -> Any:
        _ensure_worker_backend()
        return function(*args, **kwargs)

    # Ray streams only what it sees is a generator function: keep that kind.
    def generator_body(*args: Any, **kwargs: Any) -> Any:
        _ensure_worker_backend()
        yield from function(*args, **kwargs)

    async def async_generator_body(*args: Any, **kwargs: Any) -> Any:
        _ensure_worker_backend()
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


def _actor_class(cls: type) -> type:
    """A subclass of the user's class whose constructor sets up the worker first.

    A subclass keeps everything Ray looks at: the class name (the print prefix), the methods,
    and which of them are ``async def`` (an async actor runs an event loop).
    """
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        _ensure_worker_backend()
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


# -- options ------------------------------------------------------------------------------------

_TASK_DEFAULTS = TaskOptions()   # equal to Ray's defaults (num_cpus=1, max_retries=3, ...)


def _task_options(opts: TaskOptions) -> dict[str, Any]:
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


def _actor_options(opts: ActorOptions) -> dict[str, Any]:
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


def _refs(result: Any) -> list[Any]:
    """Ray returns None, one ref or a list of refs; the seam wants a list."""
    if result is None:
        return []
    return list(result) if isinstance(result, list) else [result]


def _share_pickle_by_value() -> None:
    """Modules registered with cloudpickle.register_pickle_by_value (unipar's test plugin does
    it for test modules) must be pickled by value by Ray's own copy of cloudpickle too."""
    from ray import cloudpickle as ray_cloudpickle
    wanted = cloudpickle.list_registry_pickle_by_value()
    for name in wanted - ray_cloudpickle.list_registry_pickle_by_value():
        module = sys.modules.get(name)
        if module is not None:
            ray_cloudpickle.register_pickle_by_value(module)


def _args(args: tuple, kwargs: Any) -> tuple[tuple, dict]:
    # Top-level unipar refs become Ray refs, which Ray resolves to values before the call.
    return (tuple(a._handle if type(a) is ObjectRef else a for a in args),
            {k: (v._handle if type(v) is ObjectRef else v) for k, v in kwargs.items()})


# -- the local Ray instance ---------------------------------------------------------------------

class _Environment:
    """Environment variables set for the session and put back at shutdown."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def track(self, keys: Sequence[str]) -> None:
        """Put ``keys`` back at shutdown to what they are now, whoever changes them later."""
        for key in keys:
            self._saved.setdefault(key, os.environ.get(key))

    def set_default(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            if key not in os.environ:
                self._saved.setdefault(key, None)
                os.environ[key] = value

    def restore(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()


def _make_temp_dir() -> str:
    # Ray puts unix sockets under it; their paths must stay under ~107 bytes.
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    return tempfile.mkdtemp(prefix="unipar-ray-", dir=base)


def _processes_using(path: str) -> list[psutil.Process]:
    """Processes whose command line names ``path`` (every Ray daemon of a session does)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid != os.getpid() and any(path in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _reap(path: str, children: Sequence[psutil.Process], timeout: float = 10.0) -> None:
    """Wait for the session's processes to exit; kill what is left after ``timeout``."""
    procs = {p.pid: p for p in [*children, *_processes_using(path)]}
    _, alive = psutil.wait_procs(list(procs.values()), timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            log.warning("killing Ray process %s left after shutdown", proc.pid)
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- the backend --------------------------------------------------------------------------------

class RayBackend(Backend):
    """unipar on Ray: a local private instance, or an existing cluster by address."""

    name = "ray"
    logs_location = ("Ray's session directory, /tmp/ray/session_latest/logs (or the "
                     "_temp_dir given to init); `ray logs` lists and prints them")

    def __init__(self) -> None:
        self._ray_mod: Any = None
        self._worker = False              # True inside a Ray worker: owns nothing
        self._env = _Environment()
        self._temp_dir: str | None = None
        self._functions: dict[str, Any] = {}                       # function_id -> ray fn
        self._configured: dict[str, tuple[TaskOptions, Any]] = {}  # function_id -> (opts, fn)
        self._classes: dict[str, Any] = {}                         # class_id -> ray class
        self._named: dict[str, Any] = {}  # name -> handle: Ray kills a named actor whose
        #                                   last handle goes, so the driver keeps one
        self._looked_up: dict[str, Any] = {}  # name -> handle from get_actor (for kill)
        self._saved_cluster_flag: bool | None = None

    @classmethod
    def for_worker(cls) -> "RayBackend":
        """A backend for code running inside a Ray worker (already connected)."""
        backend = cls()
        backend._ray_mod = _ray()
        backend._worker = True
        return backend

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, options: InitOptions) -> None:
        address = options.address
        local = address in (None, "local")
        loopback = local or (not address.startswith("ray://") and _joins_loopback(address))
        imported = "ray" in sys.modules
        if not imported:
            self._env.set_default(_IMPORT_ENV)
        if loopback:
            self._env.set_default(_LOOPBACK_ENV)   # the Ray processes we start read it too
        self._env.set_default(_SESSION_ENV)
        self._env.track(_RAY_SET_ENV)
        ray = self._ray_mod = _ray()
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
        with _quiet("ray._private.authentication.authentication_token_setup"):
            ray.init(**kwargs)

    def _local_init_kwargs(self, options: InitOptions) -> dict[str, Any]:
        if "RAY_AUTH_MODE" not in os.environ and not (
                {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ)):
            # Ray turns token auth on for a new local cluster and would save a token in
            # ~/.ray; an environment token keeps it on without writing anything.
            self._env.set_default({"RAY_AUTH_TOKEN": _AUTH_TOKEN})
        self._temp_dir = _make_temp_dir()
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
        self._named.clear()
        self._looked_up.clear()
        self._functions.clear()
        self._configured.clear()
        self._classes.clear()
        ray, self._ray_mod = self._ray_mod, None
        children = psutil.Process().children(recursive=True) if self._temp_dir else []
        try:
            if ray is not None and ray.is_initialized():
                ray.shutdown()
        finally:
            if self._temp_dir is not None:
                _reap(self._temp_dir, children)
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
        _share_pickle_by_value()
        return ray.put(value)

    def get(self, handles: Sequence[Hashable], timeout: float | None) -> list[Any]:
        ray = self._live()
        try:   # not a context manager: get is on every round trip's path
            return ray.get(handles if isinstance(handles, list) else list(handles),
                           timeout=timeout)
        except Exception as exc:
            _reraise(exc)

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
                ours.set_exception(_translate(exc))
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
        base = self._functions.get(spec.function_id)
        if base is None:
            _share_pickle_by_value()
            base = self._functions[spec.function_id] = self._live().remote(
                _task_body(spec.function))
        ray_options = _task_options(opts)
        fn = base.options(**ray_options) if ray_options else base
        self._configured[spec.function_id] = (opts, fn)
        return fn

    def submit(self, spec: TaskSpec) -> list[Hashable]:
        fn = self._remote_function(spec)
        args, kwargs = _args(spec.args, spec.kwargs)
        return _refs(fn.remote(*args, **kwargs))

    # -- actors ------------------------------------------------------------------------------
    def create_actor(self, spec: ActorSpec) -> Any:
        ray = self._live()
        cls = self._classes.get(spec.class_id)
        if cls is None:
            _share_pickle_by_value()
            cls = self._classes[spec.class_id] = ray.remote(_actor_class(spec.cls))
        args, kwargs = _args(spec.args, spec.kwargs)
        name = spec.options.name
        try:
            handle = cls.options(**_actor_options(spec.options)).remote(*args, **kwargs)
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

    def call_actor(self, actor_id: Any, call: ActorCall) -> list[Hashable]:
        args, kwargs = _args(call.args, call.kwargs)
        if call.method.startswith((COLLECT, DYNAMIC)):   # a wrapped generator method
            return _refs(actor_id.__unipar_call__.remote(call.method, *args, **kwargs))
        method = getattr(actor_id, call.method)
        if call.num_returns != 1:
            method = method.options(num_returns=call.num_returns)
        return _refs(method.remote(*args, **kwargs))

    def submit_stream(self, spec: TaskSpec) -> "_RayStream":
        # num_returns="streaming" and the backpressure bound travel in the options.
        fn = self._remote_function(spec)
        args, kwargs = _args(spec.args, spec.kwargs)
        return _RayStream(fn.remote(*args, **kwargs), self)

    def call_actor_stream(self, actor_id: Any, call: ActorCall) -> "_RayStream":
        options: dict[str, Any] = {"num_returns": "streaming"}
        if call.backpressure != -1:
            options["_generator_backpressure_num_objects"] = call.backpressure
        method = getattr(actor_id, call.method).options(**options)
        args, kwargs = _args(call.args, call.kwargs)
        return _RayStream(method.remote(*args, **kwargs), self)

    def kill_actor(self, actor_id: Any, no_restart: bool) -> None:
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

    def get_actor(self, name: str) -> tuple[Any, ActorMeta]:
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

    # -- cluster -----------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        return [{"NodeID": n["NodeID"], "Alive": n["Alive"],
                 "NodeManagerAddress": n["NodeManagerAddress"],
                 "Resources": _public_resources(n.get("Resources", {}))}
                for n in self._live().nodes()]

    def cluster_resources(self) -> dict[str, float]:
        return _public_resources(self._live().cluster_resources())

    def available_resources(self) -> dict[str, float]:
        return _public_resources(self._live().available_resources())

    # -- scheduling: Ray's own placement groups and runtime context ---------------------------
    def can_grow(self) -> bool:
        return True   # Ray keeps infeasible work pending for nodes (or an autoscaler) to come

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
        from ..exceptions import NotSupportedError
        raise NotSupportedError("unipar.timeline() is for the native backend; on ray use "
                                "ray.timeline(filename), Ray's own Chrome trace")


# How long one call to Ray's PlacementGroup.wait blocks before the group's state is read again.
_PG_WAIT_STEP_S = 1.0

_RAY_BOOKKEEPING = ("memory", "object_store_memory")


def _public_resources(resources: dict[str, float]) -> dict[str, float]:
    """CPU, GPU, custom resources and ``node:<ip>`` (every backend shows it); Ray's
    bookkeeping ones (memory, the head's marker) left out."""
    out = {"CPU": 0.0, "GPU": 0.0}
    for key, value in resources.items():
        if key in _RAY_BOOKKEEPING or key == "node:__internal_head__" or \
                key.startswith("accelerator_type:"):
            continue
        out[key] = float(value)
    return out


backend_class = RayBackend


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
