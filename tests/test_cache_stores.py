"""Response-cache stores (ferrule.cache.stores, ferrule.cache.redis_store): the memory LRU by
bytes with TTL, SQLite shared by several processes, and Redis against a real ``redis-server``
(started here on a free port; skipped when the binary is absent), including killing it mid-run:
calls must fail fast and the store must recover by itself when Redis is back."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ferrule.cache.stores import (
    MemoryStore,
    SqliteStore,
    StoreUnavailable,
    default_store_kind,
    open_store,
)
from redis_server import RedisServer, needs_redis, redis_server_fixture  # noqa: F401
from redis_server import free_port as _free_port

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


class Clock:
    """A settable clock for TTL tests."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- memory -------------------------------------------------------------------------------------


def test_memory_get_set_and_overwrite() -> None:
    async def go() -> None:
        store = MemoryStore(1000)
        assert await store.get("k") is None
        await store.set("k", b"v1", 60)
        await store.set("k", b"value-2", 60)
        assert await store.get("k") == b"value-2"
        assert store.size_bytes == len("k") + len("value-2") and len(store) == 1
        assert await store.ping()
        await store.close()
        assert await store.get("k") is None

    run(go())


def test_memory_lru_bounded_by_bytes() -> None:
    async def go() -> None:
        store = MemoryStore(100)  # each entry below costs 2 + 28 = 30 bytes: three fit
        for k in ("k1", "k2", "k3"):
            await store.set(k, b"x" * 28, 60)
        assert await store.get("k1") is not None  # k1 is now the most recently used
        await store.set("k4", b"x" * 28, 60)
        assert await store.get("k2") is None  # the least recently used went
        assert [await store.get(k) is not None for k in ("k1", "k3", "k4")] == [True] * 3
        assert store.size_bytes == 90
        await store.set("big", b"x" * 200, 60)  # larger than the whole budget: not kept
        assert await store.get("big") is None and store.size_bytes == 90
        await store.set("k5", b"x" * 88, 60)  # needs everything else gone
        assert len(store) == 1 and store.size_bytes == 90

    run(go())


def test_memory_ttl() -> None:
    async def go() -> None:
        clock = Clock()
        store = MemoryStore(1000, clock=clock)
        await store.set("short", b"a", 5)
        await store.set("long", b"b", 50)
        clock.now += 5
        assert await store.get("short") is None
        assert await store.get("long") == b"b"
        assert store.size_bytes == len("long") + 1  # the expired entry was dropped
        await store.set("long", b"b", 0)  # ttl <= 0 stores nothing and removes the old value
        assert await store.get("long") is None

    run(go())


# -- sqlite -------------------------------------------------------------------------------------


