"""Starting worker processes the plain way, and telling the starter a daemon is ready.

Standard library only: the node (pool.py) and the head import it; the fast path that forks
workers from a fork server is boot.py's :class:`~.boot.WorkerLauncher`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Protocol


class Launcher(Protocol):
    """Something that starts worker processes (boot.WorkerLauncher forks them)."""

    def start(self, wid: str, role: str, node_address: str, worker_setup: str,
              secret_hex: bytes, cuda: str | None = None, runtime_env: str = "") -> object: ...


def spawn_worker(wid: str, role: str, node_address: str, worker_setup: str, secret_hex: bytes,
                 cuda: str | None = None, runtime_env: str = "") -> subprocess.Popen:
    """Start ``python -m unipar.native.worker``; the secret goes through its stdin pipe, never
    argv or the environment. The pipe then stays open: when the node dies, the worker reads EOF
    and exits."""
    env = dict(os.environ)
    env.update(UNIPAR_NODE_ADDRESS=node_address, UNIPAR_WORKER_ID=wid, UNIPAR_WORKER_ROLE=role,
               UNIPAR_WORKER_SETUP=worker_setup)
    if cuda is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda
    if runtime_env:   # the worker sets the env up before it runs anything
        env["UNIPAR_RUNTIME_ENV"] = runtime_env
    proc = subprocess.Popen([sys.executable, "-m", "unipar.native.worker"],
                            stdin=subprocess.PIPE, env=env, close_fds=True)
    assert proc.stdin is not None
    proc.stdin.write(secret_hex + b"\n")
    proc.stdin.flush()
    return proc


def report_ready(cfg: dict, line: str) -> None:
    """Tell the starter our addresses on its dedicated pipe (stdout stays the user's)."""
    fd = cfg.get("ready_fd")
    if fd is None:
        sys.stdout.write(line)
        sys.stdout.flush()
        return
    os.write(fd, line.encode())
    os.close(fd)
