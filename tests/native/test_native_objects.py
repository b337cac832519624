"""Serialization (zero-copy buffers), object files, the store's placement, ref counting."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from unipar.native.wire import serialization as S
from unipar.native.node.store import ObjectStore, StoreFullError
from unipar.native.client import refs as refs_module
from unipar.native.client.refs import NativeRef, RefTracker


def test_numpy_buffers_stay_out_of_band_and_unpacked_without_copy():
    array = np.arange(100_000, dtype=np.float64)
    data, buffers, refs = S.dumps(array)
    assert len(buffers) == 1 and len(data) < 1000 and refs == []
    packed = S.pack(data, buffers)
    back = S.load_packed(packed)
    assert np.array_equal(back, array)
    assert np.shares_memory(back, np.frombuffer(packed, dtype=np.uint8))   # a view, not a copy


def test_object_file_is_mapped_read_only_and_shared(tmp_path):
    array = np.arange(1_000_000, dtype=np.int64)
    path = str(tmp_path / "obj")
    size = S.write_file(path, *S.dumps(array)[:2])
    assert size >= array.nbytes
    first, second = S.load_file(path), S.load_file(path)
    assert np.array_equal(first, array)
    assert not first.flags.writeable                       # results are read-only, as in Ray
    os.unlink(path)                                        # readers keep their mapping
    assert int(second[-1]) == 999_999


def test_refs_inside_values_are_recorded():
    inner = NativeRef(b"i" * 16)
    _data, _buffers, refs = S.dumps({"nested": [inner, inner]})
    assert refs == [inner.oid]


def test_unpicklable_value_is_a_type_error():
    import threading
    with pytest.raises(TypeError, match="serializ"):
        S.dumps(threading.Lock())


def test_tracker_reports_net_changes_in_order():
    tracker = RefTracker()
    a, b = b"a" * 16, b"b" * 16
    tracker.changes.extend([(a, 1), (a, 1), (b, 1), (b, -1)])
    assert tracker.drain() == ([a], [b])                   # b came and went: still released
    tracker.changes.extend([(a, -1), (a, 1)])
    assert tracker.drain() == ([], [])                     # a stayed held throughout
    tracker.changes.extend([(a, -1), (a, -1)])
    assert tracker.drain() == ([], [a])


def test_native_refs_count_themselves(monkeypatch):
    tracker = RefTracker()   # a private one: a live client in this process drains the real one
    monkeypatch.setattr(refs_module, "TRACKER", tracker)
    oid = os.urandom(16)
    ref = NativeRef(oid)
    copy = pickle.loads(pickle.dumps(ref))            # unpickling counts too
    assert tracker.drain() == ([oid], [])
    del ref
    assert tracker.drain() == ([], []) and tracker.held(oid)
    del copy
    assert tracker.drain() == ([], [oid]) and not tracker.held(oid)


def test_store_spills_oldest_then_fails_clearly(tmp_path):
    shm, spill = tmp_path / "shm", tmp_path / "spill"
    shm.mkdir()
    store = ObjectStore(str(shm), str(spill), limit=1000, spill_limit=1500)
    first = store.alloc(b"1" * 16, 600)
    open(first, "wb").write(b"x" * 600)
    store.seal(b"1" * 16, 600)
    second = store.alloc(b"2" * 16, 600)                   # over the limit: the first spills
    assert second.startswith(str(shm))
    assert store.path(b"1" * 16).startswith(str(spill)) and os.path.exists(store.path(b"1" * 16))
    assert not os.path.exists(first)
    big = store.alloc(b"3" * 16, 900)                      # bigger than what is left: disk
    assert big.startswith(str(spill))
    with pytest.raises(StoreFullError, match="object store full"):
        store.alloc(b"4" * 16, 900)
    store.free(b"1" * 16)
    assert not os.path.exists(str(spill / ("31" * 16)))
    assert store.usage()["objects"] == 2
