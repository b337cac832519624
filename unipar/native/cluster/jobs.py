"""``unipar job submit|status|logs|stop|list``: drivers run on the cluster, by the head.

::

    unipar job submit --working-dir . [--runtime-env-json '{...}'] -- python script.py
        pack(the env) (runtime_env.pack: zips named by their sha256, excludes applied)
        ── SubmitJob over the head's authenticated connection ──▶ head starts the driver
        ── JobLogs from offset 0, until the job has finished and its output is read ──▶ stdout

The job runs on after the submitter leaves (``--no-wait``, Ctrl-C, a lost terminal). Output
is read by offset, so ``logs --follow`` (or a submitter that reconnects) never loses or
repeats a byte. docs/jobs.md is the user's guide.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import queue
import sys
import threading
import time
from typing import Any, Callable

from ... import runtime_env
from ..wire import protocol as P
from ..wire.transport import Connection
from . import session
from .connect import TIMEOUT, ConnectError, head_address_of, open_connection

POLL = 0.25               # seconds between output reads while a job runs
STOP_WAIT = 30.0          # seconds `job stop` waits for the job to end
FINISHED = ("SUCCEEDED", "FAILED", "STOPPED")


class HeadLink:
    """One authenticated connection to the head, for request/reply calls from one thread."""

    def __init__(self, head: str, secret: bytes) -> None:
        self.conn: Connection = open_connection(head, secret)
        self.replies: queue.Queue = queue.Queue()
        self.ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True, name="unipar-job-link").start()

    def _read(self) -> None:
        self.conn.serve_forever(self.replies.put)
        self.replies.put(None)   # closed: a waiting call learns it at once

    def call(self, make: Callable[[int], P.Message], timeout: float = TIMEOUT) -> Any:
        """Send one request and return its reply's value.

        Raises:
            ConnectError: no answer within ``timeout``, the connection closed, or the head
                answered with an error (its message says what was wrong).
        """
        req_id = next(self.ids)
        self.conn.send(make(req_id))
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = self.replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ConnectError(f"no answer from the head within {timeout:g} s") from None
            if reply is None:
                raise ConnectError("the head closed the connection")
            if getattr(reply, "req_id", None) == req_id:
                break
        if reply.error:
            raise ConnectError(reply.error)
        return reply.value

    def close(self) -> None:
        self.conn.close()


def configure(parser: argparse.ArgumentParser) -> None:
    """``unipar job``'s sub-commands."""
    sub = parser.add_subparsers(dest="job_command", metavar="SUBCOMMAND", required=True)
    submit = sub.add_parser("submit", help="run a driver on the cluster (streams its output)")
    _common(submit)
    submit.add_argument("--working-dir", help="a folder (or .zip) uploaded as the job's "
                        "working dir and runtime env (the driver starts in it)")
    submit.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                        help="gitignore-style pattern of files not to upload (repeatable)")
    submit.add_argument("--runtime-env-json", metavar="JSON",
                        help="the job's runtime env as JSON, e.g. '{\"env_vars\": {\"A\": "
                             "\"1\"}, \"py_modules\": [\"../lib\"], \"pip\": [...]}' "
                             "(--working-dir and --exclude are merged over it)")
    submit.add_argument("--runtime-env", metavar="FILE",
                        help="the same from a .json or .yaml file")
    submit.add_argument("--no-wait", action="store_true",
                        help="print the job id and return; the job runs on")
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER,
                        help="the command, after `--`: -- python script.py")
    submit.set_defaults(func=cmd_submit)
    for name, helptext, func in (("status", "show a job's status", cmd_status),
                                 ("logs", "print a job's output", cmd_logs),
                                 ("stop", "stop a job's driver and all it started", cmd_stop)):
        command = sub.add_parser(name, help=helptext)
        _common(command)
        command.add_argument("job_id")
        command.set_defaults(func=func)
        if name == "logs":
            command.add_argument("--follow", "-f", action="store_true",
                                 help="keep printing until the job finishes")
        if name == "stop":
            command.add_argument("--no-wait", action="store_true",
                                 help="return once the job was signalled")
    listing = sub.add_parser("list", help="list the cluster's jobs")
    _common(listing)
    listing.set_defaults(func=cmd_list)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="the head's HOST:PORT (default: this machine's "
                                          "cluster, from `unipar start`)")
    parser.add_argument("--secret-file", help="file holding the cluster secret (default: "
                                              f"${session.SECRET_ENV}, or this machine's)")