def test_sqlite_basics_wal_and_private_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.sqlite3"

    async def go() -> None:
        store = SqliteStore(path, 10_000)
        assert await store.ping()
        assert await store.get("k") is None
        await store.set("k", b"\x00binary\xff", 60)
        assert await store.get("k") == b"\x00binary\xff"
        await store.close()
        assert not await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.get("k")

    run(go())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_sqlite_ttl_expiry_and_purge(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    clock = Clock()

    async def go() -> None:
        store = SqliteStore(path, 100, clock=clock, purge_interval_s=3600)
        await store.set("a", b"x" * 40, 10)
        await store.set("b", b"x" * 40, 100)
        clock.now += 10
        assert await store.get("a") is None  # expired: not returned, and deleted
        assert await store.get("b") == b"x" * 40
        rows = sqlite3.connect(path).execute("SELECT key FROM responses").fetchall()
        assert rows == [("b",)]
        # Over the byte budget: the purge drops the oldest entries first.
        for i, key in enumerate(("c", "d", "e")):
            clock.now += 1 + i
            await store.set(key, b"y" * 40, 100)
        store.purge_now()
        assert [await store.get(k) is not None for k in "bcde"] == [False, False, True, True]
        await store.close()

    run(go())


def test_sqlite_write_lock_fails_fast_and_reads_still_work(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"

    async def go() -> None:
        store = SqliteStore(path, 10_000, busy_timeout_ms=100)
        await store.set("k", b"v", 60)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            start = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.set("k2", b"v", 60)
            assert time.monotonic() - start < 1.0
            assert await store.get("k") == b"v"  # WAL: readers are not blocked
        finally:
            other.execute("ROLLBACK")
            other.close()
        await store.set("k2", b"v", 60)
        await store.close()

    run(go())


def test_sqlite_unusable_path_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    async def go() -> None:
        store = SqliteStore(blocker / "cache.sqlite3", 1000)
        assert not await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.set("k", b"v", 60)
        await store.close()

    run(go())


_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from ferrule.cache.stores import SqliteStore

    async def main(path, who, n, read_from):
        store = SqliteStore(path, 50_000_000)
        for i in range(n):
            await store.set(f"{who}-{i}", f"{who}:{i}".encode() * 50, 60)
        missing = 0
        if read_from:
            for i in range(n):
                if await store.get(f"{read_from}-{i}") != f"{read_from}:{i}".encode() * 50:
                    missing += 1
        await store.close()
        print(missing)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    """
)


def _worker(path: Path, who: str, n: int, read_from: str = "") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(path), who, str(n), read_from],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sqlite_shared_by_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    # Four processes write at the same time (contending for the write lock)...
    writers = [_worker(path, f"w{n}", 200) for n in range(4)]
    for p in writers:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    # ...then another process reads what the first one wrote, and this one reads them all.
    reader = _worker(path, "r", 1, read_from="w0")
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0 and out.strip() == "0", err

    async def go() -> None:
        store = SqliteStore(path, 50_000_000)
        for n in range(4):
            for i in (0, 199):
                assert await store.get(f"w{n}-{i}") == f"w{n}:{i}".encode() * 50
        await store.close()

    run(go())


# -- choosing a store ---------------------------------------------------------------------------


def test_default_store_kind() -> None:
    assert default_store_kind(1) == "memory"
    assert default_store_kind(4) == "sqlite"
    assert default_store_kind(1, redis_url="redis://h") == "redis"


def test_open_store(tmp_path: Path) -> None:
    assert isinstance(open_store("memory", path=None, redis_url=None, max_bytes=10), MemoryStore)
    store = open_store("sqlite", path=str(tmp_path / "c.db"), redis_url=None, max_bytes=10)
    assert isinstance(store, SqliteStore)
    run(store.close())
    with pytest.raises(ValueError, match="path"):
        open_store("sqlite", path=None, redis_url=None, max_bytes=10)
    with pytest.raises(ValueError, match="FERRULE_REDIS_URL"):
        open_store("redis", path=None, redis_url=None, max_bytes=10)
    with pytest.raises(ValueError, match="unknown"):
        open_store("disk", path=None, redis_url=None, max_bytes=10)


# -- redis (a real redis-server) ----------------------------------------------------------------


def _redis_store(url: str, **kw: Any) -> Any:
    from ferrule.cache.redis_store import RedisStore

    return RedisStore(url, **kw)


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[str, float]:
    """('ok' | 'unavailable', seconds) of one store call."""
    start = time.monotonic()
    try:
        await call()
        outcome = "ok"
    except StoreUnavailable:
        outcome = "unavailable"
    return outcome, time.monotonic() - start


@needs_redis
def test_redis_get_set_ttl(redis_server: RedisServer) -> None:
    async def go() -> None:
        store = _redis_store(redis_server.url)
        assert await store.ping()
        assert await store.get("k") is None
        await store.set("k", b"\x00v\xff", 60)
        assert await store.get("k") == b"\x00v\xff"
        await store.set("short", b"v", 0.15)
        await asyncio.sleep(0.3)
        assert await store.get("short") is None
        await store.set("k", b"v", 0)  # ttl <= 0: removed
        assert await store.get("k") is None
        other = _redis_store(redis_server.url, prefix="other:")
        await store.set("shared-name", b"mine", 60)
        assert await other.get("shared-name") is None  # namespaced by prefix
        await other.close()
        await store.close()

    run(go())


@needs_redis
def test_redis_killed_mid_run_fails_fast_and_recovers(redis_server: RedisServer) -> None:
    async def go() -> None:
        store = _redis_store(redis_server.url, retry_after_s=0.3)
        for i in range(5):  # warm the pool: several open connections
            await asyncio.gather(*(store.set(f"k{i}-{j}", b"v", 60) for j in range(4)))
        assert await store.get("k0-0") == b"v"

        redis_server.kill()
        outcome, took = await _timed(lambda: store.get("k0-0"))
        assert outcome == "unavailable" and took < 0.75
        outcome, took = await _timed(lambda: store.set("x", b"v", 60))
        assert outcome == "unavailable" and took < 0.05  # circuit open: no waiting at all
        assert not store.available
        assert not await store.ping()

        redis_server.start()  # same port, empty (no persistence)
        await asyncio.sleep(0.35)
        # Stale pooled sockets are replaced by themselves: the first call already succeeds.
        assert await store.get("k0-0") is None
        await store.set("after", b"v2", 60)
        assert await store.get("after") == b"v2"
        assert await store.ping()
        await store.close()

    run(go())


@needs_redis
def test_redis_slow_server_times_out_and_recovers(redis_server: RedisServer) -> None:
    async def go() -> None:
        store = _redis_store(redis_server.url, max_connections=2, retry_after_s=0.2)
        await store.set("k", b"v", 60)
        redis_server.pause()  # accepts nothing, answers nothing: a hung server
        try:
            start = time.monotonic()
            results = await asyncio.gather(*(_timed(lambda: store.get("k")) for _ in range(20)))
            # Twenty concurrent lookups on a pool of two: all give up within the op timeout.
            assert all(outcome == "unavailable" for outcome, _ in results)
            assert time.monotonic() - start < 0.75
        finally:
            redis_server.resume()
        await asyncio.sleep(0.25)
        assert await store.get("k") == b"v"
        await store.close()

    run(go())


@needs_redis
def test_redis_unreachable_from_the_start() -> None:
    async def go() -> None:
        store = _redis_store(f"redis://127.0.0.1:{_free_port()}/0")
        outcome, took = await _timed(lambda: store.get("k"))
        assert outcome == "unavailable" and took < 0.75
        assert not await store.ping()
        await store.close()

    run(go())
