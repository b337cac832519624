"""Jobs (``unipar job ...``): a driver the head runs with the working dir the submitter
uploaded. Job rows (Reply values) are dicts: job_id, status (RUNNING, SUCCEEDED, FAILED,
STOPPED), entrypoint, exit_code, message, pid, submitted_at, start_time, end_time (see
head/jobs.py).
"""

from __future__ import annotations

from typing import Any

from .base import Message, message


@message
class SubmitJob(Message):
    """Client -> head: run ``entrypoint`` (argv) in the working dir packed as ``package`` (a
    zip named by ``digest``, from runtime_env.pack; "" and None: no working dir), with the
    rest of the job's runtime env: ``{"env_vars": {..}, "pip": [..], "py_modules": [[digest,
    kind, name, zip bytes], ..]}`` (each key optional).
    Reply.value: the new job's row, or an error saying what was wrong."""
    op = "submit_job"
    req_id: int
    entrypoint: list
    digest: str
    package: Any
    runtime_env: Any = None


@message
class ListJobs(Message):
    """Client -> head. Reply.value: every job's row ("" job_id), or [that one job's row]
    (an unknown id is an error)."""
    op = "list_jobs"
    req_id: int
    job_id: str = ""


@message
class JobLogs(Message):
    """Client -> head: the job's output from byte ``offset`` on (at most a chunk).
    Reply.value: [bytes, the offset after them, the job's row]."""
    op = "job_logs"
    req_id: int
    job_id: str
    offset: int


@message
class StopJob(Message):
    """Client -> head: end the job's driver and its process group (SIGTERM, then SIGKILL).
    Reply.value: the job's row (a job already finished is left as it was)."""
    op = "stop_job"
    req_id: int
    job_id: str
