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


def spawn_worker(wid: str, role: str, node_address: str, worker_setup: str, secret_hex: bytes,
                 cuda: str | None = None) -> subprocess.Popen:
    """Start ``python -m unipar.native.worker``; the secret goes through its stdin pipe, never
    argv or the environment. The pipe then stays open: when the node dies, the worker reads EOF
    and exits."""
    env = dict(os.environ)
    env.update(UNIPAR_NODE_ADDRESS=node_address, UNIPAR_WORKER_ID=wid, UNIPAR_WORKER_ROLE=role,
               UNIPAR_WORKER_SETUP=worker_setup)
    if cuda is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda
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


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        del sys.path[0]   # run by path: our directory must not shadow top-level modules
    cfg = json.loads(sys.argv[sys.argv.index("--config") + 1])
    secret_hex = sys.stdin.buffer.readline().strip()
    address = "unix://" + os.path.join(cfg["session_dir"], "node.sock")
    workers = [spawn_worker(f"w{i + 1}", "task", address, cfg.get("worker_setup", ""), secret_hex)
               for i in range(int(cfg.get("prestart", 0)))]
    from unipar.native.node import main as node_main
    node_main(sys.argv[1:], secret=bytes.fromhex(secret_hex.decode()), prestarted=workers)


if __name__ == "__main__":
    main()
