"""Backend-independent parts of the API: selection, options, errors, the CLI, import cost."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import unipar
from unipar.backends import KNOWN_BACKENDS, backend_table, load_backend
from unipar.backends.base import Backend
from unipar.cli import main as cli_main


@pytest.fixture
def no_backend():
    unipar.shutdown()
    yield
    unipar.shutdown()


def test_import_starts_nothing_and_imports_no_engine():
    code = ("import sys, threading, unipar; "
            "bad = [m for m in ('dask', 'distributed', 'pyspark', 'ray') if m in sys.modules]; "
            "assert not bad, bad; assert not unipar.is_initialized(); "
            "assert threading.active_count() == 1, threading.enumerate()")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unknown_backend_name_is_a_clear_error(no_backend):
    with pytest.raises(ValueError, match="unknown backend 'nope'.*local"):
        unipar.init(backend="nope")
    assert not unipar.is_initialized()


def test_backend_from_environment(no_backend, monkeypatch):
    monkeypatch.setenv("UNIPAR_BACKEND", "local")
    unipar.init()
    assert unipar.backend_name() == "local"


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(unipar.BackendUnavailableError, match=r"pip install 'unipar\[dask\]'"):
        load_backend("dask")
    assert issubclass(unipar.BackendUnavailableError, ImportError)


def test_every_seam_method_is_abstract():
    abstract = Backend.__abstractmethods__
    public = {n for n, v in vars(Backend).items() if callable(v) and not n.startswith("_")}
    assert public == set(abstract)

    class Half(Backend):
        name = "half"
        def start(self, options):
            pass
    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_registry_lists_every_backend():
    assert set(KNOWN_BACKENDS) == {"native", "dask", "spark", "ray", "local"}
    rows = {r["name"]: r for r in backend_table()}
    assert rows["local"]["installed"] is True
    assert "unipar[spark]" in rows["spark"]["install"]


def test_cli_version_and_backends(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["--version"])
    assert info.value.code == 0
    assert unipar.__version__ in capsys.readouterr().out
    assert cli_main(["backends"]) == 0
    out = capsys.readouterr().out
    for name in KNOWN_BACKENDS:
        assert name in out
    assert "native (default)" in out


def test_remote_decorator_forms_and_option_errors():
    @unipar.remote
    def f(x):
        return x

    @unipar.remote(num_cpus=2, num_returns=2)
    def g():
        return 1, 2

    assert f._options.num_cpus == 1 and g._options.num_returns == 2
    with pytest.raises(TypeError, match="unknown option.*num_cpu\\b.*valid options"):
        f.options(num_cpu=1)
    with pytest.raises(ValueError, match="num_cpus"):
        f.options(num_cpus=-1)
    with pytest.raises(ValueError, match="num_returns"):
        unipar.remote(num_returns=1.5)(lambda: None)
    with pytest.raises(ValueError, match="get_if_exists"):
        unipar.remote(get_if_exists=True)(type("C", (), {}))
    with pytest.raises(ValueError, match="num_gpus"):
        unipar.remote(resources={"GPU": 1})(lambda: None)
    with pytest.raises(TypeError, match="keyword options"):
        unipar.remote(1, 2)


def test_an_async_def_function_is_refused_as_a_task_naming_the_fix():
    # As Ray (ValueError at the decorator): a coroutine is no task's result. Before, every
    # backend accepted it and each call failed later ("cannot pickle 'coroutine' object").
    async def fetch(x):
        return x

    for decorate in (unipar.remote, unipar.remote(num_cpus=1)):
        with pytest.raises(ValueError, match="'async def'.*asyncio.run.*async actor"):
            decorate(fetch)


def test_task_error_is_dual_and_pickles():
    try:
        1 / 0
    except ZeroDivisionError as exc:
        err = unipar.exceptions.capture_remote(exc, "here")
    assert isinstance(err, ZeroDivisionError) and isinstance(err, unipar.TaskError)
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ZeroDivisionError) and isinstance(back, unipar.TaskError)
    assert "Remote traceback (raised in here)" in str(back)
    assert unipar.exceptions.capture_remote(unipar.ActorDiedError("x")).__class__ is unipar.ActorDiedError


def test_get_timeout_error_is_a_timeout_error():
    assert issubclass(unipar.GetTimeoutError, TimeoutError)
    assert issubclass(unipar.TaskError, unipar.UniparError)


def test_shutdown_without_init_is_fine(no_backend):
    unipar.shutdown()
    unipar.shutdown()
    assert unipar.backend_name() is None


def test_init_twice_is_an_error_unless_ignored(no_backend):
    unipar.init(backend="local")
    with pytest.raises(RuntimeError, match="already initialised.*'local'.*ignore_reinit_error"):
        unipar.init(backend="local")
    unipar.init(backend="native", ignore_reinit_error=True)  # a no-op: local stays
    assert unipar.backend_name() == "local"


def test_first_use_starts_the_default_backend(no_backend, monkeypatch):
    monkeypatch.setenv("UNIPAR_BACKEND", "local")

    @unipar.remote
    def add(a, b):
        return a + b

    ref = add.remote(1, 2)  # no init: the first use starts UNIPAR_BACKEND
    assert unipar.backend_name() == "local"
    assert ref.future().result(timeout=10) == 3


def test_num_returns_splits_results_the_same_way_everywhere():
    from unipar.options import split_returns
    assert split_returns((1, 2), 1, "f") == [(1, 2)]
    assert split_returns("x", 0, "f") == []
    assert split_returns((1, 2), 2, "f") == [1, 2] == split_returns([1, 2], 2, "f")
    with pytest.raises(ValueError, match=r"f was declared with num_returns=2 but returned 3 values"):
        split_returns((1, 2, 3), 2, "f")
    with pytest.raises(ValueError, match=r"num_returns=2 but returned int"):
        split_returns(5, 2, "f")


def test_wrong_number_of_returns_fails_the_task(no_backend):
    unipar.init(backend="local")

    @unipar.remote(num_returns=2)
    def three():
        return 1, 2, 3

    first, second = three.remote()
    for ref in (first, second):
        with pytest.raises(ValueError, match="declared with num_returns=2 but returned 3 values"):
            unipar.get(ref, timeout=10)
