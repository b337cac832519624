"""unipar: one Ray-style API for parallel and distributed Python, on several engines.

Importing unipar starts nothing and imports no engine library (no dask, pyspark or ray).
"""

from . import exceptions
from .api import (available_resources, backend_name, cancel, cluster_resources,
                  dashboard_url, get, get_actor, init, is_initialized, kill, nodes, progress,
                  put, shutdown, timeline, wait)
from .exceptions import (ActorDiedError, BackendUnavailableError, GetTimeoutError,
                         NotSupportedError,
                         InfeasibleResourcesError, InfeasibleWarning, ObjectLostError,
                         ResourcesBusyWarning, ObjectStoreFullError,
                         TaskCancelledError, TaskError, UniparError, WorkerCrashedError)
from .generators import DynamicObjectRefGenerator, ObjectRefGenerator
from .refs import ObjectRef
from .remote import ActorClass, ActorHandle, ActorMethod, RemoteFunction, method, remote
from .runtime_context import RuntimeContext, get_runtime_context

__version__ = "0.1.0"

__all__ = [
    "__version__", "exceptions",
    "init", "shutdown", "is_initialized", "backend_name",
    "remote", "method", "get", "put", "wait", "cancel", "kill", "get_actor",
    "nodes", "cluster_resources", "available_resources",
    "dashboard_url", "timeline", "progress", "NotSupportedError",
    "ObjectRef", "ObjectRefGenerator", "DynamicObjectRefGenerator", "ActorHandle", "ActorClass", "ActorMethod", "RemoteFunction",
    "UniparError", "TaskError", "GetTimeoutError", "ActorDiedError", "WorkerCrashedError",
    "ObjectLostError", "ObjectStoreFullError", "TaskCancelledError", "BackendUnavailableError",
    "InfeasibleResourcesError", "ResourcesBusyWarning", "InfeasibleWarning",
    "get_runtime_context", "RuntimeContext",
]
