"""The private Dask cluster the ``dask`` backend starts when no address is given.

One ``dask scheduler`` and ``dask worker`` processes (with nannies), started as separate
programs on 127.0.0.1, one single-threaded worker per CPU slot, each declaring its share of the
CPU/GPU/custom resources asked of ``unipar.init``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from typing import Any

from ...exceptions import BackendUnavailableError
from ...options import InitOptions
from . import actors as worker_side

__all__ = ["LocalProcesses", "split", "worker_groups"]


def split(total: float, parts: int) -> list[float]:
    """Whole units round-robin over ``parts`` workers; a fractional rest goes to the first."""
    whole = int(math.floor(total))
    base, extra = divmod(whole, parts)
    shares = [float(base + (1 if i < extra else 0)) for i in range(parts)]
    shares[0] += total - whole
    return shares


def worker_groups(options: InitOptions) -> list[tuple[int, dict[str, float], str | None]]:
    """Workers to start: (how many, resources each, CUDA_VISIBLE_DEVICES) per distinct kind."""
    n = options.num_cpus or os.cpu_count() or 1
    gpus = split(float(options.num_gpus or 0), n)
    custom = {name: split(float(amount), n) for name, amount in options.resources.items()}
    groups: list[tuple[int, dict[str, float], str | None]] = []
    next_gpu = 0
    for i in range(n):
        resources = {"CPU": 1.0}
        visible = None
        if gpus[i]:
            resources["GPU"] = gpus[i]
            count = max(1, int(gpus[i]))
            visible = ",".join(str(g) for g in range(next_gpu, next_gpu + count))
            next_gpu += count
        for name, shares in custom.items():
            if shares[i]:
                resources[name] = shares[i]
        if groups and groups[-1][1] == resources and visible is None and groups[-1][2] is None:
            groups[-1] = (groups[-1][0] + 1, resources, None)
        else:
            groups.append((1, resources, visible))
    return groups


class LocalProcesses:
    """A private Dask cluster: a ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1.

    Started as separate programs rather than with ``LocalCluster``: its workers are spawned with
    multiprocessing, which re-imports the user's ``__main__`` (a script without an
    ``if __name__ == "__main__"`` guard would start unipar again in every worker). Every process
    watches the driver's pid and exits if it dies; ``close`` stops them all and removes the temp
    directory (scheduler file, worker scratch space, logs).
    """

    def __init__(self, options: InitOptions, start_timeout: float = 60.0) -> None:
        import tempfile
        import time
        self.directory = tempfile.mkdtemp(prefix="unipar-dask-")
        self.processes: list[Any] = []
        scheduler_file = os.path.join(self.directory, "scheduler.json")
        env = dict(os.environ)
        env.update({
            "UNIPAR_DASK_DRIVER_PID": str(os.getpid()),
            "UNIPAR_DASK_DIRECTORY": self.directory,
            "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(worker_side.ALLOWED_FAILURES),
            "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
            "DASK_DISTRIBUTED__ADMIN__LOG_LENGTH": "0",
            # Scratch space (the scheduler's too) inside our directory, removed by close().
            "DASK_TEMPORARY_DIRECTORY": self.directory,
        })
        env.pop("UNIPAR_ADDRESS", None)
        preload = ["--preload", "unipar.backends.dask.actors"]
        self._spawn("scheduler", [sys.executable, "-m", "distributed.cli.dask_scheduler",
                                  "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  # Its HTTP server (/health, /metrics) runs even without the
                                  # dashboard, on every interface unless told otherwise.
                                  "--dashboard-address", "127.0.0.1:0",
                                  "--scheduler-file", scheduler_file, *preload], env)
        deadline = time.monotonic() + start_timeout
        while not os.path.exists(scheduler_file):
            if time.monotonic() > deadline or self.processes[0].poll() is not None:
                self.close()
                raise BackendUnavailableError(f"the local Dask scheduler did not start: {self.log_tail()}")
            time.sleep(0.05)
        for i, (count, resources, visible) in enumerate(worker_groups(options)):
            worker_env = dict(env)
            if visible is not None:
                worker_env["CUDA_VISIBLE_DEVICES"] = visible
            self._spawn(f"workers-{i}", [
                sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                scheduler_file, "--nthreads", "1", "--nworkers", str(count), "--host", "127.0.0.1",
                "--no-dashboard", "--dashboard-address", "127.0.0.1:0",   # as the scheduler's
                "--name", f"unipar-{i}", "--death-timeout", "60",
                "--local-directory", self.directory,
                "--resources", " ".join(f"{k}={v:g}" for k, v in resources.items()),
                *preload, "--preload-nanny", "unipar.backends.dask.actors"], worker_env)
        self.expected_workers = options.num_cpus or os.cpu_count() or 1
        self.scheduler_file = scheduler_file

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        import subprocess
        log_file = open(os.path.join(self.directory, f"{name}.log"), "wb")
        try:
            self.processes.append(subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, start_new_session=True))
        finally:
            log_file.close()

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for name in sorted(os.listdir(self.directory)) if os.path.isdir(self.directory) else []:
            if name.endswith(".log"):
                with open(os.path.join(self.directory, name), errors="replace") as fh:
                    out.append(f"--- {name}\n" + "".join(fh.readlines()[-lines:]))
        return "\n".join(out)

    def close(self, timeout: float = 10.0) -> None:
        """Stop every process (politely, then by force) and remove the directory. Idempotent."""
        import shutil
        import signal
        import subprocess
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in self.processes:
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, sig)
            for process in self.processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=timeout if sig == signal.SIGTERM else 5)
        self.processes = []
        shutil.rmtree(self.directory, ignore_errors=True)
