"""A head started again over nodes that still run, and finding every daemon ``unipar start`` made.

``unipar start --head`` on a machine whose head died but whose nodes still run starts only a
head, on the recorded address, with the recorded secret; it reloads the tables it wrote
(``head.json``, :mod:`..head.journal`) and the nodes, which retry all along, register again::

    cluster.json: head dead, nodes alive ─▶ restart_head(): bind the same port, launch the head
                                             with state_file=head.json ─▶ READY ─▶ nodes rejoin

Every daemon started here carries ``UNIPAR_STARTED_BY=<state dir>`` in its environment (and
passes it on to its workers), so :func:`marked` finds them even when ``cluster.json`` was lost
or overwritten.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import psutil

from . import session
from .launcher import ClusterConfig, LocalCluster, _listen_tcp

MARKER_ENV = "UNIPAR_STARTED_BY"   # an internal hand-off to our daemons, not a setting


@contextlib.contextmanager
def marking() -> Iterator[None]:
    """Within it, processes this one starts inherit the marker of this state directory."""
    before = os.environ.get(MARKER_ENV)
    os.environ[MARKER_ENV] = os.path.abspath(session.state_dir())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MARKER_ENV, None)
        else:
            os.environ[MARKER_ENV] = before


def marked() -> list[psutil.Process]:
    """Every process of this user that carries this state directory's marker — never this
    process or one of its ancestors (a test that ran ``unipar start`` in-process)."""
    want = os.path.abspath(session.state_dir())
    mine = {os.getpid()} | {p.pid for p in psutil.Process().parents()}
    found = []
    for proc in psutil.process_iter(["uids"]):
        if proc.pid in mine:
            continue
        try:
            if proc.info["uids"] and proc.info["uids"].real != os.getuid():
                continue
            if proc.environ().get(MARKER_ENV) == want:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            pass
    return found


def restart_head(config: ClusterConfig, head_address: str, secret: bytes
                 ) -> tuple[int, float]:
    """Start a head alone at ``head_address`` (``tcp://HOST:PORT``), reloading ``head.json``.
    Returns its ``(pid, create_time)``. Raises RuntimeError if it does not start."""
    host, _, port = head_address.removeprefix("tcp://").rpartition(":")
    bind_host = config.host if config.host in ("0.0.0.0", "") else host
    cluster = LocalCluster(config, secret)
    sock = _listen_tcp(bind_host, int(port))
    try:
        read_fd, proc, module = cluster._launch("unipar.native.head", {
            "host": bind_host, "advertise": host, "detached": True,
            "node_timeout": config.node_timeout, "state_file": session.head_state_path()},
            {"tcp_fd": sock})
    finally:
        sock.close()
    try:
        cluster._read_ready(read_fd, proc, module)
    except RuntimeError:
        cluster.stop()
        raise
    finally:
        os.close(read_fd)
    return proc.pid, psutil.Process(proc.pid).create_time()


def head_record(state: dict[str, Any], pid: int, create_time: float) -> dict[str, Any]:
    """``state`` with its head record replaced by the new head's."""
    procs = [r for r in state.get("procs", []) if r.get("role") != "head"]
    return dict(state, procs=[{"pid": pid, "role": "head", "create_time": create_time}, *procs])
