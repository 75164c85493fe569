"""The ledger on a bad disk (read-only, full, not a folder): requests never see an error, the
rows are dropped and counted, the error is logged once, and writes resume when the disk does."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ferrule.ledger import LedgerWriter, RequestRecord, ledger_path, open_db
from ferrule.ledger import writer as writer_mod


def rec(i: int) -> RequestRecord:
    return RequestRecord(
        request_id=f"req_{i:06d}",
        route="/v1/chat/completions",
        model="claude-sonnet-4-6",
        input_tokens=10,
        output_tokens=5,
        tenant="f" * 64,
    )


def _readonly_open(path: Any, **kw: Any) -> sqlite3.Connection:
    """The ledger as a read-only disk shows it: opens, every write fails."""
    return sqlite3.connect(
        f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
    )


def _full_open(path: Any, **kw: Any) -> sqlite3.Connection:
    """A disk with no room left: SQLite cannot grow the file (SQLITE_FULL). NOTE: the free
    space left in the table's last page still takes a few rows before the first failure."""
    conn = open_db(path, **kw)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    return conn


@pytest.mark.parametrize(
    ("opener", "message"),
    [(_readonly_open, "readonly database"), (_full_open, "database or disk is full")],
    ids=["read-only", "full"],
)
def test_bad_disk_drops_counts_and_logs_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    opener: Any,
    message: str,
) -> None:
    path = ledger_path(tmp_path)
    open_db(path).close()  # an existing ledger
    monkeypatch.setattr(writer_mod, "open_db", opener)
    drops: list[tuple[str, int]] = []
    w = LedgerWriter(
        path,
        batch_size=10,
        flush_interval=0.01,
        retry_interval=0.0,  # retry every batch: the error must still be logged once
        on_drop=lambda reason, n: drops.append((reason, n)),
    )
    with caplog.at_level(logging.WARNING, logger="ferrule.ledger"):
        for i in range(200):
            assert w.submit(rec(i)) is True  # accepted: the request path sees no failure
            if i % 20 == 0:
                w.flush()
        assert w.flush()
    stats = w.stats
    assert stats.written + stats.dropped_write_error == 200
    assert stats.written < 40  # 0 when read-only; the last page's room when full
    assert not stats.healthy and not w.healthy
    assert stats.last_error is not None and message in stats.last_error
    assert sum(n for _, n in drops) == stats.dropped_write_error
    assert {r for r, _ in drops} == {"write_error"}
    warnings = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]

    # the disk recovers: writes resume, and that is logged
    monkeypatch.setattr(writer_mod, "open_db", open_db)
    with caplog.at_level(logging.WARNING, logger="ferrule.ledger"):
        for i in range(200, 230):
            w.submit(rec(i))
        assert w.flush()
    w.close()
    assert w.stats.written == stats.written + 30 and w.stats.healthy
    assert any("writes resumed" in r.getMessage() for r in caplog.records)


def test_unusable_data_folder(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    w = LedgerWriter(ledger_path(not_a_dir), flush_interval=0.01, retry_interval=60)
    for i in range(50):
        assert w.submit(rec(i))
    assert w.flush()
    w.close()
    # one failed open, then every batch dropped without another attempt for retry_interval
    assert (w.stats.written, w.stats.dropped_write_error) == (0, 50)


def test_not_a_database(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    path.write_bytes(b"this is not SQLite" * 100)
    w = LedgerWriter(path, flush_interval=0.01)
    w.submit(rec(1))
    assert w.flush()
    w.close()
    assert w.stats.dropped_write_error == 1
    assert "not a database" in (w.stats.last_error or "")


# -- a real tiny filesystem: tmpfs in a private mount namespace (root only) -------------------

_TMPFS_CHILD = r"""
import json, subprocess, sys, time
from ferrule.ledger import LedgerWriter, RequestRecord, open_db

full_dir, ro_dir = sys.argv[1], sys.argv[2]
out = {}

def rec(i):
    return RequestRecord(request_id=f"req_{i:06d}", route="/v1/messages", model="claude-haiku-4-5",
                         tenant="e" * 64, input_tokens=i)

# A full disk: keep writing past the end of a 192 KiB tmpfs.
w = LedgerWriter(full_dir + "/ledger.sqlite3", batch_size=50, flush_interval=0.01,
                 retry_interval=0.0)
for i in range(20000):
    w.submit(rec(i))
    if i % 500 == 0:
        w.flush()
        if w.stats.dropped_write_error:
            break
w.flush()
w.close()
s = w.stats
out["full"] = {"written": s.written, "dropped": s.dropped_write_error, "error": s.last_error}

# A read-only disk: a ledger with rows, then the filesystem remounted read-only.
open_db(ro_dir + "/ledger.sqlite3").close()
subprocess.run(["mount", "-o", "remount,ro", ro_dir], check=True)
w = LedgerWriter(ro_dir + "/ledger.sqlite3", flush_interval=0.01, retry_interval=0.0)
for i in range(100):
    w.submit(rec(i))
w.flush()
w.close()
s = w.stats
out["ro"] = {"written": s.written, "dropped": s.dropped_write_error, "error": s.last_error}
print(json.dumps(out))
"""


def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs", "/mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount(), reason="needs root and mount namespaces (unshare -m)")
def test_real_full_and_read_only_filesystems(tmp_path: Path) -> None:
    full_dir, ro_dir = tmp_path / "full", tmp_path / "ro"
    full_dir.mkdir()
    ro_dir.mkdir()
    script = (
        f"mount -t tmpfs -o size=192k tmpfs {full_dir} && "
        f"mount -t tmpfs -o size=1m tmpfs {ro_dir} && "
        f'exec "{sys.executable}" -c "$0" {full_dir} {ro_dir}'
    )
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, _TMPFS_CHILD],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr  # the writer never raised
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    full = out["full"]
    assert full["written"] > 0 and full["dropped"] > 0, full
    assert "full" in full["error"], full
    ro = out["ro"]
    assert (ro["written"], ro["dropped"]) == (0, 100), ro
    # WAL on a read-only mount fails at open (no -shm can be made), not at the first write
    assert "readonly" in ro["error"] or "unable to open" in ro["error"], ro
