"""What is particular to the local backend: it runs in this process, for debugging."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

import unipar


@pytest.fixture
def local():
    unipar.shutdown()
    unipar.init(backend="local")
    yield
    unipar.shutdown()


@unipar.remote
def where():
    return os.getpid(), threading.get_ident()


@unipar.remote
def shout(text):
    print(text)


def test_tasks_run_in_the_calling_thread(local):
    assert unipar.get(where.remote()) == (os.getpid(), threading.get_ident())


def test_print_reaches_stdout_unprefixed(local, capfd):
    marker = f"local-{uuid.uuid4().hex}"
    unipar.get(shout.remote(marker))
    assert f"{marker}\n" in capfd.readouterr().out


def test_local_takes_no_address():
    unipar.shutdown()
    with pytest.raises(ValueError, match="no address"):
        unipar.init(backend="local", address="tcp://1.2.3.4:1")
    assert not unipar.is_initialized()


def test_objects_are_freed_when_refs_go(local):
    from unipar import _state
    store = _state.current()._store
    ref = unipar.put(list(range(100)))
    assert len(store.values) == 1
    del ref
    assert len(store.values) == 0
