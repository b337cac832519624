"""One exception hierarchy for every backend.

A remote exception comes back from ``get()`` as an instance of *both* :class:`TaskError` and
the user's own class, so ``except ZeroDivisionError`` and ``except unipar.TaskError`` both catch
it, and ``str(err)`` carries the remote traceback. Backends build these with
:func:`capture_remote` on the worker (or wherever the exception was caught) and raise them as is:
the instances pickle, so they survive any transport.
"""

from __future__ import annotations

import traceback
import cloudpickle

__all__ = [
    "UniparError",
    "TaskError",
    "GetTimeoutError",
    "ActorDiedError",
    "WorkerCrashedError",
    "ObjectLostError",
    "ObjectStoreFullError",
    "TaskCancelledError",
    "NotSupportedError",
    "BackendUnavailableError",
    "InfeasibleResourcesError",
    "HeadUnavailableError",
    "ResourcesBusyWarning",
    "InfeasibleWarning",
    "capture_remote",
]


class UniparError(Exception):
    """Base of every error unipar raises on its own account."""


class GetTimeoutError(UniparError, TimeoutError):
    """``get``/``wait``-style call ran past its ``timeout``; the task itself goes on running."""


class ActorDiedError(UniparError):
    """The actor was killed, crashed, or its process or node was lost (and was not restarted)."""


class WorkerCrashedError(UniparError):
    """The process running the task died (segfault, OOM kill, lost node) and retries ran out."""


class ObjectLostError(UniparError):
    """The object's value is gone (its node was lost, or the session that owned it ended)."""


class ObjectStoreFullError(UniparError, MemoryError):
    """The object store is full and spilling to disk could not make room."""


class HeadUnavailableError(UniparError):
    """The cluster's head (native backend) did not answer for as long as the call may wait.

    Running work goes on without the head; only what needs it (the node list, named actors,
    a new driver's first call) waits, up to a bound, then raises this. The message names what
    waited and since when; `unipar start --head` on the head's machine brings the head back."""


class InfeasibleResourcesError(UniparError, ValueError):
    """A task or actor asks for more resources than any node has; it could never run."""


class ResourcesBusyWarning(UserWarning):
    """An actor asks for resources that running tasks and live actors hold: it waits for them."""


class InfeasibleWarning(ResourcesBusyWarning):
    """A task, actor or placement group asks for more than any node has now, on a cluster that
    may grow: it waits for a node that fits (Ray's "infeasible" pending state)."""


class BackendUnavailableError(UniparError, ImportError):
    """The chosen backend cannot start: an extra is not installed or a service is unreachable.

    The message names what is missing and how to get it (for example
    ``pip install 'unipar[dask]'``).
    """


class NotSupportedError(UniparError, NotImplementedError):
    """This backend has no such feature; the message names the engine's own tool for it
    (for example ``unipar.timeline()`` on Dask: its dashboard's Task Stream)."""


class TaskError(UniparError):
    """A remote task or actor method raised.

    ``get()`` raises an instance whose class derives from both ``TaskError`` and the type of the
    original exception (``cause``), so both ``except TaskError`` and ``except ZeroDivisionError``
    catch it. ``remote_traceback`` holds the traceback text from where it ran.
    """

    def __init__(self, cause: BaseException | None = None, remote_traceback: str = "",
                 where: str = "") -> None:
        BaseException.__init__(self, cause)  # not super(): a dual class would reach the user's __init__
        self.cause = cause
        self.remote_traceback = remote_traceback
        self.where = where

    def __str__(self) -> str:
        kind = type(self.cause).__name__ if self.cause is not None else "Exception"
        head = f"{kind}: {self.cause}" if self.cause is not None else "remote task failed"
        where = f" (raised in {self.where})" if self.where else ""
        tb = f"\n\nRemote traceback{where}:\n{self.remote_traceback.rstrip()}" if self.remote_traceback else ""
        return head + tb

    def __reduce__(self):
        # Dual classes are made at run time, so pickle the recipe, not the class.
        return (_rebuild_task_error, (_dumps_cause(self.cause), self.remote_traceback, self.where))

    @classmethod
    def from_cause(cls, cause: BaseException, remote_traceback: str = "", where: str = "") -> "TaskError":
        """An instance of TaskError *and* ``type(cause)`` (falls back to plain TaskError)."""
        if isinstance(cause, TaskError):
            return cause
        dual = _dual_class(type(cause))
        err = TaskError.__new__(dual) if dual is not None else TaskError.__new__(TaskError)
        TaskError.__init__(err, cause, remote_traceback, where)
        err.args = cause.args
        if dual is not None:
            # Attributes the user's exception carries (errno, filename, custom fields) stay readable.
            for key, value in getattr(cause, "__dict__", {}).items():
                err.__dict__.setdefault(key, value)
        return err


_DUAL_CACHE: dict[type, type | None] = {}


class TaskCancelledError(TaskError):
    """The task was cancelled with ``unipar.cancel`` before it produced a result.

    Also a :class:`TaskError`, as Ray raises ``RayTaskError(TaskCancelledError)`` and its docs
    catch ``RayTaskError``: both ``except TaskCancelledError`` and ``except TaskError`` work.
    """

    def __init__(self, message: str = "the task was cancelled") -> None:
        TaskError.__init__(self, None)
        self.args = (message,)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "the task was cancelled"

    def __reduce__(self):
        return (type(self), tuple(self.args[:1]))


def _dual_class(cause_type: type) -> type | None:
    if cause_type in _DUAL_CACHE:
        return _DUAL_CACHE[cause_type]
    try:
        dual = type(f"TaskError({cause_type.__name__})", (TaskError, cause_type), {
            "__init__": TaskError.__init__,
            "__str__": TaskError.__str__,
            "__reduce__": TaskError.__reduce__,
            "__module__": cause_type.__module__,
        })
        dual.__qualname__ = dual.__name__
    except TypeError:  # final classes, incompatible layouts
        dual = None
    _DUAL_CACHE[cause_type] = dual
    return dual


def _dumps_cause(cause: BaseException | None) -> bytes:
    try:
        return cloudpickle.dumps(cause)
    except Exception:  # an exception holding an unpicklable field
        return cloudpickle.dumps(RuntimeError(f"{type(cause).__name__}: {cause}"))


def _rebuild_task_error(cause_bytes: bytes, remote_traceback: str, where: str) -> TaskError:
    try:
        cause = cloudpickle.loads(cause_bytes)
    except Exception as exc:  # the class is not importable here
        cause = RuntimeError(f"unpicklable remote exception ({exc})")
    return TaskError.from_cause(cause, remote_traceback, where)


def capture_remote(exc: BaseException, where: str = "") -> UniparError:
    """Turn an exception caught where a task ran into the error ``get()`` must raise.

    Errors unipar raised itself (a dependency's ``TaskError``, ``ActorDiedError``, ...) pass through
    unchanged, so a task that depends on a failed task fails with the same error.
    """
    if isinstance(exc, UniparError):
        return exc
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return TaskError.from_cause(exc, tb, where)
