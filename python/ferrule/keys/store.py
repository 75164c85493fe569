"""Where virtual keys live: a ``KeyStore`` (SQLite, in the ledger's file, by default).

Only a key's SHA-256 digest is stored. A key is looked up by the digest of what the caller
presented, through the digest index: the key itself is never compared, so the lookup's timing
says nothing about it.

Tables (their own version in ``keys_schema``, independent of the ledger's ``user_version``):

- ``virtual_keys``: one row per name, with its limits; ``revoked_at`` set on revocation (the name
  stays, so a new key never inherits an old one's ledger rows);
- ``virtual_key_digests``: the digests that open a name; ``not_after`` NULL for the current key,
  the end of its grace period for a rotated one; a revoked name has none;
- ``keys_changes``: one counter, bumped by every change, which workers poll to drop their caches.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import orjson

from ..sqlite_busy import use_wal
from .model import BUDGET_PERIODS, VirtualKey

__all__ = [
    "DEFAULT_GRACE",
    "KEY_PREFIX",
    "KeyInfo",
    "KeyProblem",
    "KeyStore",
    "SQLiteKeyStore",
    "digest_of",
    "new_key",
    "validate_name",
]

KEY_PREFIX = "fk-"
DEFAULT_GRACE = 86400.0  # a rotated key keeps working this long (seconds)
SCHEMA_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")
_UPDATABLE = ("budget_usd", "budget_period", "rpm", "tpm", "max_parallel", "models", "expires_at")

# keys_schema version N is reached by running _MIGRATIONS[N-1]; add, never edit.
_MIGRATIONS: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS virtual_keys (name TEXT PRIMARY KEY, budget_usd REAL, "
    "budget_period TEXT NOT NULL, rpm INTEGER, tpm INTEGER, max_parallel INTEGER, "
    "models TEXT NOT NULL, expires_at REAL, created_at REAL NOT NULL, updated_at REAL NOT NULL, "
    "revoked_at REAL, digest TEXT NOT NULL);\n"
    "CREATE TABLE IF NOT EXISTS virtual_key_digests (digest TEXT PRIMARY KEY, "
    "name TEXT NOT NULL, created_at REAL NOT NULL, not_after REAL);\n"
    "CREATE INDEX IF NOT EXISTS virtual_key_digests_name ON virtual_key_digests (name);\n"
    "CREATE TABLE IF NOT EXISTS keys_changes (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "counter INTEGER NOT NULL);\n"
    "INSERT OR IGNORE INTO keys_changes (id, counter) VALUES (1, 0)",
)


class KeyProblem(ValueError):
    """A key operation that cannot be done; ``status`` is the HTTP status the admin API uses."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What ``list``/``show`` report: the record, its state, never the key."""

    key: VirtualKey
    revoked_at: float | None
    previous_valid_until: float | None  # a rotated key's grace end, the latest one

    def status(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        if self.key.expires_at is not None and now >= self.key.expires_at:
            return "expired"
        return "active"

    def as_json(self) -> dict[str, Any]:
        k = self.key
        return {
            "name": k.name,
            "digest_prefix": k.digest[:12],
            "status": self.status(),
            "budget_usd": k.budget_usd,
            "budget_period": k.budget_period,
            "rpm": k.rpm,
            "tpm": k.tpm,
            "max_parallel": k.max_parallel,
            "models": list(k.models),
            "expires_at": k.expires_at,
            "created_at": k.created_at,
            "revoked_at": self.revoked_at,
            "previous_key_valid_until": self.previous_valid_until,
        }


class KeyStore(Protocol):
    """What keys mode needs from a store. Methods are blocking (call them in a thread from the
    event loop); ``lookup`` and ``changes`` are the hot ones and must be cheap."""

    def create(self, key: VirtualKey) -> None:
        """Add ``key`` (its digest is the current one). KeyProblem 409 if the name exists."""

    def get(self, name: str) -> KeyInfo | None: ...

    def list_keys(self) -> list[KeyInfo]: ...

    def update(self, name: str, changes: Mapping[str, Any]) -> KeyInfo:
        """Change limits (fields of ``VirtualKey`` in ``_UPDATABLE``)."""
        ...

    def revoke(self, name: str) -> KeyInfo:
        """Every digest of ``name`` stops working at once."""
        ...

    def rotate(self, name: str, digest: str, grace: float) -> KeyInfo:
        """``digest`` becomes the current key; the previous ones work ``grace`` more seconds."""
        ...

    def lookup(self, digest: str) -> tuple[VirtualKey, float | None] | None:
        """The active (not revoked) key ``digest`` opens, with the end of its grace period
        (None for a current key); expiry is the caller's check (``VirtualKey.expires_at``)."""
        ...

    def changes(self) -> int:
        """A counter that every change bumps."""
        ...

    def close(self) -> None: ...


def new_key() -> tuple[str, str]:
    """A fresh key and its digest. 32 random bytes (256 bits) as URL-safe base64."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, digest_of(key)


def digest_of(key: str) -> str:
    return hashlib.sha256(key.strip().encode("utf-8", "surrogatepass")).hexdigest()


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise KeyProblem(
            "a key name is 1-64 characters: letters, digits and . _ : @ - "
            "(starting with a letter or digit)"
        )
    return name


def check_limits(key: VirtualKey) -> VirtualKey:
    """Reject nonsense limits with a message naming the field."""
    if key.budget_period not in BUDGET_PERIODS:
        raise KeyProblem(f"budget_period must be one of {', '.join(BUDGET_PERIODS)}")
    if key.budget_usd is not None and not (key.budget_usd >= 0 and key.budget_usd < 1e12):
        raise KeyProblem("budget_usd must be a number of dollars, 0 or more")
    for field in ("rpm", "tpm", "max_parallel"):
        value = getattr(key, field)
        if value is not None and (isinstance(value, bool) or not 1 <= value <= 10**12):
            raise KeyProblem(f"{field} must be a whole number of at least 1")
    for glob in key.models:
        if not isinstance(glob, str) or not glob or len(glob) > 200:
            raise KeyProblem("models must be non-empty model names or globs")
    return key


class SQLiteKeyStore:
    """Keys in a SQLite file (the ledger's, by default). One connection, guarded by a lock, so
    it may be called from any thread."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            os.fspath(path), timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            use_wal(self._conn)
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _migrate(self) -> None:
        conn = self._conn
        conn.execute("CREATE TABLE IF NOT EXISTS keys_schema (version INTEGER NOT NULL)")
        if self._version() == SCHEMA_VERSION:
            return
        # IMMEDIATE: two workers starting together migrate once; the second waits, then sees it
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._version()
            if version > SCHEMA_VERSION:
                raise KeyProblem(
                    f"the key tables have schema version {version}; this Ferrule knows "
                    f"{SCHEMA_VERSION}: upgrade Ferrule",
                    500,
                )
            for step in _MIGRATIONS[version:SCHEMA_VERSION]:
                for statement in step.split(";\n"):
                    conn.execute(statement)
            conn.execute("DELETE FROM keys_schema")
            conn.execute("INSERT INTO keys_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _version(self) -> int:
        row = self._conn.execute("SELECT max(version) FROM keys_schema").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # -- writes: each in one IMMEDIATE transaction that bumps the change counter ---------------

    def _write(self, work: Any) -> Any:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn, time.time())
                conn.execute("UPDATE keys_changes SET counter = counter + 1 WHERE id = 1")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result

    def create(self, key: VirtualKey) -> None:
        validate_name(key.name)
        check_limits(key)

        def work(conn: sqlite3.Connection, now: float) -> None:
            if conn.execute("SELECT 1 FROM virtual_keys WHERE name = ?", (key.name,)).fetchone():
                raise KeyProblem(f"a key named {key.name!r} exists (names are never reused)", 409)
            conn.execute(
                "INSERT INTO virtual_keys (name, budget_usd, budget_period, rpm, tpm, "
                "max_parallel, models, expires_at, created_at, updated_at, revoked_at, digest) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                (
                    key.name,
                    key.budget_usd,
                    key.budget_period,
                    key.rpm,
                    key.tpm,
                    key.max_parallel,
                    orjson.dumps(list(key.models)).decode(),
                    key.expires_at,
                    key.created_at,
                    now,
                    key.digest,
                ),
            )
            conn.execute(
                "INSERT INTO virtual_key_digests (digest, name, created_at, not_after) "
                "VALUES (?, ?, ?, NULL)",
                (key.digest, key.name, now),
            )

        self._write(work)

    def update(self, name: str, changes: Mapping[str, Any]) -> KeyInfo:
        unknown = set(changes) - set(_UPDATABLE)
        if unknown:
            raise KeyProblem(f"cannot change {', '.join(sorted(unknown))}")

        def work(conn: sqlite3.Connection, now: float) -> None:
            info = self._get(conn, name)
            if info is None:
                raise KeyProblem(f"no key named {name!r}", 404)
            if info.revoked_at is not None:
                raise KeyProblem(f"the key {name!r} is revoked", 409)
            updated = check_limits(replace(info.key, **changes))
            conn.execute(
                "UPDATE virtual_keys SET budget_usd = ?, budget_period = ?, rpm = ?, tpm = ?, "
                "max_parallel = ?, models = ?, expires_at = ?, updated_at = ? WHERE name = ?",
                (
                    updated.budget_usd,
                    updated.budget_period,
                    updated.rpm,
                    updated.tpm,
                    updated.max_parallel,
                    orjson.dumps(list(updated.models)).decode(),
                    updated.expires_at,
                    now,
                    name,
                ),
            )

        self._write(work)
        return self._must_get(name)

    def revoke(self, name: str) -> KeyInfo:
        def work(conn: sqlite3.Connection, now: float) -> None:
            info = self._get(conn, name)
            if info is None:
                raise KeyProblem(f"no key named {name!r}", 404)
            if info.revoked_at is None:
                conn.execute(
                    "UPDATE virtual_keys SET revoked_at = ?, updated_at = ? WHERE name = ?",
                    (now, now, name),
                )
            conn.execute("DELETE FROM virtual_key_digests WHERE name = ?", (name,))

        self._write(work)
        return self._must_get(name)

    def rotate(self, name: str, digest: str, grace: float) -> KeyInfo:
        if not grace >= 0:
            raise KeyProblem("the grace period must be 0 seconds or more")

        def work(conn: sqlite3.Connection, now: float) -> None:
            info = self._get(conn, name)
            if info is None:
                raise KeyProblem(f"no key named {name!r}", 404)
            if info.revoked_at is not None:
                raise KeyProblem(f"the key {name!r} is revoked", 409)
            until = now + grace
            # every older key ends at the latest with this grace period; expired ones go
            conn.execute(
                "UPDATE virtual_key_digests SET not_after = min(coalesce(not_after, ?), ?) "
                "WHERE name = ?",
                (until, until, name),
            )
            conn.execute(
                "DELETE FROM virtual_key_digests WHERE name = ? AND not_after <= ?", (name, now)
            )
            conn.execute(
                "INSERT INTO virtual_key_digests (digest, name, created_at, not_after) "
                "VALUES (?, ?, ?, NULL)",
                (digest, name, now),
            )
            conn.execute(
                "UPDATE virtual_keys SET digest = ?, updated_at = ? WHERE name = ?",
                (digest, now, name),
            )

        self._write(work)
        return self._must_get(name)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, name: str) -> KeyInfo | None:
        with self._lock:
            return self._get(self._conn, name)

    def _must_get(self, name: str) -> KeyInfo:
        info = self.get(name)
        if info is None:  # pragma: no cover - just written
            raise KeyProblem(f"no key named {name!r}", 404)
        return info

    def list_keys(self) -> list[KeyInfo]:
        with self._lock:
            names = [
                r[0] for r in self._conn.execute("SELECT name FROM virtual_keys ORDER BY name")
            ]
            return [info for n in names if (info := self._get(self._conn, n)) is not None]

    def _get(self, conn: sqlite3.Connection, name: str) -> KeyInfo | None:
        row = conn.execute(
            f"SELECT {_KEY_COLUMNS}, revoked_at FROM virtual_keys WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            return None
        grace = conn.execute(
            "SELECT max(not_after) FROM virtual_key_digests WHERE name = ? AND not_after > ?",
            (name, time.time()),
        ).fetchone()
        return KeyInfo(_key_of(row), row[-1], grace[0] if grace else None)

    def lookup(self, digest: str) -> tuple[VirtualKey, float | None] | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_KEY_COLUMNS_K}, d.not_after FROM virtual_key_digests d "
                "JOIN virtual_keys k ON k.name = d.name "
                "WHERE d.digest = ? AND k.revoked_at IS NULL",
                (digest,),
            ).fetchone()
        if row is None:
            return None
        return _key_of(row), row[-1]

    def changes(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT counter FROM keys_changes WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_FIELDS = (
    "name",
    "digest",
    "budget_usd",
    "budget_period",
    "rpm",
    "tpm",
    "max_parallel",
    "models",
    "expires_at",
    "created_at",
)
_KEY_COLUMNS = ", ".join(_FIELDS)
_KEY_COLUMNS_K = ", ".join(f"k.{f}" for f in _FIELDS)


def _key_of(row: tuple[Any, ...]) -> VirtualKey:
    models = orjson.loads(row[7])
    return VirtualKey(
        name=row[0],
        digest=row[1],
        budget_usd=row[2],
        budget_period=row[3],
        rpm=row[4],
        tpm=row[5],
        max_parallel=row[6],
        models=tuple(models),
        expires_at=row[8],
        created_at=row[9],
    )
