"""Ray's option vocabulary (issue #18.6): every option Ray 2.x accepts on remote/.options()
is accepted on every backend (docs/api.md says what each does); cancelled work raises an error
that is both TaskCancelledError and TaskError."""

from __future__ import annotations

import time

import pytest

import unipar

TASK_OPTIONS = dict(
    accelerator_type="A100", memory=1e6, object_store_memory=1e6, enable_task_events=False,
    label_selector={"zone": "a"}, _labels={"team": "x"}, max_calls=5,
    _num_objects_per_yield=1, _generator_backpressure_num_objects=4,
    retry_exceptions=[ValueError])
ACTOR_OPTIONS = dict(
    accelerator_type="A100", memory=1e6, object_store_memory=1e6, enable_task_events=False,
    max_pending_calls=10, namespace="ns", concurrency_groups={"io": 2},
    allow_out_of_order_execution=False, _actor_generator_backpressure_num_objects=4,
    lifetime="non_detached")
METHOD_OPTIONS = dict(concurrency_group="io", enable_task_events=False, max_task_retries=1,
                      retry_exceptions=True, _generator_backpressure_num_objects=2)


@unipar.remote
def one():
    return 1


@unipar.remote
def sleeper(seconds):
    time.sleep(seconds)
    return "woke"


@unipar.remote
class Echo:
    def echo(self, x):
        return x


def test_every_ray_task_option_is_accepted():
    for name, value in TASK_OPTIONS.items():
        one.options(**{name: value})   # no error


def test_every_ray_actor_and_method_option_is_accepted():
    for name, value in ACTOR_OPTIONS.items():
        Echo.options(**{name: value})
    unipar.method(**METHOD_OPTIONS)(lambda self: None)


@pytest.mark.parametrize("bad", [dict(memory=-1), dict(enable_task_events="yes"),
                                 dict(label_selector={"a": 1}), dict(num_returns="many")])
def test_bad_option_values_are_refused(bad):
    with pytest.raises(ValueError):
        one.options(**bad)


def test_unknown_options_are_refused():
    with pytest.raises(TypeError, match="unknown option"):
        one.options(not_a_ray_option=1)


def test_options_run_on_every_backend(unipar_backend):
    small = {k: v for k, v in TASK_OPTIONS.items()
             if k not in ("accelerator_type", "memory", "object_store_memory", "label_selector")}
    assert unipar.get(one.options(**small).remote(), timeout=60) == 1
    echo = Echo.options(max_pending_calls=10, enable_task_events=False).remote()
    assert unipar.get(echo.echo.remote(3), timeout=60) == 3


def test_cancelled_task_is_task_cancelled_and_task_error(unipar_backend):
    ref = sleeper.remote(30)
    unipar.cancel(ref, force=True)
    with pytest.raises(unipar.TaskCancelledError) as info:
        unipar.get(ref, timeout=60)
    assert isinstance(info.value, unipar.TaskError)
