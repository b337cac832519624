"""``unipar start``, ``unipar stop`` and ``unipar status``: a native cluster by hand.

``start --head`` launches a head and a node daemon detached from the shell (they run until
``unipar stop``), ``start --address=HOST:PORT`` launches a node daemon that joins that head.
What was started is recorded in this machine's state directory (:mod:`.session`), which is how
``stop`` knows exactly which processes are ours and ``init(address="auto")`` finds the cluster.

``start --head`` where the head died but the nodes still run starts the head again on its
address; it reloads its tables and the nodes rejoin (revive.py); ``--supervise`` leaves a small
process that does so by itself (supervise.py). ``--tls-cert/--tls-key`` put the daemons' TCP
traffic in TLS (docs/security.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from typing import Any, Iterator

import psutil

from ... import config as config_module
from . import revive, session, supervise
from .launcher import ClusterConfig, LocalCluster
from .connect import ConnectError, ask, head_address_of, list_nodes, open_connection
from .jobs import list_jobs
from ..dashboard.server import DEFAULT_PORT as DASHBOARD_PORT, cluster_snapshot, num, size
from ..wire import protocol as P

DEFAULT_PORT = 6380
WORKER_SETUP = "unipar.backends.native:worker_setup"
STOP_TIMEOUT = 10.0


# -- start -------------------------------------------------------------------------------------
def configure_start(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--head", action="store_true", help="start a new cluster's head here")
    parser.add_argument("--address", help="join the cluster whose head is at HOST:PORT")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"the head's TCP port (default {DEFAULT_PORT}; 0: any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; "
                             "0.0.0.0 lets other machines join)")
    parser.add_argument("--num-cpus", type=int, help="logical CPUs of this node")
    parser.add_argument("--num-gpus", type=int, help="GPUs of this node")
    parser.add_argument("--resources", default="{}", help='custom resources, JSON: \'{"disk": 2}\'')
    parser.add_argument("--object-store-memory", type=int, help="bytes of shared memory for objects")
    parser.add_argument("--secret-file", help="file holding the cluster secret (joining nodes)")
    parser.add_argument("--node-timeout", type=float, default=10.0,
                        help="(head) seconds without a heartbeat before a node is declared "
                             "dead (default 10)")
    parser.add_argument("--include-dashboard", type=_boolean, default=True, metavar="BOOL",
                        help="(head) serve the read-only web dashboard (default true; needs "
                             "aiohttp: pip install 'unipar[dashboard]')")
    parser.add_argument("--dashboard-port", type=int, default=DASHBOARD_PORT,
                        help=f"(head) the dashboard's port (default {DASHBOARD_PORT}; 0: any "
                             "free port)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"],
                        help="level of the node's log file (default info; `unipar logs`)")
    parser.add_argument("--tls-cert", help="certificate (PEM) this machine's daemons present on "
                        "their TCP listeners, which then speak TLS only (docs/security.md)")
    parser.add_argument("--tls-key", help="the key of --tls-cert (PEM)")
    parser.add_argument("--tls-ca", help="CA (PEM) the daemons check other daemons' "
                        "certificates against (default: --tls-cert, for a self-signed one)")
    parser.add_argument("--supervise", action="store_true",
                        help="(head) start the head again by itself when it dies (a small "
                             "supervisor process; `unipar stop` stops it too)")
    parser.add_argument("--dashboard-host", default="127.0.0.1",
                        help="(head) address the dashboard listens on (default 127.0.0.1: this "
                             "machine only; 0.0.0.0 shows it to the network)")
    parser.set_defaults(func=cmd_start)


def _boolean(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if text.lower() not in value:
        raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
    return value[text.lower()]


def _config(args: argparse.Namespace) -> ClusterConfig:
    try:
        resources = json.loads(args.resources)
        if not isinstance(resources, dict):
            raise ValueError("not an object")
        resources = {str(k): float(v) for k, v in resources.items()}
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"unipar start: --resources must be a JSON object of numbers ({exc})")
    return ClusterConfig(num_cpus=args.num_cpus, num_gpus=args.num_gpus, resources=resources,
                         object_store_memory=args.object_store_memory,
                         worker_setup=WORKER_SETUP, host=args.host, port=args.port,
                         detached=True, log_dir=os.path.join(session.ensure_state_dir(), "logs"),
                         log_level=args.log_level,
                         node_timeout=args.node_timeout,
                         dashboard_port=args.dashboard_port
                         if args.head and args.include_dashboard else None,
                         dashboard_host=args.dashboard_host)


def _records(cluster: LocalCluster, roles: list[str]) -> list[dict[str, Any]]:
    out = []
    for proc, role in zip(cluster.procs, roles):
        entry: dict[str, Any] = {"pid": proc.pid, "role": role,
                                 "create_time": psutil.Process(proc.pid).create_time()}
        if role == "node":
            entry.update(session_dir=cluster.session_dir, spill_dir=cluster.spill_dir,
                         address=cluster.node_address)
        out.append(entry)
    return out


def _live(record: dict[str, Any]) -> psutil.Process | None:
    """The process a record names, if it still runs (and is not a newer one with its pid)."""
    try:
        proc = psutil.Process(record["pid"])
        if abs(proc.create_time() - record["create_time"]) < 0.01:
            return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
        pass
    return None


def cmd_start(args: argparse.Namespace) -> int:
    if args.head == bool(args.address):
        print("unipar start: give either --head (new cluster) or --address=HOST:PORT (join one)",
              file=sys.stderr)
        return 2
    state = session.read_state()
    live = [r for r in state.get("procs", []) if _live(r)]
    if args.head and any(r.get("role") == "head" for r in live):
        print(f"unipar start: a cluster already runs on this machine (head {state['head']}); "
              f"`unipar stop` it first, or set UNIPAR_STATE_DIR for a second one",
              file=sys.stderr)
        return 1
    config = _config(args)
    try:
        tls = _tls_env(args)
    except ValueError as exc:
        print(f"unipar start: {exc}", file=sys.stderr)
        return 2
    # The daemons inherit the TLS settings (config.py reads them there); so does our own
    # check that a joining node reaches its head.
    with revive.marking(), _environment(tls):
        if args.head and live and state.get("head"):
            return _restart_head(config, state)
        if args.head:
            session.clear_head_state()   # nothing of an older cluster runs: start empty
            return _start_head(config, args)
        return _start_node(config, args, state)


def _tls_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment that turns TLS on for the daemons started now ({}: plain TCP)."""
    if not (args.tls_cert or args.tls_key or args.tls_ca):
        return {}
    if not (args.tls_cert and args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    files = {config_module.TLS_CERT: args.tls_cert, config_module.TLS_KEY: args.tls_key,
             config_module.TLS_CA: args.tls_ca or args.tls_cert}
    for var, path in files.items():
        if not os.path.isfile(path):
            raise ValueError(f"no such file: {path}")
    return {var: os.path.abspath(path) for var, path in files.items()}


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Within it, ``values`` are set in this process's environment (restored after)."""
    before = {var: os.environ.get(var) for var in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for var, old in before.items():
            if old is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = old


def _restart_head(config: ClusterConfig, state: dict[str, Any]) -> int:
    """The head died; nodes started here still run: start it again where they look for it."""
    secret = session.load_secret()
    if secret is None:
        print(f"unipar start: the head at {state['head']} died and its secret file "
              f"{session.secret_path()} is gone: `unipar stop`, then start afresh",
              file=sys.stderr)
        return 1
    try:
        pid, created = revive.restart_head(config, state["head"], secret)
    except RuntimeError as exc:
        print(f"unipar start: could not start the head again: {exc}", file=sys.stderr)
        return 1
    session.write_state(revive.head_record(state, pid, created))
    nodes = sum(1 for r in state.get("procs", []) if r.get("role") == "node" and _live(r))
    print(f"unipar head started again at {state['head']}: it reloaded the cluster's state; "
          f"{nodes} node(s) started here rejoin by themselves.\n"
          "  To see the cluster: unipar status")
    return 0


def _start_head(config: ClusterConfig, args: argparse.Namespace) -> int:
    cluster = LocalCluster(config)
    try:
        cluster.start()
    except RuntimeError as exc:
        cluster.stop()
        print(f"unipar start: {exc}", file=sys.stderr)
        return 1
    secret_file = session.write_secret(cluster.secret)
    # The supervisor is recorded first: `unipar stop` stops it before the head.
    watcher = [supervise.spawn(config)] if args.supervise else []
    session.write_state({"head": cluster.head_address, "node": cluster.node_unix_address,
                         "procs": watcher + _records(cluster, ["head", "node"]),
                         "tls_ca": os.environ.get(config_module.TLS_CA, ""),
                         "dashboard": cluster.dashboard_url})
    hostport = cluster.head_address.removeprefix("tcp://")
    ip = hostport.rpartition(":")[0]
    print(f"""Local node IP: {ip}

--------------------
unipar runtime started.
--------------------

{_dashboard_line(cluster)}

Next steps
  To add another node to this cluster, copy the secret file {secret_file}
  to that machine (keep it private: mode 0600) and run
    unipar start --address='{hostport}' --secret-file=PATH_TO_SECRET
  or pass the secret in the environment:
    UNIPAR_CLUSTER_SECRET=$(cat {secret_file}) unipar start --address='{hostport}'

  To connect to this cluster from a driver on a node of the cluster:
    import unipar
    unipar.init(address="auto")

  To connect from a driver outside the cluster (with UNIPAR_CLUSTER_SECRET or
  UNIPAR_CLUSTER_SECRET_FILE set as above):
    import unipar
    unipar.init(address="unipar://{hostport}")

  To see the cluster:
    unipar status

  To terminate the unipar runtime, run
    unipar stop""")
    if config.host == "127.0.0.1":
        print("\n  (listening on 127.0.0.1 only: start with --host 0.0.0.0 to let other "
              "machines join)")
    return 0


def _dashboard_line(cluster: LocalCluster) -> str:
    if cluster.dashboard_url:
        return f"View the dashboard (read-only) at {cluster.dashboard_url}"
    if cluster.dashboard_problem:
        return f"Dashboard: off: {cluster.dashboard_problem}."
    return "Dashboard: off (--include-dashboard false)."


def _start_node(config: ClusterConfig, args: argparse.Namespace, state: dict[str, Any]) -> int:
    try:
        head = head_address_of(args.address)
        secret = session.load_secret(args.secret_file)
        if secret is None:
            raise ConnectError(f"no cluster secret: pass --secret-file, or set "
                               f"{session.SECRET_ENV} (the head wrote it to {session.secret_path()} "
                               "on its machine)")
        list_nodes(head, secret)   # fail early, with a clear message, if we cannot join
    except (ConnectError, ValueError, OSError) as exc:
        print(f"unipar start: {exc}", file=sys.stderr)
        return 1
    cluster = LocalCluster(config, secret)
    try:
        cluster.start(head_address=head)
    except RuntimeError as exc:
        cluster.stop()
        print(f"unipar start: {exc}", file=sys.stderr)
        return 1
    if session.load_secret() != secret:
        session.write_secret(secret)   # for `unipar status` and address="auto" here
    procs = [r for r in state.get("procs", []) if _live(r)] + _records(cluster, ["node"])
    session.write_state({"head": state.get("head") if state.get("procs") else head,
                         "node": state.get("node") or cluster.node_unix_address, "procs": procs,
                         "dashboard": state.get("dashboard", "") if state.get("procs") else "",
                         "tls_ca": state.get("tls_ca") or os.environ.get(config_module.TLS_CA, "")})
    print(f"unipar node started ({cluster.node_address}), joined the cluster at {head}.\n"
          "  To see the cluster: unipar status\n  To stop this machine's unipar processes: "
          "unipar stop")
    return 0


# -- stop --------------------------------------------------------------------------------------
def configure_stop(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(func=cmd_stop)


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop every daemon ``unipar start`` started on this machine (they stop their workers)."""
    state = session.read_state()
    records = state.get("procs", [])
    procs = [(r, p) for r in records if (p := _live(r)) is not None]
    workers: list[psutil.Process] = []
    for _, proc in procs:
        try:
            workers += proc.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    # Daemons no record names (cluster.json overwritten or lost) still carry our marker.
    known = {p.pid for _, p in procs} | {w.pid for w in workers}
    for proc in revive.marked():
        if proc.pid not in known:
            procs.append(({"role": "unrecorded"}, proc))
    for _, proc in sorted(procs, key=lambda rp: rp[0].get("role") == "head"):  # nodes first
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    everything = [p for _, p in procs] + workers
    _, alive = psutil.wait_procs(everything, timeout=STOP_TIMEOUT)
    for proc in alive:   # did not stop in time: no more asking
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=STOP_TIMEOUT)
    for record in records:
        for key in ("session_dir", "spill_dir"):
            if record.get(key):
                shutil.rmtree(record[key], ignore_errors=True)
    shutil.rmtree(os.path.join(session.state_dir(), "jobs"), ignore_errors=True)   # their logs
    session.clear_state()
    roles = ", ".join(r.get("role", "?") for r, _ in procs)
    print(f"Stopped {len(procs)} unipar process(es){f' ({roles})' if roles else ''}"
          f"{f' and {len(workers)} worker(s)' if workers else ''}.")
    return 0


# -- status ------------------------------------------------------------------------------------
def configure_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="the head's HOST:PORT (default: this machine's cluster)")
    parser.add_argument("--json", action="store_true",
                        help="print the snapshot as JSON (docs/observability.md), not as text")
    parser.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    state = session.read_state()
    if state.get("tls_ca") and not config_module.tls_ca():   # this machine's TLS cluster
        os.environ[config_module.TLS_CA] = state["tls_ca"]
    head = head_address_of(args.address) if args.address else state.get("head")
    if not head:
        print("No unipar cluster was started on this machine (`unipar start --head`), and no "
              "--address was given.")
        return 1
    secret = session.load_secret()
    try:
        if secret is None:
            raise ConnectError(f"no cluster secret (set {session.SECRET_ENV})")
        nodes = list_nodes(head, secret)
    except ConnectError as exc:
        print(f"unipar status: {exc}", file=sys.stderr)
        _print_headless(state, args)
        return 1
    snap = cluster_snapshot(nodes, secret, head)
    try:
        jobs = list_jobs(head, secret)
    except ConnectError:   # a head of an older unipar: no jobs to show
        jobs = []
    groups = list_placement_groups(head, secret)
    if args.json:
        json.dump(dict(snap, dashboard=state.get("dashboard", "") if not args.address else "",
                       jobs=jobs, placement_groups=groups), sys.stdout, indent=1)
        print()
        return 0
    totals = snap["totals"]
    print(f"unipar cluster, head at {head}")
    if state.get("dashboard") and not args.address:
        print(f"Dashboard: {state['dashboard']}")
    print(f"Nodes: {totals['nodes_alive']} alive, {totals['nodes_dead']} dead")
    for node in snap["nodes"]:
        _print_node(node)
    if totals["resources"]:
        print("Cluster resources in use: " + ", ".join(
            f"{k} {num(v['in_use'])}/{num(v['total'])}" for k, v in totals["resources"].items()))
    if jobs:
        running = sum(1 for j in jobs if j["status"] == "RUNNING")
        print(f"Jobs: {running} running, {len(jobs)} in all (`unipar job list`)")
        for job in jobs[-10:]:
            print(f"  {job['job_id']}  {job['status']:<9}  {' '.join(job['entrypoint'])}")
    _print_groups(groups)
    return 0


def list_placement_groups(head: str, secret: bytes) -> list[dict[str, Any]]:
    """The head's placement-group rows (``ListPlacementGroups``); [] from a head that has
    no such table (an older unipar) or does not answer."""
    try:
        conn = open_connection(head, secret)
    except ConnectError:
        return []
    try:
        return ask(conn, lambda r: P.ListPlacementGroups(r))
    except ConnectError:
        return []
    finally:
        conn.close()


def _print_groups(groups: list[dict[str, Any]]) -> None:
    """Live placement groups, one line each; then the pending infeasible ones with why:
    work no node can hold today waits for a node that fits to join (docs/scheduling.md)."""
    live = [g for g in groups if g["state"] != "REMOVED"]
    if not live:
        return
    print(f"Placement groups: {len(live)} "
          f"({sum(g['state'] == 'CREATED' for g in live)} created)")
    for group in live:
        bundles = group["bundles"]
        nodes = sorted({n[:8] for n in group["bundles_to_node_id"].values()})
        print(f"  {group['placement_group_id']}  {group['state']:<10} {group['strategy']:<12}"
              f" {group['name'] or '-':<12} {len(bundles)} bundle(s) "
              f"{list(bundles.values())} on {', '.join(nodes) or '-'}")
    waiting = [g for g in live if g["state"] == "INFEASIBLE"]
    if waiting:
        print(f"Pending, infeasible today (they wait for a node that fits): {len(waiting)}")
        for group in waiting:
            print(f"  placement group {group['placement_group_id']}: {group['error']}")


def _print_headless(state: dict[str, Any], args: argparse.Namespace) -> None:
    """The head does not answer: say which daemons started here still run."""
    if args.address:
        return
    running = [r for r in state.get("procs", []) if _live(r)]
    if running:
        listed = ", ".join(f"{r.get('role', '?')} pid {r['pid']}" for r in running)
        print(f"unipar status: {len(running)} daemon(s) started on this machine still run "
              f"({listed}); "
              "`unipar start --head` starts the head again (the nodes rejoin), `unipar stop` "
              "stops them", file=sys.stderr)


def _print_node(node: dict[str, Any]) -> None:
    print(f"  node {node['node_id'][:12]}  {'alive' if node['alive'] else 'DEAD '}  "
          f"{node['address']}")
    if node["error"]:
        print(f"    (no answer: {node['error']})")
    if "store" not in node:
        return
    used = [f"{k} {num(v['in_use'])}/{num(v['total'])}" for k, v in node["resources"].items()]
    store = node["store"]
    print(f"    resources in use: {', '.join(used)}")
    print(f"    tasks: {node['tasks_running']} running, {node['tasks_waiting']} waiting; "
          f"actors: {node['actors']}; workers: {node['workers']}; drivers: {node['drivers']}")
    print(f"    object store: {size(store['used'])} in memory of {size(store['limit'])}, "
          f"{size(store['spilled'])} spilled, {store['objects']} objects")
    for row in node.get("infeasible") or ():
        print(f"    pending, infeasible today (waits for a node that fits): {row['tasks']} "
              f"task(s), {row['actors']} actor(s) asking {row['demand']}")
