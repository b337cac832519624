"""Every message of the native protocol, one module per area; import them through
:mod:`unipar.native.wire.protocol` (``from ..wire import protocol as P; P.RunTask``).

``base.py`` (the record base class and the registry), ``connection.py`` (hello, reply, ping,
shutdown), ``tasks.py`` (tasks, leases of the direct path, streaming generators), ``objects.py``
(objects, refcounts, chunked transfer), ``actors.py``, ``cluster.py`` (head and nodes: membership,
names, where actors live, placement groups), ``observability.py`` (output, task events, lists,
timelines, logs), ``jobs.py``, ``runtime_env.py`` (packages kept for later drivers). docs/protocol.md lists each message with its module.
"""
