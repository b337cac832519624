"""Shrunk differential failures, kept as plain tests on every backend: a ref inside a value
lives as long as something that can reach it (here: a pending task's argument)."""

from __future__ import annotations

import gc
import os
import time
from typing import Any

import unipar

T = 60.0


@unipar.remote
def one(tag: int) -> int:
    return tag


@unipar.remote
def after_gate(gate: str, box: list[Any]) -> int:
    """The value of ``box[0]`` (a ref inside a top-level argument), once ``gate`` exists."""
    deadline = time.monotonic() + T
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return unipar.get(box[0], timeout=20)


def test_a_ref_inside_a_put_value_lives_while_a_task_has_that_value(
        unipar_backend: str, tmp_path: Any) -> None:
    gate = str(tmp_path / "go")
    box = unipar.put([one.remote(7)])
    out = after_gate.remote(gate, box)
    del box   # only the pending task still reaches the inner ref now
    gc.collect()
    open(gate, "w").close()
    assert unipar.get(out, timeout=T) == 7
