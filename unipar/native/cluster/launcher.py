"""Start and stop a one-machine cluster: a head and one node daemon, both children of the driver.

::

    driver ──Popen(stdin=pipe)──▶ head  (python -m unipar.native.head)
           ──Popen(stdin=pipe)──▶ node  (python -m unipar.native.node) ──▶ workers

The per-cluster secret goes to each daemon on its stdin, never in argv or the environment.
Each daemon watches its stdin: when the driver exits — even by SIGKILL — the pipe closes, the
daemon kills its workers, removes its shared-memory and spill directories and exits. Daemons run
in their own session, so a Ctrl-C in the driver's terminal does not reach them or the workers.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psutil

from ... import config
from ...hostip import machine_ip

START_TIMEOUT = 30.0
BOOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "node",
                    "boot.py")   # the node launcher, run by path
STOP_TIMEOUT = 5.0
SHM_ROOT = "/dev/shm"


def detect_gpus() -> int:
    """GPUs visible to this process: CUDA_VISIBLE_DEVICES if set, else the NVIDIA driver's list."""
    visible = config.visible_gpus()
    if visible is not None:
        return len(visible)
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def default_store_limit() -> int:
    """30 % of RAM, and never more than 90 % of what shared memory has free."""
    limit = int(psutil.virtual_memory().total * 0.3)
    try:
        limit = min(limit, int(shutil.disk_usage(SHM_ROOT).free * 0.9))
    except OSError:
        pass
    return max(limit, 64 * 1024 * 1024)


@dataclass
class ClusterConfig:
    num_cpus: int | None = None
    num_gpus: int | None = None
    resources: dict[str, float] = field(default_factory=dict)
    object_store_memory: int | None = None
    spill_limit: int | None = None
    worker_setup: str = ""
    host: str = "127.0.0.1"
    stuck_warning_after: float = 5.0     # warn when a task waits this long for held resources
    worker_idle_timeout: float = 10.0    # idle workers beyond one per CPU exit after this
    port: int = 0                        # the head's TCP port (0: any free port)
    detached: bool = False               # daemons outlive the starter (``unipar start``)
    log_dir: str = ""                    # detached daemons write stdout/stderr here
    log_level: str = "info"              # of the node's log file (node.log)
    node_timeout: float = 10.0           # detached: a node silent this long is declared dead
    dashboard_port: int | None = None    # the head's web dashboard (None: none; 0: any free port)
    dashboard_host: str = "127.0.0.1"


@dataclass
class _Listeners:
    """The sockets the driver binds before it starts the daemons, which inherit them."""

    node: socket.socket                      # the node's TCP listener
    unix: socket.socket                      # the node's Unix socket, for local clients
    head: socket.socket | None = None        # None: the node joins a head elsewhere
    dashboard: socket.socket | None = None   # the head's web dashboard, when asked for
    embed_head: bool = False                 # the head runs inside the node daemon

    def head_fds(self) -> dict[str, socket.socket]:
        fds = {"tcp_fd": self.head} if self.head is not None else {}
        if self.dashboard is not None:
            fds["dashboard_fd"] = self.dashboard
        return fds

    def node_fds(self) -> dict[str, socket.socket]:
        fds = {"tcp_fd": self.node, "unix_fd": self.unix}
        if self.embed_head and self.head is not None:
            fds["head_fd"] = self.head
        return fds

    def close(self) -> None:
        for sock in (self.head, self.dashboard, self.node, self.unix):
            if sock is not None:
                sock.close()


