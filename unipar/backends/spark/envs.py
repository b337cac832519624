"""runtime_env on Spark: packages travel inside the task's payload, applied around each call.

::

    driver: merge(job env, task env) ─▶ pack() once per distinct env (zips by sha256)
            ─▶ the TaskPayload / ActorPayload carries {"spec": ..., "packages": {digest: zip}}
    executor: each package not yet in <SparkFiles root>/unipar-runtime-envs/<digest> is
              unpacked (once per executor: a file lock) ─▶ around the task or actor call:
              working dir and py_modules first on sys.path, env_vars set; undone after

Executors start with the session and are shared by all its tasks, so an env is applied around
each call (as on Dask), not given a process of its own: the working dir is importable but is
not the current directory, and a module imported stays imported in that Python worker.
Unipar's runner jobs outlive any ``SparkContext.addPyFile`` made after they started, so the
zips ride in the payload (pickled with it) instead; they are cached unpacked per executor.
pip is refused: requirements cannot be installed for one task.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from typing import Any, Iterator, Mapping

from ...runtime_env import applied_around, canonical, install_shipped, merge, pack, refuse_pip

PIP_REASON = ("Spark executors start with the session and are shared by its tasks, so "
              "requirements cannot be installed for one task")

_lock = threading.Lock()
_packed: dict[str, dict[str, Any]] = {}   # canonical env -> what tasks carry (driver side)


def check(env: Mapping[str, Any] | None) -> None:
    """At ``init``: refuse a job env this backend cannot apply."""
    refuse_pip(env or {}, "spark", PIP_REASON)


def ship(job_env: Mapping[str, Any] | None,
         task_env: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What a task or actor payload carries for ``task_env`` over ``job_env`` (None: none).

    Raises:
        RuntimeEnvNotSupported: the env asks for pip.
        ValueError: a package is over the size limit (see runtime_env.pack).
    """
    env = merge(job_env, task_env)
    if not env:
        return None
    refuse_pip(env, "spark", PIP_REASON)
    key = canonical(env)
    with _lock:
        shipped = _packed.get(key)
        if shipped is None:
            packed = pack(env)
            shipped = _packed[key] = {"spec": packed.spec, "packages": {
                d: p.data for d, p in packed.packages.items()}}
    return shipped


@contextlib.contextmanager
def applied(shipped: Mapping[str, Any] | None) -> Iterator[None]:
    """Executor side: run the body under ``shipped``; nothing for None. Raises whatever
    stops the set-up (a bad archive, a full disk)."""
    if not shipped:
        yield
        return
    spec, packages = shipped["spec"], shipped["packages"]
    working, modules = install_shipped(_cache_dir(), spec,
                                       lambda ds: [packages[d] for d in ds])
    with applied_around(([working] if working else []) + modules, spec.get("env_vars", {})):
        yield


def _cache_dir() -> str:
    """In the application's files folder (Spark removes it with the application)."""
    try:
        from pyspark import SparkFiles
        base = SparkFiles.getRootDirectory()
    except Exception:   # no SparkContext here (a unit test): a temp folder
        base = tempfile.gettempdir()
    return os.path.join(base, "unipar-runtime-envs")
