"""Scheduling strategies for ``.options(scheduling_strategy=...)``, as in
``ray.util.scheduling_strategies``: ``"DEFAULT"``, ``"SPREAD"``,
:class:`NodeAffinitySchedulingStrategy` and :class:`PlacementGroupSchedulingStrategy`
(defined in :mod:`unipar._strategies`, which options.py reads)."""

from .._strategies import (STRATEGIES, NodeAffinitySchedulingStrategy,
                           PlacementGroupSchedulingStrategy)

__all__ = ["STRATEGIES", "NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy"]
