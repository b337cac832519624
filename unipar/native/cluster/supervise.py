"""``unipar start --head --supervise``: a small process that starts the head again when it dies.

It polls the head's record in ``cluster.json`` and, when that process is gone, does what
``unipar start --head`` does over live nodes (:func:`.revive.restart_head`): a head on the same
address reloads ``head.json``, the nodes rejoin by themselves, named actors resolve again::

    supervisor ─ every 0.5 s ─▶ head alive?  yes ─▶ sleep
                                             no  ─▶ restart_head() ─▶ cluster.json: new head
                                                    (failed: again after 1 s, 2 s, ... 10 s)

It runs as long as ``cluster.json`` records it: ``unipar stop`` terminates it first (it is
recorded before the daemons) and clears the state, so it never races a stop. Its output goes
to ``logs/supervisor.log`` in the state directory. It carries ``UNIPAR_STARTED_BY`` like every
daemon ``unipar start`` makes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Any

import psutil

from . import revive, session
from .launcher import ClusterConfig

POLL = 0.5                        # s between looks at the head
RETRY_FIRST, RETRY_MAX = 1.0, 10.0   # s between failed restarts
FIND_RECORD = 30.0                # s the supervisor waits for `unipar start` to record it


def spawn(config: ClusterConfig) -> dict[str, Any]:
    """Start a detached supervisor for this state directory's head; returns its record for
    ``cluster.json`` (the caller writes it there, first among the records)."""
    log_dir = config.log_dir or os.path.join(session.ensure_state_dir(), "logs")
    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, "supervisor.log"), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "unipar.native.cluster.supervise",
             json.dumps(dataclasses.asdict(config))],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True)
    return {"pid": proc.pid, "role": "supervisor",
            "create_time": psutil.Process(proc.pid).create_time()}


def _live(record: dict[str, Any]) -> bool:
    try:
        proc = psutil.Process(record["pid"])
        return (abs(proc.create_time() - record["create_time"]) < 0.01
                and proc.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
        return False


def _mine(state: dict[str, Any]) -> bool:
    return any(r.get("role") == "supervisor" and r.get("pid") == os.getpid()
               for r in state.get("procs", []))


def supervise(config: ClusterConfig) -> int:
    """Watch and restart the head until ``cluster.json`` no longer records this process."""
    began, seen, delay = time.monotonic(), False, RETRY_FIRST
    while True:
        time.sleep(POLL)
        state = session.read_state()
        if not _mine(state):
            if seen or time.monotonic() - began > FIND_RECORD:
                print("supervisor: no longer recorded in cluster.json: stopping", flush=True)
                return 0
            continue
        seen = True
        head = next((r for r in state["procs"] if r.get("role") == "head"), None)
        if head is None or _live(head):
            continue
        delay = RETRY_FIRST if _restart(config, state, head) else min(delay * 2, RETRY_MAX)
        if delay > RETRY_FIRST:
            time.sleep(delay)


def _restart(config: ClusterConfig, state: dict[str, Any], head: dict[str, Any]) -> bool:
    """Start the head again; True when it runs (and ``cluster.json`` records it)."""
    secret = session.load_secret()
    if secret is None:
        print(f"supervisor: the head died and {session.secret_path()} is gone", flush=True)
        return False
    print(f"supervisor: the head (pid {head.get('pid')}) died at "
          f"{time.strftime('%H:%M:%S')}: starting it again at {state['head']}", flush=True)
    try:
        pid, created = revive.restart_head(config, state["head"], secret)
    except (RuntimeError, OSError) as exc:
        print(f"supervisor: could not start the head again: {exc}", flush=True)
        return False
    latest = session.read_state()   # a node may have joined meanwhile
    if not _mine(latest):           # `unipar stop` ran meanwhile: stop what we started
        psutil.Process(pid).terminate()
        return True
    session.write_state(revive.head_record(latest, pid, created))
    print(f"supervisor: head started again (pid {pid})", flush=True)
    return True


def main(argv: list[str]) -> int:
    return supervise(ClusterConfig(**json.loads(argv[0])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