def _link(args: argparse.Namespace) -> HeadLink:
    head = head_address_of(args.address) if args.address else session.read_state().get("head")
    if not head:
        raise ConnectError("no unipar cluster was started on this machine (`unipar start "
                           "--head`); give the head's address with --address HOST:PORT")
    secret = session.load_secret(args.secret_file)
    if secret is None:
        raise ConnectError(f"no cluster secret: pass --secret-file or set {session.SECRET_ENV}"
                           f" (`unipar start --head` wrote it to {session.secret_path()} on "
                           "the head machine)")
    return HeadLink(head, secret)


def _run(name: str, args: argparse.Namespace, body: Callable[[HeadLink], int]) -> int:
    """``body`` with a link to the head; a problem is one line on stderr and exit status 1."""
    try:
        link = _link(args)
    except (ConnectError, ValueError, OSError) as exc:
        print(f"unipar job {name}: {exc}", file=sys.stderr)
        return 1
    try:
        return body(link)
    except ConnectError as exc:
        print(f"unipar job {name}: {exc}", file=sys.stderr)
        return 1
    finally:
        link.close()


# -- the commands ------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    entry = list(args.entrypoint)
    if entry[:1] == ["--"]:
        entry = entry[1:]
    if not entry:
        print("unipar job submit: give the command after `--`, e.g. "
              "unipar job submit --working-dir . -- python script.py", file=sys.stderr)
        return 2
    try:
        given = job_runtime_env(args.runtime_env_json, args.runtime_env)
    except ValueError as exc:
        print(f"unipar job submit: {exc}", file=sys.stderr)
        return 2
    try:
        digest, data, rest = _pack(given, args.working_dir, args.exclude)
    except (ValueError, TypeError) as exc:
        print(f"unipar job submit: {exc}", file=sys.stderr)
        return 1

    def body(link: HeadLink) -> int:
        row = link.call(lambda r: P.SubmitJob(r, entry, digest, P.blob(data), rest),
                        timeout=300)
        job_id = row["job_id"]
        print(f"Job {job_id} submitted: {' '.join(entry)}", file=sys.stderr)
        if args.no_wait:
            print(job_id)
            print(f"  Follow its output: unipar job logs --follow {job_id}\n"
                  f"  Its status:        unipar job status {job_id}\n"
                  f"  Stop it:           unipar job stop {job_id}", file=sys.stderr)
            return 0
        try:
            row = follow(link, job_id, 0)
        except KeyboardInterrupt:
            print(f"\nStopped watching; job {job_id} runs on (`unipar job stop {job_id}` "
                  "ends it).", file=sys.stderr)
            return 130
        print(f"Job {job_id} {row['status']}{_why(row)}", file=sys.stderr)
        return _exit_status(row)
    return _run("submit", args, body)


def job_runtime_env(text: str | None, path: str | None) -> dict[str, Any]:
    """The runtime env given by ``--runtime-env-json`` or ``--runtime-env FILE`` ({} when
    neither), not yet validated. As ``ray job submit``: one of the two at most.

    Raises:
        ValueError: both given, a file that cannot be read, text that does not parse, or
            something other than an object; the message names the option.
    """
    if text is not None and path is not None:
        raise ValueError("give only one of --runtime-env and --runtime-env-json")
    if path is not None:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as exc:
            raise ValueError(f"--runtime-env {path}: {exc.strerror or exc}") from None
        option = f"--runtime-env {path}"
    else:
        option = "--runtime-env-json"
    if text is None:
        return {}
    env = _parse(text, option, path is not None and path.endswith((".yaml", ".yml")))
    if not isinstance(env, dict):
        raise ValueError(f"{option}: give a JSON object such as "
                         '\'{"env_vars": {"A": "1"}}\', not ' + type(env).__name__)
    return env


def _parse(text: str, option: str, as_yaml: bool) -> Any:
    if as_yaml:
        try:
            import yaml   # optional: only for a .yaml file
        except ImportError:
            raise ValueError(f"{option}: reading YAML needs PyYAML (pip install pyyaml); "
                             "or give a .json file") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{option} is not valid YAML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{option} is not valid JSON ({exc}); write it as "
                         '\'{"env_vars": {"A": "1"}}\' (double quotes)') from None


