"""pytest plugin: run the same tests on every unipar backend.

Registered through the ``pytest11`` entry point, so it is active wherever unipar is installed.
A test that takes the ``unipar_backend`` fixture runs once per selected backend; the backend is
started once per session (per backend) and shut down after its tests::

    def test_square(unipar_backend):
        @unipar.remote
        def square(x):
            return x * x
        assert unipar.get(square.remote(4)) == 16

Choosing backends: ``--unipar-backends=native,dask``, else ``UNIPAR_TEST_BACKENDS``, else every
backend unipar knows. A backend that cannot start is skipped with the reason, unless it is
listed in ``UNIPAR_REQUIRE_BACKENDS`` (as CI does), where the run fails instead.

Override the ``unipar_init_kwargs`` fixture (session scope) in a conftest to size the cluster,
e.g. ``return {"num_cpus": 4}``. Test modules that use the fixture are pickled by value
(cloudpickle), so functions and classes defined in them run on workers that cannot import them.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Iterator

import cloudpickle
import pytest

from . import api
from . import config
from .backends import available_backends
from .exceptions import BackendUnavailableError

FIXTURE = "unipar_backend"
SESSION_FIXTURE = "unipar_backend_session"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("unipar")
    group.addoption("--unipar-backends", default=None, metavar="NAMES",
                    help="comma-separated backends to run unipar_backend tests on "
                         "(default: $UNIPAR_TEST_BACKENDS, else all)")


def selected_backends(pytest_config: pytest.Config) -> list[str]:
    """The backends a ``unipar_backend`` test runs on, in the order given."""
    option = pytest_config.getoption("--unipar-backends", default=None)
    names = [n.strip() for n in option.split(",") if n.strip()] if option else config.test_backends()
    return names or available_backends()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if SESSION_FIXTURE in metafunc.fixturenames:
        names = selected_backends(metafunc.config)
        metafunc.parametrize(SESSION_FIXTURE, names, ids=names, indirect=True, scope="session")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and FIXTURE in getattr(item, "fixturenames", ()):
            _register_by_value(module)


def _register_by_value(module: Any) -> None:
    try:
        cloudpickle.register_pickle_by_value(module)
    except (ValueError, TypeError):  # not importable by name: already pickled by value
        pass


@pytest.fixture(scope="session")
def unipar_init_kwargs() -> dict[str, Any]:
    """Keyword arguments for ``unipar.init``; override in a conftest to size the cluster."""
    return {}


def _start(name: str, init_kwargs: dict[str, Any]) -> None:
    api.shutdown()
    try:
        api.init(backend=name, **init_kwargs)
    except BackendUnavailableError as exc:
        if name in config.required_backends():
            pytest.fail(f"backend {name!r} is required (UNIPAR_REQUIRE_BACKENDS) but cannot "
                        f"start: {exc}", pytrace=False)
        pytest.skip(f"backend {name!r} is not available: {exc}")


@pytest.fixture(scope="session")
def unipar_backend_session(request: pytest.FixtureRequest,
                           unipar_init_kwargs: dict[str, Any]) -> Iterator[str]:
    """Starts one backend for all the tests that run on it; shuts it down after them."""
    name: str = request.param
    _start(name, unipar_init_kwargs)
    try:
        yield name
    finally:
        api.shutdown()


# How long a test waits for the resources the test before it still holds (a task it cancelled
# that has not ended yet, an actor being killed) before the backend is started afresh.
SETTLE_S = 30.0


@pytest.fixture
def unipar_backend(request: pytest.FixtureRequest, unipar_backend_session: str,
                   unipar_init_kwargs: dict[str, Any]) -> str:
    """The name of the backend unipar is initialised on for this test.

    Every test starts on an idle cluster: if a test in between shut unipar down or switched
    backends, it is started again; if resources are still held when the test begins (a test
    before it left a task running or an actor alive), it waits up to ``SETTLE_S`` seconds for
    them and then starts the backend afresh, with a warning that names the test that left them.
    Without this, one test's leftovers starve every later test on a shared cluster.
    """
    if api.backend_name() != unipar_backend_session:
        _start(unipar_backend_session, unipar_init_kwargs)
    else:
        held = _held_resources(SETTLE_S)
        if held:
            last = request.config.stash.get(_LAST_TEST, "a test before this one")
            warnings.warn(f"{last} left {held} held on backend {unipar_backend_session!r} "
                          f"for {SETTLE_S:g} s; the backend was started afresh", stacklevel=1)
            _start(unipar_backend_session, unipar_init_kwargs)
    request.config.stash[_LAST_TEST] = request.node.nodeid
    return unipar_backend_session


_LAST_TEST = pytest.StashKey[str]()   # the node id of the last test that used the fixture


def _held_resources(timeout: float) -> dict[str, float]:
    """What the cluster still holds after ``timeout`` s of waiting for it to go idle ({} when
    every resource is free)."""
    deadline = time.monotonic() + timeout
    while True:
        total, free = api.cluster_resources(), api.available_resources()
        held = {key: amount - free.get(key, 0.0) for key, amount in total.items()
                if amount - free.get(key, 0.0) > 1e-9}
        if not held or time.monotonic() >= deadline:
            return held
        time.sleep(0.05)


def wait_for(condition: Any, timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> Any:
    """Poll ``condition()`` until it returns a truthy value; fail the test after ``timeout`` s.

    Returns that value. Use it instead of a bare ``sleep`` in tests.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {message}", pytrace=False)
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago, for a service a test starts."""
    import socket
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def terminate(procs: list[Any], grace: float = 10.0) -> None:
    """Stop psutil processes: SIGTERM, then SIGKILL whatever is left after ``grace`` seconds."""
    from .proctree import kill_tree
    kill_tree(procs, grace=grace)
