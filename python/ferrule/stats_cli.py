"""``ferrule stats``: requests, tokens, cost and savings from the ledger, by model and by day;
``--plot`` draws spend and savings per day as bars in the terminal.

The tables fit the terminal: on a narrow one (80 columns) the least needed columns are left out
(and named under the table) rather than every row wrapping. A pipe gets every column (200 wide)
unless ``COLUMNS`` says otherwise.

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
    "print_plot",
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
        "--plot", action="store_true", help="draw spend and savings per day as terminal bars"
    )
    out.add_argument(
        "--csv", metavar="FILE", help="write a CSV by day and model to FILE ('-': stdout)"
    )
    p.add_argument("--data-dir", help="Ferrule's data folder (FERRULE_DATA_DIR)")
    p.add_argument("--config", help="TOML config file, for its data folder (FERRULE_CONFIG)")
    p.add_argument(
        "--database-url",
        help="read the ledger from this PostgreSQL database (FERRULE_DATABASE_URL)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        now = time.time()
        since = parse_time(args.since, now=now)
        until = parse_time(args.until, now=now, end_of_day=True)
        tables = [t.strip() for t in args.by.split(",") if t.strip()]
        if getattr(args, "plot", False):
            tables = ["day"]  # the chart is by day whatever --by says
        bad = [t for t in tables if t not in GROUPS]
        if bad:
            raise PeriodError(f"--by: unknown table {', '.join(bad)}; use {', '.join(GROUPS)}")
        url = getattr(args, "database_url", None) or database_url(args.config)
        path: str | Path = url or ledger_path(resolve_data_dir(args.data_dir, args.config))
    except ValueError as exc:  # PeriodError, ConfigError
        print(f"ferrule stats: {exc}", file=sys.stderr)
        return 2
    errors = _db_errors(path)
    try:
        conn = _open(path)
    except errors as exc:
        print(f"ferrule stats: cannot read the ledger {_shown(path)}: {exc}", file=sys.stderr)
        return 1
    if conn is None:
        print(
            f"ferrule stats: no ledger at {_shown(path)} yet (no request recorded)",
            file=sys.stderr,
        )
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
        elif getattr(args, "plot", False):
            print_plot(_stats(conn, path, since, until, groups=tables))
        else:
            data = _stats(conn, path, since, until, groups=tables)
            print_tables(data, tables)
    except errors as exc:
        print(f"ferrule stats: cannot read the ledger {_shown(path)}: {exc}", file=sys.stderr)
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
    thread in the event loop (``await asyncio.to_thread(stats_json, ...)``). ``db_path`` may
    be a postgresql:// URL (database_url): the shared ledger."""
    conn = _open(db_path)
    try:
        return _stats(conn, db_path, since, until, groups=groups)
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
    conn: Any,
    path: str | os.PathLike[str],
    since: float | None,
    until: float | None,
    *,
    groups: Sequence[str],
) -> dict[str, Any]:
    totals = summarize_conn(conn, since, until, ()) if conn else []
    out: dict[str, Any] = {
        "ledger": _shown(path),
        "since": _iso(since),
        "until": _iso(until),
        "totals": totals[0] if totals else _empty_totals(),
    }
    for g in groups:
        out[f"by_{g}"] = summarize_conn(conn, since, until, (g,)) if conn else []
    return out


def database_url(config_path: str | None = None) -> str:
    """``FERRULE_DATABASE_URL``, else the config file's ``database_url``; "" for none.
    Raises ConfigError (a ValueError) for a broken config file."""
    explicit = os.environ.get("FERRULE_DATABASE_URL")
    if explicit:
        return explicit
    if config_path or os.environ.get("FERRULE_CONFIG"):
        from .config import load

        return str(getattr(load(config_path=config_path), "database_url", "") or "")
    return ""


def _is_url(db: object) -> bool:
    return isinstance(db, str) and db.startswith(("postgresql:", "postgres:"))