class LocalCluster:
    """A head and a node daemon on this machine, owned by this process."""

    def __init__(self, config: ClusterConfig, secret: bytes | None = None) -> None:
        self.config = config
        self.session = uuid.uuid4().hex[:12]
        self.secret = secret if secret is not None else os.urandom(32)
        root = SHM_ROOT if os.path.isdir(SHM_ROOT) else tempfile.gettempdir()
        self.session_dir = os.path.join(root, f"unipar-{self.session}")
        self.spill_dir = os.path.join(tempfile.gettempdir(), f"unipar-spill-{self.session}")
        # The node's log files (docs/observability.md): kept after `unipar stop` for a
        # detached cluster, removed with the files of a driver's own cluster.
        self.log_dir = (os.path.join(config.log_dir, f"session-{self.session}") if config.log_dir
                        else os.path.join(tempfile.gettempdir(), f"unipar-logs-{self.session}"))
        self.procs: list[subprocess.Popen] = []
        self.head_address = ""
        self.node_address = ""
        self.node_unix_address = ""
        self.resources: dict[str, float] = {}
        self.dashboard_url = ""              # set when the head serves a dashboard
        self.dashboard_problem = ""          # why it does not, when one was asked for
        self._advertised = ""                # the host name other machines reach us by

    def start(self, head_address: str = "") -> None:
        """Start a head and a node, or — given ``head_address`` — only a node that joins that
        head. Returns once both answered that they are ready (raises if one did not)."""
        cfg = self.config
        cpus = cfg.num_cpus if cfg.num_cpus is not None else (os.cpu_count() or 1)
        gpus = cfg.num_gpus if cfg.num_gpus is not None else detect_gpus()
        self.resources = {"CPU": float(cpus), "GPU": float(gpus)}
        self.resources.update({k: float(v) for k, v in cfg.resources.items()})
        os.makedirs(self.session_dir, mode=0o700)
        listeners = self._bind(head_address)
        launched = []
        try:
            if listeners.head is not None and not listeners.embed_head:
                launched.append(self._launch("unipar.native.head", {
                    "host": cfg.host, "detached": cfg.detached,
                    "node_timeout": cfg.node_timeout if cfg.detached else 0},
                    listeners.head_fds()))
            launched.append(self._launch(BOOT, self._node_settings(int(cpus)),
                                         listeners.node_fds()))
        finally:
            listeners.close()   # the daemons hold their own copies
        for read_fd, proc, module in launched:
            try:
                self._read_ready(read_fd, proc, module)
            finally:
                os.close(read_fd)

    def _bind(self, head_address: str) -> "_Listeners":
        """Bind every listener here, so both daemons know all addresses before they run and
        start in parallel; a client connecting early waits in the listen backlog."""
        cfg = self.config
        listeners = _Listeners(node=_listen_tcp(cfg.host),
                               unix=socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        try:
            unix_path = os.path.join(self.session_dir, "node.sock")
            listeners.unix.bind(unix_path)
            listeners.unix.listen(512)
            if not head_address:
                listeners.head = _listen_tcp(cfg.host, cfg.port)
            if listeners.head is not None and cfg.dashboard_port is not None:
                from ..dashboard.server import bind
                dash = bind(cfg.dashboard_host, cfg.dashboard_port,
                            advertised_host(cfg.dashboard_host))
                self.dashboard_url, self.dashboard_problem = dash.url, dash.problem
                listeners.dashboard = dash.sock
        except BaseException:
            listeners.close()
            raise
        # A driver's own throw-away cluster runs its head inside the node daemon: one Python
        # start-up fewer on the way to the first result. `unipar start` keeps them apart.
        listeners.embed_head = (listeners.head is not None and not cfg.detached
                                and listeners.dashboard is None)
        shown = self._advertised = advertised_host(cfg.host)
        self.head_address = head_address or f"tcp://{shown}:{listeners.head.getsockname()[1]}"
        self.node_address = f"tcp://{shown}:{listeners.node.getsockname()[1]}"
        self.node_unix_address = f"unix://{unix_path}"
        return listeners

    def _node_settings(self, cpus: int) -> dict[str, Any]:
        """The node daemon's ``--config`` (its sockets are added by :meth:`_launch`)."""
        cfg = self.config
        return {
            "node_id": uuid.uuid4().hex, "session_dir": self.session_dir,
            "spill_dir": self.spill_dir, "resources": self.resources,
            "store_limit": cfg.object_store_memory or default_store_limit(),
            "spill_limit": cfg.spill_limit, "head_address": self.head_address,
            "worker_setup": cfg.worker_setup, "prestart": cpus, "host": cfg.host,
            "stuck_warning_after": cfg.stuck_warning_after,
            "worker_idle_timeout": cfg.worker_idle_timeout, "advertise": self._advertised,
            "detached": cfg.detached, "log_dir": self.log_dir, "log_level": cfg.log_level,
            "keep_logs": bool(cfg.log_dir)}

    def _launch(self, module: str, settings: dict, socks: dict[str, socket.socket]
                ) -> tuple[int, subprocess.Popen, str]:
        read_fd, write_fd = os.pipe()
        fds = {name: sock.fileno() for name, sock in socks.items()}
        settings = dict(settings, ready_fd=write_fd, **fds)
        env = dict(os.environ)   # the daemons inherit the driver's environment
        # An internal hand-off, not a setting: workers import what the driver could import.
        env["UNIPAR_DRIVER_SYS_PATH"] = os.pathsep.join(p for p in sys.path if p)
        target = [module] if module.endswith(".py") else ["-m", module]
        out = None
        if self.config.log_dir:   # detached: the starter's terminal may be gone soon
            name = "node" if module.endswith(".py") else "head"
            out = open(os.path.join(self.config.log_dir, f"{name}-{self.session}.log"), "ab")
        try:
            proc = subprocess.Popen(
                [sys.executable, *target, "--config", json.dumps(settings)],
                stdin=subprocess.PIPE, pass_fds=(write_fd, *fds.values()), env=env,
                start_new_session=True, stdout=out, stderr=out)
        finally:
            os.close(write_fd)
            if out is not None:
                out.close()
        self.procs.append(proc)
        assert proc.stdin is not None
        proc.stdin.write(self.secret.hex().encode() + b"\n")
        proc.stdin.flush()
        return read_fd, proc, module

    @staticmethod
    def _read_ready(fd: int, proc: subprocess.Popen, module: str) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{module} did not start within {START_TIMEOUT:g} s")
            readable, _, _ = select.select([fd], [], [], min(left, 0.5))
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(f"{module} exited during start-up (code {proc.poll()}); "
                                       "its error is printed above")
                data += chunk
            elif proc.poll() is not None:
                raise RuntimeError(f"{module} exited during start-up (code {proc.returncode})")
        return data.decode().strip()

    def stop(self) -> None:
        """Stop the daemons (they stop their workers) and remove every file. Idempotent."""
        for proc in reversed(self.procs):   # node first: it owns the workers
            if proc.stdin is not None and not proc.stdin.closed:
                try:
                    proc.stdin.close()      # EOF: the daemon shuts down
                except OSError:
                    pass
            if self.config.detached:        # detached daemons ignore EOF: ask by signal
                try:
                    proc.terminate()
                except OSError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_tree(proc.pid)
                proc.wait(timeout=STOP_TIMEOUT)
        self.procs.clear()
        shutil.rmtree(self.session_dir, ignore_errors=True)
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        if not self.config.log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)


def advertised_host(host: str) -> str:
    """The address others reach a daemon bound to ``host`` at: the host itself, or for the
    wildcard ``0.0.0.0`` this machine's primary IP."""
    if host not in ("0.0.0.0", ""):
        return host
    return machine_ip()



def _listen_tcp(host: str, port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(512)
    return sock


def _kill_tree(pid: int) -> None:
    try:
        parent = psutil.Process(pid)
        victims = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in victims:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
