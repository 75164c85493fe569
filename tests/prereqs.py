"""A pytest plugin (``-p prereqs`` in pyproject.toml): at the end of a run, one line naming the
programs whose absence skipped tests (redis-server, nginx, node, curl, PostgreSQL, chromium,
root, ...), so a run on a machine without them does not pass quietly with less tested."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

# prerequisite -> what a skip reason says when it is missing (the reasons the suite gives)
PREREQUISITES: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, re.I)
    for name, pattern in (
        ("redis-server", r"redis-server|\bredis\b"),
        ("nginx", r"\bnginx\b"),
        ("node/npm", r"\bnode\b|\bnpm\b"),
        ("curl", r"\bcurl\b"),
        ("PostgreSQL", r"postgres|initdb"),
        ("chromium", r"chromium|playwright|browser"),
        ("root", r"\broot\b|unshare|mount namespace"),
        ("Rust toolchain", r"\bcargo\b|rust toolchain"),
        ("native extension", r"native extension"),
    )
}


def missing(reasons: list[str]) -> Counter[str]:
    """Skipped tests per missing prerequisite, from the skip reasons."""
    found: Counter[str] = Counter()
    for reason in reasons:
        for name, pattern in PREREQUISITES.items():
            if pattern.search(reason):
                found[name] += 1
                break
    return found


def _reason(report: Any) -> str:
    longrepr = getattr(report, "longrepr", None)
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr or "")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    found = missing([_reason(r) for r in terminalreporter.stats.get("skipped", [])])
    if not found:
        return
    parts = [f"{name} ({n} test{'s' if n != 1 else ''})" for name, n in found.most_common()]
    terminalreporter.write_line(
        "skipped for missing prerequisites: "
        + ", ".join(parts)
        + " (README: What make test needs)",
        yellow=True,
        bold=True,
    )
