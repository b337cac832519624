"""Placement groups: resources reserved together, across nodes, for tasks and actors to use.

The same calls as ``ray.util.placement_group``::

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD", name="pair")
    unipar.get(pg.ready(), timeout=30)          # or pg.wait(30) -> bool
    f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
    f.options(placement_group=pg, bundle_index=1).remote()       # the short spelling
    remove_placement_group(pg)                   # the bundles' resources come back

Strategies: ``PACK`` (as few nodes as possible, spread if it must), ``SPREAD`` (one bundle per
node where it can), ``STRICT_PACK`` (all on one node), ``STRICT_SPREAD`` (each on its own node).
The reservation is all or nothing: no bundle is held until every bundle has a place. A group
that no set of live nodes could ever hold fails ``ready()``/``wait()`` with
InfeasibleResourcesError where the cluster cannot grow; where it can, it waits (with a warning)
for a node that fits. Each backend says what it does with groups in docs/scheduling.md.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .. import _state
from ..options import TaskOptions, check_bundles
from ..refs import ObjectRef
from ..remote import RemoteFunction
from .._strategies import PlacementGroupSchedulingStrategy

__all__ = ["PlacementGroup", "placement_group", "remove_placement_group", "get_placement_group",
           "placement_group_table", "PlacementGroupSchedulingStrategy", "STRATEGIES"]

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementGroup:
    """A handle to one placement group; picklable, so tasks and actors may use it too."""

    def __init__(self, pg_id: Any, bundles: Sequence[Mapping[str, float]], strategy: str,
                 name: str | None = None) -> None:
        self.id = pg_id
        self.bundle_specs = [dict(b) for b in bundles]
        self.strategy = strategy
        self.name = name

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self) -> ObjectRef:
        """A ref that resolves to this group once every bundle is reserved; its ``get``
        raises InfeasibleResourcesError for a group the cluster can never hold, and
        ValueError for one removed first."""
        return RemoteFunction(_wait_ready, _READY_OPTIONS).remote(self)

    def wait(self, timeout_seconds: float | None = 30) -> bool:
        """Block until the group is reserved (True) or ``timeout_seconds`` pass (False).

        Raises:
            InfeasibleResourcesError: the cluster can never hold it (and cannot grow).
            ValueError: the group was removed.
        """
        if timeout_seconds is not None and timeout_seconds < 0:
            raise ValueError(f"timeout_seconds must be None or >= 0, got {timeout_seconds!r}")
        return _state.backend().wait_placement_group(self.id, timeout_seconds)

    def __reduce__(self):
        return (PlacementGroup, (self.id, self.bundle_specs, self.strategy, self.name))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup({self.id!r}, {self.strategy}, {self.bundle_specs})"


def _wait_ready(pg: PlacementGroup) -> PlacementGroup:
    pg.wait(None)
    return pg


# Zero resources: the check must not need a slot the group itself may hold.
_READY_OPTIONS = TaskOptions(num_cpus=0, max_retries=0, name="placement_group.ready")


def placement_group(bundles: Sequence[Mapping[str, float]], strategy: str = "PACK",
                    name: str = "", lifetime: str | None = None) -> PlacementGroup:
    """Ask the cluster to reserve ``bundles`` (dicts of resource -> amount, e.g. ``{"CPU": 1,
    "GPU": 1}``) together; returns at once, ``ready()``/``wait()`` say when it holds them.

    Raises:
        ValueError: no bundles, an empty or negative bundle, an unknown strategy, or a
            ``name`` another live group has.
    """
    bundle_list = check_bundles(bundles)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {name!r}")
    if lifetime not in (None, "detached"):
        raise ValueError(f"lifetime must be None or 'detached', got {lifetime!r}")
    pg_id = _state.backend().create_placement_group(bundle_list, strategy, name or None)
    return PlacementGroup(pg_id, bundle_list, strategy, name or None)


def remove_placement_group(pg: PlacementGroup) -> None:
    """Release the group's reservations; tasks and actors still in it are stopped (as in Ray).
    Removing a group twice is allowed."""
    if not isinstance(pg, PlacementGroup):
        raise TypeError(f"remove_placement_group() takes a PlacementGroup, got {type(pg).__name__}")
    _state.backend().remove_placement_group(pg.id)


def placement_group_table(pg: PlacementGroup | None = None) -> Any:
    """The groups this cluster knows (by id), or the row of ``pg``. A row holds
    ``placement_group_id``, ``name``, ``strategy``, ``state`` (PENDING, CREATED, INFEASIBLE,
    REMOVED), ``bundles`` (index -> resources) and ``bundles_to_node_id`` (index -> node)."""
    rows = _state.backend().placement_group_table()
    if pg is None:
        return {row["placement_group_id"]: row for row in rows}
    return next((row for row in rows if row["handle"] == pg.id), {})


def get_placement_group(name: str) -> PlacementGroup:
    """The live group created with ``name``.

    Raises:
        ValueError: no live group has that name.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"get_placement_group() takes a group name, got {name!r}")
    backend = _state.backend()
    for row in backend.placement_group_table():
        if row["name"] == name and row["state"] != "REMOVED":
            bundles = [row["bundles"][i] for i in sorted(row["bundles"])]
            return PlacementGroup(row["handle"], bundles, row["strategy"], name)
    raise ValueError(f"no placement group named {name!r} (placement_group(..., name=...) "
                     "makes one; removed groups are gone)")