def _open(db: str | os.PathLike[str]) -> Any:
    """A connection to the ledger (SQLite file or PostgreSQL URL); None when none exists yet."""
    if _is_url(db):
        from .ledger import postgres

        return postgres.open_readonly(str(db))
    return open_readonly(db)


def _db_errors(db: str | os.PathLike[str]) -> tuple[type[Exception], ...]:
    if _is_url(db):
        import psycopg

        return (psycopg.Error, LedgerError)
    return (sqlite3.Error, LedgerError)


def _shown(db: str | os.PathLike[str]) -> str:
    """The ledger as output names it: a database URL without its user and password."""
    if _is_url(db):
        from .ledger.postgres import redact

        return redact(str(db))
    return str(db)


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


def _console(out: IO[str] | None, width: int | None) -> Any:
    from rich.console import Console

    stream = out or sys.stdout
    if width is None and not stream.isatty():
        # A pipe gets a wide table rather than rich's 80-column default, unless COLUMNS is set.
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) > 0 else 200
    return Console(file=stream, width=width, highlight=False)


def print_tables(
    data: dict[str, Any],
    tables: Sequence[str],
    out: IO[str] | None = None,
    *,
    width: int | None = None,
) -> None:
    """The tables, each fitted to ``width`` (default: the terminal's, or 200 for a pipe)."""
    console = _console(out, width)
    period = f"{data['since'] or 'start'} to {data['until'] or 'now'} (UTC)"
    if data["totals"]["requests"] == 0:
        console.print(f"No requests recorded from {period}.")
        return
    hidden: list[str] = []
    for name in tables:
        table, left_out = _fitted_table(console, name, data[f"by_{name}"], data["totals"], period)
        console.print(table)
        hidden += [h for h in left_out if h not in hidden]
    footnotes = []
    if data["totals"]["unpriced_requests"]:
        footnotes.append(
            f"† {data['totals']['unpriced_requests']} request(s) to models without a price: "
            "their cost is unknown, not $0 (add them to ferrule/data/models.toml)."
        )
    if "saved:caching" in hidden:
        footnotes.append(
            "Tokens: billed. Saved: prompt caching (net of the cache-write premium) + "
            "compression + response-cache hits (billed $0). '-': unpriced."
        )
    else:
        footnotes.append(
            "Tokens: billed (c. = prompt cache). Saved: prompt caching (net of the cache-write "
            "premium), compression, response-cache hits (billed $0); total = their sum. "
            "hits: response-cache hits. '-': unpriced."
        )
    if hidden:
        footnotes.append(
            f"Narrow terminal ({console.width} columns): left out {', '.join(hidden)}; "
            "a wider one, --json or --csv show every column."
        )
    for note in footnotes:
        console.print(note, style="dim")


# Left out first when a table is too wide for the terminal, in this order ("total" then reads
# "saved": the sum of the columns left out).
_DROP_ORDER = ("compress", "resp.cache", "saved:caching", "c.write", "hits", "c.read", "input")


def _fitted_table(
    console: Any, name: str, rows: list[dict[str, Any]], totals: dict[str, Any], period: str
) -> tuple[Any, list[str]]:
    """The widest table that fits the console without wrapping a row, and what it left out."""
    from rich.measure import Measurement

    hidden: list[str] = []
    for drop in (None, *_DROP_ORDER):
        if drop is not None:
            hidden.append(drop)
        table = _table(name, rows, totals, period, hidden)
        # the width it needs with no column squeezed (cells never wrap: no_wrap)
        need = Measurement.get(console, console.options.update_width(10_000), table).maximum
        if need <= console.width:
            return table, hidden
    return table, hidden  # as narrow as it gets: rich truncates the cells


def _table(
    name: str,
    rows: list[dict[str, Any]],
    totals: dict[str, Any],
    period: str,
    hidden: Sequence[str] = (),
) -> Any:
    from rich.table import Table

    columns = [(h, cell) for h, cell in _COLUMNS if h not in hidden]
    t = Table(title=f"Ferrule by {name}, {period}", title_justify="left", show_footer=True)
    label = "total"
    t.add_column(name, footer=label, no_wrap=True)
    for header, cell in columns:
        if header == "total" and "saved:caching" in hidden:
            header = "saved"  # the breakdown is gone: the column is the savings
        t.add_column(header, justify="right", footer=cell(totals), no_wrap=True)
    for r in rows:
        key = r[name]
        t.add_row("(none)" if key is None else str(key), *(cell(r) for _, cell in columns))
    return t


