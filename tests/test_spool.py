"""The ledger spool (ferrule.ledger.spool): durable appends in order, a bound, torn lines, and
adopting the folders of writers that are gone (locked while live)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ferrule.ledger.spool import Spool, SpoolFull, read_segment

COLS = ("request_id", "ts", "cost_usd")


def rows_of(spool: Spool) -> list[dict[str, object]]:
    return [r for seg in spool.segments() for r in read_segment(seg)]


def test_rows_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, COLS, segment_bytes=200)
    expected = []
    for b in range(20):
        batch = [(f"req_{b}_{i}", 1.7e9 + b + i / 10, 0.1 + 0.2 * i) for i in range(3)]
        spool.append(batch)
        expected += [dict(zip(COLS, r, strict=True)) for r in batch]
    segments = spool.segments()
    assert len(segments) > 3  # rotated by size
    assert rows_of(spool) == expected  # floats exact (shortest repr round-trips)
    assert spool.rows == 60
    # forgetting the oldest segment leaves exactly the rest, still in order
    first = list(read_segment(segments[0]))
    spool.forget(segments[0])
    assert rows_of(spool) == expected[len(first) :]
    assert spool.rows == 60 - len(first)
    with pytest.raises(ValueError):
        spool.forget(segments[2])  # not the oldest: refused
    # appending after a replay started goes to a new segment, after the old ones
    spool.append([("late", 1.0, None)])
    assert rows_of(spool)[-1] == {"request_id": "late", "ts": 1.0, "cost_usd": None}
    for seg in spool.segments():
        spool.forget(seg)
    assert spool.rows == 0
    spool.close()
    assert not spool.dir.exists()  # nothing waits: the folder goes


def test_bound_refuses_a_whole_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path, COLS, max_bytes=2000)
    spool.append([("a", 1.0, 0.5)] * 10)
    with pytest.raises(SpoolFull):
        spool.append([("b" * 100, 1.0, 0.5)] * 30)
    assert spool.rows == 10
    assert [r["request_id"] for r in rows_of(spool)] == ["a"] * 10


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, COLS)
    spool.append([("a", 1.0, 0.25), ("b", 2.0, None)])
    (seg,) = spool.segments()
    with open(seg, "ab") as f:
        f.write(b'["c", 3.0, 0.')  # a crash in the middle of a write
    assert [r["request_id"] for r in read_segment(seg)] == ["a", "b"]


def test_a_live_writers_folder_is_not_adopted_a_dead_ones_is(tmp_path: Path) -> None:
    # another process holds its spool (a live worker) while we look
    code = (
        "import time\n"
        "from ferrule.ledger.spool import Spool\n"
        f"s = Spool({str(tmp_path)!r}, ('request_id', 'ts', 'cost_usd'), owner='live')\n"
        "s.append([('x', 1.0, None)])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    live = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == b"ready"
        dead = Spool(tmp_path, COLS, owner="dead")
        dead.append([("d1", 1.0, None), ("d2", 2.0, 0.5)])
        dead._close_segment()
        assert dead._lock_fd is not None
        os.close(dead._lock_fd)  # its process is gone: the lock is released with it
        dead._lock_fd = None
        me = Spool(tmp_path, COLS, owner="me")
        seen = []
        for folder, segments in me.orphans():
            seen.append(folder.name)
            assert [r["request_id"] for s in segments for r in read_segment(s)] == ["d1", "d2"]
            for s in segments:
                s.unlink()
        assert seen == ["dead"]  # not "live", not ourselves
        assert not (tmp_path / "dead").exists()
        assert (tmp_path / "live").exists()
    finally:
        live.kill()
        live.wait(5)
    # the live one died: now it is an orphan, its row still there
    time.sleep(0.05)
    got = [(f.name, [r["request_id"] for s in segs for r in read_segment(s)]) for f, segs in
           Spool(tmp_path, COLS, owner="later").orphans()]  # fmt: skip
    assert ("live", ["x"]) in got
