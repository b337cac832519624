"""A real multi-node native cluster on this machine, started through the ``unipar`` command.

A head and node daemons run as separate, detached processes, each with its own ports and store
directory, and their own state directory (``UNIPAR_STATE_DIR``) so that nothing a developer or
another test started is touched. Drivers run as subprocesses (so they never meet the cluster a
conformance session may have running in the pytest process).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
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


def ok(result: subprocess.CompletedProcess) -> str:
    """The stdout of a command that must have succeeded (its output tails are the message)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


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
        # No dashboard unless asked for: test clusters must not take a user's 8265.
        quiet = [] if any(a.startswith("--dashboard") for a in head_args) else [
            "--include-dashboard", "false"]
        out = unipar(self.env, "start", "--head", "--port", "0", *quiet, *head_args)
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


# -- nodes in their own network namespaces -----------------------------------------------------
#
# Each namespaced node gets its own network stack, joined to the others by veth pairs, so the
# traffic between nodes is real TCP between different hosts' addresses, and a node can be cut
# off (its cable "unplugged": `ip link set ... down`) and plugged in again. Linux, as root.

NETNS_PREFIX = "unipar-t"          # namespace names: unipar-t<pid>-<n>-hub, ...-n0, ...
LINK_PREFIX = "upr"                # the one link in the root namespace: upr<pid><n>


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out


def netns_unavailable() -> str | None:
    """Why tests with network namespaces cannot run here (None: they can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root (creates network namespaces and veth pairs)"
    if shutil.which("ip") is None:
        return "needs the `ip` command (iproute2)"
    probe = f"{NETNS_PREFIX}{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    try:
        veth = _ip("-n", probe, "link", "add", "name", "va", "type", "veth", "peer", "name",
                   "vb", check=False)
        bridge = _ip("-n", probe, "link", "add", "name", "br0", "type", "bridge", check=False)
    finally:
        _ip("netns", "delete", probe, check=False)
    if veth.returncode != 0 or bridge.returncode != 0:
        return f"cannot create veth pairs or bridges: {(veth.stderr + bridge.stderr).strip()}"
    return None


class Netns:
    """A private network: ``count`` namespaces and the root namespace on one subnet
    (10.251.S.0/24, S chosen free), through a bridge in a namespace of its own::

        root ns: upr<pid><n> 10.251.S.1 ──veth── hub ns: bridge ──veth── ns 0: eth0 10.251.S.2
                                                               ──veth── ns 1: eth0 10.251.S.3

    The bridge is not in the root namespace because there a host firewall may see bridged
    traffic (br_netfilter; Docker hosts drop forwarded packets): the hub namespace has no
    firewall rules. :meth:`cut` sets the hub end of a node's veth down — its cable pulled:
    it reaches nobody and nobody reaches it, while the root address stays up.

    :meth:`destroy` kills every process in the namespaces and removes namespaces and links;
    it is idempotent and runs even when creation failed half-way.
    """

    made = 0

    def __init__(self, count: int) -> None:
        Netns.made += 1
        tag = f"{os.getpid()}-{Netns.made}"
        self.hub = f"{NETNS_PREFIX}{tag}-hub"
        self.names = [f"{NETNS_PREFIX}{tag}-n{i}" for i in range(count)]
        self.root_link = f"{LINK_PREFIX}{os.getpid()}{Netns.made}"[:15]
        self.seen_pids: set[int] = set()
        # Test processes running at once (pytest-xdist) must not pick the same subnet.
        with open(os.path.join(tempfile.gettempdir(), "unipar-netns.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.subnet = _free_subnet()
            self.root_ip = f"{self.subnet}.1"
            self.ips = [f"{self.subnet}.{i + 2}" for i in range(count)]
            try:
                self._create()
            except BaseException:
                self.destroy()
                raise

    def _create(self) -> None:
        for ns in (self.hub, *self.names):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        _ip("link", "add", self.root_link, "type", "veth", "peer", "name", "up0",
            "netns", self.hub)
        _ip("addr", "add", f"{self.root_ip}/24", "dev", self.root_link)
        _ip("link", "set", self.root_link, "up")
        _ip("-n", self.hub, "link", "set", "up0", "master", "br0", "up")
        for i, (ns, ip) in enumerate(zip(self.names, self.ips)):
            _ip("-n", self.hub, "link", "add", f"n{i}", "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", self.hub, "link", "set", f"n{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def cut(self, i: int) -> None:
        """Node ``i``'s cable is pulled: no packet reaches it or leaves it."""
        _ip("-n", self.hub, "link", "set", f"n{i}", "down")

    def restore(self, i: int) -> None:
        """The cable plugged back in; returns once node ``i`` has its carrier again.

        Addresses the node tried to reach while cut off are marked unreachable in its
        neighbour (ARP) table, and a connection to them fails at once with "No route to host"
        until the entry is re-probed: the tables are flushed, as a real link coming back does
        after a few seconds."""
        _ip("-n", self.hub, "link", "set", f"n{i}", "up")
        _ip("-n", self.names[i], "neigh", "flush", "all", check=False)
        _ip("neigh", "flush", "to", self.ips[i], check=False)
        deadline = time.monotonic() + 10.0
        while "LOWER_UP" not in _ip("-n", self.names[i], "link", "show", "eth0").stdout:
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {i}'s link did not come back up within 10 s")
            time.sleep(0.05)

    def exec_args(self, i: int) -> list[str]:
        """Prefix for a command that runs inside namespace ``i``."""
        return ["ip", "netns", "exec", self.names[i]]

    def ns_inode(self, i: int) -> int:
        """What ``os.readlink('/proc/self/ns/net')`` shows (``net:[N]``) for a process there."""
        return os.stat(f"/run/netns/{self.names[i]}").st_ino

    def pids(self) -> set[int]:
        """Processes running in any of our namespaces now."""
        found: set[int] = set()
        for ns in (self.hub, *self.names):
            out = _ip("netns", "pids", ns, check=False)
            found |= {int(p) for p in out.stdout.split() if p.isdigit()}
        self.seen_pids |= found
        return found

    def destroy(self) -> None:
        """Kill what runs inside, then remove the namespaces and the root link."""
        for _ in range(50):
            victims = []
            for pid in self.pids():
                try:
                    proc = psutil.Process(pid)
                    proc.kill()
                    victims.append(proc)
                except psutil.NoSuchProcess:
                    pass
            if not victims:
                break
            psutil.wait_procs(victims, timeout=5)
        for ns in (*self.names, self.hub):
            _ip("netns", "delete", ns, check=False)
        # Deleting a namespace frees its links only once nothing uses it any more.
        _ip("link", "delete", self.root_link, check=False)

    def leftovers(self) -> list[str]:
        """What :meth:`destroy` should have removed and is still there (empty: nothing)."""
        left = [ns for ns in _ip("netns", "list").stdout.split()
                if ns in (self.hub, *self.names)]
        if _ip("link", "show", self.root_link, check=False).returncode == 0:
            left.append(f"link {self.root_link}")
        for pid in self.seen_pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.append(f"process {pid}")
            except psutil.NoSuchProcess:
                pass
        return left


