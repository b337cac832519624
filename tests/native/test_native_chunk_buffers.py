"""wire/buffers.py: chunk buffers are reused only once nothing holds them, and let go when idle."""

from __future__ import annotations

from unipar.native.wire.buffers import ChunkBuffers
from unipar.testing import wait_for


def test_a_buffer_is_taken_again_only_once_nobody_holds_it() -> None:
    pool = ChunkBuffers(16, keep=2, idle=60)
    view = memoryview(pool.take())    # a reader still holds it (through a view)
    first_id = id(view.obj)
    second = pool.take()
    assert id(second) != first_id
    del view
    first = pool.take()               # free again: reused, not a fresh one
    assert id(first) == first_id
    third = pool.take()               # both kept ones are held: a fresh one, not kept
    assert third is not first and third is not second and pool.kept() == 2


def test_kept_buffers_are_let_go_when_idle() -> None:
    pool = ChunkBuffers(16, keep=4, idle=0.2)
    held = pool.take()
    pool.take()
    assert pool.kept() == 2
    wait_for(lambda: pool.kept() == 0, timeout=10, message="the idle pool to let its buffers go")
    # The pool let go of them: a new round starts a new pool, with a fresh buffer.
    assert pool.take() is not held and pool.kept() == 1