def _pack(given: dict[str, Any], working_dir: str | None,
          excludes: list[str]) -> tuple[str, bytes | None, dict[str, Any]]:
    """The job's runtime env for SubmitJob: the working dir as one package (digest, zip
    bytes; "" and None without one), and the rest (SubmitJob.runtime_env). ``--working-dir``
    replaces the env's ``working_dir``; ``--exclude`` patterns add to its ``excludes``."""
    env = dict(given)
    if working_dir is not None:
        env["working_dir"] = working_dir
    if excludes:
        env["excludes"] = list(env.get("excludes") or []) + list(excludes)
    env = runtime_env.validate(env)
    packed = runtime_env.pack(env)
    rest: dict[str, Any] = {k: packed.spec[k] for k in ("env_vars", "pip") if k in packed.spec}
    modules = [[digest, packed.packages[digest].kind, os.path.basename(path.rstrip(os.sep)),
                packed.packages[digest].data]
               for digest, path in zip(packed.spec.get("py_modules", ()),
                                       env.get("py_modules", ()))]
    if modules:
        rest["py_modules"] = modules
    if "working_dir" not in packed.spec:
        return "", None, rest
    package = packed.packages[packed.spec["working_dir"]]
    return package.digest, package.data, rest


def follow(link: HeadLink, job_id: str, offset: int, until_done: bool = True) -> dict[str, Any]:
    """Print the job's output from ``offset``; with ``until_done``, until it has finished and
    all of it is printed. Returns the job's last row."""
    out = sys.stdout.buffer
    while True:
        data, offset, row = link.call(lambda r: P.JobLogs(r, job_id, offset))
        if data:
            out.write(data)
            out.flush()
            continue   # more may be waiting: read on before sleeping
        if row["status"] in FINISHED or not until_done:
            return row
        time.sleep(POLL)


def cmd_logs(args: argparse.Namespace) -> int:
    def body(link: HeadLink) -> int:
        follow(link, args.job_id, 0, until_done=args.follow)
        return 0
    return _run("logs", args, body)


def cmd_status(args: argparse.Namespace) -> int:
    def body(link: HeadLink) -> int:
        [row] = link.call(lambda r: P.ListJobs(r, args.job_id))
        print(f"Job {row['job_id']}: {row['status']}{_why(row)}")
        print(f"  command:  {' '.join(row['entrypoint'])}")
        print(f"  started:  {_when(row['start_time'])}   ended: {_when(row['end_time'])}")
        return 0
    return _run("status", args, body)


def cmd_stop(args: argparse.Namespace) -> int:
    def body(link: HeadLink) -> int:
        row = link.call(lambda r: P.StopJob(r, args.job_id))
        deadline = time.monotonic() + STOP_WAIT
        while not args.no_wait and row["status"] not in FINISHED:
            if time.monotonic() > deadline:
                print(f"unipar job stop: job {args.job_id} did not end within {STOP_WAIT:g} s",
                      file=sys.stderr)
                return 1
            time.sleep(POLL)
            [row] = link.call(lambda r: P.ListJobs(r, args.job_id))
        print(f"Job {row['job_id']}: {row['status']}{_why(row)}")
        return 0
    return _run("stop", args, body)


def cmd_list(args: argparse.Namespace) -> int:
    def body(link: HeadLink) -> int:
        rows = link.call(lambda r: P.ListJobs(r, ""))
        if not rows:
            print("No jobs (`unipar job submit -- python script.py` runs one).")
        for row in rows:
            print(f"{row['job_id']}  {row['status']:<9}  {_when(row['submitted_at'])}  "
                  f"{' '.join(row['entrypoint'])}")
        return 0
    return _run("list", args, body)


def list_jobs(head: str, secret: bytes) -> list[dict[str, Any]]:
    """Every job's row, for ``unipar status``."""
    link = HeadLink(head, secret)
    try:
        return link.call(lambda r: P.ListJobs(r, ""))
    finally:
        link.close()


def _why(row: dict[str, Any]) -> str:
    return f" ({row['message']})" if row.get("message") else ""


def _when(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def _exit_status(row: dict[str, Any]) -> int:
    """The submitter's exit status: the job's own when it failed, 1 when it was stopped."""
    if row["status"] == "SUCCEEDED":
        return 0
    code = row.get("exit_code")
    return code if isinstance(code, int) and code > 0 else 1
