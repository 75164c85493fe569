"""ferrule.threads: the worker's helper threads yield to the event loop (Linux)."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import httpx
import pytest

from ferrule import threads
from ferrule.procs import free_port, running_server
from servers import TEST_KEY, MockUpstream

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policy")


def test_helpers_are_set_to_batch_and_the_caller_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "_batched", set())
    monkeypatch.setattr(threads, "_on", [False])
    monkeypatch.setattr(threads, "_enabled", [False])
    started, stop = threading.Event(), threading.Event()
    tid: list[int] = []

    def helper() -> None:
        tid.append(threading.get_native_id())
        started.set()
        stop.wait(10)

    t = threading.Thread(target=helper)
    t.start()
    try:
        started.wait(10)
        assert os.sched_getscheduler(tid[0]) == os.SCHED_OTHER
        assert threads.batch_helpers() == 0  # not a worker of ferrule serve: nothing changes
        assert os.sched_getscheduler(tid[0]) == os.SCHED_OTHER
        threads.enable()
        assert threads.batch_helpers() >= 1
        assert os.sched_getscheduler(tid[0]) == os.SCHED_BATCH
        assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER  # the loop's
        assert threads.batch_helpers() == 0  # each thread once
    finally:
        stop.set()
        t.join()


def test_hand_over_yields_only_when_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    yields: list[None] = []
    monkeypatch.setattr(os, "sched_yield", lambda: yields.append(None))
    monkeypatch.setattr(threads, "_on", [False])
    threads.hand_over(False)  # nothing was set to batch: the default policy preempts anyway
    assert yields == []
    monkeypatch.setattr(threads, "_on", [True])
    threads.hand_over(True)  # other requests in flight: the helpers run when the loop waits
    assert yields == []
    threads.hand_over(False)
    assert len(yields) == 1


def test_a_served_worker_batches_every_thread_but_the_loops(mock: MockUpstream) -> None:
    """In a real server, once a request was served: every thread of the worker (Granian's
    tokio thread, its hand-over thread, the upstream engine, the ledger writer) runs under
    SCHED_BATCH, the event loop's thread (the worker's main thread) under the default."""
    port = free_port()
    data = tempfile.mkdtemp(prefix="ferrule-data-")
    args = ["serve", "--port", str(port), "--upstream-url", mock.url]
    env = {"FERRULE_BACKEND": "rust", "FERRULE_DATA_DIR": data}
    with running_server(args, port, env=env) as server:
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {TEST_KEY}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        (worker,) = _children(server.pid)
        policies = {
            int(tid): os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{worker}/task")
        }
    assert policies.pop(worker) == os.SCHED_OTHER  # the event loop's
    assert len(policies) >= 3
    assert set(policies.values()) == {os.SCHED_BATCH}, policies


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out
