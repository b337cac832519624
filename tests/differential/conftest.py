"""The differential tester runs on every backend through the unipar_backend fixture (one
session per backend, as the conformance suite); tests/conformance/limits.py marks what a
backend documents it cannot do, keyed by test name, exactly as it does for conformance tests."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Iterator

import cloudpickle
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))   # dt_* modules, also when collected from the repository root
sys.path.insert(0, str(HERE.parent / "conformance"))

import dt_harness  # noqa: E402
import dt_runtime  # noqa: E402
from limits import mark_expected_failure  # noqa: E402

# Workers cannot import dt_runtime: its functions and classes travel by value.
cloudpickle.register_pickle_by_value(dt_runtime)


@pytest.fixture(scope="session")
def unipar_init_kwargs():
    # The same size as the conformance suite's (and the oracle's): 4 logical CPUs.
    return {"num_cpus": 4}


@pytest.fixture(scope="session", autouse=True)
def _program_logs() -> Iterator[None]:
    yield
    shutil.rmtree(dt_harness.LOG_DIR, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("unipar_backend_session") if callspec else None
        if backend is None or HERE not in Path(str(item.path)).parents:
            continue
        if item.get_closest_marker("xfail") is not None:   # the conformance hook was first
            continue
        mark_expected_failure(item, backend)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many generated programs ran (``make fuzz`` reports its size by this line)."""
    if dt_harness.CHECKED["programs"]:
        terminalreporter.write_line(
            f"differential: {dt_harness.CHECKED['programs']} programs checked against local")
