"""The request ledger: one SQLite row per client request (tokens, dollars, savings), written
off the request path by a batched writer, shared by every worker on the host.

Typical use in a worker::

    writer = LedgerWriter(ledger_path(data_dir), on_drop=metrics.ledger_dropped)
    recorder = Recorder(writer, metrics)
    ...
    recorder.record(RequestRecord(request_id=..., route=..., model=..., ...))
    ...
    writer.close()
"""

from .query import GROUPS, PeriodError, parse_time, summarize, summarize_conn
from .record import CACHE_STATUSES, OUTCOMES, RequestRecord
from .recorder import Recorder, account
from .schema import (
    LEDGER_FILE,
    SCHEMA_VERSION,
    LedgerError,
    default_data_dir,
    ledger_path,
    open_db,
    open_readonly,
    resolve_data_dir,
)
from .writer import LedgerWriter, WriterStats

__all__ = [
    "CACHE_STATUSES",
    "GROUPS",
    "LEDGER_FILE",
    "OUTCOMES",
    "SCHEMA_VERSION",
    "LedgerError",
    "LedgerWriter",
    "PeriodError",
    "Recorder",
    "RequestRecord",
    "WriterStats",
    "account",
    "default_data_dir",
    "ledger_path",
    "open_db",
    "open_readonly",
    "parse_time",
    "resolve_data_dir",
    "summarize",
    "summarize_conn",
]
