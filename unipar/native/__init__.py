"""unipar's own engine: a head, a node daemon per machine, worker processes and a shared-memory
object store per node. It knows nothing about ``unipar.backends``; the ``native`` adapter
(:mod:`unipar.backends.native`) translates between the seam and :class:`~.client.Client`.

Roles and data flow (see docs/architecture.md)::

    driver (Client) ──submit/put/get──▶ node daemon ──run_task──▶ worker (Client inside)
         ▲                                │   ▲                          │
         └────── object_ready / log ──────┘   └──────── task_done ───────┘
    head: cluster membership, resources per node, named actors (not on the per-task path)
"""
