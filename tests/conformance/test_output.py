"""Worker print() output reaches the driver's terminal, prefixed with where it ran."""

from __future__ import annotations

import re
import uuid

import unipar
from unipar.testing import wait_for


@unipar.remote
def shout(text):
    print(text, flush=True)
    return True


def test_worker_print_is_prefixed(unipar_backend, capfd):
    marker = f"hello-{uuid.uuid4().hex}"
    assert unipar.get(shout.remote(marker), timeout=60)
    seen: list[str] = []

    def arrived():
        seen.append(capfd.readouterr().out)
        return marker in "".join(seen)
    wait_for(arrived, timeout=30, message="the worker's print to reach the driver")
    line = next(l for l in "".join(seen).splitlines() if marker in l)
    assert re.match(r"^\(.*pid=\d+.*\) .*" + marker, line), line

