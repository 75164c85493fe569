"""The Redis quota store: limits and budgets shared by every Ferrule process that uses the same
Redis (``FERRULE_REDIS_URL``). Each admission and settlement is one Lua script, so it is atomic
on the server, and it reads the *server's* clock (``TIME``): processes on hosts whose clocks
disagree still share one bucket. The scripts are ``store.decide`` and ``limiter.refund`` in
Lua, step for step.

Keys (one hash tag per virtual key, so a Redis Cluster keeps a key's state on one shard):
``ferrule:q:{NAME}:g`` (hash: rpm, tpm = GCRA arrival times in microseconds),
``ferrule:q:{NAME}:l`` (sorted set: lease id -> expiry), ``ferrule:q:{NAME}:r`` (hash: lease id
-> reserved nano-dollars, and ``__sum``), ``ferrule:q:{NAME}:s:PERIOD`` (spent nano-dollars).
Everything expires by itself once idle.

Failing fast: a connect timeout of 2 s (a Redis that is down refuses at once; a host that
does not answer costs 2 s), a bounded wait for
a busy one (an admission sits in front of the request, but a refused-for-nothing request is
worse than a slow one), and after a failure every call fails at once for ``retry_after_s``
before Redis is tried again; the engine then applies
``limits_on_redis_error`` / ``budgets_on_redis_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from .limiter import Gcra
from .store import AdmitRequest, AdmitResult, Settlement, StoreError

__all__ = ["RedisQuotaStore"]

try:
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the environment
    _MISSING: ImportError | None = exc
else:
    _MISSING = None

_MICRO = 1_000_000

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function fmt(x) return string.format('%.17g', x) end
local function gcra(iv, burst, tat, cost)
  local base = math.max(tat, now)
  local new_tat = base + cost * iv
  local allow_at = new_tat - math.max(burst, cost) * iv
  if now < allow_at then
    return 0, tat, allow_at - now, math.max(0, math.floor((now + burst * iv - base) / iv)),
      base - now
  end
  return 1, new_tat, 0, math.max(0, math.floor((now + burst * iv - new_tat) / iv)),
    new_tat - now
end
local reason = ''
local retry = 0
local rpm_iv, tpm_iv = tonumber(ARGV[1]), tonumber(ARGV[3])
local r_ok, r_tat, r_retry, r_rem, r_reset = 1, 0, 0, -1, 0
local t_ok, t_tat, t_retry, t_rem, t_reset = 1, 0, 0, -1, 0
local old_r = tonumber(redis.call('HGET', KEYS[1], 'rpm') or '0')
local old_t = tonumber(redis.call('HGET', KEYS[1], 'tpm') or '0')
if rpm_iv > 0 then
  r_ok, r_tat, r_retry, r_rem, r_reset = gcra(rpm_iv, tonumber(ARGV[2]), old_r, 1)
  if r_ok == 0 then reason = 'rpm'; retry = math.max(retry, r_retry) end
end
if tpm_iv > 0 then
  t_ok, t_tat, t_retry, t_rem, t_reset = gcra(tpm_iv, tonumber(ARGV[4]), old_t,
    tonumber(ARGV[5]))
  if t_ok == 0 then
    if reason == '' then reason = 'tpm' end
    retry = math.max(retry, t_retry)
  end
end
local lease = ARGV[9]
local in_flight, reserved, spent = 0, 0, 0
if lease ~= '' then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  if #expired > 0 then
    local amounts = redis.call('HMGET', KEYS[4], unpack(expired))
    local gone = 0
    for _, v in ipairs(amounts) do if v then gone = gone + tonumber(v) end end
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
    redis.call('HDEL', KEYS[4], unpack(expired))
    if gone ~= 0 then redis.call('HINCRBY', KEYS[4], '__sum', string.format('%d', -gone)) end
  end
  in_flight = redis.call('ZCARD', KEYS[3])
  reserved = tonumber(redis.call('HGET', KEYS[4], '__sum') or '0')
end
local budget = tonumber(ARGV[7])
if budget >= 0 then spent = tonumber(redis.call('GET', KEYS[2]) or '0') end
local parallel = tonumber(ARGV[6])
if reason == '' and parallel >= 0 and in_flight >= parallel then
  reason = 'parallel'; retry = 1000000
end
if reason == '' and budget >= 0 and spent + reserved + tonumber(ARGV[8]) > budget then
  reason = 'budget'
  local pe = tonumber(ARGV[11])
  if pe >= 0 then retry = math.max(0, pe - now) else retry = 0 end
end
if reason == '' then
  if rpm_iv > 0 then redis.call('HSET', KEYS[1], 'rpm', fmt(r_tat)); old_r = r_tat end
  if tpm_iv > 0 then redis.call('HSET', KEYS[1], 'tpm', fmt(t_tat)); old_t = t_tat end
  if rpm_iv > 0 or tpm_iv > 0 then
    local full = math.max(old_r, old_t) - now
    redis.call('PEXPIRE', KEYS[1], math.floor(math.max(full, 0) / 1000) + 120000)
  end
  if lease ~= '' then
    local ttl = tonumber(ARGV[10])
    redis.call('ZADD', KEYS[3], fmt(now + ttl), lease)
    redis.call('HSET', KEYS[4], lease, ARGV[8])
    redis.call('HINCRBY', KEYS[4], '__sum', ARGV[8])
    redis.call('PEXPIRE', KEYS[3], math.floor(ttl / 1000) + 60000)
    redis.call('PEXPIRE', KEYS[4], math.floor(ttl / 1000) + 60000)
  end
end
return {reason, fmt(retry), fmt(now), r_rem, fmt(r_reset), t_rem, fmt(t_reset), fmt(spent),
  fmt(reserved), fmt(r_tat), fmt(t_tat)}
"""

