"""The dashboard's jobs: what ``unipar job submit`` started, read from the head's own table.

::

    GET /api/jobs                 ── rows() (the head's job rows, copied on its loop) ── newest first
    GET /api/jobs/{id}            ── one job (a unique id prefix will do) ── 404 names what exists
    GET /api/jobs/{id}/log?offset=&length= ── thread: read a page of <state dir>/jobs/<id>.log

The head runs the jobs (head/jobs.py); this module only reads what it keeps: ``rows()`` and
``log_path(job_id)`` are all it is given. A log is read a page at a time (api.LOG_PAGE, at
most api.LOG_PAGE_MAX), never whole. Shapes: docs/observability.md.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable

from . import api

# The fields of a job row the dashboard shows (the head keeps more: its process's identity).
FIELDS = ("job_id", "status", "entrypoint", "message", "exit_code", "submitted_at",
          "start_time", "end_time")


def job_view(row: dict[str, Any]) -> dict[str, Any]:
    """A job row as ``/api/jobs`` shows it: FIELDS (None where the head has none), plus
    ``duration`` (seconds from start to end, or until now while it runs; None before)."""
    view = {key: row.get(key) for key in FIELDS}
    start, end = view["start_time"], view["end_time"]
    view["duration"] = None if start is None else max(0.0, (end or time.time()) - start)
    return view


def read_page(path: str, offset: int, length: int) -> dict[str, Any]:
    """A page of the log at ``path`` (``offset`` < 0: that many bytes before its end), as
    :func:`api.log_page` shapes it; an empty page when the job wrote nothing yet."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            start = max(0, size + offset) if offset < 0 else min(offset, size)
            f.seek(start)
            data = f.read(length)
    except FileNotFoundError:
        return api.log_page(b"", 0, 0)
    return api.log_page(data, start, size)


def routes(web: Any, rows: Callable[[], list[dict[str, Any]]],
           log_path: Callable[[str], str]) -> list[Any]:
    """The routes of this module (GET only). ``rows()`` returns the head's job rows, copied;
    it is called on the head's loop thread."""
    def found(request: Any) -> dict[str, Any] | str:
        return api.pick(rows(), "job_id", request.match_info["id"], "job")

    async def listing(request: Any) -> Any:
        jobs = sorted(rows(), key=lambda r: r.get("submitted_at") or 0.0, reverse=True)
        return web.json_response({"jobs": [job_view(r) for r in jobs]})

    async def one(request: Any) -> Any:
        got = found(request)
        return api.not_found(web, got) if isinstance(got, str) else web.json_response(
            job_view(got))

    async def log(request: Any) -> Any:
        got = found(request)
        if isinstance(got, str):
            return api.not_found(web, got)
        offset = int(api.query_number(request, "offset", 0, -1e15, 1e15))
        length = int(api.query_number(request, "length", api.LOG_PAGE, 0, api.LOG_PAGE_MAX))
        page = await asyncio.to_thread(read_page, log_path(got["job_id"]), offset, length)
        return web.json_response(dict(page, job_id=got["job_id"], status=got["status"]))

    return [web.get("/api/jobs", listing), web.get("/api/jobs/{id}", one),
            web.get("/api/jobs/{id}/log", log)]
