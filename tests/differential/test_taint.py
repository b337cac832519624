"""What a cancel makes uncertain (dt_interp.taint): the differential tester compares nothing a
cancel may have changed, and everything else. Cases a long ``make fuzz`` run found."""

from __future__ import annotations

from dt_interp import taint
from dt_program import Call, Cancel, Lit, NewActor, Program, Put, Task, Var


def test_a_call_on_an_actor_built_from_a_cancelled_ref_is_tainted() -> None:
    # Seed 2891104935: r3 cancelled (on local it had already run), a6 built with r3 (dies on
    # native: its constructor argument was cancelled), r7 = a6.add(): local gave 5, native
    # ActorDiedError. r7 reads no cancelled variable itself, only the actor.
    program = Program((
        Task("r3", "work", 2, ()),
        Cancel(Var("r3")),
        NewActor("a6", "sync", 4, (Var("r3"),)),
        Call("r7", "a6", "add", 5, ()),
        Put("r8", Lit(1)),
    ))
    out = taint(program)
    assert {"r3", "r7"} <= out.names and "a6" in out.actors and 5 in out.tags
    assert "r8" not in out.names   # untouched by the cancel: still compared
