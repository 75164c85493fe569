"""The dashboard's reads of the ledger. Totals and tables come from ``ledger.query`` (the very
figures ``ferrule stats --json`` prints for the same period); what only the dashboard needs
(series over time, percentiles, errors by kind, one key's recent requests) is here. All
blocking: the server calls them in a thread. ``db`` is the ledger's SQLite file, or the
``database_url`` (``postgresql://``) of the shared ledger: the same SQL runs on both, but for the
table name, the parameter marks and the time bucket."""

from __future__ import annotations

import os
import time
from typing import Any, Final

from ..ledger import open_readonly, summarize_conn
from ..ledger.query import PG_TABLE
from . import svg

__all__ = ["PERIODS", "TABLES", "key_page", "overview", "period_bounds", "table"]

# period -> (seconds, bucket seconds) for the charts
PERIODS: Final[dict[str, tuple[int, int]]] = {
    "1h": (3600, 60),
    "24h": (86400, 3600),
    "30d": (30 * 86400, 86400),
}
# table name in the page -> ledger.query group
TABLES: Final[dict[str, str]] = {"model": "model", "key": "key", "upstream-key": "upstream-key"}
_ERROR = "(status >= 400 OR outcome IN ('upstream_error', 'truncated', 'error'))"
_ERROR_COUNT = f"CASE WHEN {_ERROR} THEN 1 ELSE 0 END"
RECENT_ROWS = 50


Db = str | os.PathLike[str]


class _Ledger:
    """A read-only connection to either ledger, and its dialect."""

    def __init__(self, db: Db) -> None:
        self.pg = isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))
        self.conn: Any
        if self.pg:
            from ..ledger import postgres

            self.conn = postgres.open_readonly(str(db))
        else:
            self.conn = open_readonly(db)

    def sql(self, text: str) -> str:
        """``text`` written for SQLite (``{t}`` the table, ``?`` marks) in this dialect."""
        if not self.pg:
            return text.format(t="requests")
        return text.format(t=PG_TABLE).replace("?", "%s")

    def bucket(self) -> str:
        # whole buckets since the period's start; PostgreSQL's CAST would round, not truncate
        return "FLOOR((ts - ?) / ?)::bigint" if self.pg else "CAST((ts - ?) / ? AS INTEGER)"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _f(v: Any) -> float:
    """A sum of dollars: a float from SQLite, an exact Decimal from PostgreSQL."""
    return round(float(v or 0.0), 6)


def period_bounds(period: str, now: float | None = None) -> tuple[float, float]:
    seconds, _ = PERIODS[period]
    end = time.time() if now is None else now
    return end - seconds, end


def _empty_totals() -> dict[str, Any]:
    from ..stats_cli import CSV_FIELDS

    empty: dict[str, Any] = {k: (None if k.endswith("_usd") else 0) for k in CSV_FIELDS[2:]}
    empty["response_cache_misses"] = 0
    return empty


def overview(db: str | os.PathLike[str], period: str, now: float | None = None) -> dict[str, Any]:
    since, until = period_bounds(period, now)
    seconds, bucket = PERIODS[period]
    led = _Ledger(db)
    out: dict[str, Any] = {"period": period, "since": since, "until": until}
    if led.conn is None:
        totals = _empty_totals()
        series: list[dict[str, Any]] = []
        pct: dict[str, dict[str, float | None]] = {"ttfb_ms": {}, "latency_ms": {}}
        errors: list[dict[str, Any]] = []
    else:
        try:
            rows = summarize_conn(led.conn, since, until, ())
            totals = rows[0] if rows else _empty_totals()
            series = _series(led, since, until, bucket)
            pct = {c: _percentiles(led, c, since, until) for c in ("ttfb_ms", "latency_ms")}
            errors = _errors(led, since, until)
        finally:
            led.close()
    billed_tokens = (
        totals["input_tokens"]
        + totals["cache_write_5m_tokens"]
        + totals["cache_write_1h_tokens"]
        + totals["cache_read_tokens"]
        + totals["output_tokens"]
    )
    prompt_in = billed_tokens - totals["output_tokens"]
    lookups = totals["response_cache_hits"] + totals["response_cache_misses"]
    out.update(
        totals=totals,
        tokens=billed_tokens,
        requests_per_s=totals["requests"] / seconds,
        tokens_per_s=billed_tokens / seconds,
        error_rate=totals["errors"] / totals["requests"] if totals["requests"] else None,
        prompt_cache_read_share=totals["cache_read_tokens"] / prompt_in if prompt_in else None,
        response_cache_hit_ratio=totals["response_cache_hits"] / lookups if lookups else None,
        percentiles=pct,
        errors_by_kind=errors,
        series=series,
        charts=_charts(series, since, until, bucket),
    )
    return out


