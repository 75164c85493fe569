"""End-to-end fixtures: the simulated Anthropic upstream and real ``ferrule serve`` processes
(Granian, free loopback ports), one proxy per backend."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from ferrule.procs import free_port, running_server

TEST_KEY = "sk-ant-test-0000000000000000"


@dataclass
class MockUpstream:
    url: str

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def reset(self) -> None:
        with self._client() as c:
            c.post("/_mock/reset").raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        with self._client() as c:
            data: list[dict[str, Any]] = c.get("/_mock/requests").json()
            return data

    def stats(self) -> dict[str, int]:
        with self._client() as c:
            data: dict[str, int] = c.get("/_mock/stats").json()
            return data

    def script(self, steps: list[Any]) -> None:
        with self._client() as c:
            c.post("/_mock/script", json=steps).raise_for_status()


@pytest.fixture(scope="session")
def mock_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstream]:
    port = free_port()
    log = tmp_path_factory.mktemp("mock") / "mock.log"
    with running_server(
        ["mock-upstream", "--port", str(port)], port, ready_path="/v1/models", log_path=str(log)
    ):
        yield MockUpstream(f"http://127.0.0.1:{port}")


@pytest.fixture
def mock(mock_server: MockUpstream) -> MockUpstream:
    """The simulated upstream, with its recorded requests, script and counters cleared."""
    mock_server.reset()
    return mock_server


@dataclass
class Proxy:
    url: str  # base URL without /v1
    backend: str
    log: str

    @property
    def v1(self) -> str:
        return self.url + "/v1"


@contextlib.contextmanager
def start_proxy(
    backend: str, upstream: str, log: str, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Proxy]:
    port = free_port()
    # Each proxy gets its own data folder (ledger, SQLite cache) unless the test gives one.
    data_dir = tempfile.mkdtemp(prefix="ferrule-data-")
    with running_server(
        ["serve", "--port", str(port), "--upstream-url", upstream, *extra],
        port,
        env={"FERRULE_BACKEND": backend, "FERRULE_DATA_DIR": data_dir, **(env or {})},
        log_path=log,
    ):
        yield Proxy(f"http://127.0.0.1:{port}", backend, log)


@pytest.fixture(scope="session", params=["rust", "python"])
def proxy(
    request: pytest.FixtureRequest,
    mock_server: MockUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Proxy]:
    """A real ``ferrule serve`` in front of the simulated upstream, once per backend."""
    from conftest import kernel_module

    kernel_module(request.param)  # skips the rust run when the extension is not built
    log = str(tmp_path_factory.mktemp(f"proxy-{request.param}") / "ferrule.log")
    # The breaker is tested on its own proxies: here consecutive scripted 5xx must not open it.
    env = {"FERRULE_BREAKER_THRESHOLD": "1000000", "FERRULE_RETRY_BASE": "0.05"}
    with start_proxy(request.param, mock_server.url, log, env=env) as p:
        yield p
