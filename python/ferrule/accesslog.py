"""Access log: one line per request on the ``ferrule.access`` logger.

The ``access_log`` setting picks where and how (``configure``): ``compact`` (the default: one
short line for a person watching the terminal, on stderr), ``json`` (one JSON object per line on
stderr, for a log shipper), a file path (the JSON lines appended to that file), or ``off``.
A compact line::

    22:01:48Z 200 /v1/chat/completions claude-sonnet-4-6 in=1.2k out=300 $0.0123 412ms req_01ab


Lines are built only from an explicit list of ``RequestRecord`` fields, so a key, a header or a
body can never reach them (the record holds none, and new record fields are not logged until
added to ``FIELDS``). Successful and client-side requests log at INFO, failures at WARNING:
setting the access level to ``warning`` keeps only the failures.

The server logs in batches from the ledger writer's thread (``log_batch``, via ``Recorder``):
the lines of a batch are formatted there and written with one write. In JSON lines ``ts`` is when
the request started and ``time`` when the line was written (kept: log shippers key on it); the
compact line carries one time, the request's start.

Wiring (once per worker, e.g. in ``create_app``)::

    accesslog.configure(cfg.log_level, mode=cfg.access_log)
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import operator
import sys
import time
from collections.abc import Iterable
from typing import IO, Any, Final

import orjson

from . import pricing
from .ledger.record import RequestRecord

__all__ = [
    "FIELDS",
    "LOGGER",
    "MODES",
    "CompactFormatter",
    "JsonFormatter",
    "compact_line",
    "compact_record",
    "configure",
    "line",
    "log_batch",
    "log_request",
]

LOGGER: Final = "ferrule.access"
FIELDS: Final = (
    "request_id",
    "upstream_request_id",
    "tenant",
    "route",
    "model",
    "stream",
    "status",
    "outcome",
    "error_type",
    "attempts",
    "ttfb_ms",
    "latency_ms",
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "compression_removed_tokens",
    "cache_status",
    "usage_estimated",
    "backend",
)
MODES: Final = ("compact", "json", "off")  # anything else is a file path (JSON lines)
_FAILED: Final = frozenset(("upstream_error", "truncated", "error"))
_VALUES: Final = operator.attrgetter(*FIELDS)

_log = logging.getLogger(LOGGER)


def line(record: RequestRecord, acct: pricing.Accounting | None = None) -> dict[str, Any]:
    """The fields of one access line (without the formatter's ``time``/``level``)."""
    out: dict[str, Any] = {"ts": _iso(record.ts)}
    out.update(zip(FIELDS, _VALUES(record), strict=True))
    if acct is not None:
        out["cost_usd"] = acct.cost.total_usd if acct.cost else None
        out["saved_usd"] = acct.savings.total_usd
    return out


def log_request(record: RequestRecord, acct: pricing.Accounting | None = None) -> None:
    """Log one request. Cheap when the level filters it out (nothing is built)."""
    failed = record.status >= 500 or record.outcome in _FAILED
    level = logging.WARNING if failed else logging.INFO
    if _log.isEnabledFor(level):
        _log.log(level, "request", extra={"access": line(record, acct)})


def log_batch(items: Iterable[tuple[RequestRecord, pricing.Accounting | None]]) -> None:
    """Log several requests. With the handler ``configure`` installed (the server's case) the
    lines are built here and written with one write; with any other set-up (a filter, another
    handler, propagation to the root logger) each goes through ``logging`` as ``log_request``
    does. The lines are the same either way."""
    if not _log.isEnabledFor(logging.WARNING):
        return
    handlers = _direct_handlers()
    if handlers is None:
        for record, acct in items:
            log_request(record, acct)
        return
    info = _log.isEnabledFor(logging.INFO)
    compact = isinstance(handlers[0].formatter, CompactFormatter)
    head = {"time": _iso(time.time()), "level": "info", "logger": LOGGER}
    out: list[str] = []
    for record, acct in items:
        failed = record.status >= 500 or record.outcome in _FAILED
        if not failed and not info:
            continue
        if compact:  # straight from the record: the line's few fields, no dict of them all
            out.append(compact_record(record, acct))
            continue
        fields = {**head, "level": "warning"} if failed else dict(head)
        fields.update(line(record, acct))
        out.append(orjson.dumps(fields, option=orjson.OPT_NON_STR_KEYS).decode())
    if not out:
        return
    out.append("")
    text = "\n".join(out)
    for h in handlers:
        h.acquire()
        try:
            h.stream.write(text)
            h.flush()
        finally:
            h.release()


def _direct_handlers() -> list[logging.StreamHandler[IO[str]]] | None:
    """The handlers to write to directly: only ``configure``'s own (all of one format), nothing
    else in the way (no filters, no propagation); None when the lines must go through
    ``logging``."""
    if _log.propagate or _log.filters or not _log.handlers:
        return None
    out: list[logging.StreamHandler[IO[str]]] = []
    for h in _log.handlers:
        if not (
            getattr(h, "_ferrule_access", False)
            and isinstance(h, logging.StreamHandler)
            and type(h.formatter) in (JsonFormatter, CompactFormatter)
            and type(h.formatter) is type(_log.handlers[0].formatter)
            and h.level == logging.NOTSET
            and not h.filters
            and h.terminator == "\n"
        ):
            return None
        out.append(h)
    return out


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", ...fields}`` on one line; the access fields come from
    ``extra={"access": {...}}``, other records show their message."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            out.update(fields)
        else:
            out["message"] = record.getMessage()
            if record.exc_info:
                out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS).decode()


