"""The ledger: schema, rows with exact tokens, cost and savings per scenario, summaries."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ferrule.ledger import (
    SCHEMA_VERSION,
    LedgerError,
    LedgerWriter,
    PeriodError,
    RequestRecord,
    ledger_path,
    open_db,
    open_readonly,
    parse_time,
    summarize,
)

DAY1 = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.timezone.utc).timestamp()
DAY2 = DAY1 + 86400
CHAT = "/v1/chat/completions"


def rec(**kw: Any) -> RequestRecord:
    base: dict[str, Any] = {"request_id": "r", "route": CHAT, "model": "claude-sonnet-4-6"}
    base.update(kw)
    return RequestRecord(**base)


def write(path: Path, records: list[RequestRecord]) -> None:
    w = LedgerWriter(path, flush_interval=0.05)
    for r in records:
        assert w.submit(r)
    w.close()
    assert w.stats.written == len(records)


def rows(path: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        conn.close()


def test_schema_created_versioned_and_wal(tmp_path: Path) -> None:
    path = ledger_path(tmp_path / "deep" / "data")
    assert open_readonly(path) is None  # never created by a reader
    assert not path.exists()
    conn = open_db(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    open_db(path).close()  # opening again is a no-op
    ro = open_readonly(path)
    assert ro is not None
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.execute("DELETE FROM requests")
    ro.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    conn = open_db(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(LedgerError, match="schema version"):
        open_db(path)
    with pytest.raises(LedgerError, match="newer"):
        open_readonly(path)


def test_row_holds_every_field_and_exact_money(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    r = rec(
        request_id="req_1",
        upstream_request_id="req_up",
        tenant="t" * 64,
        ts=DAY1,
        stream=True,
        status=200,
        input_tokens=1000,
        cache_write_5m_tokens=2000,
        cache_write_1h_tokens=3000,
        cache_read_tokens=10000,
        output_tokens=500,
        compression_removed_tokens=400,
        cache_status="miss",
        attempts=2,
        ttfb_ms=123.5,
        latency_ms=2345.0,
        backend="rust",
        outcome="complete",
    )
    write(path, [r])
    (row,) = rows(path)
    assert row == {
        "id": 1,
        "ts": DAY1,
        "request_id": "req_1",
        "upstream_request_id": "req_up",
        "tenant": "t" * 64,
        "route": CHAT,
        "model": "claude-sonnet-4-6",
        "stream": 1,
        "status": 200,
        "input_tokens": 1000,
        "cache_write_5m_tokens": 2000,
        "cache_write_1h_tokens": 3000,
        "cache_read_tokens": 10000,
        "output_tokens": 500,
        "compression_removed_tokens": 400,
        "response_cache": "miss",
        "response_cache_hit": 0,
        "attempts": 2,
        "ttfb_ms": 123.5,
        "latency_ms": 2345.0,
        "backend": "rust",
        "outcome": "complete",
        "error_type": None,
        "usage_estimated": 0,
        # 1000*3 + 2000*3.75 + 3000*6 + 10000*0.3 + 500*15 = 39000 micro-USD
        "cost_usd": 0.039,
        "saved_caching_tokens": 10000,
        "saved_caching_usd": 0.027,  # 10000 * (3 - 0.3)
        "cache_write_premium_usd": 0.0105,  # 2000*0.75 + 3000*3
        "saved_compression_tokens": 400,
        "saved_compression_usd": 0.0012,  # 400 * 3
        "saved_response_cache_tokens": 0,
        "saved_response_cache_usd": 0.0,
        "key_name": None,
        "upstream_key": None,
    }


# Scenarios, one row each, all on DAY1 unless said: (name, record fields)
SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    # 200*3 + 10000*3.75 + 100*15 = 39600
    ("5m write", {"input_tokens": 200, "cache_write_5m_tokens": 10000, "output_tokens": 100}),
    # opus: 100*5 + 5000*10 + 1000*25 = 75500
    (
        "1h write",
        {
            "model": "claude-opus-4-6-20260205",
            "input_tokens": 100,
            "cache_write_1h_tokens": 5000,
            "output_tokens": 1000,
        },
    ),
    # 50*3 + 100000*0.3 + 200*15 = 33150; saved 100000 * 2.7 = 270000
    ("read", {"input_tokens": 50, "cache_read_tokens": 100000, "output_tokens": 200}),
    # replay of 1000 in + 500 out: billed 0, saved 1000*3 + 500*15 = 10500
    (
        "hit",
        {"cache_status": "hit", "input_tokens": 1000, "output_tokens": 500, "latency_ms": 3.0},
    ),
    # a cancelled stream: usage up to the cancel, estimated: 4000*3 + 20*15 = 12300
    (
        "cancelled",
        {
            "stream": True,
            "outcome": "client_cancelled",
            "usage_estimated": True,
            "input_tokens": 4000,
            "output_tokens": 20,
        },
    ),
    # a failed request after 3 attempts: one row, no tokens, 2 retries
    (
        "failed",
        {
            "status": 503,
            "outcome": "upstream_error",
            "error_type": "overloaded_error",
            "attempts": 3,
        },
    ),
    # unknown model: tokens counted, cost unknown
    ("unpriced", {"model": "mystery-1", "input_tokens": 999, "output_tokens": 1}),
    # compression: 1500 removed * 3 = 4500; request 500*3 = 1500
    ("compressed", {"input_tokens": 500, "compression_removed_tokens": 1500, "ts": DAY2}),
]


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    path = ledger_path(tmp_path)
    write(path, [rec(request_id=name, **{"ts": DAY1, **kw}) for name, kw in SCENARIOS])
    return path


def test_summary_totals_are_exact(filled: Path) -> None:
    (total,) = summarize(filled, None, None, ())
    assert total == {
        "requests": 8,
        # billed tokens: the hit's 1000/500 are not billed
        "input_tokens": 200 + 100 + 50 + 4000 + 999 + 500,
        "cache_write_5m_tokens": 10000,
        "cache_write_1h_tokens": 5000,
        "cache_read_tokens": 100000,
        "output_tokens": 100 + 1000 + 200 + 20 + 1,
        # 39600 + 75500 + 33150 + 0 + 12300 + 0 + 1500 micro-USD
        "cost_usd": 0.16205,
        "unpriced_requests": 1,
        "saved_caching_tokens": 100000,
        "saved_caching_usd": 0.27,
        # 10000*0.75 + 5000*5
        "cache_write_premium_usd": 0.0325,
        "saved_compression_tokens": 1500,
        "saved_compression_usd": 0.0045,
        "saved_response_cache_tokens": 1500,
        "saved_response_cache_usd": 0.0105,
        "response_cache_hits": 1,
        "response_cache_misses": 0,
        "prompt_cache_hits": 1,
        "errors": 1,
        "client_cancelled": 1,
        "usage_estimated": 1,
        "retries": 2,
        # 0.27 - 0.0325 + 0.0045 + 0.0105
        "saved_total_usd": 0.2525,
    }


def test_summary_by_model_and_day(filled: Path) -> None:
    by = {(r["model"], r["day"]): r for r in summarize(filled, None, None, ("model", "day"))}
    assert sorted(by) == [
        ("claude-opus-4-6-20260205", "2026-11-25"),
        ("claude-sonnet-4-6", "2026-11-25"),
        ("claude-sonnet-4-6", "2026-11-26"),
        ("mystery-1", "2026-11-25"),
    ]
    assert by[("claude-opus-4-6-20260205", "2026-11-25")]["cost_usd"] == 0.0755
    mystery = by[("mystery-1", "2026-11-25")]
    assert (mystery["cost_usd"], mystery["unpriced_requests"], mystery["input_tokens"]) == (
        None,
        1,
        999,
    )
    assert mystery["saved_total_usd"] is None
    assert by[("claude-sonnet-4-6", "2026-11-26")]["cost_usd"] == 0.0015
    days = summarize(filled, None, None, ("day",))
    assert [(d["day"], d["requests"]) for d in days] == [("2026-11-25", 7), ("2026-11-26", 1)]


def test_summary_period_and_groups(filled: Path) -> None:
    only_day2 = summarize(filled, DAY2 - 3600, DAY2 + 3600, ("route", "outcome", "stream"))
    assert [(r["route"], r["outcome"], r["stream"], r["requests"]) for r in only_day2] == [
        (CHAT, "complete", False, 1)
    ]
    assert summarize(filled, DAY2 + 1, None, ()) == []  # empty period: no rows, not a zero row
    assert summarize(filled.parent / "missing.sqlite3", None, None) == []
    with pytest.raises(ValueError, match="cannot group by"):
        summarize(filled, None, None, ("model; DROP TABLE requests",))


NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("text", "end_of_day", "expected"),
    [
        ("now", False, NOW),
        ("7d", False, NOW - 7 * 86400),
        ("24h", False, NOW - 86400),
        ("30m", False, NOW - 1800),
        ("2w", False, NOW - 14 * 86400),
        ("1.5h", False, NOW - 5400),
        ("2026-11-01", False, dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc).timestamp()),
        ("2026-11-01", True, dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc).timestamp()),
        (
            "2026-11-01T08:30",
            True,
            dt.datetime(2026, 11, 1, 8, 30, tzinfo=dt.timezone.utc).timestamp(),
        ),
        (
            "2026-11-01T08:30+02:00",
            False,
            dt.datetime(2026, 11, 1, 6, 30, tzinfo=dt.timezone.utc).timestamp(),
        ),
        (
            "2026-11-01T08:30Z",
            False,
            dt.datetime(2026, 11, 1, 8, 30, tzinfo=dt.timezone.utc).timestamp(),
        ),
        ("1764000000", False, 1764000000.0),
    ],
)
def test_parse_time(text: str, end_of_day: bool, expected: float) -> None:
    assert parse_time(text, now=NOW, end_of_day=end_of_day) == expected


@pytest.mark.parametrize("text", ["yesterday", "7x", "2026-13-01", ""])
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(PeriodError, match="is not a time"):
        parse_time(text, now=NOW)


def test_a_version_1_ledger_is_migrated_in_place_keeping_its_rows(tmp_path: Path) -> None:
    """Schema 2 adds key_name and upstream_key; an existing v1 file keeps every row."""
    from ferrule.ledger import schema
    from ferrule.ledger.writer import row

    path = ledger_path(tmp_path)
    conn = sqlite3.connect(path)
    conn.executescript(schema._MIGRATIONS[0] + ";\nPRAGMA user_version = 1;")
    v1 = [c for c, _ in schema.COLUMNS][:-2]
    conn.execute(
        f"INSERT INTO requests ({', '.join(v1)}) VALUES ({', '.join('?' for _ in v1)})",
        row(RequestRecord(request_id="old", route="/v1/messages", model="m"))[:-2],
    )
    conn.commit()
    conn.close()
    w = LedgerWriter(path, flush_interval=0.01)
    w.submit(RequestRecord(request_id="new", route="/v1/messages", model="m", key_name="agent-7"))
    w.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    got = conn.execute("SELECT request_id, key_name FROM requests ORDER BY id").fetchall()
    assert got == [("old", None), ("new", "agent-7")]
    conn.close()
