"""Where cached answers live: one async interface, three backends.

Every backend stores opaque ``bytes`` under a key with a time to live. The contract the routes
rely on:

- ``get``/``set`` either answer promptly or raise :class:`StoreUnavailable`; a caller that gets
  it answers from upstream and reports ``x-cache: BYPASS``. The proxy never waits long on a cache.
- ``ping`` never raises: it is the readiness probe.
- An entry is never returned after its TTL, whatever the backend.

Backends:

- :class:`MemoryStore`: in-process, LRU, bounded by total bytes. Per worker process, so with
  several Granian workers a repeated request is a hit only on the worker that stored it.
- :class:`SqliteStore`: one file shared by every worker process on a host (WAL mode).
- :class:`RedisStore` (module ``ferrule.cache.redis_store``): shared by replicas, fails fast.

:func:`default_store_kind` picks the store every worker shares when several run.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, TypeVar

from ..sqlite_busy import use_wal

__all__ = [
    "DEFAULT_SQLITE_NAME",
    "STORE_KINDS",
    "MemoryStore",
    "ResponseStore",
    "SqliteStore",
    "StoreUnavailable",
    "default_store_kind",
    "open_store",
]

STORE_KINDS = ("memory", "sqlite", "redis")
DEFAULT_SQLITE_NAME = "response-cache.sqlite3"
"""File name of the shared SQLite store inside the data folder the config names."""

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store could not answer (down, slow, locked, corrupt): treat the request as BYPASS."""


class ResponseStore(abc.ABC):
    """Opaque bytes by key, with a TTL. See the module docstring for the contract."""

    kind: ClassVar[str]

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The live value, or None. Raises :class:`StoreUnavailable`."""

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store ``value`` for ``ttl_s`` seconds (``ttl_s <= 0`` stores nothing).

        Raises :class:`StoreUnavailable`. A value the store cannot hold (larger than its whole
        budget) is silently dropped: a cache may always forget."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the store answers now. Never raises."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections, threads and files. The store is unusable afterwards."""


# -- memory -------------------------------------------------------------------------------------


class MemoryStore(ResponseStore):
    """In-process LRU bounded by the total bytes of keys and values, with per-entry expiry.

    No locks: an ASGI worker runs its requests on one event loop and no method awaits while it
    touches the dict. ``clock`` is injectable for tests (monotonic seconds)."""

    kind = "memory"

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        """Bytes currently held (keys and values)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if key in self._entries:
            self._drop(key)
        cost = len(key) + len(value)
        if ttl_s <= 0 or cost > self.max_bytes:
            return
        self._entries[key] = (value, self._clock() + ttl_s)
        self._bytes += cost
        while self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self._bytes -= len(key) + len(value)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0


# -- sqlite -------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL NOT NULL,
    stored_at REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires_at);
CREATE INDEX IF NOT EXISTS responses_stored ON responses (stored_at);
"""