def _free_subnet() -> str:
    """A 10.251.S prefix that no address or route of this machine uses yet."""
    used = _ip("-4", "-o", "addr").stdout + _ip("-4", "route", "show", "table", "all").stdout
    start = os.getpid() % 250
    for k in range(250):
        prefix = f"10.251.{(start + k) % 250}"
        if f"{prefix}." not in used:
            return prefix
    raise RuntimeError("no free 10.251.x.0/24 subnet for a test network")


@dataclass
class NetnsCluster(Cluster):
    """A head (with its node) in the root namespace, listening on the test network's root
    address, and node daemons started inside :class:`Netns` namespaces with
    ``ip netns exec ... unipar start --address=...``, each with its own state directory.

    ``stop`` stops the namespaced nodes too (and kills what is left); it does not remove the
    network (``Netns.destroy`` does, and kills anything still running inside).
    """

    net: Netns | None = None
    node_dirs: list[str] = field(default_factory=list)   # state directory per started node

    def start_netns(self, net: Netns, head_args: list[str], nodes: list[list[str]]) -> None:
        self.net = net
        out = unipar(self.env, "start", "--head", "--port", "0", "--host", net.root_ip,
                     "--include-dashboard", "false", *head_args)
        assert out.returncode == 0, out.stdout + out.stderr
        self.start_output = out.stdout
        self.head = self.state()["head"]
        self.records = self.state()["procs"]
        for i, extra in enumerate(nodes):
            self.join(i, extra)

    def join(self, i: int, extra: list[str]) -> dict[str, Any]:
        """Start a node daemon in namespace ``i`` joining the head; returns its record."""
        assert self.net is not None
        state_dir = os.path.join(self.state_dir, f"node-ns{i}-{len(self.node_dirs)}")
        self.node_dirs.append(state_dir)
        cmd = [*self.net.exec_args(i), sys.executable, "-m", "unipar.cli", "start",
               "--address", self.head.removeprefix("tcp://"), "--host", self.net.ips[i],
               "--secret-file", self.secret_file, *extra]
        out = subprocess.run(cmd, env=base_env(state_dir), capture_output=True, text=True,
                             timeout=CLI_TIMEOUT)
        assert out.returncode == 0, out.stdout + out.stderr
        with open(os.path.join(state_dir, "cluster.json")) as f:
            record = json.load(f)["procs"][-1]
        record.update(state_dir=state_dir, ns=i)
        self.records.append(record)
        return record

    def driver_in(self, record: dict[str, Any], code: str) -> subprocess.Popen:
        """Start ``code`` as a driver in the namespace of the node ``record`` names, using
        that node (``address="auto"``). The caller waits for it; ``Netns.destroy`` kills it."""
        assert self.net is not None
        env = dict(base_env(record["state_dir"]), UNIPAR_ADDRESS="auto")
        return subprocess.Popen([*self.net.exec_args(record["ns"]), sys.executable, "-c",
                                 textwrap.dedent(code)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def node_log(self, record: dict[str, Any]) -> str:
        """What a namespaced node daemon wrote to its log."""
        session = os.path.basename(record["session_dir"]).removeprefix("unipar-")
        path = os.path.join(record["state_dir"], "logs", f"node-{session}.log")
        with open(path, errors="replace") as f:
            return f.read()

    def stop(self) -> subprocess.CompletedProcess | None:
        stops = [subprocess.Popen([sys.executable, "-m", "unipar.cli", "stop"],
                                  env=base_env(d), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
                 for d in self.node_dirs if os.path.isdir(d)]   # in parallel: each waits
        try:
            for proc in stops:
                proc.wait(timeout=CLI_TIMEOUT)
        finally:
            out = super().stop()
        return out
