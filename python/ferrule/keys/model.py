"""The virtual key record: what a key may do. The key itself is never stored, only its digest."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BUDGET_PERIODS", "VirtualKey"]

BUDGET_PERIODS = ("day", "week", "month", "total")


@dataclass(frozen=True, slots=True)
class VirtualKey:
    name: str
    digest: str  # sha256 hex of the full key; the key itself is never stored
    budget_usd: float | None
    budget_period: str  # "day" | "week" | "month" | "total"
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    models: tuple[str, ...]  # fnmatch globs; empty = every model
    expires_at: float | None  # Unix seconds
    created_at: float
