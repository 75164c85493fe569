"""Virtual keys in PostgreSQL (``database_url``): the ``KeyStore`` every replica shares.

The same tables and behaviour as ``SQLiteKeyStore`` (digests only, a name never reused, rotation
with a grace period, revocation that removes every digest at once, one change counter that
workers poll), prefixed ``ferrule_`` in a shared database. The schema is the ``keys`` component
of ``ferrule_schema``, migrated once under the same advisory lock as the ledger's. Every write is
one transaction that first bumps the change counter: that row lock serialises key writes across
replicas, as ``BEGIN IMMEDIATE`` does on SQLite. Calls are blocking (a ``psycopg_pool``
connection pool, safe from any thread); a database error other than "not found / exists" is
raised as ``KeyProblem`` 503, never with the URL or a key in it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final, TypeVar

import orjson
import psycopg
from psycopg_pool import ConnectionPool

from ..ledger.postgres import migrate
from .model import VirtualKey
from .store import KeyInfo, KeyProblem, check_limits, validate_name

__all__ = ["KEYS_MIGRATIONS", "PostgresKeyStore"]

T = TypeVar("T")

# keys schema version N is reached by running KEYS_MIGRATIONS[N-1]; add, never edit.
KEYS_MIGRATIONS: Final[tuple[str, ...]] = (
    "CREATE TABLE IF NOT EXISTS ferrule_virtual_keys (name TEXT PRIMARY KEY, "
    "budget_usd DOUBLE PRECISION, budget_period TEXT NOT NULL, rpm BIGINT, tpm BIGINT, "
    "max_parallel BIGINT, models TEXT NOT NULL, expires_at DOUBLE PRECISION, "
    "created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL, "
    "revoked_at DOUBLE PRECISION, digest TEXT NOT NULL);\n"
    "CREATE TABLE IF NOT EXISTS ferrule_virtual_key_digests (digest TEXT PRIMARY KEY, "
    "name TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, not_after DOUBLE PRECISION);\n"
    "CREATE INDEX IF NOT EXISTS ferrule_virtual_key_digests_name "
    "ON ferrule_virtual_key_digests (name);\n"
    "CREATE TABLE IF NOT EXISTS ferrule_keys_changes (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "counter BIGINT NOT NULL);\n"
    "INSERT INTO ferrule_keys_changes (id, counter) VALUES (1, 0) ON CONFLICT DO NOTHING",
)
_UPDATABLE: Final = ("budget_usd", "budget_period", "rpm", "tpm", "max_parallel", "models",
                     "expires_at")  # fmt: skip
_FIELDS: Final = ("name", "digest", "budget_usd", "budget_period", "rpm", "tpm", "max_parallel",
                  "models", "expires_at", "created_at")  # fmt: skip
_COLUMNS: Final = ", ".join(_FIELDS)
_COLUMNS_K: Final = ", ".join(f"k.{f}" for f in _FIELDS)


class PostgresKeyStore:
    """``KeyStore`` on PostgreSQL. ``max_size`` connections at most (per process)."""

    def __init__(self, url: str, *, timeout: float = 5.0, max_size: int = 4) -> None:
        self._timeout = timeout
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout)),
                    "application_name": "ferrule-keys"},
            open=False,
            name="ferrule-keys",
        )  # fmt: skip
        try:
            self._pool.open(wait=True, timeout=timeout)
            with self._pool.connection() as conn:
                migrate(conn, "keys", KEYS_MIGRATIONS)
        except psycopg_pool_errors() as exc:
            self._pool.close()
            raise _unavailable(exc) from None
        except BaseException:
            self._pool.close()
            raise

    # -- plumbing ------------------------------------------------------------------------------

    def _read(self, work: Callable[[psycopg.Connection], T]) -> T:
        try:
            with self._pool.connection() as conn:
                return work(conn)
        except psycopg_pool_errors() as exc:
            raise _unavailable(exc) from None

    def _write(self, work: Callable[[psycopg.Connection, float], T]) -> T:
        try:
            with self._pool.connection() as conn, conn.transaction():
                # First: the counter's row lock serialises key writes across every replica.
                conn.execute("UPDATE ferrule_keys_changes SET counter = counter + 1 WHERE id = 1")
                return work(conn, time.time())
        except psycopg_pool_errors() as exc:
            raise _unavailable(exc) from None

    # -- writes --------------------------------------------------------------------------------

    def create(self, key: VirtualKey) -> None:
        validate_name(key.name)
        check_limits(key)

        def work(conn: psycopg.Connection, now: float) -> None:
            exists = conn.execute(
                "SELECT 1 FROM ferrule_virtual_keys WHERE name = %s", (key.name,)
            ).fetchone()
            if exists:
                raise KeyProblem(f"a key named {key.name!r} exists (names are never reused)", 409)
            conn.execute(
                "INSERT INTO ferrule_virtual_keys (name, budget_usd, budget_period, rpm, tpm, "
                "max_parallel, models, expires_at, created_at, updated_at, revoked_at, digest) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, %s)",
                (key.name, key.budget_usd, key.budget_period, key.rpm, key.tpm,
                 key.max_parallel, orjson.dumps(list(key.models)).decode(), key.expires_at,
                 key.created_at, now, key.digest),
            )  # fmt: skip
            conn.execute(
                "INSERT INTO ferrule_virtual_key_digests (digest, name, created_at, not_after) "
                "VALUES (%s, %s, %s, NULL)",
                (key.digest, key.name, now),
            )

        self._write(work)

    def update(self, name: str, changes: Mapping[str, Any]) -> KeyInfo:
        unknown = set(changes) - set(_UPDATABLE)
        if unknown:
            raise KeyProblem(f"cannot change {', '.join(sorted(unknown))}")

        def work(conn: psycopg.Connection, now: float) -> None:
            info = _get(conn, name)
            if info is None:
                raise KeyProblem(f"no key named {name!r}", 404)
            if info.revoked_at is not None:
                raise KeyProblem(f"the key {name!r} is revoked", 409)
            u = check_limits(replace(info.key, **changes))
            conn.execute(
                "UPDATE ferrule_virtual_keys SET budget_usd = %s, budget_period = %s, rpm = %s, "
                "tpm = %s, max_parallel = %s, models = %s, expires_at = %s, updated_at = %s "
                "WHERE name = %s",
                (u.budget_usd, u.budget_period, u.rpm, u.tpm, u.max_parallel,
                 orjson.dumps(list(u.models)).decode(), u.expires_at, now, name),
            )  # fmt: skip

        self._write(work)
        return self._must_get(name)

    def revoke(self, name: str) -> KeyInfo:
        def work(conn: psycopg.Connection, now: float) -> None:
            info = _get(conn, name)
            if info is None:
                raise KeyProblem(f"no key named {name!r}", 404)
            if info.revoked_at is None:
                conn.execute(
                    "UPDATE ferrule_virtual_keys SET revoked_at = %s, updated_at = %s "
                    "WHERE name = %s",
                    (now, now, name),
                )
            conn.execute("DELETE FROM ferrule_virtual_key_digests WHERE name = %s", (name,))

        self._write(work)
        return self._must_get(name)

    def rotate(self, name: str, digest: str, grace: float) -> KeyInfo:
        if not grace >= 0:
            raise KeyProblem("the grace period must be 0 seconds or more")

        def work(conn: psycopg.Connection, now: float) -> None:
            info = _get(conn, name)
            if info is None:
                raise KeyProblem(f"no key named {name!r}", 404)
            if info.revoked_at is not None:
                raise KeyProblem(f"the key {name!r} is revoked", 409)
            until = now + grace
            # every older key ends at the latest with this grace period; expired ones go
            conn.execute(
                "UPDATE ferrule_virtual_key_digests "
                "SET not_after = LEAST(COALESCE(not_after, %s), %s) WHERE name = %s",
                (until, until, name),
            )
            conn.execute(
                "DELETE FROM ferrule_virtual_key_digests WHERE name = %s AND not_after <= %s",
                (name, now),
            )
            conn.execute(
                "INSERT INTO ferrule_virtual_key_digests (digest, name, created_at, not_after) "
                "VALUES (%s, %s, %s, NULL)",
                (digest, name, now),
            )
            conn.execute(
                "UPDATE ferrule_virtual_keys SET digest = %s, updated_at = %s WHERE name = %s",
                (digest, now, name),
            )

        self._write(work)
        return self._must_get(name)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, name: str) -> KeyInfo | None:
        return self._read(lambda conn: _get(conn, name))

    def _must_get(self, name: str) -> KeyInfo:
        info = self.get(name)
        if info is None:  # pragma: no cover - just written
            raise KeyProblem(f"no key named {name!r}", 404)
        return info

    def list_keys(self) -> list[KeyInfo]:
        def work(conn: psycopg.Connection) -> list[KeyInfo]:
            names = [
                r[0] for r in conn.execute("SELECT name FROM ferrule_virtual_keys ORDER BY name")
            ]
            return [info for n in names if (info := _get(conn, n)) is not None]

        return self._read(work)

    def lookup(self, digest: str) -> tuple[VirtualKey, float | None] | None:
        def work(conn: psycopg.Connection) -> tuple[Any, ...] | None:
            return conn.execute(
                f"SELECT {_COLUMNS_K}, d.not_after FROM ferrule_virtual_key_digests d "
                "JOIN ferrule_virtual_keys k ON k.name = d.name "
                "WHERE d.digest = %s AND k.revoked_at IS NULL",
                (digest,),
            ).fetchone()

        row = self._read(work)
        if row is None:
            return None
        return _key_of(row), row[-1]

    def changes(self) -> int:
        def work(conn: psycopg.Connection) -> int:
            row = conn.execute("SELECT counter FROM ferrule_keys_changes WHERE id = 1").fetchone()
            return int(row[0]) if row else 0

        return self._read(work)

    def close(self) -> None:
        self._pool.close()


def _get(conn: psycopg.Connection, name: str) -> KeyInfo | None:
    row = conn.execute(
        f"SELECT {_COLUMNS}, revoked_at FROM ferrule_virtual_keys WHERE name = %s", (name,)
    ).fetchone()
    if row is None:
        return None
    grace = conn.execute(
        "SELECT max(not_after) FROM ferrule_virtual_key_digests WHERE name = %s AND not_after > %s",
        (name, time.time()),
    ).fetchone()
    return KeyInfo(_key_of(row), row[-1], grace[0] if grace else None)


def _key_of(row: tuple[Any, ...]) -> VirtualKey:
    return VirtualKey(
        name=row[0],
        digest=row[1],
        budget_usd=row[2],
        budget_period=row[3],
        rpm=row[4],
        tpm=row[5],
        max_parallel=row[6],
        models=tuple(orjson.loads(row[7])),
        expires_at=row[8],
        created_at=row[9],
    )


def psycopg_pool_errors() -> tuple[type[Exception], ...]:
    """Database failures (not a KeyProblem): the server gone, the pool timed out waiting."""
    from psycopg_pool import PoolTimeout

    return (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


def _unavailable(exc: Exception) -> KeyProblem:
    return KeyProblem(f"the key database is unavailable ({type(exc).__name__})", 503)
