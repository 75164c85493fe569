"""Pytest fixtures for the fake; import them into a test module (``from faults.fixtures import
fault`` with ``# noqa: F401``) or a conftest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import FaultUpstream, fault_upstream


@pytest.fixture
def fault() -> Iterator[FaultUpstream]:
    """A fresh in-thread fake per test (default scenario ``ok()``); stopped and checked for
    leftover tasks afterwards."""
    with fault_upstream() as upstream:
        yield upstream
    assert upstream.leftover_tasks == 0
