"""The WAL switch waits out another connection's lock (the busy handler does not, see
ferrule.sqlite_busy), and gives up at its deadline."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from ferrule.sqlite_busy import is_busy, use_wal


def _rollback_file(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    assert holder.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    holder.execute("BEGIN IMMEDIATE")  # the RESERVED lock: a writer mid-transaction
    holder.execute("INSERT INTO t VALUES (1)")
    return holder


def test_the_switch_waits_until_the_writer_commits(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite3"
    holder = _rollback_file(path)
    # timeout=0: no busy handler at all, so only use_wal's own retries can wait.
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as raw:
        conn.execute("PRAGMA journal_mode=WAL")
    assert is_busy(raw.value)

    timer = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    timer.start()
    started = time.monotonic()
    try:
        assert use_wal(conn, deadline_s=30) == "wal"
    finally:
        timer.join()
    assert time.monotonic() - started >= 0.25
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]  # the writer's row survived
    # WAL belongs to the file: a new connection finds it switched.
    other = sqlite3.connect(path, timeout=0)
    assert use_wal(other, deadline_s=0) == "wal"
    for c in (conn, other, holder):
        c.close()


def test_a_zero_deadline_raises_at_once(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite3"
    holder = _rollback_file(path)
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError) as err:
        use_wal(conn, deadline_s=0)
    assert is_busy(err.value)
    assert time.monotonic() - started < 5
    holder.execute("ROLLBACK")
    assert use_wal(conn, deadline_s=0) == "wal"
    conn.close()
    holder.close()


def test_an_in_memory_database_says_so() -> None:
    assert use_wal(sqlite3.connect(":memory:")) == "memory"


def test_is_busy_tells_a_lock_from_a_broken_file(tmp_path: Path) -> None:
    assert not is_busy(sqlite3.OperationalError("disk I/O error"))
    assert is_busy(sqlite3.OperationalError("database is locked"))
