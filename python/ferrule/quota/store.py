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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..ledger.writer import is_busy
from .limiter import Bucket, Gcra, gcra

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
    reserved_nano: int = 0  # what the lease reserved (released from the budget)


class QuotaStore(Protocol):
    kind: str

    async def admit(self, req: AdmitRequest) -> AdmitResult: ...

    async def settle(self, s: Settlement) -> None: ...

    async def spent(self, key: str, period: str) -> int: ...

    async def flush(self) -> None: ...

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


# One row per key holds both GCRA times and the aggregates of its leases (so an admission reads
# one row and writes one); a lease row per request in flight (its reservation, its expiry).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS quota_state (key TEXT PRIMARY KEY, rpm_tat REAL NOT NULL, "
    "tpm_tat REAL NOT NULL, in_flight INTEGER NOT NULL, reserved_nano INTEGER NOT NULL) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS quota_spend (key TEXT NOT NULL, period TEXT NOT NULL, "
    "spent_nano INTEGER NOT NULL, PRIMARY KEY (key, period)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS quota_leases (id TEXT PRIMARY KEY, key TEXT NOT NULL, "
    "reserved_nano INTEGER NOT NULL, expires REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS quota_leases_key ON quota_leases (key, expires)",
)
_PUT_STATE = (
    "INSERT INTO quota_state (key, rpm_tat, tpm_tat, in_flight, reserved_nano) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET rpm_tat = excluded.rpm_tat, "
    "tpm_tat = excluded.tpm_tat, in_flight = excluded.in_flight, "
    "reserved_nano = excluded.reserved_nano"
)
# a settlement: the lease's share out of the aggregates, the TPM refund (limiter.refund in SQL)
_RELEASE = (
    "UPDATE quota_state SET in_flight = max(in_flight - ?, 0), "
    "reserved_nano = max(reserved_nano - ?, 0) WHERE key = ?"
)
_RELEASE_REFUND = (
    "UPDATE quota_state SET in_flight = max(in_flight - ?, 0), "
    "reserved_nano = max(reserved_nano - ?, 0), tpm_tat = CASE WHEN ? >= 0 "
    "THEN max(tpm_tat, ?) + ? ELSE max(?, tpm_tat + ?) END WHERE key = ?"
)


class SQLiteQuotaStore:
    """The one-host store: tables in the ledger's SQLite file (WAL), one connection per worker.
    ``busy_for``: how long a step retries a busy database before it is a ``StoreError``."""

    kind = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_for: float = 10.0,
        settle_delay: float = 0.02,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._busy_for = busy_for
        self._conn: sqlite3.Connection | None = None
        # Settlements wait (at most settle_delay) to ride in the worker's next transaction: the
        # next admission's, or one flush for all that came meanwhile. A transaction is most of
        # the CPU a quota costs; a release that comes 20 ms late only errs on the safe side.
        self.settle_delay = settle_delay
        self.on_error = on_error  # a flush that failed (logged and counted by the engine)
        self._settles: list[Settlement] = []
        self._flush: asyncio.Task[None] | None = None

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

    async def _step(self, fn: Callable[..., Any] | None, *args: object) -> Any:
        """Run the waiting settlements and ``fn(conn, *args)`` in one IMMEDIATE transaction;
        retry while busy. Between taking the settlements and dropping them after the COMMIT
        nothing awaits, so no settlement is applied twice or lost."""
        deadline = time.monotonic() + self._busy_for
        pause = 0.0005
        while True:
            try:
                conn = self._open()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    n = len(self._settles)
                    if n:
                        now = time.time()
                        for settlement in self._settles[:n]:
                            self._settle(conn, settlement, now)
                    out = fn(conn, *args) if fn is not None else None
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                del self._settles[:n]
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
        rpm_tat, tpm_tat, in_flight, reserved, spent = conn.execute(
            "SELECT coalesce(s.rpm_tat, 0), coalesce(s.tpm_tat, 0), coalesce(s.in_flight, 0), "
            "coalesce(s.reserved_nano, 0), coalesce((SELECT spent_nano FROM quota_spend "
            "WHERE key = ?1 AND period = ?2), 0) "
            "FROM (SELECT ?1 AS k) AS q LEFT JOIN quota_state AS s ON s.key = q.k",
            (req.key, req.period),
        ).fetchone()
        result = decide(req, now_us, rpm_tat, tpm_tat, in_flight, reserved, spent)
        # Leases of requests whose worker died are swept only when they would refuse one (an
        # admission that fits does not need to know).
        if (
            result.reason in ("parallel", "budget")
            and in_flight
            and conn.execute(
                "DELETE FROM quota_leases WHERE key = ? AND expires <= ?", (req.key, now_s)
            ).rowcount
        ):
            in_flight, reserved = conn.execute(
                "SELECT count(*), coalesce(sum(reserved_nano), 0) FROM quota_leases WHERE key = ?",
                (req.key,),
            ).fetchone()
            conn.execute(_PUT_STATE, (req.key, rpm_tat, tpm_tat, in_flight, reserved))
            result = decide(req, now_us, rpm_tat, tpm_tat, in_flight, reserved, spent)
        if result.allowed:
            if result.rpm is not None:
                rpm_tat = result.rpm.tat
            if result.tpm is not None:
                tpm_tat = result.tpm.tat
            if req.lease_id is not None:
                in_flight += 1
                reserved += req.reserve_nano
                conn.execute(
                    "INSERT INTO quota_leases (id, key, reserved_nano, expires) "
                    "VALUES (?, ?, ?, ?)",
                    (req.lease_id, req.key, req.reserve_nano, now_s + req.lease_ttl_s),
                )
            conn.execute(_PUT_STATE, (req.key, rpm_tat, tpm_tat, in_flight, reserved))
        return result

    async def settle(self, s: Settlement) -> None:
        self.queue(s)

    def queue(self, s: Settlement) -> None:
        """``settle`` without awaiting: written within ``settle_delay``."""
        self._settles.append(s)
        if self._flush is None:
            self._flush = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.settle_delay)
        self._flush = None  # a settlement that comes while this one writes gets its own
        try:
            await self._step(None)
        except StoreError as exc:
            # kept for the next transaction; bounded, so a broken file cannot grow it for ever
            del self._settles[: max(0, len(self._settles) - 100_000)]
            if self.on_error is not None:
                self.on_error(exc)

    async def flush(self) -> None:
        """Write the waiting settlements now."""
        if self._settles:
            await self._step(None)

    def _settle(self, conn: sqlite3.Connection, s: Settlement, now_s: float) -> None:
        # a lease already swept (expired) is no longer in the aggregates
        held = 0
        if s.lease_id is not None:
            held = conn.execute("DELETE FROM quota_leases WHERE id = ?", (s.lease_id,)).rowcount
        reserved = s.reserved_nano if held else 0
        if s.tpm is not None and s.token_delta:
            now_us, delta = now_s * _MICRO, s.token_delta * s.tpm.interval_us
            conn.execute(
                _RELEASE_REFUND,
                (held, reserved, delta, now_us, delta, now_us, delta, s.key),
            )
        elif held:
            conn.execute(_RELEASE, (held, reserved, s.key))
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
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        with contextlib.suppress(StoreError):
            await self.flush()
        self._reset()
