"""``unipar logs``: list a native cluster's log files, print or follow one.

::

    unipar logs                          every node's files: node, name, size, who wrote it
    unipar logs NAME [--node ID]         print that file (read in pages, never whole)
    unipar logs --actor NAME|ID          the actor's process log (its newest)
    unipar logs --task ID                the log of the worker that ran the task
    ... -f                               follow: print what is appended until Ctrl-C
    ... --tail BYTES                     start that many bytes before the end

Files are read through their node (ListLogs / ReadLog), so any node's logs are reachable from
any machine that has the cluster secret. Where logs live: docs/observability.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from . import session
from .connect import ConnectError, head_address_of, list_nodes
from .inspect import NodeLink, cluster_logs, cluster_tasks
from ..wire import protocol as P

PAGE = 256 * 1024        # bytes per ReadLog
FOLLOW_EVERY = 0.5       # seconds between polls of a followed file


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="a log file's name (as listed)")
    parser.add_argument("--node", help="the node's id (a prefix will do)")
    parser.add_argument("--actor", help="an actor's name or id (prefix): its process's log")
    parser.add_argument("--task", help="a task's id (prefix): the log of the worker that ran it")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing what is appended (Ctrl-C stops)")
    parser.add_argument("--tail", type=int, default=0, metavar="BYTES",
                        help="start this many bytes before the end (default: the beginning)")
    parser.add_argument("--address", help="the head's HOST:PORT (default: this machine's cluster)")
    parser.set_defaults(func=cmd_logs)


class LogsError(Exception):
    """What the user asked for does not exist; the message says what does."""


def cmd_logs(args: argparse.Namespace) -> int:
    try:
        nodes, secret = _cluster(args.address)
        if not (args.name or args.actor or args.task):
            _print_listing(cluster_logs(_pick_nodes(nodes, args.node), secret))
            return 0
        node, name = _find_file(nodes, secret, args)
        _print_file(node, secret, name, args.tail, args.follow)
    except (ConnectError, LogsError) as exc:
        print(f"unipar logs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _cluster(address: str | None) -> tuple[list[dict[str, Any]], bytes]:
    state = session.read_state()
    head = head_address_of(address) if address else state.get("head")
    if not head:
        raise LogsError("no unipar cluster was started on this machine (`unipar start "
                        "--head`), and no --address was given. Other backends keep their "
                        "logs elsewhere: `unipar logs --backend NAME` says where")
    secret = session.load_secret()
    if secret is None:
        raise ConnectError(f"no cluster secret (set {session.SECRET_ENV})")
    return list_nodes(head, secret), secret


def _pick_nodes(nodes: list[dict[str, Any]], prefix: str | None) -> list[dict[str, Any]]:
    if not prefix:
        return nodes
    picked = [n for n in nodes if n["NodeID"].startswith(prefix)]
    if not picked:
        known = ", ".join(n["NodeID"][:12] for n in nodes) or "none"
        raise LogsError(f"no node with id {prefix!r} (nodes: {known})")
    if len(picked) > 1:
        raise LogsError(f"node id {prefix!r} is ambiguous: give more of it")
    return picked


def _print_listing(listing: dict[str, Any]) -> None:
    for node in listing["nodes"]:
        print(f"node {node['node_id'][:12]}  {node['log_dir']}")
        for f in node["files"]:
            who = f["role"] or "-"
            if f.get("class_name"):
                who = f"actor {f['class_name']}" + (f" '{f['actor_name']}'"
                                                    if f.get("actor_name") else "")
            pid = f" pid={f['pid']}" if f.get("pid") else ""
            print(f"  {f['name']:<32} {f['size']:>12} B  {who}{pid}")
    for node_id, error in listing["errors"].items():
        print(f"node {node_id[:12]}: no answer ({error})", file=sys.stderr)


def _find_file(nodes: list[dict[str, Any]], secret: bytes,
               args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The node and file name that ``args`` point at (a name, an actor or a task)."""
    listing = cluster_logs(_pick_nodes(nodes, args.node), secret)
    files = [(n, f) for n in listing["nodes"] for f in n["files"]]
    if args.task:
        found = cluster_tasks(_pick_nodes(nodes, args.node), secret, 10_000)["tasks"]
        ran = [t for t in found if t.get("task_id", "").startswith(args.task.lower())]
        if not ran:
            raise LogsError(f"no task with id {args.task!r} among the tasks the nodes "
                            "remember (running or recently ended)")
        task = ran[0]
        wanted = [(n, f) for n, f in files if n["node_id"] == task["node_id"]
                  and f["worker_id"] == task["worker_id"] and f["pid"] == task["pid"]]
        what = f"task {args.task!r} (worker {task['worker_id']} pid={task['pid']})"
    elif args.actor:
        key = args.actor
        wanted = [(n, f) for n, f in files if f.get("actor_name") == key or (
            f.get("actor_id") and f["actor_id"].startswith(key.lower()))]
        what = f"actor {key!r}"
    else:
        wanted = [(n, f) for n, f in files if f["name"] == args.name]
        what = f"log file {args.name!r}"
    if not wanted:
        raise LogsError(f"no {what} on the cluster's nodes; `unipar logs` lists the files")
    node_id = {n["node_id"] for n, _ in wanted}
    if len(node_id) > 1 and not args.actor:
        raise LogsError(f"{what} exists on several nodes: pick one with --node")
    node, entry = max(wanted, key=lambda nf: nf[1]["mtime"])   # an actor's newest process
    return next(n for n in nodes if n["NodeID"] == node["node_id"]), entry["name"]


def _print_file(node: dict[str, Any], secret: bytes, name: str, tail: int,
                follow: bool) -> None:
    """Print ``name`` page by page; with ``follow``, keep polling for more."""
    link = NodeLink(node["Address"], secret)
    out = sys.stdout.buffer
    try:
        offset = -tail if tail > 0 else 0
        while True:
            page = link.ask(lambda r: P.ReadLog(r, name, offset, PAGE))
            if page["size"] < page["offset"]:   # rotated meanwhile: the new file, from 0
                offset = 0
                continue
            data = bytes(page["data"])
            out.write(data)
            offset = page["offset"] + len(data)
            if len(data) == PAGE:
                continue
            out.flush()
            if not follow:
                return
            time.sleep(FOLLOW_EVERY)
    finally:
        link.close()