def _series(led: _Ledger, since: float, until: float, bucket: int) -> list[dict[str, Any]]:
    sql = (
        f"SELECT {led.bucket()} AS b, COUNT(*),"
        " SUM(CASE WHEN response_cache_hit = 0 THEN input_tokens + cache_write_5m_tokens"
        " + cache_write_1h_tokens + cache_read_tokens + output_tokens ELSE 0 END),"
        " SUM(cost_usd),"
        " SUM(COALESCE(saved_caching_usd, 0) + COALESCE(saved_compression_usd, 0)"
        " + COALESCE(saved_response_cache_usd, 0) - COALESCE(cache_write_premium_usd, 0)),"
        f" SUM({_ERROR_COUNT})"
        " FROM {t} WHERE ts >= ? AND ts < ? GROUP BY b ORDER BY b"
    )
    found = {
        int(b): (n, tok, cost, saved, err)
        for b, n, tok, cost, saved, err in led.conn.execute(
            led.sql(sql), (since, bucket, since, until)
        )
    }
    count = max(1, int((until - since + bucket - 1) // bucket))
    out = []
    for i in range(count):
        n, tok, cost, saved, err = found.get(i, (0, 0, 0.0, 0.0, 0))
        out.append(
            {
                "t": since + i * bucket,
                "requests": int(n or 0),
                "tokens": int(tok or 0),
                "cost_usd": _f(cost),
                "saved_usd": _f(saved),
                "errors": int(err or 0),
            }
        )
    return out


def _percentiles(led: _Ledger, column: str, since: float, until: float) -> dict[str, float | None]:
    assert column in ("ttfb_ms", "latency_ms")  # never a caller's string
    where = f"ts >= ? AND ts < ? AND {column} IS NOT NULL"
    count = led.sql("SELECT COUNT(*) FROM {t} WHERE ") + led.sql(where)
    (n,) = led.conn.execute(count, (since, until)).fetchone()
    out: dict[str, float | None] = {}
    for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
        if not n:
            out[name] = None
            continue
        rank = max(0, min(n - 1, int(-(-q * n // 1)) - 1))  # nearest rank
        one = f"SELECT {column} FROM {{t}} WHERE {where} ORDER BY {column} LIMIT 1 OFFSET ?"
        (v,) = led.conn.execute(led.sql(one), (since, until, rank)).fetchone()
        out[name] = round(float(v), 1)
    return out


def _errors(led: _Ledger, since: float, until: float) -> list[dict[str, Any]]:
    sql = (
        "SELECT COALESCE(NULLIF(error_type, ''), outcome) AS kind, COUNT(*) FROM {t}"
        f" WHERE ts >= ? AND ts < ? AND {_ERROR} GROUP BY kind ORDER BY COUNT(*) DESC, kind"
    )
    rows = led.conn.execute(led.sql(sql), (since, until))
    return [{"kind": k, "requests": int(n)} for k, n in rows]


def _charts(
    series: list[dict[str, Any]], since: float, until: float, bucket: int
) -> dict[str, str]:
    if not series:
        return {}
    label = {60: "per minute", 3600: "per hour", 86400: "per day"}[bucket]
    times = [s["t"] for s in series]
    return {
        "requests": svg.bars(
            times, [[s["requests"] for s in series]], ["requests"], f"Requests {label}", bucket
        ),
        "tokens": svg.bars(
            times, [[s["tokens"] for s in series]], ["tokens"], f"Billed tokens {label}", bucket
        ),
        "spend": svg.bars(
            times,
            [[s["cost_usd"] for s in series], [s["saved_usd"] for s in series]],
            ["spend", "saved"],
            f"Spend and savings (USD) {label}",
            bucket,
            money=True,
        ),
    }


def table(
    db: str | os.PathLike[str], by: str, period: str, now: float | None = None
) -> dict[str, Any]:
    since, until = period_bounds(period, now)
    led = _Ledger(db)
    rows: list[dict[str, Any]] = []
    if led.conn is not None:
        try:
            rows = summarize_conn(led.conn, since, until, (TABLES[by],))
        finally:
            led.close()
    for r in rows:
        r["name"] = r.pop(TABLES[by])
    return {"by": by, "period": period, "since": since, "until": until, "rows": rows}


def last_minute(db: Db, name: str, now: float | None = None) -> tuple[int, int]:
    """A key's requests and billed tokens in the 60 s before ``now`` (its rate-limit use)."""
    led = _Ledger(db)
    if led.conn is None:
        return 0, 0
    try:
        sql = (
            "SELECT COUNT(*), COALESCE(SUM(input_tokens + cache_write_5m_tokens"
            " + cache_write_1h_tokens + cache_read_tokens + output_tokens), 0)"
            " FROM {t} WHERE key_name = ? AND ts >= ?"
        )
        start = (time.time() if now is None else now) - 60
        row = led.conn.execute(led.sql(sql), (name, start)).fetchone()
    finally:
        led.close()
    return int(row[0]), int(row[1])


def key_page(
    db: str | os.PathLike[str], name: str, period: str, now: float | None = None
) -> dict[str, Any]:
    """One virtual key's use: totals (as the by-key table), and its recent requests (what,
    when, how it ended; never a body)."""
    since, until = period_bounds(period, now)
    led = _Ledger(db)
    totals: dict[str, Any] | None = None
    recent: list[dict[str, Any]] = []
    if led.conn is not None:
        try:
            for r in summarize_conn(led.conn, since, until, ("key",)):
                if r["key"] == name:
                    totals = r
            sql = (
                "SELECT ts, request_id, route, model, stream, status, outcome, error_type,"
                " input_tokens + cache_write_5m_tokens + cache_write_1h_tokens,"
                " cache_read_tokens, output_tokens, cost_usd, response_cache, latency_ms"
                " FROM {t} WHERE key_name = ? ORDER BY ts DESC LIMIT ?"
            )
            cur = led.conn.execute(led.sql(sql), (name, RECENT_ROWS))
            cols = [
                "ts",
                "request_id",
                "route",
                "model",
                "stream",
                "status",
                "outcome",
                "error_type",
                "input_tokens",
                "cache_read_tokens",
                "output_tokens",
                "cost_usd",
                "cache",
                "latency_ms",
            ]
            for row in cur:
                r = dict(zip(cols, row, strict=True))
                r["cost_usd"] = None if r["cost_usd"] is None else float(r["cost_usd"])
                r["stream"] = bool(r["stream"])
                recent.append(r)
        finally:
            led.close()
    return {
        "name": name,
        "period": period,
        "since": since,
        "until": until,
        "totals": totals or _empty_totals(),
        "recent": recent,
    }
