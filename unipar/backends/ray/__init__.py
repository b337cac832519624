"""The ``ray`` backend: unipar tasks and actors as Ray's own remote functions and actors.

Mostly a pass-through. Handles are Ray ``ObjectRef`` s and actor ids are Ray ``ActorHandle`` s
(both hashable, picklable and usable inside Ray workers). What the package adds is where Ray's
behaviour differs from unipar's contract::

    f.remote(ref, [ref2])  --api-->  TaskSpec  --submit-->
                                ray_fn.remote(ray_ref, [ObjectRef(ray_ref2)])
                                       top-level unipar refs become Ray refs (Ray resolves them);
                                       nested ones stay unipar refs wrapping Ray refs (Ray leaves
                                       nested refs alone, which is unipar's rule too)
    ray_fn = ray.remote(task_body(f))   cached per function_id; the body installs a worker-side
                                       RayBackend before user code, so unipar.get/.remote work
                                       inside tasks (Ray releases the CPU while they block)
    get/wait/future    Ray errors become unipar's: RayTaskError -> TaskError-and-original-type,
                       ActorDiedError -> ActorDiedError, GetTimeoutError -> GetTimeoutError, ...

Where it runs: with no address it starts a private local Ray instance bound to 127.0.0.1, with
usage stats off, token authentication on (a per-process token kept in the environment, never
written to ``~/.ray``) and its session files in a temporary directory removed at shutdown. With
an address (``auto``, ``host:port``, ``ray://host:10001``) it joins that cluster.

The modules, by role (imports point down the list only)::

    backend.py    RayBackend: the seam's methods, lifecycle, objects, tasks, placement groups
    actors.py     RayActors: creating, calling, killing and looking up Ray actors by name
    worker.py     what Ray runs in its workers: the task body and the actor subclass
    session.py    the private local instance: environment, temporary directory, reaping
    translate.py  unipar <-> Ray: errors, options, arguments, resources

Importing this package imports nothing (the table names ``unipar.backends.ray.backend``).
"""
