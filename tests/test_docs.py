"""The docs stay true: every documented limit is the one the suite enforces, and back."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "conformance"))
from limits import LIMITS, NOT_BUILT, NOT_RUN  # noqa: E402


def _squash(text: str) -> str:
    return " ".join(text.split())


def test_every_expected_failure_is_documented_in_backends_md():
    doc = _squash((ROOT / "docs" / "backends.md").read_text())
    missing = [f"{backend}: {test}"
               for table in (LIMITS, NOT_RUN)
               for backend, entries in table.items()
               for test, reason in entries.items()
               if _squash(reason) not in doc or test not in doc]
    assert not missing, "docs/backends.md lacks these limits (test name and reason):\n" + "\n".join(missing)


def test_unbuilt_backends_name_their_issue():
    doc = (ROOT / "docs" / "backends.md").read_text()
    for backend, issue in NOT_BUILT.items():
        assert f"#{issue}" in doc, backend


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme[: readme.index("## What the code looks like")]
    assert "make demo" in quickstart and "make test" in quickstart
    assert "make test" in (ROOT / ".ci" / "run").read_text()
