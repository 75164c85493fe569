"""Reading the ledger: totals by model, day, route... for a period, and period parsing.

Token columns in a summary are what was *billed*: a response-cache hit's tokens were not billed
and count only in ``saved_response_cache_tokens``. Dollar sums are None when no row of the group
was priced; ``unpriced_requests`` says how many rows had no price."""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import time
from typing import Any, Final

from .schema import open_readonly

PG_TABLE: Final = "ferrule_requests"  # ledger.postgres.LEDGER_TABLE (not imported: no psycopg)

__all__ = ["GROUPS", "PeriodError", "parse_time", "summarize", "summarize_conn"]

# Allowed group_by keys -> SQL expression (a whitelist: group names are never interpolated raw).
GROUPS: Final[dict[str, str]] = {
    "model": "model",
    "day": "date(ts, 'unixepoch')",  # UTC
    "hour": "strftime('%Y-%m-%dT%H:00Z', ts, 'unixepoch')",
    "route": "route",
    "tenant": "tenant",
    "backend": "backend",
    "outcome": "outcome",
    "stream": "stream",
    "key": "key_name",
    "upstream-key": "upstream_key",
}
# The same groups in PostgreSQL (the ledger in database_url): only the time buckets differ.
PG_GROUPS: Final[dict[str, str]] = {
    **GROUPS,
    "day": "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "hour": """to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24":00Z"')""",
}

_BILLED = "CASE WHEN response_cache_hit = 0 THEN {c} ELSE 0 END"
# Counts of rows matching a condition, in SQL both SQLite and PostgreSQL run (PostgreSQL cannot
# SUM a boolean, nor has a two-argument MAX).
_COUNT_IF = "SUM(CASE WHEN {c} THEN 1 ELSE 0 END)"
# (result key, SQL aggregate)
_AGGREGATES: Final[tuple[tuple[str, str], ...]] = (
    ("requests", "COUNT(*)"),
    ("input_tokens", f"SUM({_BILLED.format(c='input_tokens')})"),
    ("cache_write_5m_tokens", f"SUM({_BILLED.format(c='cache_write_5m_tokens')})"),
    ("cache_write_1h_tokens", f"SUM({_BILLED.format(c='cache_write_1h_tokens')})"),
    ("cache_read_tokens", f"SUM({_BILLED.format(c='cache_read_tokens')})"),
    ("output_tokens", f"SUM({_BILLED.format(c='output_tokens')})"),
    ("cost_usd", "SUM(cost_usd)"),
    ("unpriced_requests", _COUNT_IF.format(c="cost_usd IS NULL")),
    ("saved_caching_tokens", "SUM(saved_caching_tokens)"),
    ("saved_caching_usd", "SUM(saved_caching_usd)"),
    ("cache_write_premium_usd", "SUM(cache_write_premium_usd)"),
    ("saved_compression_tokens", "SUM(saved_compression_tokens)"),
    ("saved_compression_usd", "SUM(saved_compression_usd)"),
    ("saved_response_cache_tokens", "SUM(saved_response_cache_tokens)"),
    ("saved_response_cache_usd", "SUM(saved_response_cache_usd)"),
    ("response_cache_hits", "SUM(response_cache_hit)"),
    ("response_cache_misses", _COUNT_IF.format(c="response_cache = 'miss'")),
    ("prompt_cache_hits", _COUNT_IF.format(c="response_cache_hit = 0 AND cache_read_tokens > 0")),
    (
        "errors",
        _COUNT_IF.format(c="status >= 400 OR outcome IN ('upstream_error', 'truncated', 'error')"),
    ),
    ("client_cancelled", _COUNT_IF.format(c="outcome = 'client_cancelled'")),
    ("usage_estimated", "SUM(usage_estimated)"),
    ("retries", "SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END)"),
)
_USD_KEYS: Final = frozenset(k for k, _ in _AGGREGATES if k.endswith("_usd"))


class PeriodError(ValueError):
    """A --since/--until value that is neither a date, a date-time nor a relative span."""


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# The times a period can be given and shown with (datetime's range: year 1 to 9999). A span
# that reaches far back (100000w) is a way to say "everything", so it is not cut at 1970.
_EARLIEST: Final = dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc).timestamp()
_LATEST: Final = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc).timestamp()


