"""The one place that says what a backend cannot do, and why.

Each entry turns a conformance test into a strict expected failure on that backend (an XPASS
fails the run, so this table stays true). The same reasons are written in docs/backends.md.
Keys are test function names, without the backend parameter.
"""

# Backends whose adapter is not built yet, with the issue that builds it.
NOT_BUILT: dict[str, int] = {}

# Tests that would block forever on a backend: expected failures that are not run.
NOT_RUN: dict[str, dict[str, str]] = {
    "native": {
    },
    "local": {
        "test_get_timeout_on_never_ending_task":
            "local runs each task to completion inside .remote(): a task that never ends "
            "never returns control, so no timeout can apply",
        "test_wait_partial_on_timeout_and_poll":
            "local runs each task to completion inside .remote(): a task that never ends "
            "never returns control, so wait() cannot return early",
        "test_cancel_pending_task":
            "local runs each task inside .remote(): no task is ever pending, and the blockers "
            "this test starts would never return",
        "test_cancel_running_task_force":
            "local runs each task inside .remote(): there is no running task to cancel",
        "test_cancelled_task_is_task_cancelled_and_task_error":
            "local runs each task inside .remote(): the task has finished before cancel() "
            "could reach it, so there is nothing to cancel",
        "test_short_tasks_finish_while_one_task_is_blocked":
            "local runs each task inside .remote(): the blocked task never returns control, "
            "so no other task can run meanwhile",
        "test_an_actor_blocked_in_a_call_holds_up_no_other_actor":
            "local runs each call inside .remote(): the blocked call never returns control, "
            "so no other actor can run meanwhile",
        "test_actor_pool_get_next_timeout":
            "local runs each call to completion inside .remote(): a call that waits on a "
            "Queue only a later put fills never returns control",
        "test_queue_blocking_get_waits_for_a_later_put":
            "local runs each call to completion inside .remote(): a call that waits on a "
            "Queue only a later put fills never returns control",
        "test_pool_get_timeout":
            "local runs each call to completion inside .remote(): a call that waits on a "
            "Queue only a later put fills never returns control",
        "test_executor_timeout_and_cancel":
            "local runs each call to completion inside .remote(): a call that waits on a "
            "Queue only a later put fills never returns control",
        "test_a_ref_inside_a_put_value_lives_while_a_task_has_that_value":
            "local runs each task inside .remote(): the task would wait there for a gate "
            "this test opens only after .remote() returns",
    },
    "dask": {
        # Found by the differential tester (seed 4, 25 examples): r = slow.remote();
        # cancel(r); box = put([r]); get(get(box)[0]) waits until its timeout (get(r) raises
        # TaskCancelledError as it should).
        "test_differential_cancel":
            "a ref to a cancelled Dask task rebuilt from its key (nested in a value) never "
            "resolves: Dask forgot the cancelled key, so get() times out instead of raising "
            "TaskCancelledError",
        "test_fuzz":
            "a ref to a cancelled Dask task rebuilt from its key (nested in a value) never "
            "resolves; make fuzz draws cancels",
    },
    "ray": {
        # Generated programs cancel tasks at random moments; Ray 2.60's driver then sometimes
        # aborts ("Check failed: it != submissible_tasks_.end() Tried to complete task that
        # was not pending", task_manager.cc), which ends the whole pytest process.
        "test_differential_cancel":
            "Ray 2.60 aborts the driver process when a cancel races a task's completion "
            "(RAY_CHECK in TaskManager; ray-project/ray#54738, #54798)",
        "test_fuzz":
            "Ray 2.60 aborts the driver process when a cancel races a task's completion "
            "(RAY_CHECK in TaskManager; ray-project/ray#54738, #54798); make fuzz draws cancels",
    },
}

LIMITS: dict[str, dict[str, str]] = {
    "local": {
        "test_actor_max_concurrency_runs_calls_together":
            "one thread runs every call in turn: two calls cannot be in progress at once",
        "test_actors_run_in_parallel":
            "one thread runs every actor call in turn: two actors never run at once",
        "test_async_actor_interleaves_calls":
            "each async call runs to completion on its own event loop before the next is queued",
        "test_worker_print_is_prefixed":
            "tasks print straight to this process's stdout, unprefixed, so pdb and print work "
            "as in plain Python",
    },
    "native": {},
    "dask": {
        "test_node_ip_resource_pins_work_to_its_node":
            "Dask workers have no node:<ip> resource (their resources are what they were "
            "started with): pin work with NodeAffinitySchedulingStrategy",
        "test_placement_group_reserves_runs_work_and_gives_back": "Dask reserves nothing ahead of the tasks that use it: placement groups raise NotSupportedError",
        "test_infeasible_placement_group_fails_or_waits": "Dask reserves nothing ahead of the tasks that use it: placement groups raise NotSupportedError",
        "test_work_that_fits_no_bundle_is_refused": "Dask reserves nothing ahead of the tasks that use it: placement groups raise NotSupportedError",
        "test_runtime_context_names_the_actor":
            "actors run in threads of their own, outside Dask's tasks: no actor id is known",
    },
    "spark": {
        "test_node_ip_resource_pins_work_to_its_node":
            "Spark picks each task's executor itself: no node:<ip> resource",
        "test_placement_group_reserves_runs_work_and_gives_back": "Spark reserves nothing ahead of its tasks: placement groups raise NotSupportedError",
        "test_infeasible_placement_group_fails_or_waits": "Spark reserves nothing ahead of its tasks: placement groups raise NotSupportedError",
        "test_work_that_fits_no_bundle_is_refused": "Spark reserves nothing ahead of its tasks: placement groups raise NotSupportedError",
        "test_spread_and_node_affinity_run_on_live_nodes":
            "Spark picks each task's executor itself: node affinity raises NotSupportedError",
        "test_hard_affinity_to_an_unknown_node_fails":
            "Spark picks each task's executor itself: node affinity, soft too, raises "
            "NotSupportedError",
        "test_runtime_context_names_the_actor":
            "the runtime context inside Spark actors carries no actor id",
    },
    "ray": {
        "test_runtime_env_working_dir_and_py_modules_import_in_tasks_and_actors":
            "Ray uploads a local working_dir or py_modules only when init(runtime_env=...) "
            "names them; per task it refuses them at .remote() (give URIs instead)",
    },
}


def mark_expected_failure(item, backend: str) -> None:
    """Mark a collected test (``item``, a pytest.Item) run on ``backend`` as this table says:
    not built or would hang (xfail, not run), or a declared limit (strict xfail)."""
    import pytest
    if backend in NOT_BUILT:
        item.add_marker(pytest.mark.xfail(
            run=False, reason=f"backend {backend!r} is not built yet: issue #{NOT_BUILT[backend]}"))
        return
    hang = NOT_RUN.get(backend, {}).get(item.originalname)
    if hang:
        item.add_marker(pytest.mark.xfail(run=False, reason=hang))
        return
    reason = LIMITS.get(backend, {}).get(item.originalname)
    if reason:
        item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
