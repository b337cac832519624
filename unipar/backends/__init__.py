"""The table of backends: each named once, as an import string with an install hint.

Backends load lazily: ``import unipar`` imports none of them (nor dask, pyspark or ray).
Third parties add backends through the ``unipar.backends`` entry-point group, whose entries
point at a :class:`~unipar.backends.base.Backend` subclass.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

from ..exceptions import BackendUnavailableError

if TYPE_CHECKING:
    from .base import Backend

__all__ = ["BackendInfo", "KNOWN_BACKENDS", "available_backends", "load_backend", "backend_table"]


@dataclass(frozen=True)
class BackendInfo:
    name: str
    target: str                  # "module:Class"
    requires: tuple[str, ...]    # top-level modules that must import
    install: str | None          # how to get them
    issue: int | None = None     # the issue that builds it, while it is not built yet
    description: str = ""


KNOWN_BACKENDS: Mapping[str, BackendInfo] = MappingProxyType({
    info.name: info for info in sorted([
        BackendInfo("dask", "unipar.backends.dask.backend:DaskBackend", ("dask", "distributed"),
                    "pip install 'unipar[dask]'", None, "Dask distributed (LocalCluster or a scheduler)"),
        BackendInfo("local", "unipar.backends.local:LocalBackend", (), None, None,
                    "everything in the calling process, for debugging"),
        BackendInfo("native", "unipar.backends.native:NativeBackend", (), None, None,
                    "unipar's own engine (default)"),
        BackendInfo("ray", "unipar.backends.ray.backend:RayBackend", ("ray",),
                    "pip install 'unipar[ray]'", None, "Ray (local or an existing cluster)"),
        BackendInfo("spark", "unipar.backends.spark.backend:SparkBackend", ("pyspark",),
                    "pip install 'unipar[spark]' (and Java 17+)", None,
                    "PySpark (local[N] or a standalone master)"),
    ], key=lambda i: i.name)
})


def _entry_point_backends() -> dict[str, str]:
    # Imported here, not at module level: importlib.metadata is slow to import, and every
    # worker process imports unipar.
    from importlib.metadata import entry_points
    return {ep.name: ep.value for ep in entry_points(group="unipar.backends")}


def available_backends() -> list[str]:
    """Every backend name unipar knows: built in and from entry points."""
    return sorted(set(KNOWN_BACKENDS) | set(_entry_point_backends()))


def is_installed(name: str) -> bool:
    info = KNOWN_BACKENDS.get(name)
    if info is None:
        return name in _entry_point_backends()
    return all(importlib.util.find_spec(mod) is not None for mod in info.requires)


def backend_table() -> list[dict[str, object]]:
    """Rows for ``unipar backends``: name, installed, how to install, description."""
    rows = []
    for name in available_backends():
        info = KNOWN_BACKENDS.get(name)
        rows.append({
            "name": name,
            "installed": is_installed(name),
            "install": info.install if info else "(entry point)",
            "description": info.description if info else _entry_point_backends().get(name, ""),
        })
    return rows


def _import_target(target: str) -> type:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def load_backend(name: str) -> "type[Backend]":
    """The backend class called ``name``.

    Raises:
        ValueError: no backend has that name.
        BackendUnavailableError: its libraries are not installed (the message says how).
    """
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a string, got {name!r}")
    info = KNOWN_BACKENDS.get(name)
    if info is None:
        extra = _entry_point_backends()
        if name in extra:
            return _import_target(extra[name])
        raise ValueError(f"unknown backend {name!r}; choose one of: {', '.join(available_backends())} "
                         "(set UNIPAR_BACKEND or pass unipar.init(backend=...))")
    missing = [mod for mod in info.requires if importlib.util.find_spec(mod) is None]
    if missing:
        raise BackendUnavailableError(
            f"backend {name!r} needs {', '.join(missing)}, which is not installed: {info.install}")
    try:
        return _import_target(info.target)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("unipar.backends."):
            where = f" (issue #{info.issue})" if info.issue else ""
            raise BackendUnavailableError(f"backend {name!r} is not built yet{where}") from exc
        raise BackendUnavailableError(
            f"backend {name!r} could not import {exc.name}: {info.install or 'reinstall unipar'}") from exc
