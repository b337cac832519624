"""A worker dedicated to one runtime env sets it up before it runs anything.

::

    node spawns the worker with UNIPAR_RUNTIME_ENV=runtime_env:<spec object id>
    worker ─▶ get(spec) ─▶ for each package not yet in <session>/runtime_envs/<digest>:
              get(package bytes) (the node pulls them from whichever node has them) ─▶ unpack
           ─▶ pip requirements, once per list per node ─▶ env vars, sys.path, cwd

The spec and the package bytes are ordinary objects that the submitting client put (and
holds while it lives): they travel the way any object does, over authenticated connections,
between nodes that share no filesystem. Unpacked packages are cached by content digest in the
node's session directory, so later workers, jobs and drivers with the same code reuse them;
the worker notes which folders its env uses (note_use) before it installs them, and the node
removes folders no live env has used for its grace period (node/packages.py).
"""

from __future__ import annotations

import os
from typing import Any

from ...runtime_env import (RuntimeEnvSetupError, activate, install_package, install_pip,
                            is_installed, note_use, pip_dir, spec_digests)
from ..client.refs import NativeRef

FETCH_TIMEOUT = 300.0   # seconds to get the env's spec and packages to this node


def cache_dir(node_address: str) -> str:
    """Where this node keeps unpacked packages: its session directory (beside its socket)."""
    return os.path.join(os.path.dirname(node_address[len("unix://"):]), "runtime_envs")


def prepare(client: Any, tag: str, node_address: str) -> Exception | None:
    """Set up the env named by ``tag`` in this process; the error that stops it, if any (the
    worker then fails every task and actor it is given with that error, and stays up so the
    node does not restart it in a loop)."""
    try:
        _prepare(client, tag, cache_dir(node_address))
    except RuntimeEnvSetupError as exc:
        return exc
    except Exception as exc:   # a lost object, a full disk, a bad archive: say which env
        return RuntimeEnvSetupError(f"runtime_env could not be set up on this node: "
                                    f"{type(exc).__name__}: {exc}")
    return None


def _prepare(client: Any, tag: str, where: str) -> None:
    oid = bytes.fromhex(tag.partition(":")[2])
    [shipped] = client.get([NativeRef(oid)], FETCH_TIMEOUT)
    spec: dict[str, Any] = shipped["spec"]
    refs: dict[str, tuple[str, NativeRef]] = shipped["packages"]
    # Noted first: the node removes cached folders no live env notes (node/packages.py).
    note_use(where, tag.partition(":")[2], _cached_names(spec))
    missing = [d for d in refs if not is_installed(where, d)]
    datas = client.get([refs[d][1] for d in missing], FETCH_TIMEOUT) if missing else []
    paths = {d: install_package(where, d, data, refs[d][0]) for d, data in zip(missing, datas)}
    for digest, (kind, _) in refs.items():
        paths.setdefault(digest, install_package(where, digest, None, kind))
    front = [paths[d] for d in spec.get("py_modules", ())]
    working = paths[spec["working_dir"]] if "working_dir" in spec else None
    if spec.get("pip"):
        front.append(install_pip(where, list(spec["pip"]), working))
    activate(working, front, spec.get("env_vars", {}))


def _cached_names(spec: dict[str, Any]) -> list[str]:
    """The cache folders an env's workers use: its packages, and its pip environment."""
    names = spec_digests(spec)
    if spec.get("pip"):
        names.append(pip_dir(list(spec["pip"]), spec.get("working_dir", "")))
    return names
