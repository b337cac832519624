"""Remote errors, timeouts and cancellation."""

from __future__ import annotations

import time

import pytest

import unipar


class RemoteOops(Exception):
    def __init__(self, message, code):
        super().__init__(message, code)
        self.code = code


@unipar.remote
def divide(a, b):
    return a / b


@unipar.remote
def raise_custom(code):
    raise RemoteOops("custom failure", code)


@unipar.remote
def plus_one(x):
    return x + 1


@unipar.remote(max_retries=0)
def sleep_forever():
    # "Never ends" within any test's life; cancelled (forced) by the test that starts it.
    while True:
        time.sleep(0.05)


def test_remote_exception_keeps_its_type(unipar_backend):
    ref = divide.remote(1, 0)
    with pytest.raises(ZeroDivisionError) as info:
        unipar.get(ref)
    err = info.value
    assert isinstance(err, unipar.TaskError)
    assert "divide" in str(err)            # the remote traceback names the function
    assert "ZeroDivisionError" in str(err)
    with pytest.raises(unipar.TaskError):
        unipar.get(ref)


def test_remote_traceback_shows_the_users_file_line_and_source(unipar_backend):
    # The function is pickled by value (a test module, like a script's __main__): the worker's
    # traceback must still name this file and show the failing line, as on `local`.
    with pytest.raises(ZeroDivisionError) as info:
        unipar.get(divide.remote(1, 0), timeout=60)
    text = str(info.value)
    assert f'File "{__file__}"' in text, text
    assert "return a / b" in text, text
    assert "<dynamic-code>" not in text


def test_custom_exception_keeps_its_fields(unipar_backend):
    with pytest.raises(RemoteOops) as info:
        unipar.get(raise_custom.remote(7))
    assert info.value.code == 7
    assert isinstance(info.value, unipar.TaskError)


def test_failure_propagates_to_dependents(unipar_backend):
    failed = divide.remote(1, 0)
    child = plus_one.remote(failed)
    grandchild = plus_one.remote(child)
    with pytest.raises(ZeroDivisionError):
        unipar.get(grandchild)


def test_get_list_raises_the_failure(unipar_backend):
    with pytest.raises(ZeroDivisionError):
        unipar.get([plus_one.remote(1), divide.remote(1, 0)])


def test_get_of_something_that_is_not_a_ref(unipar_backend):
    with pytest.raises(TypeError, match="ObjectRef"):
        unipar.get(42)
    with pytest.raises(TypeError, match="ObjectRef"):
        unipar.get([plus_one.remote(1), "not a ref"])
    with pytest.raises(ValueError, match="timeout"):
        unipar.get(plus_one.remote(1), timeout=-1)


def test_get_timeout_on_never_ending_task(unipar_backend):
    ref = sleep_forever.remote()
    try:
        with pytest.raises(unipar.GetTimeoutError):
            unipar.get(ref, timeout=0.5)
        with pytest.raises(TimeoutError):   # GetTimeoutError is also a TimeoutError
            unipar.get([ref], timeout=0)
    finally:
        unipar.cancel(ref, force=True)
    with pytest.raises(unipar.TaskCancelledError):
        unipar.get(ref, timeout=60)


def test_cancel_pending_task(unipar_backend):
    # Hold every CPU with forever-tasks so the last one stays pending, then cancel them all.
    blockers = [sleep_forever.remote() for _ in range(int(unipar.cluster_resources()["CPU"]))]
    pending = sleep_forever.remote()
    try:
        unipar.cancel(pending)
        with pytest.raises(unipar.TaskCancelledError):
            unipar.get(pending, timeout=60)
    finally:
        for ref in blockers:
            unipar.cancel(ref, force=True)
    for ref in blockers:
        with pytest.raises(unipar.TaskCancelledError):
            unipar.get(ref, timeout=60)
    # The cluster still works after forced cancellation.
    assert unipar.get(plus_one.remote(1), timeout=60) == 2


def test_cancel_running_task_force(unipar_backend):
    ref = sleep_forever.remote()
    ready, _ = unipar.wait([ref], timeout=0.2)
    assert ready == []
    unipar.cancel(ref, force=True)
    with pytest.raises(unipar.TaskCancelledError):
        unipar.get(ref, timeout=60)


def test_cancel_of_finished_task_changes_nothing(unipar_backend):
    ref = plus_one.remote(1)
    assert unipar.get(ref) == 2
    unipar.cancel(ref)
    assert unipar.get(ref) == 2
    with pytest.raises(TypeError):
        unipar.cancel("not a ref")
