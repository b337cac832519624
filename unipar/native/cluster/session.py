"""Where a machine keeps what ``unipar start`` started: the cluster address, its secret, the pids.

One directory per user, private (0700)::

    $UNIPAR_STATE_DIR            if set (tests, or several clusters per user), else
    $TMPDIR/unipar-<uid>/        (tempfile.gettempdir(): /tmp/unipar-<uid>/ on most systems)
        cluster.json   {"head": "tcp://IP:PORT", "node": "unix:///...", "procs": [...]}
        head.json      the head's own tables (unipar/native/head/journal.py), reloaded when
                       the head is started again while its nodes still run
        secret         the cluster secret, 64 hex digits, mode 0600
        logs/          stdout/stderr of each daemon started here

``procs`` lists every daemon this machine started (``pid``, ``create_time``, ``role``), so
``unipar stop`` kills exactly those — never a process that merely reused a pid. Each daemon
also carries the state directory in its environment (``UNIPAR_STARTED_BY``), so ``stop`` finds
it even when ``cluster.json`` no longer names it.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from ... import config

SECRET_ENV = config.CLUSTER_SECRET            # named in messages that say what to set
SECRET_FILE_ENV = config.CLUSTER_SECRET_FILE


def state_dir() -> str:
    """The per-user state directory (created 0700 on first use by :func:`ensure_state_dir`)."""
    override = config.state_dir()
    if override:
        return override
    return os.path.join(tempfile.gettempdir(), f"unipar-{os.getuid()}")


def ensure_state_dir() -> str:
    path = state_dir()
    os.makedirs(os.path.join(path, "logs"), mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _state_file() -> str:
    return os.path.join(state_dir(), "cluster.json")


def read_state() -> dict[str, Any]:
    """What ``unipar start`` recorded on this machine; ``{}`` when nothing was."""
    try:
        with open(_state_file()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_state(state: dict[str, Any]) -> None:
    ensure_state_dir()
    tmp = _state_file() + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, _state_file())


def head_state_path() -> str:
    """The head's snapshot of its tables (written by the head of ``unipar start``)."""
    return os.path.join(state_dir(), "head.json")


def clear_head_state() -> None:
    """Forget a head's tables: the next head starts an empty cluster. Idempotent."""
    try:
        os.unlink(head_state_path())
    except OSError:
        pass


def clear_state() -> None:
    clear_head_state()
    for name in ("cluster.json", "secret"):
        try:
            os.unlink(os.path.join(state_dir(), name))
        except OSError:
            pass


def secret_path() -> str:
    return os.path.join(state_dir(), "secret")


def write_secret(secret: bytes) -> str:
    """Store the secret as hex in a 0600 file (created with that mode: never readable by others)."""
    ensure_state_dir()
    path = secret_path()
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    os.replace(tmp, path)
    return path


def parse_secret(text: str, where: str) -> bytes:
    try:
        secret = bytes.fromhex(text.strip())
    except ValueError:
        raise ValueError(f"the cluster secret in {where} is not hex digits") from None
    if len(secret) < 16:
        raise ValueError(f"the cluster secret in {where} is too short")
    return secret


def load_secret(secret_file: str | None = None) -> bytes | None:
    """The cluster secret, from (in order) ``secret_file``, ``$UNIPAR_CLUSTER_SECRET`` (hex),
    ``$UNIPAR_CLUSTER_SECRET_FILE``, or this machine's state directory; None if none is set."""
    if secret_file:
        with open(secret_file) as f:
            return parse_secret(f.read(), secret_file)
    from_env = config.cluster_secret()
    if from_env:
        return parse_secret(from_env, f"${SECRET_ENV}")
    env_file = config.cluster_secret_file()
    if env_file:
        with open(env_file) as f:
            return parse_secret(f.read(), env_file)
    try:
        with open(secret_path()) as f:
            return parse_secret(f.read(), secret_path())
    except OSError:
        return None
