"""Helpers for chaos drivers: run driver code in a marked subprocess, then check it left nothing.

A driver runs as its own process with its own one-machine cluster (``unipar.init``), marked by
``UNIPAR_TEST_MARKER`` so that every process it started can be found — and must be gone once
it exits. It prints one JSON line of figures last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import psutil

from unipar.testing import wait_for

# Imported by driver code: the node's files and the workers of this driver's cluster.
DRIVER_PRELUDE = """
import json, os, random, signal, sys, threading, time
import psutil

def session_dir():
    '''The session directory (shared memory) of the cluster this driver started.'''
    session = None
    for child in psutil.Process().children(recursive=True):
        try:
            line = child.cmdline()
        except psutil.Error:
            continue
        if any(part.endswith("boot.py") for part in line) and "--config" in line:
            session = json.loads(line[line.index("--config") + 1])["session_dir"]
    return session
"""


def marked(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("UNIPAR_TEST_MARKER") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def run_driver(code: str, *args: str, timeout: float = 400) -> dict[str, Any]:
    """Run ``code`` (after :data:`DRIVER_PRELUDE`) as a driver; return its last JSON line.
    Fails if it failed, or if any process it started, or its session directory, outlives it."""
    marker = uuid.uuid4().hex
    env = {**os.environ, "UNIPAR_TEST_MARKER": marker, "UNIPAR_BACKEND": "native"}
    env.pop("UNIPAR_ADDRESS", None)
    source = DRIVER_PRELUDE + textwrap.dedent(code)
    try:
        done = subprocess.run([sys.executable, "-c", source, *args], env=env,
                              capture_output=True, text=True, timeout=timeout)
    finally:
        left = wait_for(lambda: not marked(marker), timeout=30,
                        message="every process of the driver's cluster to exit")
    assert left
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    session = figures.get("session_dir")
    if session:
        wait_for(lambda: not os.path.exists(session), timeout=30,
                 message=f"the session directory {session} to be removed")
    return figures
