"""runtime_env on Dask: code shipped through Dask's own data path, applied around each call.

::

    driver: merge(job env, task env) ─▶ pack() (zips by sha256, once per distinct env)
            ─▶ client.scatter(zip bytes) once per package; the driver holds the futures
            ─▶ the task (or actor) carries {"spec": ..., "packages": {digest: future}}: Dask
               hands a task the bytes (a dependency); an actor gets the keys and reads them
    worker: for each package not in <worker local dir>/unipar-runtime-envs/<digest>:
            its bytes ─▶ unpack (once per worker machine: a file lock)
            ─▶ around the call: working dir and py_modules first on sys.path, env_vars set;
               both undone after it

Dask workers are shared by every client and run tasks in threads of one process, so an env
is applied around each call rather than given a process of its own: the working dir is
importable but is not made the current directory (one per process, shared by threads), a
module imported stays imported for later tasks of that worker, and env vars are process-wide
while the call runs. pip is refused: requirements cannot be installed for one task.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from typing import Any, Iterator, Mapping

from ...runtime_env import applied_around, canonical, install_shipped, merge, pack, refuse_pip

PIP_REASON = ("Dask workers are shared by every client and run tasks in threads of one "
              "process, so requirements cannot be installed for one task")


class Shipper:
    """The driver's side: packs each distinct env once and scatters each package once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._specs: dict[str, dict[str, Any]] = {}   # canonical env -> packed spec
        self._futures: dict[str, Any] = {}            # digest -> the scattered zip's future

    def ship(self, client: Any, job_env: Mapping[str, Any] | None,
             task_env: Mapping[str, Any] | None, by_key: bool = False) -> dict[str, Any] | None:
        """What a task (or, ``by_key``, an actor: plain data in its pickled spec) carries for
        ``task_env`` over ``job_env`` (None: no env).

        Raises:
            RuntimeEnvNotSupported: the env asks for pip.
            ValueError: a package is over the size limit (see runtime_env.pack).
        """
        env = merge(job_env, task_env)
        if not env:
            return None
        refuse_pip(env, "dask", PIP_REASON)
        key = canonical(env)
        with self._lock:
            spec = self._specs.get(key)
            if spec is None:
                packed = pack(env)
                for digest, package in packed.packages.items():
                    if digest not in self._futures:
                        self._futures[digest] = client.scatter(package.data, hash=False)
                spec = self._specs[key] = packed.spec
            packages = {d: self._futures[d].key if by_key else self._futures[d]
                        for d in _digests(spec)}
        return {"spec": spec, "packages": packages}

    def clear(self) -> None:
        """Drop the packages (at shutdown: Dask frees them once no future holds them)."""
        with self._lock:
            self._specs.clear()
            self._futures.clear()


def check(env: Mapping[str, Any] | None) -> None:
    """At ``init``: refuse a job env this backend cannot apply."""
    refuse_pip(env or {}, "dask", PIP_REASON)


def _digests(spec: Mapping[str, Any]) -> list[str]:
    return ([spec["working_dir"]] if "working_dir" in spec else []) + list(
        spec.get("py_modules", ()))


@contextlib.contextmanager
def applied(shipped: Mapping[str, Any] | None) -> Iterator[None]:
    """Worker side: run the body under ``shipped`` (from :meth:`Shipper.ship`); nothing for
    None. Raises whatever stops the set-up (a lost package, a bad archive)."""
    if not shipped:
        yield
        return
    spec, packages = shipped["spec"], shipped["packages"]
    working, modules = install_shipped(_cache_dir(), spec, lambda ds: _fetch(packages, ds))
    front = ([working] if working else []) + modules
    with applied_around(front, spec.get("env_vars", {})):
        yield


def _fetch(packages: Mapping[str, Any], digests: list[str]) -> list[bytes]:
    """The bytes of ``digests``: given (a task's resolved dependencies) or read by key (an
    actor's) through this worker's client."""
    keys = [packages[d] for d in digests if isinstance(packages[d], str)]
    read = dict(zip(keys, _gather(keys))) if keys else {}
    return [read[p] if isinstance(p, str) else p for p in (packages[d] for d in digests)]


def _gather(keys: list[str]) -> list[bytes]:
    from distributed import Future, get_client
    client = get_client()
    futures = [Future(key, client) for key in keys]
    # Dask no longer tells the scheduler about Futures built from a key: ask for them, or
    # they never learn their state (as backend._future does).
    client._send_to_scheduler({"op": "client-desires-keys", "keys": keys})
    return client.gather(futures)


def _cache_dir() -> str:
    """Beside this worker's other files (its local directory); a temp folder elsewhere."""
    try:
        from distributed import get_worker
        base = get_worker().local_directory
    except (ImportError, ValueError):
        base = tempfile.gettempdir()
    return os.path.join(base, "unipar-runtime-envs")