class CompactFormatter(logging.Formatter):
    """One short line per request (``compact_line``); other records show their message."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            return compact_line(fields)
        return f"{record.levelname.lower()} {record.name}: {record.getMessage()}"


def compact_line(fields: dict[str, Any]) -> str:
    """``22:01:48Z 200 /v1/chat/completions claude-sonnet-4-6 in=1.2k out=300 $0.0123 412ms
    <request id>``: the time the request started (UTC), status, route, model, tokens (uncached
    input, prompt-cache reads and writes when there are any, output), cost, latency, and what
    went wrong when something did. Built from ``line``'s fields only, like the JSON line."""
    parts = [
        str(fields.get("ts", ""))[11:19] + "Z",
        str(fields.get("status", "")),
        str(fields.get("route", "")),
        str(fields.get("model") or "-"),
        f"in={_count(fields.get('input_tokens'))}",
    ]
    read = fields.get("cache_read_tokens") or 0
    write = (fields.get("cache_write_5m_tokens") or 0) + (fields.get("cache_write_1h_tokens") or 0)
    if read:
        parts.append(f"cached={_count(read)}")
    if write:
        parts.append(f"cache-write={_count(write)}")
    parts.append(f"out={_count(fields.get('output_tokens'))}")
    cost = fields.get("cost_usd")
    parts.append("$?" if cost is None else f"${cost:.4f}")
    parts.append(f"{fields.get('latency_ms') or 0:.0f}ms")
    if fields.get("cache_status") == "hit":
        parts.append("cache-hit")
    outcome = fields.get("outcome")
    if outcome and outcome != "complete":
        parts.append(
            str(outcome) + (f":{fields['error_type']}" if fields.get("error_type") else "")
        )
    if (fields.get("attempts") or 1) > 1:
        parts.append(f"attempts={fields['attempts']}")
    parts.append(str(fields.get("request_id", "")))
    return " ".join(parts)


def compact_record(record: RequestRecord, acct: pricing.Accounting | None) -> str:
    """``compact_line(line(record, acct))``, built from the record directly (the ledger
    writer's thread formats every request this way; the tests hold the two equal)."""
    parts = [
        _iso(record.ts)[11:19] + "Z",
        str(record.status),
        record.route,
        record.model or "-",
        f"in={_count(record.input_tokens)}",
    ]
    if record.cache_read_tokens:
        parts.append(f"cached={_count(record.cache_read_tokens)}")
    if record.cache_write_5m_tokens + record.cache_write_1h_tokens:
        parts.append(
            f"cache-write={_count(record.cache_write_5m_tokens + record.cache_write_1h_tokens)}"
        )
    parts.append(f"out={_count(record.output_tokens)}")
    cost = None if acct is None or acct.cost is None else acct.cost.total_usd
    parts.append("$?" if cost is None else f"${cost:.4f}")
    parts.append(f"{record.latency_ms or 0:.0f}ms")
    if record.cache_status == "hit":
        parts.append("cache-hit")
    outcome = record.outcome
    if outcome and outcome != "complete":
        parts.append(outcome + (f":{record.error_type}" if record.error_type else ""))
    if (record.attempts or 1) > 1:
        parts.append(f"attempts={record.attempts}")
    parts.append(record.request_id)
    return " ".join(parts)


def _count(v: Any) -> str:
    n = int(v or 0)
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 10_000:
        return f"{n / 1e3:.0f}k"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def configure(
    level: str = "info", stream: IO[str] | None = None, *, mode: str = "json"
) -> logging.Logger:
    """Send ``ferrule.access`` at ``level`` to ``stream`` (stderr by default) as ``mode`` says:
    ``json`` lines, ``compact`` lines, ``off`` (nothing), or a file path (JSON lines appended to
    that file; ``stream`` is then ignored). Idempotent: calling it again replaces the handler."""
    logger = logging.getLogger(LOGGER)
    for h in list(logger.handlers):
        if getattr(h, "_ferrule_access", False):
            logger.removeHandler(h)
            if isinstance(h, logging.FileHandler):
                h.close()
    logger.propagate = False  # not again in plain text through the root logger
    if mode == "off":
        logger.setLevel(logging.CRITICAL + 1)  # log_request/log_batch then build nothing
        return logger
    handler: logging.StreamHandler[Any]
    if mode in ("json", "compact"):
        handler = logging.StreamHandler(stream or sys.stderr)
    else:
        # Appended, so that several workers (and restarts) share one file: each batch is one
        # write of whole lines.
        handler = logging.FileHandler(mode, mode="a", encoding="utf-8", delay=False)
    handler.setFormatter(CompactFormatter() if mode == "compact" else JsonFormatter())
    setattr(handler, "_ferrule_access", True)  # noqa: B010  (marks our own handler)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    return logger


_SECOND: tuple[int, str] = (0, "1970-01-01T00:00:00")  # the last second formatted


def _iso(ts: float) -> str:
    """``2025-11-27T10:00:00.250Z``: the same string as ``_iso_datetime`` (microseconds
    rounded half-even, then cut to milliseconds), a few times faster: the seconds part is
    formatted once per second."""
    global _SECOND
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)
    sec = int(whole)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    elif us < 0:
        sec, us = sec - 1, us + 1_000_000
    cached_sec, prefix = _SECOND
    if sec != cached_sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _SECOND = (sec, prefix)  # one assignment: safe from two threads
    return f"{prefix}.{us // 1000:03d}Z"


def _iso_datetime(ts: float) -> str:
    """The reference ``_iso`` (the tests compare the two)."""
    return (
        dt.datetime.fromtimestamp(ts, dt.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