# -- the chart --------------------------------------------------------------------------------

_EIGHTHS = " ▏▎▍▌▋▊▉"


def _bar(value: float, scale: float, width: int) -> str:
    """``value`` as a bar of at most ``width`` cells at ``scale`` (the value of a full bar), in
    eighths of a cell; a positive value too small to show still gets the thinnest sliver."""
    if value <= 0 or scale <= 0:
        return ""
    eighths = round(min(value / scale, 1.0) * width * 8)
    full, rest = divmod(max(eighths, 1), 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


def _days(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows by day with the days between them that had no request (as zeros), so the chart
    is a time line."""
    by_day = {r["day"]: r for r in rows if r.get("day")}
    if not by_day:
        return []
    first, last = dt.date.fromisoformat(min(by_day)), dt.date.fromisoformat(max(by_day))
    out = []
    for n in range((last - first).days + 1):
        day = (first + dt.timedelta(days=n)).isoformat()
        out.append(by_day.get(day) or {"day": day, "cost_usd": 0.0, "saved_total_usd": 0.0})
    return out


def print_plot(
    data: dict[str, Any], out: IO[str] | None = None, *, width: int | None = None
) -> None:
    """Spend and savings per day as two bars a day, on one scale, fitted to ``width``."""
    from rich.text import Text

    console = _console(out, width)
    period = f"{data['since'] or 'start'} to {data['until'] or 'now'} (UTC)"
    days = _days(data.get("by_day") or [])
    if not days:
        console.print(f"No requests recorded from {period}.")
        return
    values = [v for d in days for v in (d["cost_usd"], d["saved_total_usd"]) if v is not None]
    scale = max([v for v in values if v > 0], default=0.0)
    cells = [_usd(v) for v in values] or ["$0"]
    value_width = max(len(c) for c in cells) + 2  # room for " †"
    bar_width = max(10, console.width - len("2026-11-25 spend ") - value_width - 1)
    console.print(f"Spend and savings per day, {period}", highlight=False)
    for d in days:
        for i, (label, value, style) in enumerate(
            (("spend", d["cost_usd"], "yellow"), ("saved", d["saved_total_usd"], "green"))
        ):
            line = Text(f"{d['day'] if i == 0 else '':<10} {label} ")
            bar = _bar(value or 0.0, scale, bar_width)
            line.append(f"{bar:<{bar_width}}", style=style)
            shown = _usd(value) if label == "spend" else _saved(value)
            if label == "spend" and d.get("unpriced_requests"):
                shown += " †"
            line.append(f" {shown:>{value_width}}")
            console.print(line, no_wrap=True, overflow="crop")
    t = data["totals"]
    cost, saved = t["cost_usd"], t["saved_total_usd"]
    summary = f"total: spent {_usd(cost)}, saved {_saved(saved)}"
    if cost is not None and saved is not None and cost + saved > 0:
        summary += f" ({saved / (cost + saved):.0%} of the cost without Ferrule)"
    console.print(summary, highlight=False)
    if t["unpriced_requests"]:
        console.print(
            f"† {t['unpriced_requests']} request(s) to models without a price are not counted.",
            style="dim",
        )


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
    sign = "-" if v < 0 else ""
    return f"{sign}${abs(v):,.4f}" if abs(v) < 1 else f"{sign}${abs(v):,.2f}"


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


def render_text(data: dict[str, Any], tables: Sequence[str], *, width: int | None = None) -> str:
    """The tables as plain text (for the demo and tests), ``width`` columns wide (default: as
    for a pipe, 200 or ``COLUMNS``)."""
    buf = io.StringIO()
    print_tables(data, tables, buf, width=width)
    return buf.getvalue()
