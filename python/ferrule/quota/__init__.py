"""Budgets and rate limits of virtual keys (issue 15): GCRA limits (requests, tokens per minute),
parallel requests, and dollar budgets per period, exact across workers (SQLite on one host,
Redis across hosts). See docs/limits.md."""

from __future__ import annotations

from .engine import Quota, Ticket, open_store
from .limiter import Bucket, period_bounds
from .store import AdmitRequest, AdmitResult, QuotaStore, Settlement, SQLiteQuotaStore, StoreError

__all__ = [
    "AdmitRequest",
    "AdmitResult",
    "Bucket",
    "Quota",
    "QuotaStore",
    "SQLiteQuotaStore",
    "Settlement",
    "StoreError",
    "Ticket",
    "open_store",
    "period_bounds",
]
