"""Where a task or actor runs: ``scheduling_strategy=`` values, as in ``ray.util.scheduling_strategies``.

* ``"DEFAULT"`` (or None): the backend's own choice (native: here when there is room, else the
  least loaded node).
* ``"SPREAD"``: across the live nodes, one after the other.
* :class:`NodeAffinitySchedulingStrategy`: on one node (``soft=True``: there if it is alive,
  else anywhere).
* :class:`PlacementGroupSchedulingStrategy`: inside a bundle of a placement group (see
  :mod:`unipar.util.placement_group`); the shorter unipar spelling is
  ``.options(placement_group=pg, bundle_index=i)``.

This module is the bottom of the scheduling API: it imports nothing of unipar, so options.py can
check strategies and backends can read them. Users import these names from
:mod:`unipar.util.scheduling_strategies` (importing ``unipar.util`` from options.py would be
an import circle at run time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PlacementGroupSchedulingStrategy", "NodeAffinitySchedulingStrategy", "STRATEGIES",
           "normalize", "strategy_kind"]

#: The named strategies (strings); the others are the classes below.
STRATEGIES = ("DEFAULT", "SPREAD")


@dataclass(frozen=True)
class PlacementGroupSchedulingStrategy:
    """Run in bundle ``placement_group_bundle_index`` of ``placement_group`` (-1: any bundle).

    The task or actor takes its resources out of the bundle's reservation, not the node's."""

    placement_group: Any
    placement_group_bundle_index: int = -1
    placement_group_capture_child_tasks: bool | None = None

    def __post_init__(self) -> None:
        pg = self.placement_group
        if not (hasattr(pg, "id") and hasattr(pg, "bundle_specs")):
            raise TypeError("PlacementGroupSchedulingStrategy needs a placement group (from "
                            f"unipar.util.placement_group(...)), got {type(pg).__name__}")
        index = self.placement_group_bundle_index
        if isinstance(index, bool) or not isinstance(index, int) or index < -1:
            raise ValueError(f"placement_group_bundle_index must be an integer >= -1, got {index!r}")
        if index >= len(pg.bundle_specs):
            raise ValueError(f"placement_group_bundle_index={index} but the group has "
                             f"{len(pg.bundle_specs)} bundle(s) (0..{len(pg.bundle_specs) - 1})")


@dataclass(frozen=True)
class NodeAffinitySchedulingStrategy:
    """Run on node ``node_id`` (an id from ``unipar.nodes()`` or ``get_runtime_context()``).

    ``soft=False``: fail (the task's ``get`` raises) when that node is dead or unknown;
    ``soft=True``: run there if it is alive, else wherever the default strategy says."""

    node_id: str
    soft: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not self.node_id:
            raise TypeError(f"node_id must be a non-empty string, got {self.node_id!r}")
        if not isinstance(self.soft, bool):
            raise TypeError(f"soft must be True or False, got {self.soft!r}")


def normalize(strategy: Any, placement_group: Any = None, bundle_index: int = -1) -> Any:
    """The one strategy an options object holds: None (default), "SPREAD" or an instance.

    ``placement_group``/``bundle_index`` are the short spelling of a placement-group strategy.

    Raises:
        ValueError: an unknown name, or two strategies at once.
        TypeError: something that is not a strategy.
    """
    if placement_group is not None:
        # A placement-group strategy already there came from an earlier .options(): replaced.
        if strategy not in (None, "DEFAULT") and not isinstance(
                strategy, PlacementGroupSchedulingStrategy):
            raise ValueError("give either scheduling_strategy=... or placement_group=..., not both")
        return PlacementGroupSchedulingStrategy(placement_group, bundle_index)
    if bundle_index != -1:
        raise ValueError("bundle_index needs placement_group=...: "
                         ".options(placement_group=pg, bundle_index=i)")
    if strategy is None or strategy == "DEFAULT":
        return None
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ValueError(f"scheduling_strategy must be one of {', '.join(STRATEGIES)} or a "
                             f"strategy object, got {strategy!r}")
        return strategy
    if isinstance(strategy, (PlacementGroupSchedulingStrategy, NodeAffinitySchedulingStrategy)):
        return strategy
    raise TypeError("scheduling_strategy must be 'DEFAULT', 'SPREAD', a "
                    "NodeAffinitySchedulingStrategy or a PlacementGroupSchedulingStrategy, got "
                    f"{type(strategy).__name__}")


def strategy_kind(strategy: Any) -> str:
    """"DEFAULT", "SPREAD", "NODE_AFFINITY" or "PLACEMENT_GROUP" for a normalized strategy."""
    if strategy is None:
        return "DEFAULT"
    if isinstance(strategy, str):
        return strategy
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return "NODE_AFFINITY"
    return "PLACEMENT_GROUP"
