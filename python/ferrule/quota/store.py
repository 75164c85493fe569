"""Where limit and budget state lives, shared by every worker: SQLite (tables in the ledger's
file, for one host) or Redis (``redis_store``, for several). Each admission and each settlement
is one atomic step: a ``BEGIN IMMEDIATE`` transaction here, one Lua script there.

SQLite: the connection never waits inside SQLite (``timeout=0``): a database another process
holds returns SQLITE_BUSY at once and the step is retried after an ``asyncio.sleep``, so a busy
file never blocks the event loop (see ``sqlite_busy.is_busy``). One transaction is a few
statements on a handful of rows, run on the loop thread (a thread hop costs more than it does).

Leases: an admitted request that a parallel limit or a budget watches holds a lease (its
reservation, in nano-dollars) until it settles. A lease has an expiry, so a worker that dies
mid-request cannot hold a parallel slot or a reservation for ever. In SQLite a lease is a share
of its worker's *holder* row for the key (in flight, reserved, expiry), not a row of its own:
an admission adds to the row and a settlement takes from it, one statement per key and batch
whatever the number of requests (a row per request cost an insert and a delete each).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..sqlite_busy import is_busy, use_wal
from .allowance import LIFE_S, RENEW_AHEAD, Allowance, Grant, size_grant
from .limiter import Bucket, Gcra, gcra, refund

__all__ = [
    "WATCHED",
    "AdmitRequest",
    "AdmitResult",
    "QuotaStore",
    "SQLiteQuotaStore",
    "Settlement",
    "StoreError",
    "decide",
]

_MICRO = 1_000_000
log = logging.getLogger("ferrule.quota")
# ``AdmitRequest.lease_id`` of a request a parallel limit or a budget watches, where the store
# names the lease itself (SQLite: the worker's holder row, in ``AdmitResult.lease``)
WATCHED = "watched"


class StoreError(Exception):
    """The store cannot answer (Redis down, the database unwritable): the engine applies the
    configured failure policy."""


@dataclass(slots=True)  # not frozen: made per request, and a frozen init is slow
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


@dataclass(slots=True)  # not frozen: made per request, and a frozen init is slow
class AdmitResult:
    allowed: bool
    reason: str | None  # "rpm" | "tpm" | "parallel" | "budget" when refused
    retry_after_s: float
    now: float  # the store's clock, Unix seconds
    rpm: Gcra | None
    tpm: Gcra | None
    spent_nano: int
    reserved_nano: int  # other requests' reservations in flight (this one's excluded)
    lease: str | None = None  # what a Settlement names to release it (set when admitted)
    allowance: Allowance | None = None  # admitted from this worker's allowance (SQLite)


@dataclass(slots=True)  # not frozen: made per request, and a frozen init is slow
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
    rpm = gcra(req.rpm, rpm_tat, now_us, 1) if req.rpm is not None else None
    tpm = gcra(req.tpm, tpm_tat, now_us, req.tokens) if req.tpm is not None else None
    reason: str | None = None
    retry = 0.0
    if rpm is not None and not rpm.allowed:
        reason, retry = "rpm", rpm.retry_after_us / _MICRO
    if tpm is not None and not tpm.allowed:
        reason = reason or "tpm"
        retry = max(retry, tpm.retry_after_us / _MICRO)
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
    return AdmitResult(reason is None, reason, retry, now_us / _MICRO, rpm, tpm, spent, reserved)


# One row per key holds both GCRA times and the aggregates of its leases (so an admission reads
# one row and writes one). The leases themselves are counted per worker: a holder row per key
# and worker (``holder`` is a random id the worker picks; its in-flight count, reservations and
# the expiry of its latest admission). Keyed (key, holder) WITHOUT ROWID, so a key's rows are
# one range of the b-tree (the sweep of expired ones reads only them).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS quota_state (key TEXT PRIMARY KEY, rpm_tat REAL NOT NULL, "
    "tpm_tat REAL NOT NULL, in_flight INTEGER NOT NULL, reserved_nano INTEGER NOT NULL) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS quota_spend (key TEXT NOT NULL, period TEXT NOT NULL, "
    "spent_nano INTEGER NOT NULL, PRIMARY KEY (key, period)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS quota_holders (key TEXT NOT NULL, holder TEXT NOT NULL, "
    "in_flight INTEGER NOT NULL, reserved_nano INTEGER NOT NULL, expires REAL NOT NULL, "
    "PRIMARY KEY (key, holder)) WITHOUT ROWID",
)
# Earlier versions kept a row per lease (``quota_leases``): its leases become one holder row
# per key (named "leases", expiring with the last of them), then the table goes.
_MIGRATE_LEASES = (
    "INSERT INTO quota_holders (key, holder, in_flight, reserved_nano, expires) "
    "SELECT key, 'leases', count(*), sum(reserved_nano), max(expires) FROM quota_leases "
    "WHERE true GROUP BY key ON CONFLICT DO NOTHING",
    "DROP TABLE quota_leases",
)
_GET_STATE = "SELECT rpm_tat, tpm_tat, in_flight, reserved_nano FROM quota_state WHERE key = ?"
_PUT_STATE = (
    "INSERT INTO quota_state (key, rpm_tat, tpm_tat, in_flight, reserved_nano) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET rpm_tat = excluded.rpm_tat, "
    "tpm_tat = excluded.tpm_tat, in_flight = excluded.in_flight, "
    "reserved_nano = excluded.reserved_nano"
)
# a batch's admissions and releases of one holder: net counts, negative when more were released
_HOLD = (
    "INSERT INTO quota_holders (key, holder, in_flight, reserved_nano, expires) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key, holder) DO UPDATE SET "
    "in_flight = max(in_flight + excluded.in_flight, 0), "
    "reserved_nano = max(reserved_nano + excluded.reserved_nano, 0), "
    "expires = max(expires, excluded.expires)"
)
_RELEASE = (
    "UPDATE quota_holders SET in_flight = max(in_flight - ?, 0), "
    "reserved_nano = max(reserved_nano - ?, 0) WHERE key = ? AND holder = ?"
)
_DROP_IF_EMPTY = "DELETE FROM quota_holders WHERE key = ? AND holder = ? AND in_flight = 0"
_GET_SPENT = "SELECT spent_nano FROM quota_spend WHERE key = ? AND period = ?"
_GET_BOTH = (
    "SELECT coalesce(s.rpm_tat, 0.0), coalesce(s.tpm_tat, 0.0), coalesce(s.in_flight, 0), "
    "coalesce(s.reserved_nano, 0), coalesce((SELECT spent_nano FROM quota_spend "
    "WHERE key = ?1 AND period = ?2), 0) "
    "FROM (SELECT ?1 AS k) AS q LEFT JOIN quota_state AS s ON s.key = q.k"
)
_ADD_SPEND = (
    "INSERT INTO quota_spend (key, period, spent_nano) VALUES (?, ?, ?) "
    "ON CONFLICT (key, period) DO UPDATE SET spent_nano = spent_nano + excluded.spent_nano"
)

# an admission waiting for the next batch (None: a flush), and where its answer goes
_Waiter = tuple["AdmitRequest | None", "asyncio.Future[AdmitResult | None]"]


# this worker's holder for a key: [holder id, created, expires] (Unix seconds)
_Token = list[Any]


class _Batch:
    """One transaction's view of the rows it touches: each key's state and spend read once,
    changed in Python (``decide``, ``limiter.refund``), written back once at the end; with
    ``n`` admissions and settlements of one key in a batch, a few statements instead of ``3n``.

    ``tokens`` is the worker's holder per key; the ones this batch starts go to ``fresh`` and
    become the worker's only when the transaction commits."""

    __slots__ = (
        "conn", "fresh", "grants", "holds", "no_grant", "now_s", "now_us", "retired", "spend_add",
        "spent", "states", "tokens",
    )  # fmt: skip

    def __init__(self, conn: sqlite3.Connection, now_s: float, tokens: dict[str, _Token]) -> None:
        self.conn = conn
        self.now_s = now_s
        self.now_us = now_s * _MICRO
        self.tokens = tokens
        self.fresh: dict[str, _Token] = {}
        self.states: dict[str, list[Any]] = {}  # key: [rpm_tat, tpm_tat, in_flight, reserved]
        self.spent: dict[tuple[str, str], int] = {}  # stored + added in this batch
        self.spend_add: dict[tuple[str, str], int] = {}
        # (key, holder): [admitted, reserved, expires], added to its row in one statement
        self.holds: dict[tuple[str, str], list[Any]] = {}
        self.retired: list[tuple[str, str]] = []  # holders replaced in this batch
        # keys an allowance may be taken for in this batch (None: none may), and those taken
        self.no_grant: set[str] | None = None
        self.grants: list[tuple[AdmitRequest, Grant, str]] = []

    def _token(self, key: str) -> _Token | None:
        got = self.fresh.get(key)
        return got if got is not None else self.tokens.get(key)

    def holder(self, key: str, ttl_s: float) -> str:
        """This worker's holder id for ``key``, for a lease that lives at most ``ttl_s``.

        A holder row can be swept (by any worker) once it has expired; a settlement for a
        holder that is gone releases nothing, which is right only if the id is never used
        again. So an id is used only while its row cannot have expired (``now`` before the
        expiry this worker gave it, the sweeper's clock being the same host's and its
        transaction serialised with ours), and not beyond one ``ttl_s`` after it was made (a
        slot leaked by a bug is then freed with the row)."""
        now = self.now_s
        t = self.fresh.get(key)
        if t is not None:  # this batch's copy: changed in place
            if t[2] < now + ttl_s:
                t[2] = now + ttl_s
            return t[0]  # type: ignore[no-any-return]
        t = self.tokens.get(key)
        if t is None or now >= t[2] or now >= t[1] + ttl_s:
            if t is not None:  # retired: its row goes at the end of the batch if empty
                self.retired.append((key, t[0]))
            t = [os.urandom(8).hex(), now, now + ttl_s]
        else:
            t = [t[0], t[1], max(t[2], now + ttl_s)]
        self.fresh[key] = t
        return t[0]  # type: ignore[no-any-return]

    def settle_all(self, settlements: list[Settlement]) -> None:
        """Apply ``settlements`` in order. A lease of this worker's live holder (before the
        expiry it gave the row, so the row cannot have been swept) is taken from the row in
        the batch's one upsert of it; any other holder's, in one statement per holder."""
        now_s, now_us, tokens, holds = self.now_s, self.now_us, self.tokens, self.holds
        others: dict[tuple[str, str], list[Settlement]] = {}
        for s in settlements:
            key, lease = s.key, s.lease_id
            st = self.states.get(key)
            if st is None:
                st = self.state(key)
            if lease is not None:
                t = tokens.get(key)
                if t is not None and t[0] == lease and now_s < t[2]:
                    hold = holds.get((key, lease))
                    if hold is None:
                        holds[(key, lease)] = [-1, -s.reserved_nano, t[2]]
                    else:
                        hold[0] -= 1
                        hold[1] -= s.reserved_nano
                    st[2] = max(st[2] - 1, 0)
                    st[3] = max(st[3] - s.reserved_nano, 0)
                else:
                    others.setdefault((key, lease), []).append(s)
            if s.tpm is not None and s.token_delta:
                st[1] = refund(s.tpm, st[1], now_us, s.token_delta)
            if s.period and s.cost_nano:
                k = (key, s.period)
                self.spend_add[k] = self.spend_add.get(k, 0) + s.cost_nano
                if k in self.spent:
                    self.spent[k] += s.cost_nano
        for (key, holder), group in others.items():
            self._release(key, holder, len(group), sum(s.reserved_nano for s in group))

    def _release(self, key: str, holder: str, n: int, reserved: int) -> None:
        """Take ``n`` leases and ``reserved`` from ``holder``'s row and the key's aggregates."""
        if not n and not reserved:
            return
        st = self.state(key)
        t = self.tokens.get(key)
        if t is not None and t[0] == holder and self.now_s < t[2]:
            hold = self.holds.get((key, holder))  # the live holder: in the batch's upsert
            if hold is None:
                self.holds[(key, holder)] = [-n, -reserved, t[2]]
            else:
                hold[0] -= n
                hold[1] -= reserved
        # gone: swept after it expired, its leases already out of the key's aggregates
        elif not self.conn.execute(_RELEASE, (n, reserved, key, holder)).rowcount:
            return
        else:
            t = self._token(key)
            if t is None or t[0] != holder:  # a retired holder: dropped once empty
                self.conn.execute(_DROP_IF_EMPTY, (key, holder))
        st[2] = max(st[2] - n, 0)
        st[3] = max(st[3] - reserved, 0)

    def give_back(self, a: Allowance) -> None:
        """Return what ``a`` did not use to the buckets and the holder row, and charge the
        costs of its requests settled meanwhile (see ``allowance``)."""
        requests, tokens, slots, reserved = a.unused()
        st = self.state(a.key)
        if a.rpm is not None and requests:
            st[0] = refund(a.rpm, st[0], self.now_us, -requests)
        if a.tpm is not None and tokens:
            st[1] = refund(a.tpm, st[1], self.now_us, -tokens)
        if a.holder:
            self._release(a.key, a.holder, slots, reserved)
        cost = a.meter.spent  # its requests' costs, all in its period
        if cost:
            k = (a.key, a.period)
            self.spend_add[k] = self.spend_add.get(k, 0) + cost
            if k in self.spent:
                self.spent[k] += cost

    def grant(self, req: AdmitRequest, spent: int) -> None:
        """After ``req`` was admitted: take an allowance for its key when its limits are large
        enough and have room (``allowance.size_grant``), installed by the store after the
        COMMIT."""
        if self.no_grant is None or req.key in self.no_grant:
            return
        st = self.states[req.key]
        g = size_grant(req, self.now_us, st, spent)
        if g is None:
            return
        self.no_grant.add(req.key)
        if g.rpm is not None:
            st[0] = g.rpm.tat
        if g.tpm is not None:
            st[1] = g.tpm.tat
        holder = ""
        if g.slots or g.budget_nano:
            st[2] += g.slots
            st[3] += g.budget_nano
            # the row outlives the allowance's last request: one lease TTL after it ends
            ttl = req.lease_ttl_s + LIFE_S
            holder = self.holder(req.key, ttl)
            hold = self.holds.get((req.key, holder))
            if hold is None:
                self.holds[(req.key, holder)] = [g.slots, g.budget_nano, self.now_s + ttl]
            else:
                hold[0] += g.slots
                hold[1] += g.budget_nano
                hold[2] = max(hold[2], self.now_s + ttl)
        self.grants.append((req, g, holder))

    def renew(self, req: AdmitRequest) -> None:
        """The next allowance for ``req``'s key, whose last one this batch gave back."""
        self.state(req.key)
        self.grant(req, self.spent_of(req.key, req.period) if req.budget_nano is not None else 0)

    def state(self, key: str) -> list[Any]:
        st = self.states.get(key)
        if st is None:
            row = self.conn.execute(_GET_STATE, (key,)).fetchone()
            st = self.states[key] = list(row) if row else [0.0, 0.0, 0, 0]
        return st

    def spent_of(self, key: str, period: str) -> int:
        got = self.spent.get((key, period))
        if got is None:
            row = self.conn.execute(_GET_SPENT, (key, period)).fetchone()
            got = int(row[0]) if row else 0
            got = self.spent[(key, period)] = got + self.spend_add.get((key, period), 0)
        return got

    def _load_both(self, key: str, period: str) -> None:
        """A key's state and spend in one statement (the first budgeted admission of a key)."""
        rpm_tat, tpm_tat, in_flight, reserved, spent = self.conn.execute(
            _GET_BOTH, (key, period)
        ).fetchone()
        self.states[key] = [rpm_tat, tpm_tat, in_flight, reserved]
        self.spent[(key, period)] = spent + self.spend_add.get((key, period), 0)

    def admit(self, req: AdmitRequest) -> AdmitResult:
        now_s, now_us = self.now_s, self.now_us
        budgeted = req.budget_nano is not None
        if budgeted and req.key not in self.states and (req.key, req.period) not in self.spent:
            self._load_both(req.key, req.period)
        st = self.state(req.key)
        spent = self.spent_of(req.key, req.period) if budgeted else 0
        result = decide(req, now_us, st[0], st[1], st[2], st[3], spent)
        # Leases of workers that died are swept only when they would refuse one (an admission
        # that fits does not need to know).
        if result.reason in ("parallel", "budget") and st[2] and self._sweep(req.key):
            st[2], st[3] = self.conn.execute(
                "SELECT coalesce(sum(in_flight), 0), coalesce(sum(reserved_nano), 0) "
                "FROM quota_holders WHERE key = ?",
                (req.key,),
            ).fetchone()
            result = decide(req, now_us, st[0], st[1], st[2], st[3], spent)
        if result.allowed:
            if result.rpm is not None:
                st[0] = result.rpm.tat
            if result.tpm is not None:
                st[1] = result.tpm.tat
            if req.lease_id is not None:
                st[2] += 1
                st[3] += req.reserve_nano
                holder = self.holder(req.key, req.lease_ttl_s)
                hold = self.holds.get((req.key, holder))
                expires = now_s + req.lease_ttl_s
                if hold is None:
                    self.holds[(req.key, holder)] = [1, req.reserve_nano, expires]
                else:
                    hold[0] += 1
                    hold[1] += req.reserve_nano
                    hold[2] = max(hold[2], expires)
                result.lease = holder
            if self.no_grant is not None:
                self.grant(req, spent)
        return result

    def _sweep(self, key: str) -> bool:
        """Delete ``key``'s expired holder rows; True when there were any."""
        self._write_holds()  # the batch's own first, so the recount sees them
        return bool(
            self.conn.execute(
                "DELETE FROM quota_holders WHERE key = ? AND expires <= ?", (key, self.now_s)
            ).rowcount
        )

    def _write_holds(self) -> None:
        if self.holds:
            _write(self.conn, _HOLD, [(k, h, *v) for (k, h), v in self.holds.items()])
            self.holds.clear()

    def write(self) -> None:
        self._write_holds()
        for key, holder in self.retired:
            self.conn.execute(_DROP_IF_EMPTY, (key, holder))
        if self.states:
            _write(self.conn, _PUT_STATE, [(k, *st) for k, st in self.states.items()])
        if self.spend_add:
            _write(self.conn, _ADD_SPEND, [(k, p, n) for (k, p), n in self.spend_add.items()])


