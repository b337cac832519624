"""The one place unipar reads environment variables.

=========================  ===================================================================
``UNIPAR_BACKEND``         backend used when ``init(backend=...)`` is not given (default native)
``UNIPAR_ADDRESS``         cluster address used when ``init(address=...)`` is not given
``UNIPAR_TEST_BACKENDS``   comma list narrowing the backends the test fixture runs on
``UNIPAR_REQUIRE_BACKENDS`` comma list of backends that must start in tests (CI): no skipping
=========================  ===================================================================

The native engine also passes a few variables between its own processes (``UNIPAR_NODE_ADDRESS``,
``UNIPAR_WORKER_ID``, ``UNIPAR_WORKER_ROLE``, ``UNIPAR_WORKER_SETUP``, ``UNIPAR_DRIVER_SYS_PATH``);
they are internal to ``unipar.native`` and not settings for users.
"""

from __future__ import annotations

import os

DEFAULT_BACKEND = "native"


def backend_name() -> str:
    return os.environ.get("UNIPAR_BACKEND", "").strip() or DEFAULT_BACKEND


def address() -> str | None:
    return os.environ.get("UNIPAR_ADDRESS", "").strip() or None


def _names(var: str) -> list[str]:
    return [n.strip() for n in os.environ.get(var, "").split(",") if n.strip()]


def test_backends() -> list[str]:
    return _names("UNIPAR_TEST_BACKENDS")


def required_backends() -> list[str]:
    return _names("UNIPAR_REQUIRE_BACKENDS")
