"""What a cancel makes uncertain (dt_interp.taint): the differential tester compares nothing a
cancel may have changed, and everything else. Cases a long ``make fuzz`` run found."""

from __future__ import annotations

from dt_interp import taint
from dt_program import Call, Cancel, ListOf, Lit, NewActor, Program, Put, Task, Var


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


def test_a_task_given_the_handle_of_a_tainted_actor_is_tainted() -> None:
    # A long make fuzz run (2,304 programs): a6 built from cancelled r2 died on native; the task
    # r11 = work(a6) calls it and raised ActorDiedError, on local it gave a value.
    program = Program((
        Task("r2", "work", 1, ()),
        Cancel(Var("r2")),
        NewActor("a6", "sync", 4, (Var("r2"),)),
        Task("r11", "work", 8, (Var("a6"),)),
        Task("r12", "work", 9, ()),
    ))
    out = taint(program)
    assert "r11" in out.names and 8 in out.tags
    assert "r12" not in out.names


def test_an_actor_inside_the_arguments_of_a_cancelled_task_is_tainted() -> None:
    # A long make fuzz run (986 programs): r4 = work(r3), r3 a put list holding a1's handle;
    # r4 cancelled: on native its call on a1 never happened, on local it had.
    program = Program((
        NewActor("a1", "sync", 1),
        Put("r3", ListOf((ListOf((Lit(0), Var("a1"))),))),
        Task("r4", "work", 2, (Var("r3"),)),
        Cancel(Var("r4")),
        NewActor("a5", "sync", 5),
    ))
    out = taint(program)
    assert "a1" in out.actors and "a5" not in out.actors
