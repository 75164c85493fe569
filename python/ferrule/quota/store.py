"""Where limit and budget state lives, shared by every worker: SQLite (tables in the ledger's
file, for one host) or Redis (``redis_store``, for several). Each admission and each settlement
is one atomic step: a ``BEGIN IMMEDIATE`` transaction here, one Lua script there.

SQLite: the connection never waits inside SQLite (``timeout=0``): a database another process
holds returns SQLITE_BUSY at once and the step is retried after an ``asyncio.sleep``, so a busy
file never blocks the event loop (see ``ledger.writer.is_busy``). One transaction is a few
statements on a handful of rows, run on the loop thread (a thread hop costs more than it does).

Leases: an admitted request that a parallel limit or a budget watches holds a lease (its
reservation, in nano-dollars) until it settles. A lease has an expiry, so a worker that dies
mid-request cannot hold a parallel slot or a reservation for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Protocol

from ..ledger.writer import is_busy
from .limiter import Bucket, Gcra, gcra, refund

__all__ = [
    "AdmitRequest",
    "AdmitResult",
    "QuotaStore",
    "SQLiteQuotaStore",
    "Settlement",
    "StoreError",
    "decide",
]

_MICRO = 1_000_000


class StoreError(Exception):
    """The store cannot answer (Redis down, the database unwritable): the engine applies the
    configured failure policy."""


@dataclass(frozen=True, slots=True)
class AdmitRequest:
    key: str  # the virtual key's name
    rpm: Bucket | None
    tpm: Bucket | None
    tokens: int  # the TPM reservation (prompt estimate + max output)
    max_parallel: int | None
    budget_nano: int | None
    reserve_nano: int
    period: str  # budget period id ("" without a budget)
    period_end: float | None  # when it ends (Unix seconds; None: never)
    lease_id: str | None  # set when a parallel limit or a budget watches the request
    lease_ttl_s: float


@dataclass(frozen=True, slots=True)
class AdmitResult:
    allowed: bool
    reason: str | None  # "rpm" | "tpm" | "parallel" | "budget" when refused
    retry_after_s: float
    now: float  # the store's clock, Unix seconds
    rpm: Gcra | None
    tpm: Gcra | None
    spent_nano: int
    reserved_nano: int  # other requests' reservations in flight (this one's excluded)


@dataclass(frozen=True, slots=True)
class Settlement:
    key: str
    lease_id: str | None
    tpm: Bucket | None
    token_delta: int  # used minus reserved (negative: a refund)
    period: str
    cost_nano: int


class QuotaStore(Protocol):
    kind: str

    async def admit(self, req: AdmitRequest) -> AdmitResult: ...

    async def settle(self, s: Settlement) -> None: ...

    async def spent(self, key: str, period: str) -> int: ...

    async def close(self) -> None: ...


def decide(
    req: AdmitRequest,
    now_us: float,
    rpm_tat: float,
    tpm_tat: float,
    in_flight: int,
    reserved: int,
    spent: int,
) -> AdmitResult:
    """The admission rule (``redis_store``'s script is its twin). Nothing is taken unless every
    check passes: a request refused for its budget costs no RPM."""
    rpm = gcra(req.rpm, rpm_tat, now_us, 1) if req.rpm else None
    tpm = gcra(req.tpm, tpm_tat, now_us, req.tokens) if req.tpm else None
    reason: str | None = None
    retry = 0.0
    for name, g in (("rpm", rpm), ("tpm", tpm)):
        if g is not None and not g.allowed:
            reason = reason or name
            retry = max(retry, g.retry_after_us / _MICRO)
    if reason is None and req.max_parallel is not None and in_flight >= req.max_parallel:
        reason, retry = "parallel", 1.0
    if (
        reason is None
        and req.budget_nano is not None
        and spent + reserved + req.reserve_nano > req.budget_nano
    ):
        reason = "budget"
        end = req.period_end
        retry = max(0.0, end - now_us / _MICRO) if end is not None else 0.0
    return AdmitResult(
        allowed=reason is None,
        reason=reason,
        retry_after_s=retry,
        now=now_us / _MICRO,
        rpm=rpm,
        tpm=tpm,
        spent_nano=spent,
        reserved_nano=reserved,
    )


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS quota_gcra (key TEXT NOT NULL, kind TEXT NOT NULL, "
    "tat REAL NOT NULL, PRIMARY KEY (key, kind)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS quota_spend (key TEXT NOT NULL, period TEXT NOT NULL, "
    "spent_nano INTEGER NOT NULL, PRIMARY KEY (key, period)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS quota_leases (id TEXT PRIMARY KEY, key TEXT NOT NULL, "
    "reserved_nano INTEGER NOT NULL, expires REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS quota_leases_key ON quota_leases (key, expires)",
)


class SQLiteQuotaStore:
    """The one-host store: tables in the ledger's SQLite file (WAL), one connection per worker.
    ``busy_for``: how long a step retries a busy database before it is a ``StoreError``."""

    kind = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, busy_for: float = 10.0) -> None:
        self.path = os.fspath(path)
        self._busy_for = busy_for
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                for statement in _SCHEMA:
                    conn.execute(statement)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _step(self, fn: object, *args: object) -> object:
        """Run ``fn(conn, *args)`` in one IMMEDIATE transaction; retry while busy."""
        assert callable(fn)
        deadline = time.monotonic() + self._busy_for
        pause = 0.0005
        while True:
            try:
                conn = self._open()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(conn, *args)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return out
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    self._reset()
                    raise StoreError(f"sqlite: {type(exc).__name__}: {exc}") from None
                if time.monotonic() + pause > deadline:
                    raise StoreError("sqlite: the database stayed locked") from None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)

    def _reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    async def admit(self, req: AdmitRequest) -> AdmitResult:
        out = await self._step(self._admit, req, time.time())
        assert isinstance(out, AdmitResult)
        return out

    def _admit(self, conn: sqlite3.Connection, req: AdmitRequest, now_s: float) -> AdmitResult:
        now_us = now_s * _MICRO
        rpm_tat = tpm_tat = 0.0
        if req.rpm or req.tpm:
            for kind, tat in conn.execute(
                "SELECT kind, tat FROM quota_gcra WHERE key = ?", (req.key,)
            ):
                if kind == "rpm":
                    rpm_tat = tat
                elif kind == "tpm":
                    tpm_tat = tat
        in_flight = reserved = spent = 0
        if req.lease_id is not None:
            conn.execute(
                "DELETE FROM quota_leases WHERE key = ? AND expires <= ?", (req.key, now_s)
            )
            in_flight, reserved = conn.execute(
                "SELECT count(*), coalesce(sum(reserved_nano), 0) FROM quota_leases WHERE key = ?",
                (req.key,),
            ).fetchone()
        if req.budget_nano is not None:
            row = conn.execute(
                "SELECT spent_nano FROM quota_spend WHERE key = ? AND period = ?",
                (req.key, req.period),
            ).fetchone()
            spent = row[0] if row else 0
        result = decide(req, now_us, rpm_tat, tpm_tat, in_flight, reserved, spent)
        if result.allowed:
            for kind, g in (("rpm", result.rpm), ("tpm", result.tpm)):
                if g is not None:
                    conn.execute(
                        "INSERT INTO quota_gcra (key, kind, tat) VALUES (?, ?, ?) "
                        "ON CONFLICT (key, kind) DO UPDATE SET tat = excluded.tat",
                        (req.key, kind, g.tat),
                    )
            if req.lease_id is not None:
                conn.execute(
                    "INSERT INTO quota_leases (id, key, reserved_nano, expires) "
                    "VALUES (?, ?, ?, ?)",
                    (req.lease_id, req.key, req.reserve_nano, now_s + req.lease_ttl_s),
                )
        return result

    async def settle(self, s: Settlement) -> None:
        await self._step(self._settle, s, time.time())

    def _settle(self, conn: sqlite3.Connection, s: Settlement, now_s: float) -> None:
        if s.lease_id is not None:
            conn.execute("DELETE FROM quota_leases WHERE id = ?", (s.lease_id,))
        if s.tpm is not None and s.token_delta:
            row = conn.execute(
                "SELECT tat FROM quota_gcra WHERE key = ? AND kind = 'tpm'", (s.key,)
            ).fetchone()
            tat = refund(s.tpm, row[0] if row else 0.0, now_s * _MICRO, s.token_delta)
            conn.execute(
                "INSERT INTO quota_gcra (key, kind, tat) VALUES (?, 'tpm', ?) "
                "ON CONFLICT (key, kind) DO UPDATE SET tat = excluded.tat",
                (s.key, tat),
            )
        if s.period and s.cost_nano:
            conn.execute(
                "INSERT INTO quota_spend (key, period, spent_nano) VALUES (?, ?, ?) "
                "ON CONFLICT (key, period) DO UPDATE SET spent_nano = spent_nano + ?",
                (s.key, s.period, s.cost_nano, s.cost_nano),
            )

    async def spent(self, key: str, period: str) -> int:
        out = await self._step(self._spent, key, period)
        assert isinstance(out, int)
        return out

    @staticmethod
    def _spent(conn: sqlite3.Connection, key: str, period: str) -> int:
        row = conn.execute(
            "SELECT spent_nano FROM quota_spend WHERE key = ? AND period = ?", (key, period)
        ).fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        self._reset()
