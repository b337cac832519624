"""Runtime environments: the code and settings a job's workers need, checked and packed once.

A runtime env is a dict (as in Ray) given to ``unipar.init(runtime_env=...)`` (the job's
default) or ``.options(runtime_env=...)`` (merged over the job's)::

    working_dir  a local folder or .zip: shipped to every node that runs the job's work;
                 workers start in it (cwd) and import from it (first on sys.path)
    excludes     gitignore-style patterns of files in working_dir not to ship
    py_modules   local packages or modules (folders, .py files, .whl wheels) put on sys.path
    env_vars     {name: value} strings set in the workers' environment
    pip          requirements installed, once per distinct list on each node, into a cached
                 directory layered in front of the node's own packages

Data flow (every backend)::

    options/init ─▶ validate() ─▶ merge(job, task) ─▶ the backend: pack() ─▶ Package blobs
                                                                 (zip bytes, keyed by sha256)
    worker ─▶ install_package(blob) into a cache dir by hash ─▶ activate(): sys.path, cwd, env

This module imports no backend and no engine code; backends map its output onto their own
mechanisms (see docs/runtime-env.md).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

__all__ = ["KNOWN_KEYS", "MAX_PACKAGE_BYTES", "RuntimeEnvSetupError", "Package", "Packed",
           "validate", "merge", "canonical", "pack", "install_package", "install_pip",
           "activate", "pip_key", "refuse_in_process", "applied_in_process",
           "RuntimeEnvNotSupported", "refuse", "JOB_ENV_VAR", "with_job_env",
           "applied_around", "install_shipped", "refuse_pip", "spec_digests", "pip_dir",
           "note_use", "noted_use", "noted_users", "forget_use", "remove_cached",
           "cached_names"]

KNOWN_KEYS = ("env_vars", "excludes", "pip", "py_modules", "working_dir")
MAX_PACKAGE_BYTES = 100 * 1024 * 1024   # per package, before compression (Ray's limit)
DEFAULT_EXCLUDES = (".git", "__pycache__", "*.pyc", ".venv")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)   # fixed: the same files always make the same bytes
# The head hands a job's driver its runtime env (JSON) in this variable (head/jobs.py): an
# internal hand-off between our processes, not a setting (so config.py does not read it).
JOB_ENV_VAR = "UNIPAR_JOB_RUNTIME_ENV"


class RuntimeEnvSetupError(RuntimeError):
    """A worker could not set up its runtime env (e.g. a pip requirement did not install).

    Tasks and actors of that env fail with it; the node and other envs keep working."""


@dataclass(frozen=True)
class Package:
    """One packed folder, module or wheel: zip bytes named by the sha256 of their contents."""

    digest: str
    data: bytes
    kind: str = "zip"   # zip: unpack; wheel: unpack (a wheel is a zip too), keep the name


@dataclass(frozen=True)
class Packed:
    """A runtime env ready to travel: what each worker needs, and the packages it names.

    ``spec`` is plain data (JSON-able): ``working_dir`` and ``py_modules`` name package
    digests; ``env_vars`` and ``pip`` are as given."""

    spec: dict[str, Any]
    packages: dict[str, Package] = field(default_factory=dict)


# -- checking ---------------------------------------------------------------------------------

def validate(env: Any) -> dict[str, Any]:
    """A checked, normalized copy of ``env`` (absolute paths, lists, str -> str env vars).

    Raises:
        TypeError: ``env`` is not a dict, or a value has the wrong type.
        ValueError: an unknown key, or a path that does not exist or is not usable.
    """
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise TypeError(f"runtime_env must be a dict such as {{'working_dir': '.'}}, "
                        f"got {type(env).__name__}")
    unknown = sorted(str(k) for k in env if k not in KNOWN_KEYS)
    if unknown:
        raise ValueError(f"unknown runtime_env key(s) {', '.join(unknown)}; unipar supports "
                         f"{', '.join(KNOWN_KEYS)}")
    out: dict[str, Any] = {}
    if env.get("working_dir") is not None:
        out["working_dir"] = _check_working_dir(env["working_dir"])
    if env.get("excludes"):
        out["excludes"] = _str_list("excludes", env["excludes"])
    if env.get("py_modules"):
        out["py_modules"] = [_check_module(p) for p in _str_list("py_modules", env["py_modules"])]
    if env.get("env_vars"):
        out["env_vars"] = _check_env_vars(env["env_vars"])
    if env.get("pip"):
        out["pip"] = _check_pip(env["pip"])
    return out


def _str_list(key: str, value: Any) -> list[str]:
    if isinstance(value, (str, os.PathLike)):
        raise TypeError(f"runtime_env[{key!r}] must be a list, e.g. [{str(value)!r}]")
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (str, os.PathLike)) for v in value):
        raise TypeError(f"runtime_env[{key!r}] must be a list of strings, got {value!r}")
    return [os.fspath(v) for v in value]


def _check_working_dir(value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"runtime_env['working_dir'] must be a path, got {value!r}")
    path = os.path.abspath(os.fspath(value))
    if not os.path.exists(path):
        raise ValueError(f"runtime_env['working_dir'] {path} does not exist: give a local "
                         "folder (or a .zip) that holds your code")
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
        raise ValueError(f"runtime_env['working_dir'] {path} is a file: give its folder, or "
                         "a .zip archive")
    return path


def _check_module(path: str) -> str:
    full = os.path.abspath(path)
    if not os.path.exists(full):
        raise ValueError(f"runtime_env['py_modules'] entry {full} does not exist: give a "
                         "package folder, a .py file or a .whl wheel")
    if os.path.isfile(full) and not full.endswith((".py", ".whl")):
        raise ValueError(f"runtime_env['py_modules'] entry {full} is neither a package "
                         "folder, a .py file nor a .whl wheel")
    return full


def _check_env_vars(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"runtime_env['env_vars'] must be a dict of str -> str, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError(f"runtime_env['env_vars'] must map strings to strings; "
                            f"{key!r}: {item!r} is not (write it as {str(item)!r})")
    return dict(value)


def _check_pip(value: Any) -> list[str]:
    if isinstance(value, Mapping):   # Ray's {"packages": [...]} form
        value = value.get("packages")
    reqs = _str_list("pip", value)
    if any(not r.strip() for r in reqs):
        raise ValueError("runtime_env['pip'] holds an empty requirement")
    return reqs


def merge(job: Mapping[str, Any] | None, task: Mapping[str, Any] | None) -> dict[str, Any]:
    """``task``'s env over ``job``'s, as in Ray: each key replaces the job's, except
    ``env_vars``, which are merged (the task's win). Both must be validated already."""
    out = dict(job or {})
    for key, value in (task or {}).items():
        if key == "env_vars":
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def with_job_env(env: Any) -> Any:
    """``env`` over the runtime env of the job this driver runs as (``unipar job submit``:
    its uploaded working dir), merged as :func:`merge` does; ``env`` itself outside a job.
    Not validated here: ``init`` checks the result."""
    text = os.environ.get(JOB_ENV_VAR)
    if not text:
        return env
    job = json.loads(text)
    if env is None:
        return job
    if not isinstance(env, Mapping) or not isinstance(env.get("env_vars", {}), Mapping):
        return env   # wrong: validate() says how, without the job's keys in the way
    return merge(job, env)


def canonical(env: Mapping[str, Any]) -> str:
    """One string per distinct env (a cache key)."""
    return json.dumps(env, sort_keys=True)


def pip_key(requirements: list[str], working_dir: str = "") -> str:
    """The cache name of the environment for one requirement list (relative paths in it are
    inside ``working_dir``, a package digest, which is then part of the name)."""
    relative = any(r.startswith(".") for r in requirements)
    text = "\n".join(requirements + ([working_dir] if relative else []))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def spec_digests(spec: Mapping[str, Any]) -> list[str]:
    """The package digests a packed spec names: its working dir's, then its py_modules'."""
    return ([spec["working_dir"]] if "working_dir" in spec else []) + list(
        spec.get("py_modules", ()))


def pip_dir(requirements: list[str], working_digest: str = "") -> str:
    """The cache folder name of the pip environment for ``requirements`` (see install_pip)."""
    return "pip-" + pip_key(requirements, working_digest)


# -- packing (the submitting side) -------------------------------------------------------------

def pack(env: Mapping[str, Any], limit: int | None = None) -> Packed:
    """Zip what ``env`` names (validated). Same contents, same digest: nodes cache by it.

    Raises:
        ValueError: a package is bigger than ``limit`` (default MAX_PACKAGE_BYTES); the
            message names the biggest files.
    """
    limit = MAX_PACKAGE_BYTES if limit is None else limit
    spec: dict[str, Any] = {}
    packages: dict[str, Package] = {}
    excludes = list(DEFAULT_EXCLUDES) + list(env.get("excludes", ()))
    if "working_dir" in env:
        pkg = _pack_path(env["working_dir"], excludes, limit, under_name=False)
        packages[pkg.digest] = pkg
        spec["working_dir"] = pkg.digest
    modules = []
    for path in env.get("py_modules", ()):
        pkg = _pack_path(path, list(DEFAULT_EXCLUDES), limit, under_name=True)
        packages[pkg.digest] = pkg
        modules.append(pkg.digest)
    if modules:
        spec["py_modules"] = modules
    for key in ("env_vars", "pip"):
        if key in env:
            spec[key] = env[key]
    return Packed(spec, packages)


def _pack_path(path: str, excludes: list[str], limit: int, under_name: bool) -> Package:
    if os.path.isfile(path):
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".py"):   # a single module: a zip holding it
            return _zip_files([(os.path.basename(path), path)], limit, path)
        _check_size([(path, len(data))], limit, path)
        kind = "wheel" if path.endswith(".whl") else "zip"
        return Package("sha256-" + hashlib.sha256(data).hexdigest(), data, kind)
    prefix = os.path.basename(path.rstrip(os.sep)) if under_name else ""
    files = [(os.path.join(prefix, rel) if prefix else rel, os.path.join(path, rel))
             for rel in _walk(path, excludes)]
    return _zip_files(files, limit, path)


