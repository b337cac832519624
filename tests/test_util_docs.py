"""Every example in docs/util.md runs as written (on local, and on native, a real engine)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import unipar

DOC = Path(__file__).resolve().parents[1] / "docs" / "util.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
HELPERS = ["ActorPool", "Queue", "Pool", "register_unipar", "UniparExecutor"]


def test_one_example_per_helper():
    assert len(BLOCKS) == len(HELPERS)
    for helper, block in zip(HELPERS, BLOCKS):
        assert helper in block


@pytest.fixture(scope="module", params=["local", "native"])
def backend(request):
    unipar.shutdown()
    unipar.init(backend=request.param, num_cpus=4)
    yield request.param
    unipar.shutdown()


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=HELPERS[:len(BLOCKS)])
def test_example_runs(backend, index, capsys):
    if "joblib" in BLOCKS[index]:
        pytest.importorskip("joblib")
    # As a script would: its functions live in __main__ and are shipped by value.
    exec(compile(BLOCKS[index], f"{DOC.name}[{index}]", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out.strip()