class SqliteStore(ResponseStore):
    """One SQLite file shared by all worker processes on a host.

    Why it is safe across processes: SQLite locks the file itself; in WAL mode readers never
    block the (serialized) writers nor wait for them, and ``busy_timeout`` bounds how long a
    writer waits for another process's write lock before we give up (:class:`StoreUnavailable`).
    Each statement is its own transaction (autocommit), so no lock is held between calls.

    Why a dedicated thread: sqlite3 calls block, so they run off the event loop, on one thread
    that owns the connection (sqlite3 connections must stay on the thread that made them); calls
    queue there in order. Expiry uses wall-clock time because processes share the rows.

    Expired rows are deleted when read and by a purge at most every ``purge_interval_s`` (run
    after a write). The same purge keeps the file under ``max_bytes`` of values by deleting the
    oldest entries first (FIFO by store time, not LRU: recording every read would turn each
    cache hit into a cross-process write).
    """

    kind = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int,
        *,
        busy_timeout_ms: int = 500,
        purge_interval_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.busy_timeout_ms = busy_timeout_ms
        self.purge_interval_s = purge_interval_s
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._last_purge = 0.0
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferrule-sqlite")

    # Everything below ``_`` runs on the store's thread.

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if self._closed:
            raise StoreUnavailable("the store is closed")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Answers are private to their tenant: create the file readable by its owner only.
        # SQLite gives the -wal and -shm files the database file's permissions.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_ms / 1000.0, isolation_level=None
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            use_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable enough for a cache
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _get(self, key: str) -> bytes | None:
        conn = self._connect()
        row = conn.execute(
            "SELECT value, expires_at FROM responses WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        value, expires = row
        now = self._clock()
        if expires <= now:
            conn.execute("DELETE FROM responses WHERE key = ? AND expires_at <= ?", (key, now))
            return None
        return bytes(value)

    def _set(self, key: str, value: bytes, ttl_s: float) -> None:
        conn = self._connect()
        if ttl_s <= 0 or len(value) > self.max_bytes:
            conn.execute("DELETE FROM responses WHERE key = ?", (key,))
            return
        now = self._clock()
        conn.execute(
            "INSERT OR REPLACE INTO responses (key, value, expires_at, stored_at, size)"
            " VALUES (?, ?, ?, ?, ?)",
            (key, value, now + ttl_s, now, len(value)),
        )
        if now - self._last_purge >= self.purge_interval_s:
            self._purge(now)

    def _purge(self, now: float) -> None:
        conn = self._connect()
        self._last_purge = now
        conn.execute("DELETE FROM responses WHERE expires_at <= ?", (now,))
        (total,) = conn.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()
        while total > self.max_bytes:
            rows = conn.execute(
                "SELECT key, size FROM responses ORDER BY stored_at LIMIT 64"
            ).fetchall()
            if not rows:
                break
            doomed = []
            for key, size in rows:
                if total <= self.max_bytes:
                    break
                doomed.append((key,))
                total -= size
            conn.executemany("DELETE FROM responses WHERE key = ?", doomed)

    def purge_now(self) -> None:
        """Run the purge on the calling thread's behalf (tests, maintenance). Blocking."""
        self._executor.submit(lambda: self._purge(self._clock())).result()

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:  # locked past busy_timeout, disk full, corrupt file...
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        except (OSError, RuntimeError) as exc:  # cannot create the file; executor shut down
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        return await self._call(lambda: self._get(key))

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._call(lambda: self._set(key, value, ttl_s))

    async def ping(self) -> bool:
        try:
            await self._call(lambda: self._connect().execute("SELECT 1").fetchone())
        except StoreUnavailable:
            return False
        return True

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        with contextlib.suppress(sqlite3.Error, RuntimeError):
            await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)


# -- choosing -----------------------------------------------------------------------------------


def default_store_kind(workers: int, *, redis_url: str | None = None) -> str:
    """The store to use when the operator named none.

    Redis when a URL is configured (the operator set one up to share across replicas); else
    SQLite when several worker processes run, so a repeated request is a hit whichever worker
    serves it; else memory (one process: the fastest store is also a shared one)."""
    if redis_url:
        return "redis"
    return "sqlite" if workers > 1 else "memory"


def open_store(
    kind: str,
    *,
    path: str | None,
    redis_url: str | None,
    max_bytes: int,
) -> ResponseStore:
    """Build a store. ``path`` is the SQLite file (required for ``sqlite``), ``redis_url`` the
    Redis URL (required for ``redis``), ``max_bytes`` the budget of the memory and SQLite stores
    (Redis is bounded by its own ``maxmemory`` policy). Raises ValueError on a bad combination.

    Nothing connects here: SQLite opens its file and Redis its pool on first use, so a store can
    be built before the event loop runs (in an ASGI lifespan or a worker factory)."""
    if max_bytes < 0:
        raise ValueError("max_bytes must not be negative")
    if kind == "memory":
        return MemoryStore(max_bytes)
    if kind == "sqlite":
        if not path:
            raise ValueError("the sqlite response cache needs a file path")
        return SqliteStore(path, max_bytes)
    if kind == "redis":
        if not redis_url:
            raise ValueError("the redis response cache needs FERRULE_REDIS_URL")
        from .redis_store import RedisStore

        return RedisStore(redis_url)
    raise ValueError(f"unknown response cache store {kind!r}: use {', '.join(STORE_KINDS)}")
