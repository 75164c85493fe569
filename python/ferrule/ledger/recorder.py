"""One call per finished request: account it once, then feed the metrics, the ledger and the
access log. Nothing here raises into the request path.

With ``defer=True`` (the server) the request path only queues the record: the ledger writer's
thread prices it and hands it back here in batches (``_observe``), where the metrics count the
whole batch under one lock and the access log writes the batch in one write. When the writer
cannot take a record (its queue is full, or it is closed) the record is still counted and
logged, at once, on the caller's thread; only its ledger row is lost (and counted)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import pricing
from .record import RequestRecord

if TYPE_CHECKING:
    from ..metrics import Metrics
    from .writer import Item, LedgerWriter

__all__ = ["Recorder", "account"]

log = logging.getLogger("ferrule.ledger")


def account(record: RequestRecord) -> pricing.Accounting:
    """Cost and savings of a record, priced at the date it was made."""
    return pricing.account(
        record.model,
        record,
        compression_removed_tokens=record.compression_removed_tokens,
        response_cache_hit=record.response_cache_hit,
        when=record.ts,
    )


class Recorder:
    def __init__(
        self,
        writer: LedgerWriter | None = None,
        metrics: Metrics | None = None,
        *,
        access_log: bool = True,
        defer: bool = False,
    ) -> None:
        """``defer``: price, count and log in the writer's thread (needs a writer); otherwise
        everything happens in ``record``, which then returns the accounting."""
        self.writer = writer
        self.metrics = metrics
        self.access_log = access_log
        self.deferred = defer and writer is not None
        self._failed: set[str] = set()
        if self.deferred:
            assert writer is not None
            writer.observe(self._observe)

    def record(self, record: RequestRecord) -> pricing.Accounting | None:
        """Account ``record`` and hand it on. Deferred: queue it and return None; otherwise
        return the accounting (None if that failed)."""
        if self.deferred:
            assert self.writer is not None
            if self.writer.submit(record):  # never raises
                return None
            # Dropped from the ledger (and counted): the metrics and the log still see it.
            return self._now(record, ledger=False)
        return self._now(record, ledger=True)

    def sync(self, timeout: float = 2.0) -> bool:
        """Deferred: wait (up to ``timeout``) until every record recorded so far is counted
        and logged, e.g. before ``/metrics`` renders. True if it is."""
        if not self.deferred or self.writer is None:
            return True
        return self.writer.sync(timeout)

    def _now(self, record: RequestRecord, *, ledger: bool) -> pricing.Accounting | None:
        try:
            acct = account(record)
        except Exception:
            self._once("pricing")
            acct = None
        if self.metrics is not None:
            try:
                self.metrics.observe_request(record, acct)
            except Exception:
                self._once("metrics")
        if ledger and self.writer is not None:
            self.writer.submit(record, acct)  # never raises
        if self.access_log:
            try:
                from .. import accesslog  # here, not at import: accesslog imports this package

                accesslog.log_request(record, acct)
            except Exception:
                self._once("access log")
        return acct

    def _observe(self, batch: list[Item]) -> None:
        """The writer thread's batch (every record priced): count it and log it."""
        if self.metrics is not None:
            try:
                self.metrics.observe_batch(batch)
            except Exception:
                self._once("metrics")
        if self.access_log:
            try:
                from .. import accesslog

                accesslog.log_batch(batch)
            except Exception:
                self._once("access log")

    def _once(self, what: str) -> None:
        if what not in self._failed:
            self._failed.add(what)
            log.exception("recording a request: %s failed (logged once)", what)