def _walk(root: str, excludes: list[str]) -> Iterator[str]:
    """Relative paths of the files under ``root`` not matched by ``excludes``, sorted."""
    found = []
    for here, dirs, files in os.walk(root):
        rel_here = os.path.relpath(here, root)
        rel_here = "" if rel_here == "." else rel_here
        dirs[:] = sorted(d for d in dirs if not _excluded(os.path.join(rel_here, d), excludes, True))
        found += [os.path.join(rel_here, f) for f in files
                  if not _excluded(os.path.join(rel_here, f), excludes, False)]
    return iter(sorted(found))


def _excluded(rel: str, patterns: list[str], is_dir: bool) -> bool:
    """gitignore-style: ``name`` matches at any depth, ``a/b`` or ``/a`` from the root,
    a trailing ``/`` matches folders only."""
    rel = rel.replace(os.sep, "/")
    name = rel.rsplit("/", 1)[-1]
    for pattern in patterns:
        dir_only = pattern.endswith("/")
        pat = pattern.rstrip("/")
        if dir_only and not is_dir:
            continue
        if "/" in pat:
            if fnmatch.fnmatchcase(rel, pat.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(name, pat):
            return True
    return False


def _check_size(sizes: list[tuple[str, int]], limit: int, root: str) -> None:
    total = sum(size for _, size in sizes)
    if total <= limit:
        return
    biggest = sorted(sizes, key=lambda item: -item[1])[:5]
    listing = ", ".join(f"{name} ({size / 2**20:.1f} MiB)" for name, size in biggest)
    raise ValueError(
        f"runtime_env package {root} is {total / 2**20:.1f} MiB, over the limit of "
        f"{limit / 2**20:.0f} MiB. Biggest files: {listing}. Leave data out with "
        "runtime_env={'excludes': [...]} and read it from shared storage instead")


def _zip_files(files: list[tuple[str, str]], limit: int, root: str) -> Package:
    _check_size([(arc, os.path.getsize(full)) for arc, full in files], limit, root)
    buf = io.BytesIO()
    digest = hashlib.sha256()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, full in files:
            with open(full, "rb") as f:
                data = f.read()
            info = zipfile.ZipInfo(arc.replace(os.sep, "/"), _ZIP_TIME)
            info.external_attr = (os.stat(full).st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            digest.update(arc.encode() + b"\0" + hashlib.sha256(data).digest())
    return Package("sha256-" + digest.hexdigest(), buf.getvalue())


# -- installing (the worker's side) ------------------------------------------------------------

def _locked(cache_dir: str, name: str, wait: bool = True) -> Any:
    """An exclusive lock on ``cache_dir/name.lock``: workers of one node set up an env once.
    Without ``wait``, None when someone else holds it."""
    import fcntl
    os.makedirs(cache_dir, exist_ok=True)
    fd = os.open(os.path.join(cache_dir, name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def install_package(cache_dir: str, digest: str, data: bytes | None, kind: str = "zip") -> str:
    """Unpack a package into ``cache_dir/digest`` (once: later calls find it); its path.

    ``data`` may be None when the caller knows it is there already (see ``is_installed``)."""
    target = os.path.join(cache_dir, digest)
    if os.path.isdir(target):
        return target
    fd = _locked(cache_dir, digest)
    try:
        if os.path.isdir(target):
            return target
        if data is None:
            raise RuntimeEnvSetupError(f"package {digest} is not cached here")
        tmp = tempfile.mkdtemp(prefix=digest + ".", dir=cache_dir)
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.extractall(tmp)
        os.rename(tmp, target)   # atomic: a half-unpacked package is never seen
        return target
    finally:
        os.close(fd)


def is_installed(cache_dir: str, digest: str) -> bool:
    return os.path.isdir(os.path.join(cache_dir, digest))


# -- the cache's bookkeeping (a node removes what nothing uses: node/packages.py) ------------

_USES = "uses"   # cache_dir/uses/<user>.json: the cached names one env's workers use


def note_use(cache_dir: str, user: str, names: list[str]) -> None:
    """Record that ``user`` (an env's tag) uses the cached folders ``names``; written before
    they are installed, so whoever cleans the cache never takes them from under a worker."""
    folder = os.path.join(cache_dir, _USES)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(sorted(names), f)
    os.replace(tmp, os.path.join(folder, user + ".json"))


def noted_use(cache_dir: str, user: str) -> list[str] | None:
    """The names ``user`` noted (:func:`note_use`), None when it noted none."""
    try:
        with open(os.path.join(cache_dir, _USES, user + ".json")) as f:
            return list(json.load(f))
    except (OSError, ValueError):
        return None


def noted_users(cache_dir: str) -> list[str]:
    """Every user that noted its names (:func:`note_use`)."""
    try:
        names = os.listdir(os.path.join(cache_dir, _USES))
    except OSError:
        return []
    return [n[:-len(".json")] for n in names if n.endswith(".json")]


def forget_use(cache_dir: str, user: str) -> None:
    """Remove ``user``'s note (it has no workers left to use its names)."""
    with contextlib.suppress(OSError):
        os.remove(os.path.join(cache_dir, _USES, user + ".json"))


def cached_names(cache_dir: str) -> list[str]:
    """The complete cached folders (packages by digest, pip environments): not temporary
    ones being unpacked, which have a dot in their names."""
    try:
        names = os.listdir(cache_dir)
    except OSError:
        return []
    return [n for n in names if "." not in n and n != _USES
            and os.path.isdir(os.path.join(cache_dir, n))]


def remove_cached(cache_dir: str, name: str) -> str | None:
    """Take ``cache_dir/name`` out of the cache at once (under its install lock, so no
    worker is unpacking it); returns where it now lies, for the caller to delete at leisure
    (None if it was gone already, or is being installed: never waits for the lock)."""
    target = os.path.join(cache_dir, name)
    fd = _locked(cache_dir, name, wait=False)
    if fd is None:
        return None
    try:
        if not os.path.isdir(target):
            return None
        trash = tempfile.mkdtemp(prefix=name + ".removed.", dir=cache_dir)
        os.rename(target, os.path.join(trash, name))
        return trash
    finally:
        os.close(fd)


def install_pip(cache_dir: str, requirements: list[str], working_dir: str | None = None,
                timeout: float = 600.0) -> str:
    """Install ``requirements`` with this interpreter's pip into a directory cached per list
    (``cache_dir/pip-<key>``) and return it; the caller puts it first on sys.path, so the
    node's own packages (unipar included) stay importable beneath it. pip runs in
    ``working_dir``: a requirement ``./wheels/x.whl`` ships with the code.

    Raises:
        RuntimeEnvSetupError: pip failed; the message holds pip's own output.
    """
    name = pip_dir(requirements, os.path.basename(working_dir or ""))
    target = os.path.join(cache_dir, name)
    if os.path.isdir(target):
        return target
    fd = _locked(cache_dir, name)
    try:
        if os.path.isdir(target):
            return target
        tmp = tempfile.mkdtemp(prefix="pip.", dir=cache_dir)
        cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
               "--no-input", "--quiet", "--target", tmp, *requirements]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  cwd=working_dir)
        except subprocess.TimeoutExpired:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeEnvSetupError(f"pip install {' '.join(requirements)} took over "
                                       f"{timeout:.0f} s") from None
        if done.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeEnvSetupError(
                f"runtime_env pip={requirements!r} could not be installed; pip said:\n"
                f"{(done.stderr or done.stdout).strip()[-4000:]}\nFix the requirement (name, "
                "version, or a path this node can read) and submit again")
        os.rename(tmp, target)
        return target
    finally:
        os.close(fd)


def activate(working_dir: str | None, paths: list[str], env_vars: Mapping[str, str]) -> None:
    """Make this process an env's worker: ``env_vars`` set, ``paths`` (py_modules, pip dirs)
    and ``working_dir`` first on sys.path, and ``working_dir`` the current directory."""
    os.environ.update(env_vars)
    front = ([working_dir] if working_dir else []) + list(paths)
    for entry in reversed(front):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
    if working_dir:
        os.chdir(working_dir)


# -- backends that run work in the calling process (local) ------------------------------------

def refuse_in_process(env: Mapping[str, Any], backend: str) -> None:
    """What a backend running tasks inside this process cannot apply: raise at ``.remote()``.

    Raises:
        ValueError: ``env`` asks for pip requirements.
    """
    if env.get("pip"):
        raise ValueError(
            f"the {backend} backend runs tasks in this process, so runtime_env['pip'] cannot "
            "apply: install the requirements into this environment (pip install ...), or use "
            "the native, ray or dask backend")


@contextlib.contextmanager
def applied_around(front: list[str], env_vars: Mapping[str, str],
                   cwd: str | None = None) -> Iterator[None]:
    """Run a call with ``front`` first on sys.path, ``env_vars`` set and (if given) ``cwd``
    the current directory; undo exactly that after. For processes whose threads run other
    work meanwhile (a Dask worker): only this call's own sys.path entries are taken out again,
    so a concurrent call's entries stay. Environment variables and the current directory are
    process-wide: concurrent calls with different values for them see each other's."""
    saved_vars = {k: os.environ.get(k) for k in env_vars}
    saved_cwd = os.getcwd() if cwd else None
    sys.path[0:0] = list(front)
    os.environ.update(env_vars)
    if cwd:
        os.chdir(cwd)
    try:
        yield
    finally:
        for entry in front:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)
        if saved_cwd:
            os.chdir(saved_cwd)
        for key, value in saved_vars.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def install_shipped(cache_dir: str, spec: Mapping[str, Any],
                    fetch: Callable[[list[str]], list[bytes]]) -> tuple[str | None, list[str]]:
    """Unpack the packages a packed ``spec`` names into ``cache_dir`` (once per digest;
    ``fetch(digests)`` gets the bytes of those not there yet). Returns the working dir's
    folder (or None) and the py_modules' folders, to put on sys.path."""
    digests = ([spec["working_dir"]] if "working_dir" in spec else []) + list(
        spec.get("py_modules", ()))
    missing = [d for d in digests if not is_installed(cache_dir, d)]
    fetched = dict(zip(missing, fetch(missing))) if missing else {}
    paths = {d: install_package(cache_dir, d, fetched.get(d)) for d in digests}
    working = paths[spec["working_dir"]] if "working_dir" in spec else None
    return working, [paths[d] for d in spec.get("py_modules", ())]


def refuse_pip(env: Mapping[str, Any], backend: str, reason: str) -> None:
    """For a backend that ships code but cannot install requirements per task.

    Raises:
        RuntimeEnvNotSupported: ``env`` asks for pip requirements.
    """
    if env.get("pip"):
        raise RuntimeEnvNotSupported(
            f"the {backend} backend cannot apply runtime_env['pip']: {reason}. Install the "
            "requirements on every worker (or ship pure-Python code with working_dir or "
            "py_modules), or use the native or ray backend")


@contextlib.contextmanager
def applied_in_process(env: Mapping[str, Any]) -> Iterator[None]:
    """Run a call under ``env`` in this process and undo it after: ``env_vars`` set,
    ``working_dir`` (a folder) the current directory, it and ``py_modules`` first on sys.path.
    Nothing is copied: the files are the caller's own."""
    if not env:
        yield
        return
    saved_vars = {k: os.environ.get(k) for k in env.get("env_vars", {})}
    saved_path, saved_cwd = list(sys.path), os.getcwd()
    working = env.get("working_dir")
    modules = [os.path.dirname(p) if os.path.isdir(p) or p.endswith(".py") else p
               for p in env.get("py_modules", ())]
    if working and not os.path.isdir(working):   # a .zip: importable where it lies
        modules, working = [working] + modules, None
    activate(working, modules, env.get("env_vars", {}))
    try:
        yield
    finally:
        sys.path[:] = saved_path
        os.chdir(saved_cwd)
        for key, value in saved_vars.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class RuntimeEnvNotSupported(ValueError):
    """A backend cannot apply (part of) a runtime env; raised at ``init`` or ``.remote()``."""


def refuse(env: Mapping[str, Any] | None, backend: str, reason: str) -> None:
    """For a backend that has no mapping for runtime envs yet: never ignore one silently.

    Raises:
        RuntimeEnvNotSupported: ``env`` is not empty.
    """
    if env:
        raise RuntimeEnvNotSupported(
            f"the {backend} backend cannot apply runtime_env ({', '.join(sorted(env))}): "
            f"{reason}. Use the native or ray backend for code that must travel, or install "
            "the code and settings on every worker yourself")
