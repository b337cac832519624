"""Jobs: drivers the head runs for ``unipar job submit``, in the working dir they brought.

::

    unipar job submit ── SubmitJob(argv, working dir zip) ──▶ head (authenticated connection)
    head: unpack once into <state dir>/jobs/packages/<digest> (content-addressed)
          ─▶ Popen(argv, cwd=that folder, a session and process group of its own,
                   UNIPAR_ADDRESS=auto, UNIPAR_JOB_RUNTIME_ENV={"working_dir": folder},
                   stdout+stderr ─▶ <state dir>/jobs/<job id>.log)
          ─▶ a thread waits for it ─▶ SUCCEEDED / FAILED (exit code) / STOPPED
    unipar job logs|status|list|stop ── JobLogs / ListJobs / StopJob ──▶ head

The head owns the driver: the submitter may disconnect, the job runs on. ``stop`` signals the
driver's whole process group (SIGTERM, then SIGKILL after ``STOP_GRACE`` seconds), so what
the driver started goes with it; its tasks and actors end when its connection closes, as for
any driver. Job rows are saved in the head's snapshot (journal.py); a head started again
keeps watching a driver that still runs, though its exit code is then unknown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import psutil

from ...runtime_env import JOB_ENV_VAR, install_package
from ..wire import protocol as P
from ..wire.server import ServerConnection

log = logging.getLogger("unipar.native.head")

RUNNING, SUCCEEDED, FAILED, STOPPED = "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"
FINISHED = (SUCCEEDED, FAILED, STOPPED)
STOP_GRACE = 5.0          # seconds between SIGTERM and SIGKILL of a stopped job's group
LOG_CHUNK = 256 * 1024    # bytes of output per JobLogs answer
# What the head's own environment holds that a job's driver must not inherit: the marker
# would make `unipar stop` take the driver for a daemon of ours.
_NOT_INHERITED = ("UNIPAR_STARTED_BY", "UNIPAR_ADDRESS", JOB_ENV_VAR)


class Jobs:
    """The head's jobs: rows by id, their processes, and the handlers for the job messages.

    Args:
        root: the folder for packages and logs (``<state dir>/jobs``), made on first use.
        changed: called (on the event loop) after every change a snapshot must keep.
    """

    def __init__(self, root: str, changed: Callable[[], None]) -> None:
        self.root = root
        self.changed = changed
        self.rows: dict[str, dict[str, Any]] = {}
        self.procs: dict[str, Any] = {}   # job id -> Popen (or psutil.Process after a restart)

    def handlers(self) -> dict[str, Callable[[ServerConnection, Any], None]]:
        return {P.SubmitJob.op: self.on_submit_job, P.ListJobs.op: self.on_list_jobs,
                P.JobLogs.op: self.on_job_logs, P.StopJob.op: self.on_stop_job}

    # -- durability ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {job_id: dict(row) for job_id, row in self.rows.items()}

    def restore(self, rows: dict[str, dict[str, Any]]) -> None:
        """Reload saved rows. A driver still running is watched again; one that is gone
        ended while no head watched it: FAILED, exit code unknown."""
        self.rows = {job_id: dict(row) for job_id, row in rows.items()}
        for job_id, row in self.rows.items():
            if row["status"] != RUNNING:
                continue
            proc = _same_process(row.get("pid"), row.get("create_time"))
            if proc is None:
                self._finish(job_id, FAILED, None, "its driver ended while the head was down; "
                                                   "its exit code is unknown")
            else:
                self.procs[job_id] = proc
                self._watch(job_id, proc, asyncio.get_running_loop())

    # -- handlers ------------------------------------------------------------------------------
    def on_submit_job(self, conn: ServerConnection, msg: P.SubmitJob) -> None:
        entry = [str(a) for a in (msg.entrypoint or [])]
        if not entry or not entry[0].strip():
            conn.send(P.Reply(msg.req_id, None, "give the command to run after `--`, e.g. "
                                                "unipar job submit -- python script.py", "value"))
            return
        loop = asyncio.get_running_loop()
        # Unpacking (up to 100 MiB) runs beside the loop: heartbeats keep being answered.
        task = loop.create_task(self._submit(conn, msg.req_id, entry, msg.digest,
                                             msg.package, msg.runtime_env or {}, loop))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())   # never unretrieved

    async def _submit(self, conn: ServerConnection, req_id: int, entry: list[str],
                      digest: str, package: Any, rest: dict[str, Any],
                      loop: asyncio.AbstractEventLoop) -> None:
        job_id = "job_" + secrets.token_hex(6)
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            data = bytes(package.data if isinstance(package, P.Blob) else package) if digest \
                else None
            env = await loop.run_in_executor(None, job_env, self._packages(), digest, data,
                                             rest)
        except Exception as exc:   # a bad archive, a full disk: the submitter is told why
            conn.send(P.Reply(req_id, None, f"could not unpack the job's runtime env: "
                                            f"{type(exc).__name__}: {exc}", "value"))
            return
        self.rows[job_id] = {"job_id": job_id, "status": RUNNING, "entrypoint": entry,
                             "working_dir": digest, "exit_code": None, "message": "",
                             "pid": None, "create_time": None, "submitted_at": time.time(),
                             "start_time": None, "end_time": None}
        self._start(job_id, entry, env, loop)
        self.changed()
        conn.send(P.Reply(req_id, dict(self.rows[job_id])))

    def on_list_jobs(self, conn: ServerConnection, msg: P.ListJobs) -> None:
        if not msg.job_id:
            rows = sorted(self.rows.values(), key=lambda r: r["submitted_at"])
            conn.send(P.Reply(msg.req_id, [dict(r) for r in rows]))
        elif msg.job_id in self.rows:
            conn.send(P.Reply(msg.req_id, [dict(self.rows[msg.job_id])]))
        else:
            conn.send(P.Reply(msg.req_id, None, self._unknown(msg.job_id), "value"))

    def on_job_logs(self, conn: ServerConnection, msg: P.JobLogs) -> None:
        row = self.rows.get(msg.job_id)
        if row is None:
            conn.send(P.Reply(msg.req_id, None, self._unknown(msg.job_id), "value"))
            return
        data = b""
        try:
            with open(self.log_path(msg.job_id), "rb") as f:
                f.seek(max(0, int(msg.offset)))
                data = f.read(LOG_CHUNK)
        except OSError:
            pass   # not written yet, or removed with the state directory
        conn.send(P.Reply(msg.req_id, [data, max(0, int(msg.offset)) + len(data), dict(row)]))

    def on_stop_job(self, conn: ServerConnection, msg: P.StopJob) -> None:
        row = self.rows.get(msg.job_id)
        if row is None:
            conn.send(P.Reply(msg.req_id, None, self._unknown(msg.job_id), "value"))
            return
        if row["status"] == RUNNING and not row.get("stopping"):
            row["stopping"] = True
            pgid = row["pid"]
            _signal_group(pgid, signal.SIGTERM)
            asyncio.get_running_loop().call_later(STOP_GRACE, self._kill_stragglers, msg.job_id)
        conn.send(P.Reply(msg.req_id, dict(row)))

    # -- processes -----------------------------------------------------------------------------
    def log_path(self, job_id: str) -> str:
        return os.path.join(self.root, job_id + ".log")

    def _packages(self) -> str:
        return os.path.join(self.root, "packages")

    def _unknown(self, job_id: str) -> str:
        return f"no job {job_id!r} on this cluster; `unipar job list` shows its jobs"

    def _start(self, job_id: str, entry: list[str], env: dict[str, Any],
               loop: asyncio.AbstractEventLoop) -> None:
        """Start the driver in the job's runtime env ``env`` (see :func:`job_env`); a
        command that cannot start is a FAILED job, not an error."""
        row = self.rows[job_id]
        try:
            with open(self.log_path(job_id), "ab") as out:
                proc = subprocess.Popen(_argv(entry), cwd=env.get("working_dir", self.root),
                                        stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT,
                                        env=_driver_env(job_id, env),
                                        start_new_session=True)   # its own process group
        except OSError as exc:
            self._finish(job_id, FAILED, None, f"could not start {entry[0]!r}: {exc}")
            return
        row.update(pid=proc.pid, start_time=time.time(), create_time=_create_time(proc.pid))
        self.procs[job_id] = proc
        self._watch(job_id, proc, loop)

    def _watch(self, job_id: str, proc: Any, loop: asyncio.AbstractEventLoop) -> None:
        def wait() -> None:
            code = proc.wait()
            loop.call_soon_threadsafe(self._exited, job_id, code)
        threading.Thread(target=wait, daemon=True, name=f"unipar-job-{job_id}").start()

    def _exited(self, job_id: str, code: int | None) -> None:
        row = self.rows[job_id]
        self.procs.pop(job_id, None)
        if row.get("stopping"):
            _signal_group(row["pid"], signal.SIGKILL)   # what it started goes with it
            self._finish(job_id, STOPPED, code, "stopped by `unipar job stop`")
        elif code is None:
            self._finish(job_id, FAILED, None, "its driver ended while the head was down; "
                                               "its exit code is unknown")
        elif code == 0:
            self._finish(job_id, SUCCEEDED, 0, "")
        else:
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            self._finish(job_id, FAILED, code, f"the command failed ({how})")

    def _finish(self, job_id: str, status: str, code: int | None, message: str) -> None:
        row = self.rows[job_id]
        row.pop("stopping", None)
        row.update(status=status, exit_code=code, message=message, end_time=time.time())
        self.changed()

    def _kill_stragglers(self, job_id: str) -> None:
        row = self.rows.get(job_id)
        if row is not None and row["status"] == RUNNING and row.get("stopping"):
            _signal_group(row["pid"], signal.SIGKILL)   # it ignored SIGTERM


def _argv(entry: list[str]) -> list[str]:
    """One argument with blanks is a shell command line (``"python a.py | tee out"``)."""
    if len(entry) == 1 and any(c.isspace() for c in entry[0]):
        return ["/bin/sh", "-c", entry[0]]
    return entry


def job_env(root: str, digest: str, data: bytes | None,
            rest: dict[str, Any]) -> dict[str, Any]:
    """Unpack a submitted job's packages under ``root`` (once per digest) and return its
    runtime env with local paths, as the driver's ``init`` takes it: ``working_dir`` (the
    unpacked working dir), ``py_modules`` (each module's folder or file, a wheel as its
    file), ``env_vars`` and ``pip`` as given.

    Raises:
        ValueError: a malformed module entry; zipfile and OS errors from unpacking.
    """
    env: dict[str, Any] = {k: rest[k] for k in ("env_vars", "pip") if rest.get(k)}
    if digest:
        env["working_dir"] = install_package(root, digest, data, "zip")
    modules = [_install_module(root, *entry) for entry in rest.get("py_modules") or ()]
    if modules:
        env["py_modules"] = modules
    return env


def _install_module(root: str, digest: str, kind: str, name: str, data: Any) -> str:
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or kind not in (
            "zip", "wheel"):
        raise ValueError(f"a py_modules entry named {name!r} ({kind!r}) is not a module")
    data = bytes(data)
    if kind == "wheel":   # kept as the wheel file: that is what py_modules takes
        path = os.path.join(root, "wheels", digest, name)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".part", "wb") as f:
                f.write(data)
            os.replace(path + ".part", path)
        return path
    return os.path.join(install_package(root, digest, data, kind), name)


def _driver_env(job_id: str, job: dict[str, Any]) -> dict[str, str]:
    """The head's environment for the driver, plus: connect to this cluster, take ``job``
    (:func:`job_env`) as the job's runtime env (its env vars set, its working dir and
    modules importable here too), ``python`` is the cluster's interpreter, output
    unbuffered (it is streamed)."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env.update(UNIPAR_ADDRESS="auto", UNIPAR_JOB_ID=job_id, PYTHONUNBUFFERED="1",
               PATH=os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]))
    if job:
        env[JOB_ENV_VAR] = json.dumps(job)
        env.update(job.get("env_vars", {}))
        front = ([job["working_dir"]] if "working_dir" in job else []) + [
            p if p.endswith(".whl") else os.path.dirname(p) for p in job.get("py_modules", ())]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (*front, env.get("PYTHONPATH")) if p)
    return env


def _signal_group(pgid: int | None, sig: int) -> None:
    if not pgid:
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass   # the group is gone already


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _same_process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The process ``pid`` if it is still the one started then (not a reused pid)."""
    if not pid or create_time is None:
        return None
    try:
        proc = psutil.Process(pid)
        return proc if abs(proc.create_time() - create_time) < 0.01 else None
    except psutil.Error:
        return None