def parse_time(value: str, *, now: float | None = None, end_of_day: bool = False) -> float:
    """Unix time from ``7d``/``24h``/``30m`` (that long before now), ``now``, a Unix time, an ISO
    date (UTC midnight; with ``end_of_day`` the next midnight, so ``--until 2026-11-27``
    includes that day) or an ISO date-time (UTC unless it carries an offset)."""
    now = time.time() if now is None else now
    text = value.strip()
    if text.lower() == "now":
        return now
    try:
        ts = _parse(text, now, end_of_day)
    except (ValueError, OverflowError):
        raise PeriodError(
            f"{_shown(value)} is not a time: use a date (2026-11-27), a date-time "
            "(2026-11-27T14:00), or a span before now (30m, 24h, 7d, 2w)"
        ) from None
    # NaN fails both comparisons; an absurd span or year would fail later, as a 500
    if not _EARLIEST <= ts <= _LATEST:
        raise PeriodError(
            f"{_shown(value)} is out of range: times go from 0001-01-01 to 9999-12-31 "
            "(a span before now must not reach before year 1)"
        )
    return ts


def _parse(text: str, now: float, end_of_day: bool) -> float:
    m = _RELATIVE.match(text.lower())
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    if re.fullmatch(r"\d{9,}(?:\.\d+)?", text):
        return float(text)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = dt.date.fromisoformat(text)
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()
        # the next midnight, in seconds: date arithmetic would overflow past 9999-12-31
        return min(midnight + 86400, _LATEST) if end_of_day else midnight
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def _shown(value: str) -> str:
    """The value as the message quotes it: bounded, so a huge query string is not echoed."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def summarize(
    db_path: str | os.PathLike[str],
    since: float | None = None,
    until: float | None = None,
    group_by: tuple[str, ...] | list[str] = ("model", "day"),
) -> list[dict[str, Any]]:
    """One dict per group (group keys first, then the aggregates), for ``since <= ts < until``
    (Unix times; None = unbounded). An empty list when there is no ledger yet."""
    conn = open_readonly(db_path)
    if conn is None:
        return []
    try:
        return summarize_conn(conn, since, until, group_by)
    finally:
        conn.close()


def summarize_conn(
    conn: Any,
    since: float | None,
    until: float | None,
    group_by: tuple[str, ...] | list[str] = ("model", "day"),
) -> list[dict[str, Any]]:
    """``conn``: a sqlite3 connection to the ledger file, or a psycopg one to database_url."""
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}; use {', '.join(GROUPS)}")
    keys = list(group_by)
    sqlite = isinstance(conn, sqlite3.Connection)
    groups, table, mark = (GROUPS, "requests", "?") if sqlite else (PG_GROUPS, PG_TABLE, "%s")
    select = [f"{groups[g]} AS g{i}" for i, g in enumerate(keys)]
    select += [f"{sql} AS {name}" for name, sql in _AGGREGATES]
    sql = f"SELECT {', '.join(select)} FROM {table} WHERE ts >= {mark} AND ts < {mark}"
    if keys:
        positions = ", ".join(f"g{i}" for i in range(len(keys)))
        # SQLite sorts NULL first; so does the shared ledger
        order = ", ".join(f"g{i}" if sqlite else f"g{i} NULLS FIRST" for i in range(len(keys)))
        sql += f" GROUP BY {positions} ORDER BY {order}"
    params = (
        since if since is not None else float("-inf"),
        until if until is not None else float("inf"),
    )
    out = []
    for values in conn.execute(sql, params):
        rec: dict[str, Any] = dict(zip(keys, values[: len(keys)], strict=True))
        if "stream" in rec:
            rec["stream"] = bool(rec["stream"])
        for (name, _), v in zip(_AGGREGATES, values[len(keys) :], strict=True):
            if name in _USD_KEYS:
                # PostgreSQL sums NUMERIC dollars exactly, as a Decimal: rounded exactly too
                if v is not None:
                    v = round(v, 6) if isinstance(v, float) else float(round(v, 6))
                rec[name] = v
            else:
                rec[name] = int(v or 0)
        if rec["requests"] == 0:
            continue  # SQL returns one all-NULL row for an empty ungrouped total
        rec["saved_total_usd"] = _net_saving(rec)
        out.append(rec)
    return out


def _net_saving(rec: dict[str, Any]) -> float | None:
    parts = (
        rec["saved_caching_usd"],
        rec["saved_compression_usd"],
        rec["saved_response_cache_usd"],
    )
    if all(p is None for p in parts):
        return None
    total = sum(p or 0.0 for p in parts) - (rec["cache_write_premium_usd"] or 0.0)
    return round(total, 6)
