"""The dashboard's own pieces without a server: its ledger reads (series, percentiles, errors by
kind, a key's page), the SVG charts, and the live feed's cost when nobody watches."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ferrule.ledger import LedgerWriter, RequestRecord, ledger_path
from ferrule.ui import queries, svg
from ferrule.ui.live import RECENT, Live
from pg_server import needs_postgres, pg_server_fixture

pg_server = pg_server_fixture  # started only for the PostgreSQL test (module scope)

NOW = 1_800_000_000.0


def rec(i: int, ts: float, **kw: object) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}", route="/v1/chat/completions", model="claude-sonnet-4-6", ts=ts, **kw
    )  # type: ignore[arg-type]


def records() -> list[RequestRecord]:
    out = [
        # latencies 10, 20, ..., 100 ms, one a minute in the last 10 minutes
        rec(
            i,
            NOW - 600 + i * 60,
            latency_ms=10.0 * (i + 1),
            ttfb_ms=float(i + 1),
            input_tokens=100,
            output_tokens=10,
            key_name="alice" if i < 4 else None,
        )
        for i in range(10)
    ]
    out.append(
        rec(10, NOW - 30, status=429, outcome="upstream_error", error_type="rate_limit_error")
    )
    out.append(rec(11, NOW - 20, status=400, outcome="error", error_type="invalid_request_error"))
    out.append(rec(12, NOW - 10, status=499, outcome="client_cancelled"))
    out.append(rec(13, NOW - 7200, input_tokens=5))  # outside the last hour
    return out


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    w = LedgerWriter(ledger_path(tmp_path), flush_interval=0.01)
    for r in records():
        w.submit(r)
    w.close()
    return ledger_path(tmp_path)


def test_overview_series_percentiles_errors(ledger: Path) -> None:
    d = queries.overview(ledger, "1h", now=NOW)
    assert d["totals"]["requests"] == 13
    assert len(d["series"]) == 60  # one bucket a minute, empty ones included
    assert sum(s["requests"] for s in d["series"]) == 13
    assert sum(s["tokens"] for s in d["series"]) == d["tokens"] == 10 * 110
    # nearest rank over the 13 latencies (three of them 0): p50 is the 7th, p90 the 12th
    assert d["percentiles"]["latency_ms"] == {"p50": 40.0, "p90": 90.0, "p99": 100.0}
    assert d["percentiles"]["ttfb_ms"]["p50"] == 5.0  # rows without a first byte left out
    # errors by kind: the error type, else the outcome (a 499 counts, as in ferrule stats)
    kinds = {e["kind"]: e["requests"] for e in d["errors_by_kind"]}
    assert kinds == {"rate_limit_error": 1, "invalid_request_error": 1, "client_cancelled": 1}
    assert d["error_rate"] == pytest.approx(3 / 13)
    assert d["requests_per_s"] == pytest.approx(13 / 3600)
    assert "<svg" in d["charts"]["requests"] and "<title>" in d["charts"]["spend"]


def test_overview_without_a_ledger(tmp_path: Path) -> None:
    d = queries.overview(tmp_path / "none.sqlite3", "30d", now=NOW)
    assert d["totals"]["requests"] == 0
    assert d["error_rate"] is None and d["response_cache_hit_ratio"] is None
    assert d["series"] == [] and d["charts"] == {}


def test_table_and_key_page(ledger: Path) -> None:
    rows = queries.table(ledger, "key", "1h", now=NOW)["rows"]
    assert {r["name"]: r["requests"] for r in rows} == {None: 9, "alice": 4}
    page = queries.key_page(ledger, "alice", "1h", now=NOW)
    assert page["totals"]["requests"] == 4
    assert [r["request_id"] for r in page["recent"]] == ["r3", "r2", "r1", "r0"]
    assert "tenant" not in page["recent"][0]  # what was asked is never kept, nor who by hash
    assert queries.key_page(ledger, "nobody", "1h", now=NOW)["totals"]["requests"] == 0


def test_svg_escapes_labels() -> None:
    out = svg.bars([NOW], [[3.0]], ["<b>"], "a <script> & b", 60)
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert out.startswith("<svg") and out.endswith("</svg>")


def test_live_feed_costs_one_append_when_nobody_watches() -> None:
    live = Live()
    records = [rec(i, time.time()) for i in range(RECENT + 10)]
    for r in records:
        live.started(r)
        live.finished(r)
    assert live._inflight == {}  # nothing tracked without a watcher
    assert len(live.recent) == RECENT  # bounded
    snap = live.snapshot(in_flight=0)
    assert snap["recent"][0]["request_id"] == records[-1].request_id
    live.watchers = 1
    flying = rec(999, time.time() - 2)
    live.started(flying)
    snap = live.snapshot(in_flight=1)
    assert [r["request_id"] for r in snap["in_flight_requests"]] == ["r999"]
    assert snap["in_flight_requests"][0]["age_s"] >= 2
    version = live.version
    live.finished(flying)
    assert live.version > version
    assert live.snapshot(in_flight=0)["in_flight_requests"] == []


# -- the shared ledger in PostgreSQL ------------------------------------------------------------


@needs_postgres
def test_postgres_ledger_reads_like_sqlite(ledger: Path, tmp_path: Path, pg_server: Any) -> None:
    """With database_url the dashboard reads the shared database: the same figures as from the
    SQLite file holding the same rows (dollars may differ in the last rounded micro-dollar:
    PostgreSQL sums exact decimals)."""
    import psycopg

    from ferrule.ledger import postgres as pg

    server = pg_server
    name = "ui_" + uuid.uuid4().hex[:10]
    with psycopg.connect(server.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = server.url.rsplit("/", 1)[0] + "/" + name
    writer = pg.PostgresLedgerWriter(url, spool_root=tmp_path / "spool")
    for r in records():
        assert writer.submit(r)
    assert writer.drain(30)
    writer.close()

    a = queries.overview(url, "1h", now=NOW)
    b = queries.overview(ledger, "1h", now=NOW)
    for key in ("percentiles", "errors_by_kind", "tokens", "error_rate", "requests_per_s"):
        assert a[key] == b[key], key
    assert [s["requests"] for s in a["series"]] == [s["requests"] for s in b["series"]]
    assert a["totals"]["requests"] == b["totals"]["requests"] == 13
    assert (
        queries.table(url, "key", "1h", now=NOW)["rows"]
        == queries.table(ledger, "key", "1h", now=NOW)["rows"]
    )
    ka, kb = (queries.key_page(d, "alice", "1h", now=NOW) for d in (url, ledger))
    assert ka["recent"] == kb["recent"]
    assert queries.last_minute(url, "alice", now=NOW - 360) == queries.last_minute(
        ledger, "alice", now=NOW - 360
    )
