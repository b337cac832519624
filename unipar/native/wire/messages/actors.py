"""Actors: creation, method calls (through the node or pushed directly) and kills.
"""

from __future__ import annotations

from typing import Any

from .base import Message, message


@message
class CreateActor(Message):
    op = "create_actor"
    actor_id: bytes
    class_key: str
    class_name: str
    args: Any
    deps: list
    contained: list
    resources: dict
    max_restarts: int
    max_task_retries: int
    concurrency: int
    is_async: bool
    name: str
    detached: bool = False   # lifetime="detached": it outlives the driver that created it


@message
class InitActor(Message):
    op = "init_actor"
    actor_id: bytes
    class_key: str
    class_blob: Any
    class_name: str
    args: Any
    deps: list
    concurrency: int
    is_async: bool
    gpu_ids: list


@message
class ActorReady(Message):
    op = "actor_ready"
    actor_id: bytes
    error: Any               # a packed exception when the constructor raised, else None


@message
class CallActor(Message):
    op = "call_actor"
    actor_id: bytes
    task_id: bytes
    method: str
    args: Any
    deps: list
    contained: list
    return_ids: list


@message
class RunActorTask(Message):
    op = "run_actor_task"
    task_id: bytes
    method: str
    args: Any
    deps: list
    return_ids: list


@message
class KillActor(Message):
    op = "kill_actor"
    req_id: int
    actor_id: bytes
    no_restart: bool


@message
class ActorAddress(Message):
    """Client -> node, a request: where to push calls to an actor directly. Answered once the
    actor is alive (or dead). Reply.value: ``{"state": "alive", "worker_id", "address",
    "pid", "restarts", "max_task_retries", "class_name"}``, ``{"state": "dead", "death":
    packed error}``, or ``{"state": "node"}`` (not on this node: call it through the node)."""
    op = "actor_address"
    req_id: int
    actor_id: bytes
