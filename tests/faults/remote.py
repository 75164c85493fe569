"""Driving a fake that runs in another process, through its ``/_faults/*`` control endpoint.

:class:`RemoteFaultUpstream` mirrors :class:`~faults.server.FaultUpstream` (``push``, ``records``,
``attempts``, ``reset``, ``wait_for``), so a test written against one runs against the other;
``wait_for`` polls here because there is no shared condition variable across processes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ferrule.procs import free_port, running_server

from .scenarios import ScenarioLike, to_scenario
from .server import Record, RecordWaits

__all__ = ["RemoteFaultUpstream", "fault_upstream_process"]

T = TypeVar("T")
_REPO_ROOT = Path(__file__).resolve().parents[2]


class RemoteFaultUpstream(RecordWaits):
    def __init__(self, url: str) -> None:
        self.url = url
        self._client = httpx.Client(base_url=url, timeout=10)

    def close(self) -> None:
        self._client.close()

    def _state(self) -> dict[str, Any]:
        resp = self._client.get("/_faults/records")
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    def push(self, *scenarios: ScenarioLike) -> None:
        specs = [to_scenario(s).to_json() for s in scenarios]
        self._client.post("/_faults/push", json=specs).raise_for_status()

    def set_default(self, scenario: ScenarioLike) -> None:
        self._client.post(
            "/_faults/default", json=to_scenario(scenario).to_json()
        ).raise_for_status()

    def reset(self) -> None:
        self._client.post("/_faults/reset").raise_for_status()

    @property
    def records(self) -> list[Record]:
        return [Record.from_json(r) for r in self._state()["records"]]

    @property
    def attempts(self) -> int:
        return int(self._state()["attempts"])

    @property
    def queued(self) -> int:
        return int(self._state()["queued"])

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(0.05)


@contextlib.contextmanager
def fault_upstream_process(
    port: int | None = None,
    *,
    default: ScenarioLike | None = None,
    hard_limit_s: float = 120.0,
    log_path: str | None = None,
) -> Iterator[RemoteFaultUpstream]:
    """Run ``python -m tests.faults`` as a child process on a free port until the block exits."""
    port = port or free_port()
    argv = [sys.executable, "-m", "tests.faults", "--port", str(port)]
    argv += ["--hard-limit", str(hard_limit_s)]
    if default is not None:
        import json

        argv += ["--default", json.dumps(to_scenario(default).to_json())]
    path = os.pathsep.join(p for p in (str(_REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    with running_server(
        argv, port, ready_path="/_faults/health", env={"PYTHONPATH": path}, log_path=log_path
    ):
        remote = RemoteFaultUpstream(f"http://127.0.0.1:{port}")
        try:
            yield remote
        finally:
            remote.close()
