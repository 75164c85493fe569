"""The Redis response store: shared by every replica, and never a reason to stop serving.

Requires redis-py (``redis>=5``), imported only when this store is built.

Failing fast is the point. A cache lookup sits in front of every eligible request, so a dead or
slow Redis must cost milliseconds, not seconds:

- short socket and connect timeouts (100 ms by default), and a hard cap on each whole operation
  (``op_timeout``, 250 ms) that also covers waiting for a pooled connection;
- a bounded pool (``max_connections``): when every connection is busy a call waits at most
  ``pool_timeout`` for one instead of opening an unbounded number of sockets to a struggling
  server;
- no backoff between retries: a command is retried once, at once, which transparently replaces
  a connection Redis closed (a restart) and costs one more fast failure when Redis is down;
- a circuit breaker: after a failure every call raises :class:`StoreUnavailable` immediately for
  ``retry_after_s`` (1 s), then the next call tries Redis again. So with Redis down the proxy
  pays one timeout per second per worker, and when Redis comes back the store reconnects by
  itself within ``retry_after_s``.

Values are stored with ``SET key value PX ttl``: Redis expires them itself, and its own
``maxmemory`` policy bounds the memory (configure ``allkeys-lru`` or ``volatile-lru``).
Keys are namespaced (``ferrule:rc:`` + the cache key) so the database can be shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .stores import ResponseStore, StoreUnavailable

__all__ = ["RedisStore"]

T = TypeVar("T")

try:
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the environment
    _MISSING: ImportError | None = exc
else:
    _MISSING = None


class RedisStore(ResponseStore):
    """Redis-backed :class:`ResponseStore`; see the module docstring for the failure policy."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "ferrule:rc:",
        max_connections: int = 32,
        socket_timeout: float = 0.1,
        connect_timeout: float = 0.1,
        pool_timeout: float = 0.05,
        op_timeout: float = 0.25,
        retry_after_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if _MISSING is not None:
            raise RuntimeError(
                f"the redis response cache needs redis-py (pip install 'redis>=5'): {_MISSING}"
            )
        self.prefix = prefix
        self.op_timeout = op_timeout
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._down_until = 0.0
        self.last_error: str | None = None
        # NOTE: these connection settings must sit on the pool: a client built on an existing
        # pool does not pass its own retry or timeouts down to the pool's connections.
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 1),
            retry_on_timeout=False,
        )
        self._client = aioredis.Redis(connection_pool=self._pool)

    @property
    def available(self) -> bool:
        """False while the circuit breaker is open (a recent failure)."""
        return self._clock() >= self._down_until

    async def _run(self, op: Callable[[], Awaitable[T]]) -> T:
        if not self.available:
            raise StoreUnavailable(f"redis unavailable (recently failed: {self.last_error})")
        try:
            result = await asyncio.wait_for(op(), self.op_timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            await self._trip(exc)
            raise StoreUnavailable(f"redis: {self.last_error}") from exc
        self._down_until = 0.0
        return result

    async def _trip(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self._down_until = self._clock() + self.retry_after_s
        # Idle pooled sockets are likely dead too (a Redis restart closes them all): drop them
        # so the next attempt opens fresh connections instead of failing on each stale one.
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self._pool.disconnect(inuse_connections=False), 0.1)

    async def get(self, key: str) -> bytes | None:
        value = await self._run(lambda: self._client.get(self.prefix + key))
        if value is None:
            return None
        if isinstance(value, str):  # only if someone configured decode_responses
            return value.encode()
        return bytes(value)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        name = self.prefix + key
        if ttl_s <= 0:
            await self._run(lambda: self._client.delete(name))
            return
        px = max(1, int(ttl_s * 1000))
        await self._run(lambda: self._client.set(name, value, px=px))

    async def ping(self) -> bool:
        """One real round trip, bounded by ``op_timeout`` (ignores and updates the breaker)."""
        try:
            await asyncio.wait_for(self._client.ping(), self.op_timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            await self._trip(exc)
            return False
        self._down_until = 0.0
        return True

    async def close(self) -> None:
        try:
            await self._client.aclose()
        finally:
            await self._pool.disconnect()
