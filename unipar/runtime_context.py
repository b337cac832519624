"""``unipar.get_runtime_context()``: where the calling code runs, as ``ray.get_runtime_context()``.

Every backend answers from its own records (docs/scheduling.md): the node id is one of
``unipar.nodes()``'s ``NodeID`` values, so it can be given to
:class:`~unipar.util.scheduling_strategies.NodeAffinitySchedulingStrategy`.
"""

from __future__ import annotations

from typing import Any

from . import _state

__all__ = ["RuntimeContext", "get_runtime_context"]


class RuntimeContext:
    """A snapshot of where the caller runs, taken when it was made (use it in the code that
    asked: a task on another worker has its own)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self._info = dict(info)

    def get_node_id(self) -> str:
        """The id of the node running this code (the driver's node on the driver)."""
        return str(self._info["node_id"])

    def get_job_id(self) -> str:
        """The id of the job (one driver's session with the cluster)."""
        return str(self._info["job_id"])

    def get_task_id(self) -> str | None:
        """The id of the running task or actor call; None on the driver."""
        return self._info.get("task_id")

    def get_actor_id(self) -> str | None:
        """The id of the actor this code runs in; None outside actors."""
        return self._info.get("actor_id")

    @property
    def node_id(self) -> str:
        return self.get_node_id()

    @property
    def job_id(self) -> str:
        return self.get_job_id()

    def get(self) -> dict[str, Any]:
        """All of it as a dict (``node_id``, ``job_id``, ``task_id``, ``actor_id``)."""
        return dict(self._info)

    def __repr__(self) -> str:
        return f"RuntimeContext({self._info!r})"


def get_runtime_context() -> RuntimeContext:
    """Where the calling code runs: node, job, task and actor ids (starts the default backend
    when none runs, as every public call does)."""
    return RuntimeContext(_state.backend().runtime_context())
