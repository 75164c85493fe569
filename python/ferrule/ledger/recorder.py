"""One call per finished request: account it once, then feed the metrics, the ledger and the
access log. Nothing here raises into the request path."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import pricing
from .record import RequestRecord

if TYPE_CHECKING:
    from ..metrics import Metrics
    from .writer import LedgerWriter

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
    ) -> None:
        self.writer = writer
        self.metrics = metrics
        self.access_log = access_log
        self._failed: set[str] = set()

    def record(self, record: RequestRecord) -> pricing.Accounting | None:
        """Account ``record`` and hand it on; returns the accounting (None if that failed)."""
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
        if self.writer is not None:
            self.writer.submit(record, acct)  # never raises
        if self.access_log:
            try:
                from .. import accesslog  # here, not at import: accesslog imports this package

                accesslog.log_request(record, acct)
            except Exception:
                self._once("access log")
        return acct

    def _once(self, what: str) -> None:
        if what not in self._failed:
            self._failed.add(what)
            log.exception("recording a request: %s failed (logged once)", what)
