"""A real multi-node native cluster on this machine, started through the ``unipar`` command.

A head and node daemons run as separate, detached processes, each with its own ports and store
directory, and their own state directory (``UNIPAR_STATE_DIR``) so that nothing a developer or
another test started is touched. Drivers run as subprocesses (so they never meet the cluster a
conformance session may have running in the pytest process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Any

import psutil

CLI_TIMEOUT = 120


def base_env(state_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("UNIPAR_ADDRESS", "UNIPAR_CLUSTER_SECRET", "UNIPAR_CLUSTER_SECRET_FILE")}
    env["UNIPAR_STATE_DIR"] = state_dir
    env["UNIPAR_BACKEND"] = "native"
    # Workers import functions pickled by reference from where the test process finds them.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def unipar(env: dict[str, str], *args: str, timeout: float = CLI_TIMEOUT
           ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unipar.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class Cluster:
    state_dir: str
    env: dict[str, str]
    head: str = ""                     # tcp://127.0.0.1:PORT
    start_output: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        with open(os.path.join(self.state_dir, "cluster.json")) as f:
            return json.load(f)

    @property
    def secret_file(self) -> str:
        return os.path.join(self.state_dir, "secret")

    def start(self, head_args: list[str], nodes: list[list[str]]) -> None:
        out = unipar(self.env, "start", "--head", "--port", "0", *head_args)
        assert out.returncode == 0, out.stdout + out.stderr
        self.start_output = out.stdout
        self.head = self.state()["head"]
        for extra in nodes:
            joined = unipar(self.env, "start", "--address", self.head.removeprefix("tcp://"),
                            *extra)
            assert joined.returncode == 0, joined.stdout + joined.stderr
        self.records = self.state()["procs"]

    def processes(self) -> list[psutil.Process]:
        """The recorded daemons still running, and their children."""
        found = []
        for record in self.records:
            try:
                proc = psutil.Process(record["pid"])
                if abs(proc.create_time() - record["create_time"]) < 0.01:
                    found += [proc] + proc.children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        return found

    def driver(self, code: str, address: str = "auto", env: dict[str, str] | None = None,
               timeout: float = 180) -> subprocess.CompletedProcess:
        """Run ``code`` as a driver connected to the cluster (``UNIPAR_ADDRESS``)."""
        run_env = dict(env if env is not None else self.env, UNIPAR_ADDRESS=address)
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=run_env,
                              capture_output=True, text=True, timeout=timeout)

    def stop(self) -> subprocess.CompletedProcess | None:
        """``unipar stop``, then kill whatever is left (even if stop failed), remove dirs."""
        out = None
        try:
            out = unipar(self.env, "stop")
        finally:
            leftovers = self.processes()
            for proc in leftovers:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(leftovers, timeout=10)
            for record in self.records:
                for key in ("session_dir", "spill_dir"):
                    if record.get(key):
                        shutil.rmtree(record[key], ignore_errors=True)
        return out