_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lease = ARGV[1]
if lease ~= '' then
  local amount = redis.call('HGET', KEYS[4], lease)
  if amount then
    redis.call('HDEL', KEYS[4], lease)
    redis.call('HINCRBY', KEYS[4], '__sum', string.format('%d', -tonumber(amount)))
  end
  redis.call('ZREM', KEYS[3], lease)
end
local iv, delta = tonumber(ARGV[2]), tonumber(ARGV[3])
if iv > 0 and delta ~= 0 then
  local tat = tonumber(redis.call('HGET', KEYS[1], 'tpm') or '0')
  if delta > 0 then tat = math.max(tat, now) + delta * iv
  else tat = math.max(now, tat + delta * iv) end
  redis.call('HSET', KEYS[1], 'tpm', string.format('%.17g', tat))
  redis.call('PEXPIRE', KEYS[1], math.floor(math.max(tat - now, 0) / 1000) + 120000)
end
if tonumber(ARGV[4]) > 0 then
  redis.call('INCRBY', KEYS[2], ARGV[4])
  local ttl = tonumber(ARGV[5])
  if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
end
return 1
"""

# A period's spend counter is kept this long after the period ended (``ferrule keys show``
# may still report last month's spend); "total" never expires.
_SPEND_KEEP_S = 40 * 86400


def _keys(name: str, period: str) -> list[str]:
    base = "ferrule:q:{" + name + "}:"
    return [base + "g", base + "s:" + (period or "-"), base + "l", base + "r"]


class RedisQuotaStore:
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 64,
        socket_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        pool_timeout: float = 2.0,
        op_timeout: float = 3.0,
        retry_after_s: float = 1.0,
    ) -> None:
        if _MISSING is not None:
            raise RuntimeError(
                f"quota in Redis needs redis-py (pip install 'redis>=5'): {_MISSING}"
            )
        self.op_timeout = op_timeout
        self.retry_after_s = retry_after_s
        self._down_until = 0.0
        self.last_error: str | None = None
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
        self._admit = self._client.register_script(_ADMIT)
        self._settle = self._client.register_script(_SETTLE)
        self._releases: set[asyncio.Task[None]] = set()

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if time.monotonic() < self._down_until:
            raise StoreError(f"redis unavailable (recently failed: {self.last_error})")
        try:
            result = await asyncio.wait_for(script(keys=keys, args=args), self.op_timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self.last_error = type(exc).__name__
            self._down_until = time.monotonic() + self.retry_after_s
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self._pool.disconnect(inuse_connections=False), 0.1)
            raise StoreError(f"redis: {self.last_error}") from exc
        self._down_until = 0.0
        return result

    async def admit(self, req: AdmitRequest) -> AdmitResult:
        """Shielded: a caller cancelled while its script runs may still have been admitted,
        and nobody would settle it (a parallel slot held until its lease expires); the
        script's answer is awaited regardless and such an admission released."""
        call = asyncio.ensure_future(self._admit_once(req))
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(lambda done: self._release_if_admitted(req, done))
            raise

    def _release_if_admitted(self, req: AdmitRequest, done: asyncio.Future[AdmitResult]) -> None:
        if done.cancelled() or done.exception() is not None or not done.result().allowed:
            return
        tokens = -req.tokens if req.tpm is not None else 0
        release = Settlement(
            req.key, req.lease_id, req.tpm, tokens, req.period, 0, req.reserve_nano
        )
        task = asyncio.ensure_future(self._release(release))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, s: Settlement) -> None:
        with contextlib.suppress(StoreError):  # the lease expires by itself
            await self.settle(s)

    async def _admit_once(self, req: AdmitRequest) -> AdmitResult:
        r = await self._run(
            self._admit,
            _keys(req.key, req.period),
            [
                req.rpm.interval_us if req.rpm else 0,
                req.rpm.burst if req.rpm else 0,
                req.tpm.interval_us if req.tpm else 0,
                req.tpm.burst if req.tpm else 0,
                req.tokens,
                req.max_parallel if req.max_parallel is not None else -1,
                req.budget_nano if req.budget_nano is not None else -1,
                req.reserve_nano,
                req.lease_id or "",
                int(req.lease_ttl_s * _MICRO),
                int(req.period_end * _MICRO) if req.period_end is not None else -1,
            ],
        )
        reason = r[0].decode() if isinstance(r[0], bytes) else str(r[0])
        retry, now = float(r[1]), float(r[2])
        rpm = tpm = None
        if req.rpm is not None:
            rpm = Gcra(reason != "rpm", float(r[9]), 0.0, int(r[3]), float(r[4]))
        if req.tpm is not None:
            tpm = Gcra(reason != "tpm", float(r[10]), 0.0, int(r[5]), float(r[6]))
        return AdmitResult(
            allowed=reason == "",
            reason=reason or None,
            retry_after_s=retry / _MICRO,
            now=now / _MICRO,
            rpm=rpm,
            tpm=tpm,
            spent_nano=int(float(r[7])),
            reserved_nano=int(float(r[8])),
            lease=req.lease_id if reason == "" else None,
        )

    async def settle(self, s: Settlement) -> None:
        ttl = 0
        if s.period and s.period != "total":
            ttl = _SPEND_KEEP_S
        await self._run(
            self._settle,
            _keys(s.key, s.period),
            [
                s.lease_id or "",
                s.tpm.interval_us if s.tpm else 0,
                s.token_delta,
                s.cost_nano,
                ttl,
            ],
        )

    async def spent(self, key: str, period: str) -> int:
        try:
            value = await asyncio.wait_for(self._client.get(_keys(key, period)[1]), self.op_timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise StoreError(f"redis: {type(exc).__name__}") from None
        return int(value) if value is not None else 0

    async def flush(self) -> None:
        # settlements are written at once; releases of cancelled admissions may be under way
        if self._releases:
            await asyncio.wait(set(self._releases), timeout=self.op_timeout)

    async def close(self) -> None:
        try:
            await self._client.aclose()
        finally:
            await self._pool.disconnect()
