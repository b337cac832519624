"""runtime_env on every backend: what a task and an actor see, and what is refused.

A backend that cannot apply runtime_env refuses it at ``.remote()`` (limits.py says which and
why); none ignores it silently. That code really travels to machines that cannot see the
driver's folder is shown for the native engine in tests/native/test_native_runtime_env.py.
"""

from __future__ import annotations

import os

import pytest

import unipar
from unipar.runtime_env import RuntimeEnvNotSupported


@pytest.fixture
def project(tmp_path):
    """A project folder with a module, and a separate library package."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "travel_helper.py").write_text("VALUE = 11\n")
    (tmp_path / "libs" / "travel_lib").mkdir(parents=True)
    (tmp_path / "libs" / "travel_lib" / "__init__.py").write_text("NAME = 'lib'\n")
    return {"working_dir": str(tmp_path / "proj"),
            "py_modules": [str(tmp_path / "libs" / "travel_lib")]}


@unipar.remote
def _environment(name):
    return os.environ.get(name)


@unipar.remote
def _imports():
    import travel_helper
    import travel_lib
    return [travel_helper.VALUE, travel_lib.NAME]


@unipar.remote
class _Reader:
    def read(self, name):
        import travel_helper
        return [os.environ.get(name), travel_helper.VALUE]


def test_runtime_env_vars_reach_a_task(unipar_backend):
    env = {"env_vars": {"UNIPAR_TRAVEL_TEST": "yes"}}
    assert unipar.get(_environment.options(runtime_env=env).remote("UNIPAR_TRAVEL_TEST"),
                      timeout=120) == "yes"


def test_runtime_env_working_dir_and_py_modules_import_in_tasks_and_actors(unipar_backend,
                                                                            project):
    assert unipar.get(_imports.options(runtime_env=project).remote(), timeout=120) == [11, "lib"]
    env = dict(project, env_vars={"UNIPAR_TRAVEL_TEST": "actor"})
    reader = _Reader.options(runtime_env=env).remote()
    assert unipar.get(reader.read.remote("UNIPAR_TRAVEL_TEST"), timeout=120) == ["actor", 11]


def test_runtime_env_bad_input_is_refused_before_anything_runs(unipar_backend, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        _environment.options(runtime_env={"working_dir": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="unknown runtime_env key"):
        _environment.options(runtime_env={"container": "image"})
    with pytest.raises(TypeError, match="strings to strings"):
        _Reader.options(runtime_env={"env_vars": {"N": 1}})
    assert unipar.get(_environment.remote("PATH"), timeout=120) is not None   # still serving


def test_runtime_env_that_a_backend_cannot_apply_fails_at_remote(unipar_backend):
    if unipar_backend not in ("dask", "spark"):
        pytest.skip(f"{unipar_backend} applies every runtime_env key it is given")
    # Their workers are shared by every task: requirements cannot be installed for one.
    with pytest.raises(RuntimeEnvNotSupported, match=f"{unipar_backend} backend cannot apply"):
        _environment.options(runtime_env={"pip": ["requests"]}).remote("A")
    assert unipar.get(_environment.remote("PATH"), timeout=120) is not None
