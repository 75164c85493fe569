"""The batched writer: never blocks, bounded, batches, flushes on close, shared by processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ferrule.ledger import LedgerWriter, RequestRecord, ledger_path
from ferrule.ledger import writer as writer_mod


def rec(i: int, **kw: Any) -> RequestRecord:
    return RequestRecord(
        request_id=f"req_{i}", route="/v1/chat/completions", model="claude-haiku-4-5", **kw
    )


def count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
    finally:
        conn.close()


def test_batches_are_one_transaction_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    real_open = writer_mod.open_db

    def spying_open(path: Any, **kw: Any) -> sqlite3.Connection:
        conn = real_open(path, **kw)
        conn.set_trace_callback(lambda sql: batches.append(0) if sql == "COMMIT" else None)
        return conn

    monkeypatch.setattr(writer_mod, "open_db", spying_open)
    w = LedgerWriter(ledger_path(tmp_path), batch_size=100, flush_interval=5.0)
    for i in range(450):
        w.submit(rec(i))
    assert w.flush(timeout=10)
    w.close()
    assert count(ledger_path(tmp_path)) == 450
    # 450 rows in batches of at most 100: 5 commits (flush() does not wait the 5 s interval)
    assert len(batches) == 5


def test_close_flushes_and_later_submits_are_dropped(tmp_path: Path) -> None:
    drops: list[tuple[str, int]] = []
    w = LedgerWriter(
        ledger_path(tmp_path), flush_interval=10.0, on_drop=lambda r, n: drops.append((r, n))
    )
    for i in range(7):
        w.submit(rec(i))
    started = time.monotonic()
    w.close()
    assert time.monotonic() - started < 2  # close does not wait out the flush interval
    assert count(ledger_path(tmp_path)) == 7
    assert w.submit(rec(99)) is False
    assert drops == [("closed", 1)]
    assert not w.healthy
    w.close()  # idempotent


def test_many_producers_bounded_queue_never_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow disk: the queue fills, submit drops and counts instead of blocking or growing."""
    real_row = writer_mod.row

    def slow_row(*a: Any) -> tuple[Any, ...]:
        time.sleep(0.0005)  # about 2000 rows/s at most
        return real_row(*a)

    monkeypatch.setattr(writer_mod, "row", slow_row)
    drops: list[int] = []
    w = LedgerWriter(
        ledger_path(tmp_path),
        max_queue=200,
        batch_size=50,
        flush_interval=0.01,
        on_drop=lambda reason, n: drops.append(n),
    )
    threads, per_thread = 8, 1000
    accepted = [0] * threads
    slowest = [0.0] * threads
    max_queued = [0]

    def produce(t: int) -> None:
        for i in range(per_thread):
            start = time.perf_counter()
            ok = w.submit(rec(t * per_thread + i, tenant=f"t{t}"))
            slowest[t] = max(slowest[t], time.perf_counter() - start)
            accepted[t] += ok
            if i % 50 == 0:
                max_queued[0] = max(max_queued[0], w.stats.queued)

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for th in workers:
        th.start()
    for th in workers:
        th.join()
    assert w.flush(timeout=30)
    w.close()
    stats = w.stats
    total = threads * per_thread
    assert stats.written + stats.dropped_queue_full == total
    assert stats.written == sum(accepted) == count(ledger_path(tmp_path))
    assert stats.dropped_queue_full > 0 and sum(drops) == stats.dropped_queue_full
    assert stats.dropped_write_error == 0
    # the bound holds: at most max_queue waiting plus the batch being written
    assert max_queued[0] <= 200 + 50
    assert max(slowest) < 0.25  # never waits for the disk (generous for a busy CI machine)


def test_many_producers_nothing_lost_when_the_disk_keeps_up(tmp_path: Path) -> None:
    w = LedgerWriter(ledger_path(tmp_path), max_queue=100_000, flush_interval=0.02)
    threads = [
        threading.Thread(target=lambda t=t: [w.submit(rec(t * 1000 + i)) for i in range(1000)])
        for t in range(8)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    w.close()
    assert w.stats.written == 8000 and w.stats.dropped == 0
    conn = sqlite3.connect(ledger_path(tmp_path))
    assert conn.execute("SELECT COUNT(DISTINCT request_id) FROM requests").fetchone()[0] == 8000
    conn.close()


_CHILD = """
import os, sys, time
from ferrule.ledger import LedgerWriter, RequestRecord
path, name, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
w = LedgerWriter(path, batch_size=37, flush_interval=0.01)
for i in range(n):
    w.submit(RequestRecord(request_id=f"{name}-{i}", route="/v1/messages", model="claude-opus-4-6",
                           input_tokens=1, output_tokens=1))
    if i % 100 == 0:
        time.sleep(0.001)  # interleave with the other process
if mode == "crash":
    assert w.flush(10)
    time.sleep(0.05)
    os._exit(0)  # no close(): a crash after the last flush
w.close()
"""


def _child(path: Path, name: str, n: int, mode: str = "close") -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(path), name, str(n), mode])


def test_two_processes_share_one_ledger(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)  # neither process has created it yet: both race to migrate
    procs = [_child(path, "a", 2000), _child(path, "b", 2000)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    conn = sqlite3.connect(path)
    by_name = dict(
        conn.execute(
            "SELECT substr(request_id, 1, 1), COUNT(DISTINCT request_id) FROM requests GROUP BY 1"
        ).fetchall()
    )
    assert by_name == {"a": 2000, "b": 2000}
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_a_crash_keeps_every_flushed_row(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    assert _child(path, "c", 500, "crash").wait(timeout=60) == 0
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 500
    conn.close()


def test_a_busy_database_is_waited_out_not_dropped(tmp_path: Path) -> None:
    """Another process holding the lock longer than the busy timeout (or SQLite refusing to wait
    where waiting could deadlock) is not a broken disk: the batch is retried, not dropped. The
    CI failure this guards: two workers racing on a fresh ledger lost one worker's rows."""
    path = ledger_path(tmp_path)
    w = LedgerWriter(path, flush_interval=0.01, busy_timeout=0.02)
    assert w.submit(rec(0)) and w.flush(5)  # the file and schema exist
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    for i in range(1, 101):
        w.submit(rec(i))
    time.sleep(0.5)  # many busy timeouts pass while the lock is held
    assert w.stats.written == 1 and w.stats.dropped == 0
    blocker.execute("COMMIT")
    blocker.close()
    assert w.flush(10)
    w.close()
    assert (w.stats.written, w.stats.dropped) == (101, 0)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 101
    conn.close()