def _write(conn: sqlite3.Connection, statement: str, rows: list[tuple[Any, ...]]) -> None:
    # one row (one key in the batch, the usual case): execute costs half what executemany does
    if len(rows) == 1:
        conn.execute(statement, rows[0])
    else:
        conn.executemany(statement, rows)


def _migrate(conn: sqlite3.Connection) -> None:
    """A ledger whose quota tables an earlier version made: its lease rows become holders."""
    old = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'quota_leases'"
    if conn.execute(old).fetchone() is None:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute(old).fetchone() is not None:  # another worker may have just done it
            for statement in _MIGRATE_LEASES:
                conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SQLiteQuotaStore:
    """The one-host store: tables in the ledger's SQLite file (WAL), one connection per worker.
    ``busy_for``: how long a batch retries a busy database before it is a ``StoreError``.

    Group commit: the admissions that arrive in one turn of the event loop and the settlements
    waiting share one transaction, run from a ``call_soon`` callback (no task, no thread). A
    transaction is most of the CPU a quota costs, so under load a request pays a fraction of
    one; alone, it waits one loop turn. Nothing is decided on stale state: the batch reads each
    key's row inside its ``BEGIN IMMEDIATE`` and applies its admissions in arrival order."""

    kind = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_for: float = 10.0,
        settle_delay: float = 0.02,
        on_error: Callable[[Exception], None] | None = None,
        allowances: bool = True,
    ) -> None:
        self.path = os.fspath(path)
        self._busy_for = busy_for
        self._conn: sqlite3.Connection | None = None
        # Settlements wait (at most settle_delay) to ride in the worker's next transaction: the
        # next admissions', or one batch for all that came meanwhile. A release that comes
        # 20 ms late only errs on the safe side.
        self.settle_delay = settle_delay
        self.on_error = on_error  # settlements not written (logged and counted by the engine)
        self._settles: list[Settlement] = []
        self._waiting: list[_Waiter] = []  # for the next batch
        self._run: asyncio.Handle | None = None  # the next batch, scheduled
        self._settle_timer: asyncio.TimerHandle | None = None
        self._busy_since: float | None = None
        self._pause = 0.0
        self._tokens: dict[str, _Token] = {}  # this worker's holder per key (see _Batch.holder)
        # keys with large limits: a share of them taken at once, admitted from without a
        # transaction (``allowance``); False: every request in a batch (tests)
        self.allowances = allowances
        self._allowances: dict[str, Allowance] = {}
        self._give_back_all = False  # the next batch returns every allowance (flush, close)
        self._allowance_timer: asyncio.TimerHandle | None = None

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            try:
                use_wal(conn, deadline_s=0)  # on the loop: a busy file is retried later
                conn.execute("PRAGMA synchronous=NORMAL")
                for statement in _SCHEMA:
                    conn.execute(statement)
                _migrate(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    # -- the batch ------------------------------------------------------------------------------

    def _schedule(self, delay: float = 0.0) -> None:
        if self._run is not None:
            return
        loop = asyncio.get_running_loop()
        self._run = loop.call_later(delay, self._batch) if delay else loop.call_soon(self._batch)

    def _batch(self) -> None:
        """One transaction for the waiting settlements and admissions; retried later while the
        file is busy (never waiting inside SQLite: the loop goes on meanwhile). Between taking
        the work and dropping it after the COMMIT nothing yields, so nothing is applied twice
        or lost."""
        self._run = None
        waiting = [w for w in self._waiting if not w[1].cancelled()]
        self._waiting.clear()
        n = len(self._settles)
        due: list[Allowance] = []
        every = self._give_back_all
        if self._allowances:
            mono = time.monotonic()
            due = [a for a in self._allowances.values() if every or a.due(mono)]
        if not waiting and not n and not due:
            self._arm_allowance_timer()
            return
        try:
            conn = self._open()
            conn.execute("BEGIN IMMEDIATE")
            try:
                batch = _Batch(conn, time.time(), self._tokens)
                for a in due:
                    batch.give_back(a)
                batch.settle_all(self._settles[:n])
                if self.allowances and not every:
                    batch.no_grant = {k for k, a in self._allowances.items() if a not in due}
                results = [batch.admit(req) if req is not None else None for req, _ in waiting]
                for a in due:  # after the admissions: one of them may have taken it already
                    if a.renewable:
                        batch.renew(a.asked)
                batch.write()
                conn.execute("COMMIT")
                self._tokens.update(batch.fresh)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._failed(exc, waiting)
            return
        except Exception as exc:  # a bug, not the file: nobody may wait for ever on it
            log.exception("quota store (sqlite): a batch failed; its settlements are dropped")
            del self._settles[:n]  # one that cannot be applied must not fail every batch
            for _, fut in waiting:
                if not fut.done():
                    fut.set_exception(StoreError(f"sqlite: internal error: {exc!r}"))
            return
        del self._settles[:n]
        self._busy_since = None
        if every:
            self._give_back_all = False
        if due or batch.grants:
            self._allowances_changed(due, batch)
        self._arm_allowance_timer()
        if self._settle_timer is not None and not self._settles:
            # the settlements it was set for went in this batch: a batch of its own later
            # would be one more transaction for nothing (under load, most of them)
            self._settle_timer.cancel()
            self._settle_timer = None
        for (_, fut), result in zip(waiting, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    def _allowances_changed(self, due: list[Allowance], batch: _Batch) -> None:
        """After a COMMIT: the allowances given back are over, the ones taken are in use, and
        a timer gives them back when they end."""
        for a in due:
            a.returned = True
            if self._allowances.get(a.key) is a:
                del self._allowances[a.key]
        mono = time.monotonic()
        for req, grant, holder in batch.grants:
            self._allowances[req.key] = Allowance(
                req.key, holder, req.period, req.rpm, req.tpm, req.max_parallel,
                req.budget_nano, grant, batch.now_s, mono + LIFE_S, req,
            )  # fmt: skip

    def _arm_allowance_timer(self) -> None:
        """A batch when the first allowance is due for renewal, even if no request comes."""
        if self._allowances and self._allowance_timer is None:
            end = min(a.until for a in self._allowances.values()) - RENEW_AHEAD
            delay = max(end - time.monotonic(), 0.0) + 0.001
            loop = asyncio.get_running_loop()
            self._allowance_timer = loop.call_later(delay, self._allowance_due)

    def _allowance_due(self) -> None:
        self._allowance_timer = None
        self._schedule()

    def allowance(self, key: str) -> Allowance | None:
        """This worker's allowance for ``key`` (the engine admits from it first)."""
        return self._allowances.get(key)

    def admit_local(self, req: AdmitRequest) -> AdmitResult | None:
        """``admit`` from this worker's allowance for the key, without a transaction; None
        when there is none or the request does not fit in it (then it goes in a batch, which
        gives the allowance back first). The engine does the same with scalars."""
        a = self._allowances.get(req.key)
        if (
            a is None
            or not a.matches(req.rpm, req.tpm, req.max_parallel, req.budget_nano, req.period)
            or not a.meter.take(req.tokens, req.reserve_nano, time.monotonic())
        ):
            return None
        now_s = time.time()
        rl, rr, tl, tr = a.view(now_s)
        rpm = Gcra(True, 0.0, 0.0, rl, rr) if req.rpm is not None else None
        tpm = Gcra(True, 0.0, 0.0, tl, tr) if req.tpm is not None else None
        return AdmitResult(True, None, 0.0, now_s, rpm, tpm, 0, 0, a.holder or None, a)

    def _failed(self, exc: sqlite3.Error, waiting: list[_Waiter]) -> None:
        now = time.monotonic()
        if is_busy(exc):
            if self._busy_since is None:
                self._busy_since, self._pause = now, 0.0005
            if now + self._pause <= self._busy_since + self._busy_for:
                self._waiting[:0] = waiting  # ahead of what came meanwhile
                self._schedule(self._pause)
                self._pause = min(self._pause * 2, 0.02)
                return
            error = StoreError("sqlite: the database stayed locked")
        else:
            self._reset()
            error = StoreError(f"sqlite: {type(exc).__name__}: {exc}")
        self._busy_since = None
        # settlements are kept for the next transaction; bounded, so a broken file cannot grow
        # them for ever
        del self._settles[: max(0, len(self._settles) - 100_000)]
        if self._settles and self.on_error is not None:
            self.on_error(error)
        for _, fut in waiting:
            if not fut.done():
                fut.set_exception(error)

    def _join(self, req: AdmitRequest | None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((req, fut))
        self._schedule()
        return fut

    # -- the store's interface ------------------------------------------------------------------

    async def admit(self, req: AdmitRequest) -> AdmitResult:
        waiter = self.admit_waiter(req)
        try:
            return await waiter
        except asyncio.CancelledError:
            self.abandon(req, waiter)
            raise

    def admit_waiter(self, req: AdmitRequest) -> asyncio.Future[AdmitResult]:
        """``admit`` as the batch's future (the engine awaits it: no coroutine per request).
        A caller cancelled while waiting hands it to ``abandon``."""
        return self._join(req)

    def abandon(self, req: AdmitRequest, waiter: asyncio.Future[AdmitResult]) -> None:
        """The caller of ``admit_waiter`` went away. Not written yet: the batch skips a
        cancelled future. Written and admitted: nobody will settle it, so its lease and tokens
        go back now."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            res = waiter.result()
            if res.allowed:
                tokens = -req.tokens if req.tpm is not None else 0
                self.queue(
                    Settlement(req.key, res.lease, req.tpm, tokens, req.period, 0, req.reserve_nano)
                )

    async def settle(self, s: Settlement) -> None:
        self.queue(s)

    def queue(self, s: Settlement) -> None:
        """``settle`` without awaiting: written within ``settle_delay`` (or sooner, with the
        next admissions)."""
        self._settles.append(s)
        if self._settle_timer is None and self._run is None:
            loop = asyncio.get_running_loop()
            self._settle_timer = loop.call_later(self.settle_delay, self._settle_due)

    def _settle_due(self) -> None:
        self._settle_timer = None
        if self._settles:
            self._schedule()

    async def flush(self) -> None:
        """Write the waiting settlements now, and give back every allowance (what they let
        through is then in the tables: the budget's spend equals the ledger's)."""
        if self._allowances:
            self._give_back_all = True
        if self._settles or self._allowances:
            await self._join(None)

    async def spent(self, key: str, period: str) -> int:
        await self.flush()
        try:
            row = self._open().execute(_GET_SPENT, (key, period)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {type(exc).__name__}: {exc}") from None
        return int(row[0]) if row else 0

    async def close(self) -> None:
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        if self._allowance_timer is not None:
            self._allowance_timer.cancel()
            self._allowance_timer = None
        with contextlib.suppress(StoreError):
            await self.flush()
        if self._run is not None:
            self._run.cancel()
            self._run = None
        for _, fut in self._waiting:
            if not fut.done():
                fut.set_exception(StoreError("sqlite: the store was closed"))
        self._waiting.clear()
        self._reset()
