"""The one place unipar reads the environment variables its users set (docs/api.md lists them).

==============================  ============================================================
``UNIPAR_BACKEND``              backend used when ``init(backend=...)`` is not given (default
                                native)
``UNIPAR_ADDRESS``              cluster address used when ``init(address=...)`` is not given
``UNIPAR_TEST_BACKENDS``        comma list narrowing the backends the test fixture runs on
``UNIPAR_REQUIRE_BACKENDS``     comma list of backends that must start in tests (CI): no skipping
``UNIPAR_STATE_DIR``            where ``unipar start`` keeps its state on this machine (default
                                ``$TMPDIR/unipar-<uid>``)
``UNIPAR_CLUSTER_SECRET``       a native cluster's secret, in hex
``UNIPAR_CLUSTER_SECRET_FILE``  a file holding a native cluster's secret
``UNIPAR_TLS_CA``               a CA certificate (PEM): TCP connections to native daemons use
                                TLS and check the daemon's certificate against it
``UNIPAR_TLS_CERT``             (daemons; ``unipar start --tls-cert``) certificate (PEM) its TCP
                                listeners present: they accept TLS only
``UNIPAR_TLS_KEY``              (daemons; ``unipar start --tls-key``) that certificate's key
``UNIPAR_HEAD_WAIT``            seconds a driver's request waits for a native head that is down
                                before HeadUnavailableError (default 30)
``UNIPAR_HEAD_GIVE_UP``         seconds a native node runs without its head before it stops
                                (default 60)
``UNIPAR_RUNTIME_ENV_GRACE``    seconds a native node keeps a runtime env package (unpacked,
                                or its upload) that nothing uses before removing it (default
                                600)
``CUDA_VISIBLE_DEVICES``        (CUDA's own) the GPUs a native local cluster may hand out
==============================  ============================================================

Not settings, and so not read here: variables our own processes pass each other. The native
engine hands a worker ``UNIPAR_NODE_ADDRESS``, ``UNIPAR_WORKER_ID``, ``UNIPAR_WORKER_ROLE``,
``UNIPAR_WORKER_SETUP``, ``UNIPAR_DRIVER_SYS_PATH`` and ``UNIPAR_RUNTIME_ENV`` (and sets
its ``CUDA_VISIBLE_DEVICES`` per task); the dask backend hands its private cluster ``UNIPAR_DASK_DRIVER_PID`` and
``UNIPAR_DASK_DIRECTORY``; ``unipar start`` marks its daemons with ``UNIPAR_STARTED_BY`` (the
state directory, so ``unipar stop`` finds them). The engine adapters also pass through their engines' own variables
(``RAY_ADDRESS``, ``JAVA_HOME``, ``PYSPARK_PYTHON``, ``SPARK_LOCAL_IP``), which those engines
document.
"""

from __future__ import annotations

import os

DEFAULT_BACKEND = "native"

BACKEND = "UNIPAR_BACKEND"
ADDRESS = "UNIPAR_ADDRESS"
TEST_BACKENDS = "UNIPAR_TEST_BACKENDS"
REQUIRE_BACKENDS = "UNIPAR_REQUIRE_BACKENDS"
STATE_DIR = "UNIPAR_STATE_DIR"
CLUSTER_SECRET = "UNIPAR_CLUSTER_SECRET"
CLUSTER_SECRET_FILE = "UNIPAR_CLUSTER_SECRET_FILE"
HEAD_WAIT = "UNIPAR_HEAD_WAIT"
TLS_CA = "UNIPAR_TLS_CA"
TLS_CERT = "UNIPAR_TLS_CERT"
TLS_KEY = "UNIPAR_TLS_KEY"
HEAD_GIVE_UP = "UNIPAR_HEAD_GIVE_UP"
RUNTIME_ENV_GRACE = "UNIPAR_RUNTIME_ENV_GRACE"
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


def _text(var: str) -> str | None:
    """The variable's value with surrounding blanks removed; None when unset or blank."""
    return os.environ.get(var, "").strip() or None


def backend_name() -> str:
    return _text(BACKEND) or DEFAULT_BACKEND


def address() -> str | None:
    return _text(ADDRESS)


def _names(var: str) -> list[str]:
    return [n.strip() for n in os.environ.get(var, "").split(",") if n.strip()]


def test_backends() -> list[str]:
    return _names(TEST_BACKENDS)


def required_backends() -> list[str]:
    return _names(REQUIRE_BACKENDS)


def state_dir() -> str | None:
    """``UNIPAR_STATE_DIR``; None: the default directory."""
    return _text(STATE_DIR)


def _seconds(var: str, default: float) -> float:
    text = _text(var)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{var}={text!r}: expected a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{var}={text!r}: expected a positive number of seconds")
    return value


def head_wait() -> float:
    """``UNIPAR_HEAD_WAIT``: seconds a request waits for a head that is down (default 30)."""
    return _seconds(HEAD_WAIT, 30.0)


def head_give_up() -> float:
    """``UNIPAR_HEAD_GIVE_UP``: seconds a node goes on without a head (default 60)."""
    return _seconds(HEAD_GIVE_UP, 60.0)


def runtime_env_grace() -> float:
    """``UNIPAR_RUNTIME_ENV_GRACE``: seconds a node keeps an unused runtime env package
    (default 600: a driver started again within ten minutes finds its code there)."""
    return _seconds(RUNTIME_ENV_GRACE, 600.0)


def tls_ca() -> str | None:
    """``UNIPAR_TLS_CA``: the CA file TLS clients check native daemons against (None: no TLS)."""
    return _text(TLS_CA)


def tls_server() -> tuple[str, str] | None:
    """``(UNIPAR_TLS_CERT, UNIPAR_TLS_KEY)`` for a daemon's TCP listeners; None: plain TCP.

    Raises:
        ValueError: only one of the two is set.
    """
    cert, key = _text(TLS_CERT), _text(TLS_KEY)
    if (cert is None) != (key is None):
        raise ValueError(f"set both {TLS_CERT} and {TLS_KEY} (a certificate and its key), "
                         "or neither")
    return (cert, key) if cert and key else None


def cluster_secret() -> str | None:
    """``UNIPAR_CLUSTER_SECRET`` as written (hex digits, not yet checked)."""
    return _text(CLUSTER_SECRET)


def cluster_secret_file() -> str | None:
    """``UNIPAR_CLUSTER_SECRET_FILE``: the path of a file holding the secret."""
    return _text(CLUSTER_SECRET_FILE)


def visible_gpus() -> list[str] | None:
    """The GPU ids in ``CUDA_VISIBLE_DEVICES``; None when it is unset (all GPUs are visible)."""
    visible = os.environ.get(CUDA_VISIBLE_DEVICES)
    if visible is None:
        return None
    return [v.strip() for v in visible.split(",") if v.strip()]
