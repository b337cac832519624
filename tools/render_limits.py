"""Rewrite the expected-failures section of docs/backends.md from tests/conformance/limits.py.

Run after changing limits.py: ``python tools/render_limits.py``. tests/test_docs.py fails when
the two disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "conformance"))
from limits import LIMITS, NOT_BUILT, NOT_RUN  # noqa: E402

START, END = "<!-- limits:start -->", "<!-- limits:end -->"


def render() -> str:
    lines = [START, ""]
    for backend in sorted(set(LIMITS) | set(NOT_RUN) | set(NOT_BUILT)):
        if backend in NOT_BUILT:
            lines += [f"### {backend}", "", f"Not built yet: issue #{NOT_BUILT[backend]}.", ""]
            continue
        entries = {**LIMITS.get(backend, {}), **NOT_RUN.get(backend, {})}
        lines += [f"### {backend}", ""]
        if not entries:
            lines += ["Passes the whole conformance suite.", ""]
            continue
        for test, reason in sorted(entries.items()):
            how = " (not run: it would block)" if test in NOT_RUN.get(backend, {}) else ""
            lines.append(f"- `{test}`{how}: {reason}")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    path = ROOT / "docs" / "backends.md"
    text = path.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    path.write_text(head + render() + tail)


if __name__ == "__main__":
    main()
