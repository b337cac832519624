"""The pytest plugin as a user meets it: a fixture and an option, in a separate pytest run."""

from __future__ import annotations

USER_TESTS = '''
import unipar

class Failure(Exception):
    pass

@unipar.remote
def square(x):
    return x * x

@unipar.remote
def fail():
    raise Failure("defined in the test module")

def test_square(unipar_backend):
    assert unipar.backend_name() == unipar_backend
    assert unipar.get(square.remote(4)) == 16

def test_error_type_from_test_module(unipar_backend):
    try:
        unipar.get(fail.remote())
    except Failure:
        return
    raise AssertionError("Failure was not raised")
'''


def test_fixture_runs_each_selected_backend(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("--unipar-backends=local", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_square?local? PASSED*"])


def test_unavailable_backend_is_skipped_with_reason(pytester, monkeypatch):
    pytester.makepyfile(test_user=USER_TESTS)
    monkeypatch.delenv("UNIPAR_REQUIRE_BACKENDS", raising=False)
    pytester.makeconftest("import sys\nsys.modules['distributed'] = None\n")
    result = pytester.runpytest_subprocess("--unipar-backends=dask", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*unipar?dask?*"])


def test_required_backend_that_cannot_start_fails_the_run(pytester, monkeypatch):
    pytester.makepyfile(test_user=USER_TESTS)
    monkeypatch.setenv("UNIPAR_REQUIRE_BACKENDS", "dask")
    pytester.makeconftest("import sys\nsys.modules['distributed'] = None\n")
    result = pytester.runpytest_subprocess("--unipar-backends=dask", "-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*required (UNIPAR_REQUIRE_BACKENDS) but cannot start*"])


LEAKY_TESTS = '''
import unipar

@unipar.remote(num_cpus=1)
class Holder:
    def ping(self):
        return "pong"

HELD = []

def test_a_leaves_an_actor_alive(unipar_backend):
    HELD.append(Holder.remote())          # kept alive by the module: holds a CPU after the test
    assert unipar.get(HELD[-1].ping.remote(), timeout=60) == "pong"

def test_b_starts_on_an_idle_cluster(unipar_backend):
    assert unipar.available_resources().get("CPU") == unipar.cluster_resources()["CPU"]
'''


def test_a_test_starts_on_an_idle_cluster_whatever_the_test_before_left(pytester):
    # A test that leaves an actor alive must not starve the tests after it on a shared
    # cluster: the next test waits SETTLE_S for the resources, then gets a fresh backend and
    # a warning that names the test that left them.
    pytester.makepyfile(test_user=LEAKY_TESTS)
    pytester.makeconftest("import unipar.testing\nunipar.testing.SETTLE_S = 1.0\n")
    result = pytester.runpytest_subprocess("--unipar-backends=native,local", "-v",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_a_leaves_an_actor_alive?native? left {'CPU': 1.0} held "
                                 "on backend 'native'*started afresh*"])
