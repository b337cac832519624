"""Helpers built on unipar's public API; each runs on every backend.

- :class:`ActorPool` — spread calls over a fixed set of actors (``ray.util.ActorPool``).
- :mod:`unipar.util.queue` — ``Queue``, a FIFO shared by drivers, tasks and actors.
- :mod:`unipar.util.multiprocessing` — ``Pool``, a drop-in for ``multiprocessing.Pool``.
- :mod:`unipar.util.joblib` — ``register_unipar()``: joblib (and scikit-learn's ``n_jobs``)
  on the cluster; needs joblib.
- :class:`UniparExecutor` — a ``concurrent.futures.Executor`` over tasks.
- :func:`placement_group` (:mod:`unipar.util.placement_group`) and
  :mod:`unipar.util.scheduling_strategies` — reserve resources together, choose where work runs.
- :func:`get_node_ip_address` — the IP of the node running the caller (its ``node:<ip>``).

Importing this package starts nothing and imports no engine library.
"""

from .actor_pool import ActorPool
from .executor import UniparExecutor
from .node_ip import get_node_ip_address
from .placement_group import (get_placement_group, placement_group, placement_group_table,
                              remove_placement_group)

__all__ = ["ActorPool", "UniparExecutor", "placement_group", "remove_placement_group",
           "get_placement_group", "placement_group_table", "get_node_ip_address"]
