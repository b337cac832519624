"""Start a node daemon quickly: its first workers are spawned before anything heavy is imported.

Run by path (``python .../unipar/native/boot.py --config JSON``), so the ``unipar`` package is not
imported yet: with only the standard library loaded, it reads the secret, starts ``prestart``
workers — which import unipar in parallel with us — and only then imports and runs
:mod:`unipar.native.node`. The workers connect to the node's Unix socket, which the starter bound
already; they wait in its backlog until the node accepts them. Cold start so costs one Python
start-up, not two in a row.

Standard library only, on purpose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any


_CHILD = "from unipar.native.worker.process import forked_main\nforked_main(secret_hex, env, lifeline)\n"


class ForkedWorker:
    """A worker forked by the fork server, with the part of ``subprocess.Popen``'s interface
    the node uses (pid, poll, kill, wait, returncode)."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.pid = process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def kill(self) -> None:
        if self.process.exitcode is None:
            self.process.kill()

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
        return self.process.exitcode


def _temp_dir_inside(parent: str) -> None:
    """Make this process's multiprocessing temp directory (``pymp-*``, where the fork server's
    socket lives) inside ``parent``. Only an atexit hook removes it otherwise, and the node ends
    with ``os._exit``; the node removes ``parent`` (its session directory) itself."""
    import multiprocessing.util
    import tempfile
    saved, tempfile.tempdir = tempfile.tempdir, parent
    try:
        multiprocessing.util.get_temp_dir()   # created now, and remembered for the process
    finally:
        tempfile.tempdir = saved


class WorkerLauncher:
    """Starts workers as children of one fork server (``multiprocessing``'s forkserver) that
    imported the worker's code once: a new worker costs a fork (milliseconds), not a Python
    start-up and imports (a third of a second here). The server starts, and imports, in
    parallel with the node itself. Workers learn that the node died from EOF on a pipe whose
    only writer is the node."""

    def __init__(self, temp_parent: str | None = None) -> None:
        import multiprocessing
        if temp_parent is not None:
            _temp_dir_inside(temp_parent)
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["unipar.native.worker.process", "unipar.backends.native"])
        self.lifeline, self._lifeline_w = self.ctx.Pipe(duplex=False)

    def start(self, wid: str, role: str, node_address: str, worker_setup: str,
              secret_hex: bytes, cuda: str | None = None, runtime_env: str = "") -> ForkedWorker:
        env = {"UNIPAR_NODE_ADDRESS": node_address, "UNIPAR_WORKER_ID": wid,
               "UNIPAR_WORKER_ROLE": role, "UNIPAR_WORKER_SETUP": worker_setup}
        if cuda is not None:
            env["CUDA_VISIBLE_DEVICES"] = cuda
        if runtime_env:   # the worker sets the env up before it runs anything
            env["UNIPAR_RUNTIME_ENV"] = runtime_env
        # ``exec`` of a two-line program: the target must be picklable by reference, and
        # naming a unipar function here would import unipar before the node needs it.
        process = self.ctx.Process(target=exec, name=f"unipar-worker-{wid}", args=(
            _CHILD, {"secret_hex": secret_hex.decode(), "env": env, "lifeline": self.lifeline}))
        process.start()
        return ForkedWorker(process)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        del sys.path[0]   # run by path: our directory must not shadow top-level modules
    cfg = json.loads(sys.argv[sys.argv.index("--config") + 1])
    secret_hex = sys.stdin.buffer.readline().strip()
    address = "unix://" + os.path.join(cfg["session_dir"], "node.sock")
    launcher = WorkerLauncher(temp_parent=cfg["session_dir"])
    workers: list[ForkedWorker] = []

    def prestart() -> None:   # the first start waits for the fork server's imports
        for i in range(int(cfg.get("prestart", 0))):
            workers.append(launcher.start(f"w{i + 1}", "task", address,
                                          cfg.get("worker_setup", ""), secret_hex))
    starting = threading.Thread(target=prestart, name="unipar-prestart")
    starting.start()
    from unipar.native.node.daemon import main as node_main   # meanwhile: our imports, in parallel
    starting.join()
    node_main(sys.argv[1:], secret=bytes.fromhex(secret_hex.decode()), prestarted=workers,
              launcher=launcher)


if __name__ == "__main__":
    main()
