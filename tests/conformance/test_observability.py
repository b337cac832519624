"""unipar.dashboard_url(), unipar.progress() and unipar.timeline() on every backend."""

from __future__ import annotations


import unipar


@unipar.remote
def double(x):
    return 2 * x


def test_dashboard_url_is_a_link_or_none(unipar_backend):
    url = unipar.dashboard_url()
    assert url is None or url.startswith(("http://", "https://"))


def test_progress_returns_what_get_returns(unipar_backend):
    refs = [double.remote(i) for i in range(4)]
    assert unipar.progress(refs, timeout=60) == [0, 2, 4, 6]   # not a terminal: quiet
    assert unipar.get(double.remote(5), timeout=60, progress=True) == 10


def test_timeline_is_trace_events_or_names_the_engines_tool(unipar_backend):
    unipar.get(double.remote(1), timeout=60)
    try:
        events = unipar.timeline()
    except unipar.NotSupportedError as exc:
        assert unipar_backend != "native"
        assert "native" in str(exc)   # says where it works, and the engine's own tool
        return
    assert unipar_backend == "native"
    assert all("ph" in e for e in events)
