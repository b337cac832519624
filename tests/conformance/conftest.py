"""The conformance suite: every test takes ``unipar_backend`` (from the unipar.testing plugin)
and so runs once per backend; limits.py marks what a backend documents it cannot do."""

from __future__ import annotations

import pytest

from limits import mark_expected_failure


@pytest.fixture(scope="session")
def unipar_init_kwargs():
    # The tutorial's actor tree holds 4 CPUs for life; CPUs are logical, as in Ray.
    return {"num_cpus": 4}


def _backend_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("unipar_backend_session") if callspec else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        backend = _backend_of(item)
        if backend is None:
            continue
        mark_expected_failure(item, backend)
