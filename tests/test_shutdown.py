"""Graceful shutdown: SIGTERM stops new connections, lets an in-flight stream finish, and the
ledger row of that stream is written before the process exits."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from ferrule.procs import free_port, running_server
from servers import TEST_KEY, MockUpstream


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_sigterm_drains_in_flight_stream_and_flushes_ledger(
    backend: str, mock: MockUpstream, tmp_path: Path
) -> None:
    from conftest import kernel_module

    kernel_module(backend)
    port = free_port()
    data = tmp_path / "data"
    result: dict[str, object] = {}
    body = {
        "model": "claude-sonnet-4-6",
        "stream": True,
        "messages": [{"role": "user", "content": "go [mock:words=40] [mock:delay=50]"}],
    }
    with running_server(
        ["serve", "--port", str(port), "--upstream-url", mock.url],
        port,
        env={"FERRULE_BACKEND": backend, "FERRULE_DATA_DIR": str(data)},
        log_path=str(tmp_path / "ferrule.log"),
    ) as proc:

        def client() -> None:
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {TEST_KEY}"},
                timeout=30,
            )
            result["status"], result["tail"] = r.status_code, r.content[-14:]

        worker = threading.Thread(target=client)
        worker.start()
        time.sleep(0.8)  # the stream (about 2 s) is under way
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no longer accepting: not ready
            httpx.get(f"http://127.0.0.1:{port}/health/readiness", timeout=2)
        worker.join(timeout=20)
        assert proc.wait(timeout=20) == 0
    assert result == {"status": 200, "tail": b"data: [DONE]\n\n"}
    rows = (
        sqlite3.connect(data / "ledger.sqlite3")
        .execute("select outcome, output_tokens from requests")
        .fetchall()
    )
    assert rows == [("complete", 40)]
