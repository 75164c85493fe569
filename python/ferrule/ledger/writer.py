"""The batched ledger writer: ``submit()`` from the request path, rows written by a thread.

``submit`` only appends to a bounded queue (never blocks, never raises, and does not wake the
thread for each record); a background thread wakes every ``flush_interval`` (or as soon as
``batch_size`` records wait, or on ``flush``/``close``), prices the records it takes, hands
them to an optional observer (``Recorder``: metrics and the access log, in batches) and inserts
them, up to ``batch_size`` per transaction. When the queue is full (the disk is slow) or a
write fails (read-only, full, locked for longer than the busy timeout), records are dropped and
counted: the ledger is an account of requests, never a reason to slow or fail one. After a
failure the writer drops batches for ``retry_interval`` seconds before it tries the database
again, so a broken disk costs one failed attempt per interval, not one per batch. A *busy*
database is not a failure: another process holds the lock, and SQLite returns SQLITE_BUSY without
waiting out the busy timeout where waiting could deadlock (a journal-mode change, a lock upgrade;
https://www.sqlite.org/c3ref/busy_handler.html), so the writer retries the same batch with
backoff for up to ``busy_retry_for`` seconds before it counts the batch as a write error.

One writer per process (each Granian worker has its own, all on the same file). Create it after
the worker started (the ASGI lifespan), not at import: a thread does not survive a fork."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .. import pricing
from ..sqlite_busy import is_busy
from .record import RequestRecord
from .recorder import account
from .schema import BUSY_TIMEOUT_S, COLUMNS, open_db

__all__ = ["DropReason", "Item", "LedgerWriter", "Observer", "WriterStats", "row"]

log = logging.getLogger("ferrule.ledger")

DropReason = str  # "queue_full" | "write_error" | "closed"
_INSERT: Final = (
    f"INSERT INTO requests ({', '.join(c for c, _ in COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)

Item = tuple[RequestRecord, "pricing.Accounting | None"]
# Called in the writer thread with each batch, every record priced (None where pricing failed).
Observer = Callable[[list[Item]], None]


@dataclass(frozen=True, slots=True)
class WriterStats:
    written: int
    dropped_queue_full: int
    dropped_write_error: int
    queued: int
    healthy: bool  # the last attempt to open or write the database succeeded
    last_error: str | None

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.dropped_write_error


def row(record: RequestRecord, acct: pricing.Accounting | None = None) -> tuple[Any, ...]:
    """The INSERT parameters for one record, in ``COLUMNS`` order."""
    if acct is None:
        acct = account(record)
    s = acct.savings
    return (
        record.ts,
        record.request_id,
        record.upstream_request_id,
        record.tenant,
        record.route,
        record.model,
        int(record.stream),
        record.status,
        record.input_tokens,
        record.cache_write_5m_tokens,
        record.cache_write_1h_tokens,
        record.cache_read_tokens,
        record.output_tokens,
        record.compression_removed_tokens,
        record.cache_status,
        int(record.response_cache_hit),
        record.attempts,
        record.ttfb_ms,
        record.latency_ms,
        record.backend,
        record.outcome,
        record.error_type,
        int(record.usage_estimated),
        acct.cost.total_usd if acct.cost else None,
        s.caching_tokens,
        s.caching_usd,
        s.cache_write_premium_usd,
        s.compression_tokens,
        s.compression_usd,
        s.response_cache_tokens,
        s.response_cache_usd,
        record.key_name,
        record.upstream_key,
    )


class LedgerWriter:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_queue: int = 10_000,
        batch_size: int = 200,
        flush_interval: float = 0.5,
        retry_interval: float = 5.0,
        busy_retry_for: float = 30.0,
        busy_timeout: float = BUSY_TIMEOUT_S,
        on_drop: Callable[[DropReason, int], None] | None = None,
    ) -> None:
        """``on_drop(reason, n)`` is called (from any thread) when records are dropped, e.g.
        ``Metrics.ledger_dropped``; it must not block."""
        self.path = os.fspath(path)
        self._batch_size = max(1, batch_size)
        self._interval = flush_interval
        self._retry_interval = retry_interval
        self._busy_retry_for = busy_retry_for
        self._busy_timeout = busy_timeout
        self._on_drop = on_drop
        self._max_queue = max_queue
        # A deque, not a queue.Queue: an append does not notify (and so wake) the thread, which
        # cost a thread switch per request; the thread wakes by the clock or by _wakeup.
        self._queue: collections.deque[Item] = collections.deque()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._accepted = 0  # records put on the queue
        self._observed = 0  # records the thread priced and handed to the observer
        self._finished = 0  # records the thread wrote or dropped
        self._written = 0
        self._dropped_full = 0
        self._dropped_error = 0
        self._healthy = True
        self._last_error: str | None = None
        self._observer: Observer | None = None
        self._failed_once: set[str] = set()
        self._closed = False
        self._stop = threading.Event()
        self._flush_now = threading.Event()
        self._wakeup = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ferrule-ledger", daemon=True)
        self._thread.start()

    # -- request path -------------------------------------------------------------------------

    def submit(self, record: RequestRecord, acct: pricing.Accounting | None = None) -> bool:
        """Queue one record; False (and counted) when it was dropped. Never blocks or raises."""
        if self._closed:
            self._drop("closed", 1)
            return False
        with self._lock:
            full = len(self._queue) >= self._max_queue
            if full:
                self._dropped_full += 1
            else:
                self._accepted += 1
                self._queue.append((record, acct))
                if len(self._queue) >= self._batch_size and not self._wakeup.is_set():
                    self._wakeup.set()  # a full batch waits: write it now
        if full:
            self._drop("queue_full", 1)
            return False
        return True

    def observe(self, observer: Observer | None) -> None:
        """Have ``observer(batch)`` called in the writer thread with every batch it takes,
        each record priced, before its rows are written (a batch's counts and log lines do
        not wait for the disk, nor are they lost with its rows). Exceptions are logged once,
        not raised."""
        self._observer = observer

    # -- lifecycle ----------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record accepted so far is written (or dropped). True if it was."""
        return self._wait_for("_finished", timeout)

    def sync(self, timeout: float = 2.0) -> bool:
        """Wait until every record accepted so far was handed to the observer (priced,
        counted, logged), without waiting for the disk. True if it was."""
        return self._wait_for("_observed", timeout)

    def _wait_for(self, counter: str, timeout: float) -> bool:
        with self._lock:
            target = self._accepted
            if getattr(self, counter) >= target:
                return True
        self._flush_now.set()
        self._wakeup.set()
        deadline = time.monotonic() + timeout
        with self._done:
            while getattr(self, counter) < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._done.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, write what is queued, stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wakeup.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning(
                "ledger writer did not finish within %.1f s; queued rows may be lost", timeout
            )

    @property
    def stats(self) -> WriterStats:
        with self._lock:
            return WriterStats(
                written=self._written,
                dropped_queue_full=self._dropped_full,
                dropped_write_error=self._dropped_error,
                queued=self._accepted - self._finished,
                healthy=self._healthy,
                last_error=self._last_error,
            )

    @property
    def healthy(self) -> bool:
        """For readiness: the last open or write succeeded and the thread runs."""
        return self._healthy and self._thread.is_alive() and not self._closed

    # -- the thread ---------------------------------------------------------------------------

    def _drop(self, reason: DropReason, n: int) -> None:
        if self._on_drop is not None and n:
            try:
                self._on_drop(reason, n)
            except Exception:  # a metrics hook must never break the ledger
                log.exception("ledger on_drop hook failed")

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        retry_at = 0.0
        while True:
            woken = self._wakeup.wait(self._interval)
            self._wakeup.clear()  # before taking: a later wake-up is seen by the next wait
            hurry = self._flush_now.is_set() or self._stop.is_set()
            if hurry:
                self._flush_now.clear()  # before taking: records accepted later get a new one
            # Woken because a full batch waits: take full batches only (the rest waits for the
            # clock, so batches stay full under load). By the clock or asked to: take all.
            whole = hurry or not woken
            while True:
                batch = self._take(whole)
                if not batch:
                    break
                priced = self._price(batch)
                self._observe(priced)
                conn, retry_at = self._write(conn, priced, retry_at)
            if self._stop.is_set() and not self._queue:
                break
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _take(self, whole: bool) -> list[Item]:
        """Up to batch_size records off the queue; none when ``whole`` is false and fewer than
        batch_size wait."""
        q, n = self._queue, self._batch_size
        if not whole and len(q) < n:
            return []
        batch: list[Item] = []
        with contextlib.suppress(IndexError):  # producers only append: the length only grows
            for _ in range(min(n, len(q))):
                batch.append(q.popleft())
        return batch

    def _price(self, batch: list[Item]) -> list[Item]:
        """Every record with its accounting (computed here, off the request path)."""
        out: list[Item] = []
        for record, acct in batch:
            if acct is None:
                try:
                    acct = account(record)
                except Exception:  # row() tries again and the batch fails as a write error
                    self._once("pricing")
            out.append((record, acct))
        return out

    def _observe(self, batch: list[Item]) -> None:
        observer = self._observer
        if observer is not None:
            try:
                observer(batch)
            except Exception:
                self._once("observer")
        with self._done:
            self._observed += len(batch)
            self._done.notify_all()

    def _once(self, what: str) -> None:
        if what not in self._failed_once:
            self._failed_once.add(what)
            log.exception("ledger writer: %s failed (logged once)", what)

    def _write(
        self, conn: sqlite3.Connection | None, batch: list[Item], retry_at: float
    ) -> tuple[sqlite3.Connection | None, float]:
        if conn is None and time.monotonic() < retry_at:
            self._finish(batch, error=self._last_error or "ledger unavailable")
            return None, retry_at
        try:
            rows = [row(record, acct) for record, acct in batch]
            conn = self._insert(conn, rows)
        except Exception as exc:  # sqlite3.Error, OSError, LedgerError, a bad record...
            message = f"{type(exc).__name__}: {exc}"
            if self._healthy or message != self._last_error:
                # Logged once per failure episode, not once per batch.
                log.warning(
                    "ledger %s: cannot write (%s); dropping rows for %.0f s, then retrying",
                    self.path,
                    message,
                    self._retry_interval,
                )
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._finish(batch, error=message)
            return None, time.monotonic() + self._retry_interval
        if not self._healthy:
            log.warning("ledger %s: writes resumed", self.path)
        self._finish(batch, error=None)
        return conn, 0.0

    def _insert(
        self, conn: sqlite3.Connection | None, rows: list[tuple[Any, ...]]
    ) -> sqlite3.Connection:
        """Open if needed and insert ``rows`` in one transaction; a busy database is retried
        (the same rows, backing off to 0.5 s) until ``busy_retry_for`` has passed."""
        deadline = time.monotonic() + self._busy_retry_for
        pause = 0.01
        while True:
            try:
                if conn is None:
                    conn = open_db(self.path, timeout=self._busy_timeout)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(_INSERT, rows)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return conn
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() + pause > deadline:
                    if conn is not None:
                        with contextlib.suppress(sqlite3.Error):
                            conn.close()
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def _finish(self, batch: list[Item], *, error: str | None) -> None:
        with self._done:
            self._finished += len(batch)
            if error is None:
                self._written += len(batch)
                self._healthy = True
            else:
                self._dropped_error += len(batch)
                self._healthy = False
                self._last_error = error
            self._done.notify_all()
        if error is not None:
            self._drop("write_error", len(batch))
