"""``ferrule stats``: requests, tokens, cost and savings from the ledger, by model and by day.

Also ``stats_json``, the body of ``GET /stats`` (the same data as ``ferrule stats --json``)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from .ledger import (
    GROUPS,
    LedgerError,
    PeriodError,
    ledger_path,
    open_readonly,
    parse_time,
    resolve_data_dir,
    summarize_conn,
)

__all__ = [
    "CSV_FIELDS",
    "add_arguments",
    "print_tables",
    "render_text",
    "run",
    "stats_from_query",
    "stats_json",
    "write_csv",
]

DEFAULT_SINCE = "7d"
# The CSV export: one row per (day, model), every figure.
CSV_FIELDS = (
    "day",
    "model",
    "requests",
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "cost_usd",
    "unpriced_requests",
    "saved_caching_tokens",
    "saved_caching_usd",
    "cache_write_premium_usd",
    "saved_compression_tokens",
    "saved_compression_usd",
    "saved_response_cache_tokens",
    "saved_response_cache_usd",
    "saved_total_usd",
    "response_cache_hits",
    "prompt_cache_hits",
    "errors",
    "client_cancelled",
    "usage_estimated",
    "retries",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--since",
        default=DEFAULT_SINCE,
        help="start: a date (2026-11-01), a date-time, or a span before now (24h, 7d, 2w); "
        f"default {DEFAULT_SINCE}",
    )
    p.add_argument(
        "--until", default="now", help="end (exclusive; a date includes that day); default now"
    )
    p.add_argument(
        "--by",
        default="model,day",
        help=f"tables to show, comma-separated, from: {', '.join(GROUPS)} (default model,day)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON (as GET /stats) instead")
    out.add_argument(
        "--csv", metavar="FILE", help="write a CSV by day and model to FILE ('-': stdout)"
    )
    p.add_argument("--data-dir", help="Ferrule's data folder (FERRULE_DATA_DIR)")
    p.add_argument("--config", help="TOML config file, for its data folder (FERRULE_CONFIG)")


def run(args: argparse.Namespace) -> int:
    try:
        now = time.time()
        since = parse_time(args.since, now=now)
        until = parse_time(args.until, now=now, end_of_day=True)
        tables = [t.strip() for t in args.by.split(",") if t.strip()]
        bad = [t for t in tables if t not in GROUPS]
        if bad:
            raise PeriodError(f"--by: unknown table {', '.join(bad)}; use {', '.join(GROUPS)}")
        path = ledger_path(resolve_data_dir(args.data_dir, args.config))
    except ValueError as exc:  # PeriodError, ConfigError
        print(f"ferrule stats: {exc}", file=sys.stderr)
        return 2
    try:
        conn = open_readonly(path)
    except (sqlite3.Error, LedgerError) as exc:
        print(f"ferrule stats: cannot read the ledger {path}: {exc}", file=sys.stderr)
        return 1
    if conn is None:
        print(f"ferrule stats: no ledger at {path} yet (no request recorded)", file=sys.stderr)
    try:
        if args.json:
            data = _stats(conn, path, since, until, groups=tables)
            sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        elif args.csv:
            rows = summarize_conn(conn, since, until, ("day", "model")) if conn else []
            if args.csv == "-":
                write_csv(rows, sys.stdout)
            else:
                with open(args.csv, "w", newline="", encoding="utf-8") as f:
                    write_csv(rows, f)
                print(f"wrote {len(rows)} rows to {args.csv}", file=sys.stderr)
        else:
            data = _stats(conn, path, since, until, groups=tables)
            print_tables(data, tables)
    except sqlite3.Error as exc:
        print(f"ferrule stats: cannot read the ledger {path}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ferrule stats: {exc}", file=sys.stderr)
        return 1
    finally:
        if conn is not None:
            conn.close()
    return 0


def stats_json(
    db_path: str | os.PathLike[str],
    since: float | None = None,
    until: float | None = None,
    *,
    groups: Sequence[str] = ("model", "day"),
) -> dict[str, Any]:
    """``{"ledger", "since", "until", "totals", "by_model": [...], "by_day": [...]}`` for
    ``since <= ts < until`` (Unix times; None: unbounded). Blocking (SQLite): call it from a
    thread in the event loop (``await asyncio.to_thread(stats_json, ...)``)."""
    conn = open_readonly(db_path)
    try:
        return _stats(conn, Path(db_path), since, until, groups=groups)
    finally:
        if conn is not None:
            conn.close()


def stats_from_query(
    db_path: str | os.PathLike[str],
    since: str | None = None,
    until: str | None = None,
    by: str | None = None,
) -> dict[str, Any]:
    """``GET /stats?since=7d&until=now&by=model,day``: the query's strings as ``ferrule stats``
    takes them. Raises ``PeriodError`` (a ValueError: answer 400) for a bad value. Blocking."""
    now = time.time()
    start = parse_time(since or DEFAULT_SINCE, now=now)
    end = parse_time(until or "now", now=now, end_of_day=True)
    groups = [g.strip() for g in (by or "model,day").split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise PeriodError(f"by: unknown grouping {', '.join(bad)}; use {', '.join(GROUPS)}")
    return stats_json(db_path, start, end, groups=groups)


def _stats(
    conn: sqlite3.Connection | None,
    path: Path,
    since: float | None,
    until: float | None,
    *,
    groups: Sequence[str],
) -> dict[str, Any]:
    totals = summarize_conn(conn, since, until, ()) if conn else []
    out: dict[str, Any] = {
        "ledger": str(path),
        "since": _iso(since),
        "until": _iso(until),
        "totals": totals[0] if totals else _empty_totals(),
    }
    for g in groups:
        out[f"by_{g}"] = summarize_conn(conn, since, until, (g,)) if conn else []
    return out


def _empty_totals() -> dict[str, Any]:
    return {k: (None if k.endswith("_usd") else 0) for k in CSV_FIELDS[2:]}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return (
        dt.datetime.fromtimestamp(ts, dt.timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def write_csv(rows: list[dict[str, Any]], out: IO[str]) -> None:
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in CSV_FIELDS})


# -- the table --------------------------------------------------------------------------------


def print_tables(data: dict[str, Any], tables: Sequence[str], out: IO[str] | None = None) -> None:
    from rich.console import Console

    stream = out or sys.stdout
    # A pipe gets a wide table rather than rich's 80-column default.
    width = None if stream.isatty() else 200
    console = Console(file=stream, width=width, highlight=False)
    period = f"{data['since'] or 'start'} to {data['until'] or 'now'} (UTC)"
    if data["totals"]["requests"] == 0:
        console.print(f"No requests recorded from {period}.")
        return
    for name in tables:
        console.print(_table(name, data[f"by_{name}"], data["totals"], period))
    footnotes = []
    if data["totals"]["unpriced_requests"]:
        footnotes.append(
            f"† {data['totals']['unpriced_requests']} request(s) to models without a price: "
            "their cost is unknown, not $0 (add them to ferrule/data/models.toml)."
        )
    footnotes.append(
        "Tokens: billed (c. = prompt cache). Saved: prompt caching (net of the cache-write "
        "premium), compression, response-cache hits (billed $0); total = their sum. "
        "hits: response-cache hits. '-': unpriced."
    )
    for note in footnotes:
        console.print(note, style="dim")


def _table(name: str, rows: list[dict[str, Any]], totals: dict[str, Any], period: str) -> Any:
    from rich.table import Table

    t = Table(title=f"Ferrule by {name}, {period}", title_justify="left", show_footer=True)
    label = "total"
    t.add_column(name, footer=label, no_wrap=True)
    for header, cell in _COLUMNS:
        t.add_column(header, justify="right", footer=cell(totals), no_wrap=True)
    for r in rows:
        key = r[name]
        t.add_row("(none)" if key is None else str(key), *(cell(r) for _, cell in _COLUMNS))
    return t


def _n(v: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.1f}{unit}"
    return str(v)


def _usd(v: float | None) -> str:
    if v is None:
        return "unpriced"
    if v == 0:
        return "$0"
    return f"${v:,.4f}" if abs(v) < 1 else f"${v:,.2f}"


def _cost(r: dict[str, Any]) -> str:
    text = _usd(r["cost_usd"])
    return text + " †" if r["unpriced_requests"] and r["cost_usd"] is not None else text


def _caching_net(r: dict[str, Any]) -> str:
    if r["saved_caching_usd"] is None:
        return "-"
    return _usd(r["saved_caching_usd"] - (r["cache_write_premium_usd"] or 0.0))


def _saved(v: float | None) -> str:
    return "-" if v is None else _usd(v)


# (header, cell) — short headers, so the table fits an ordinary terminal.
_COLUMNS = (
    ("reqs", lambda r: str(r["requests"])),
    ("input", lambda r: _n(r["input_tokens"])),
    ("c.write", lambda r: _n(r["cache_write_5m_tokens"] + r["cache_write_1h_tokens"])),
    ("c.read", lambda r: _n(r["cache_read_tokens"])),
    ("output", lambda r: _n(r["output_tokens"])),
    ("cost", _cost),
    ("saved:caching", _caching_net),
    ("compress", lambda r: _saved(r["saved_compression_usd"])),
    ("resp.cache", lambda r: _saved(r["saved_response_cache_usd"])),
    ("total", lambda r: _saved(r["saved_total_usd"])),
    ("hits", lambda r: str(r["response_cache_hits"])),
    ("errors", lambda r: str(r["errors"])),
)


def render_text(data: dict[str, Any], tables: Sequence[str]) -> str:
    """The tables as plain text (for the demo and tests)."""
    buf = io.StringIO()
    print_tables(data, tables, buf)
    return buf.getvalue()
