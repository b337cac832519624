"""The oracle (``local``) frees a value only when nothing holds it: refs inside stored values (a
put list, a task's result, a task's pending arguments) keep their objects alive, as on every
engine. The differential tester once had to stop local freeing anything to compare at all."""

from __future__ import annotations

import gc
from typing import Any, Iterator

import pytest

import unipar

T = 30.0


@pytest.fixture
def local() -> Iterator[None]:
    unipar.shutdown()   # the session's backend, if any: the plugin starts it again when needed
    unipar.init(backend="local")
    yield
    unipar.shutdown()


@unipar.remote
def double(x: int) -> int:
    return 2 * x


@unipar.remote
def wrap(x: int) -> list[Any]:
    return [double.remote(x)]


@unipar.remote
def first(box: dict[str, Any]) -> int:
    return unipar.get(box["k"], timeout=T)


def test_a_ref_inside_a_put_value_outlives_the_driver_s_refs(local: None) -> None:
    outer = unipar.put([double.remote(1)])
    gc.collect()
    assert unipar.get(unipar.get(outer, timeout=T)[0], timeout=T) == 2


def test_a_ref_inside_a_task_result_outlives_the_task(local: None) -> None:
    outer = wrap.remote(2)
    gc.collect()
    assert unipar.get(unipar.get(outer, timeout=T)[0], timeout=T) == 4


def test_a_ref_nested_in_arguments_is_there_for_the_task(local: None) -> None:
    assert unipar.get(first.remote({"k": double.remote(3)}), timeout=T) == 6
