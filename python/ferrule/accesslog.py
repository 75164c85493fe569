"""Structured access log: one JSON line per request on the ``ferrule.access`` logger.

Lines are built only from an explicit list of ``RequestRecord`` fields, so a key, a header or a
body can never reach them (the record holds none, and new record fields are not logged until
added to ``FIELDS``). Successful and client-side requests log at INFO, failures at WARNING:
setting the access level to ``warning`` keeps only the failures.

Wiring (once per worker, e.g. in ``create_app``)::

    accesslog.configure(cfg.log_level)     # or a dedicated access_log_level setting
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import IO, Any, Final

import orjson

from . import pricing
from .ledger.record import RequestRecord

__all__ = ["FIELDS", "LOGGER", "JsonFormatter", "configure", "line", "log_request"]

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
_FAILED: Final = frozenset(("upstream_error", "truncated", "error"))

_log = logging.getLogger(LOGGER)


def line(record: RequestRecord, acct: pricing.Accounting | None = None) -> dict[str, Any]:
    """The fields of one access line (without the formatter's ``time``/``level``)."""
    out: dict[str, Any] = {"ts": _iso(record.ts)}
    for name in FIELDS:
        out[name] = getattr(record, name)
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


def configure(level: str = "info", stream: IO[str] | None = None) -> logging.Logger:
    """Send ``ferrule.access`` to ``stream`` (stderr by default) as JSON lines, at ``level``.
    Idempotent: calling it again replaces the handler."""
    logger = logging.getLogger(LOGGER)
    for h in list(logger.handlers):
        if getattr(h, "_ferrule_access", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._ferrule_access = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False  # not again in plain text through the root logger
    return logger


def _iso(ts: float) -> str:
    return (
        dt.datetime.fromtimestamp(ts, dt.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
