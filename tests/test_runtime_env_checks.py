"""runtime_env checks and packing (unipar/runtime_env.py): no cluster, no backend."""

from __future__ import annotations

import os
import zipfile

import pytest

from unipar import runtime_env as R
from unipar.options import ActorOptions, InitOptions, TaskOptions


def _project(root) -> str:
    root.mkdir()
    (root / "helper.py").write_text("VALUE = 1\n")
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(b"x" * 2048)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "helper.cpython.pyc").write_bytes(b"junk")
    return str(root)


def test_a_missing_working_dir_says_what_to_give(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*folder"):
        TaskOptions(runtime_env={"working_dir": str(tmp_path / "nope")})


def test_a_working_dir_that_is_a_plain_file_is_refused(tmp_path):
    f = tmp_path / "script.py"
    f.write_text("x = 1\n")
    with pytest.raises(ValueError, match="is a file: give its folder"):
        ActorOptions(runtime_env={"working_dir": str(f)})


def test_unknown_keys_and_non_string_env_vars_are_refused():
    with pytest.raises(ValueError, match="unknown runtime_env key.*conda.*supports"):
        TaskOptions(runtime_env={"conda": "env.yml"})
    with pytest.raises(TypeError, match="strings to strings.*'N': 3.*'3'"):
        TaskOptions(runtime_env={"env_vars": {"N": 3}})
    with pytest.raises(TypeError, match="must be a list"):
        TaskOptions(runtime_env={"pip": "requests"})
    with pytest.raises(TypeError, match="must be a dict"):
        TaskOptions(runtime_env=["working_dir"])


def test_init_checks_runtime_env_before_starting_anything(tmp_path):
    # init() builds its InitOptions before it starts a backend.
    with pytest.raises(ValueError, match="does not exist"):
        InitOptions(runtime_env={"working_dir": str(tmp_path / "nope")})
    assert InitOptions(runtime_env={"env_vars": {"A": "1"}}).runtime_env == {"env_vars": {"A": "1"}}


def test_task_env_merges_over_the_job_env_env_vars_key_by_key(tmp_path):
    job = R.validate({"working_dir": str(tmp_path), "env_vars": {"A": "1", "B": "1"}})
    task = R.validate({"env_vars": {"B": "2"}, "pip": ["x"]})
    merged = R.merge(job, task)
    assert merged == {"working_dir": str(tmp_path), "env_vars": {"A": "1", "B": "2"}, "pip": ["x"]}


def test_packing_is_by_content_and_honours_excludes(tmp_path):
    root = _project(tmp_path / "p1")
    env = R.validate({"working_dir": root, "excludes": ["data/"]})
    packed = R.pack(env)
    [pkg] = packed.packages.values()
    names = zipfile.ZipFile(__import__("io").BytesIO(pkg.data)).namelist()
    assert names == ["helper.py"]          # data/ excluded, __pycache__ by default
    again = _project(tmp_path / "p2")      # same files elsewhere: same digest
    assert R.pack(R.validate({"working_dir": again, "excludes": ["data/"]})).spec == packed.spec
    (tmp_path / "p2" / "helper.py").write_text("VALUE = 2\n")
    assert R.pack(R.validate({"working_dir": again, "excludes": ["data/"]})).spec != packed.spec


def test_an_oversized_working_dir_names_its_biggest_files(tmp_path):
    root = _project(tmp_path / "p")
    with pytest.raises(ValueError, match=r"over the limit.*data/big\.bin.*excludes"):
        R.pack(R.validate({"working_dir": root}), limit=1024)


def test_py_modules_keep_their_import_name(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("X = 1\n")
    single = tmp_path / "single.py"
    single.write_text("Y = 2\n")
    packed = R.pack(R.validate({"py_modules": [str(pkg), str(single)]}))
    names = sorted(n for p in packed.packages.values()
                   for n in zipfile.ZipFile(__import__("io").BytesIO(p.data)).namelist())
    assert names == ["mypkg/__init__.py", "single.py"]


def test_installed_packages_are_reused_from_the_cache(tmp_path):
    packed = R.pack(R.validate({"working_dir": _project(tmp_path / "p")}))
    [pkg] = packed.packages.values()
    cache = str(tmp_path / "cache")
    path = R.install_package(cache, pkg.digest, pkg.data)
    assert os.path.exists(os.path.join(path, "helper.py"))
    assert R.install_package(cache, pkg.digest, None) == path   # no bytes needed again
