"""The per-request fan-out (Recorder) and the JSON access log: one line per request, only
record fields, never a key; failures of one consumer never reach the request."""

from __future__ import annotations

import io
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ferrule import accesslog
from ferrule.ledger import LedgerWriter, Recorder, RequestRecord, ledger_path
from ferrule.metrics import Metrics

KEY = "sk-ant-api03-SECRET-never-logged"


def rec(**kw: Any) -> RequestRecord:
    base: dict[str, Any] = {
        "request_id": "req_abc",
        "route": "/v1/chat/completions",
        "model": "claude-sonnet-4-6",
        "ts": 1764237600.25,  # 2025-11-27T10:00:00.250Z
        "tenant": "9f" * 32,  # a hash of the key, as the caller computes it
        "input_tokens": 1000,
        "output_tokens": 500,
        "cache_read_tokens": 10000,
        "latency_ms": 812.5,
        "ttfb_ms": 120.0,
        "backend": "rust",
        "cache_status": "miss",
    }
    base.update(kw)
    return RequestRecord(**base)


@pytest.fixture
def access() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    accesslog.configure("info", buf)
    yield buf
    logger = logging.getLogger(accesslog.LOGGER)
    for h in list(logger.handlers):
        logger.removeHandler(h)


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in buf.getvalue().splitlines()]


def test_access_line_fields(access: io.StringIO) -> None:
    Recorder(access_log=True).record(rec())
    (line,) = lines(access)
    assert line["level"] == "info" and line["logger"] == "ferrule.access"
    assert line["ts"] == "2025-11-27T10:00:00.250Z"
    assert set(line) == {
        "time",
        "level",
        "logger",
        "ts",
        "cost_usd",
        "saved_usd",
        *accesslog.FIELDS,
    }
    assert line["request_id"] == "req_abc" and line["tenant"] == "9f" * 32
    assert (line["input_tokens"], line["cache_read_tokens"], line["output_tokens"]) == (
        1000,
        10000,
        500,
    )
    # 1000*3 + 10000*0.3 + 500*15 = 13500 micro-USD; saved 10000*2.7 = 27000
    assert (line["cost_usd"], line["saved_usd"]) == (0.0135, 0.027)


def test_access_log_never_carries_a_key_or_body(access: io.StringIO) -> None:
    # Even if a caller put the key where it does not belong, only listed fields are logged,
    # and the record has no field for a key, a header or a body.
    r = rec()
    with pytest.raises(AttributeError):
        r.api_key = KEY  # type: ignore[attr-defined]  # slots: no stray attributes
    accesslog.log_request(r)
    assert KEY not in access.getvalue()
    assert not any(f in accesslog.FIELDS for f in ("api_key", "headers", "body", "messages"))


def test_level_by_outcome_and_config(access: io.StringIO) -> None:
    accesslog.log_request(rec(status=503, outcome="upstream_error", error_type="overloaded_error"))
    accesslog.log_request(rec(outcome="truncated", stream=True))
    accesslog.log_request(rec(status=400, outcome="error"))
    accesslog.log_request(rec(outcome="client_cancelled"))
    assert [line["level"] for line in lines(access)] == ["warning", "warning", "warning", "info"]
    # at level warning only the failures are written
    buf = io.StringIO()
    accesslog.configure("warning", buf)
    accesslog.log_request(rec())
    accesslog.log_request(rec(status=502, outcome="upstream_error"))
    assert [line["status"] for line in lines(buf)] == [502]


def test_recorder_feeds_ledger_metrics_and_log(tmp_path: Path, access: io.StringIO) -> None:
    metrics = Metrics()
    writer = LedgerWriter(
        ledger_path(tmp_path), flush_interval=0.01, on_drop=metrics.ledger_dropped
    )
    recorder = Recorder(writer, metrics)
    acct = recorder.record(rec())
    assert acct is not None and acct.cost is not None and acct.cost.total_usd == 0.0135
    writer.close()
    conn = sqlite3.connect(ledger_path(tmp_path))
    assert conn.execute("SELECT request_id, cost_usd FROM requests").fetchall() == [
        ("req_abc", 0.0135)
    ]
    conn.close()
    assert b'ferrule_requests_total{model="claude-sonnet-4-6"' in metrics.render()[0]
    assert len(lines(access)) == 1
    # after close, the ledger drops (counted in the metrics), the rest still works
    recorder.record(rec(request_id="late"))
    assert b'ferrule_ledger_dropped_total{reason="closed"} 1.0' in metrics.render()[0]
    assert len(lines(access)) == 2


def test_recorder_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Metrics):
        def observe_request(self, *a: Any, **kw: Any) -> None:
            raise RuntimeError("boom")

    recorder = Recorder(None, Broken(), access_log=False)
    with caplog.at_level(logging.ERROR, logger="ferrule.ledger"):
        for _ in range(3):
            recorder.record(rec())
    assert len([r for r in caplog.records if "metrics failed" in r.getMessage()]) == 1
