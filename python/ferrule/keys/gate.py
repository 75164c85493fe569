"""Keys mode in a worker: who may call the client routes, and with which key.

A caller presents a virtual key (``Authorization: Bearer`` or ``x-api-key``); it is hashed and
looked up by digest; the operator's key goes upstream. Lookups are cached per worker, and the
cache is checked against the store's change counter at most every ``REFRESH`` seconds (the
request that finds it stale waits for the check, so a revocation is never honoured later than
``REFRESH`` plus one query after it is committed). A request that finds the cache older than
half that (``REFRESH_AHEAD``) starts the check in the background and is answered from the
cache, so on a busy worker no request waits for one. With ``FERRULE_REDIS_URL`` set, a worker
also listens for change announcements and drops its cache at once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import fnmatch
import hmac
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from ..errors import ProxyError
from .model import VirtualKey
from .ops import CHANNEL, open_key_store
from .store import KEY_PREFIX, KeyStore, digest_of

if TYPE_CHECKING:
    from ..config import Config
    from ..routes.common import RequestContext

__all__ = [
    "REFRESH",
    "REFRESH_AHEAD",
    "KeyGate",
    "model_allowed",
    "model_refused",
    "refuse_ferrule_keys",
]

log = logging.getLogger("ferrule.keys")

REFRESH = 0.5  # seconds a worker trusts its cache without asking the store what changed
REFRESH_AHEAD = 0.5  # of REFRESH: after it, a request starts the check in the background
# While the store cannot be read (PostgreSQL restarting, a failover), keys this worker already
# checked keep working for this long after the last successful check, so an outage does not
# turn every agent away; a key not seen before is refused (503), never let in unchecked. Nothing
# can be revoked meanwhile (revoking writes to the same store), and a Redis announcement still
# drops the cache at once.
STALE_FOR = 300.0
_CACHE_MAX = 10_000  # digests remembered (unknown ones too); past it the cache starts over
_Entry = tuple[VirtualKey, float | None] | None


class _Ask(enum.Enum):
    ASK = "the cache cannot answer now: the store must be asked"


_ASK: Final = _Ask.ASK


def model_allowed(key: VirtualKey, model: str) -> bool:
    """Whether ``key`` may use ``model`` (the Anthropic id sent upstream): its globs, matched
    case-sensitively; no globs allows every model."""
    return not key.models or any(fnmatch.fnmatchcase(model, glob) for glob in key.models)


def model_refused(key: VirtualKey, model: str) -> ProxyError:
    return ProxyError(
        403,
        f"the virtual key {key.name!r} may not use the model {model!r}",
        type="permission_error",
        code="model_not_allowed",
    )


class KeyGate:
    """The worker's view of the key store: opened on first use (in a thread), cached."""

    def __init__(self, cfg: Config, data_dir: Path) -> None:
        self._cfg = cfg
        self._data_dir = data_dir
        self._store: KeyStore | None = None
        self._opening: asyncio.Future[KeyStore] | None = None
        self._cache: dict[str, _Entry] = {}
        self._counter = -1
        self._checked = -1e9  # monotonic time of the last change-counter check
        self._confirmed = -1e9  # ... and of the last one that reached the store
        self._stale = False  # serving from the cache while the store is unreachable
        self._check: asyncio.Future[None] | None = None
        self._listener: asyncio.Task[None] | None = None

    async def store(self) -> KeyStore:
        if self._store is not None:
            return self._store
        if self._opening is None:
            self._opening = asyncio.ensure_future(
                asyncio.to_thread(open_key_store, self._data_dir, self._cfg.database_url)
            )
            if self._cfg.redis_url and self._listener is None:
                self._listener = asyncio.ensure_future(self._listen(self._cfg.redis_url))
        try:
            self._store = await asyncio.shield(self._opening)
        except Exception as exc:
            self._opening = None
            raise _store_error(exc) from None
        return self._store

    async def admit(self, ctx: RequestContext) -> None:
        """Keys mode: the caller's virtual key opens the route; ``ctx.vkey`` is set and the
        operator's key replaces the caller's for the upstream call."""
        presented = ctx.api_key
        if not presented:
            raise _unauthorized(
                "no virtual key: send it as 'Authorization: Bearer <key>' or 'x-api-key'"
            )
        self._let_in(ctx, await self.find(presented))

    def admit_now(self, ctx: RequestContext) -> bool:
        """``admit`` without an await, when this worker's cache can answer now (nearly every
        request); False when the store must be asked first (then ``admit``)."""
        presented = ctx.api_key
        if not presented:
            return False
        got = self._find_now(digest_of(presented))
        if got is _ASK:
            return False
        self._let_in(ctx, got)
        return True

    def _let_in(self, ctx: RequestContext, key: VirtualKey | None) -> None:
        if key is None:
            raise _unauthorized("the virtual key is not valid (unknown, revoked or rotated out)")
        if key.expires_at is not None and time.time() >= key.expires_at:
            raise _unauthorized(f"the virtual key {key.name!r} expired at {_iso(key.expires_at)}")
        ctx.vkey = key
        ctx.api_key = self._cfg.upstream_api_key

    def _find_now(self, digest: str) -> VirtualKey | Literal[_Ask.ASK] | None:
        """``find`` from the cache alone, or ``_ASK``."""
        age = time.monotonic() - self._checked
        if age >= REFRESH:
            return _ASK
        if digest not in self._cache:
            return _ASK
        entry = self._cache[digest]
        if age >= REFRESH * REFRESH_AHEAD:
            self._refresh_in_background()
        return _active(entry)

    async def find(self, presented: str) -> VirtualKey | None:
        """The active key ``presented`` opens (expiry not checked), or None."""
        digest = digest_of(presented)
        got = self._find_now(digest)
        if got is not _ASK:
            return got
        if time.monotonic() - self._checked >= REFRESH:
            if self._stale and digest in self._cache:
                # The store is unreachable: a known key does not wait for yet another check
                # to time out; one runs in the background and ends the stale mode when it can.
                self._refresh_in_background()
            else:
                await self._refresh()
        if digest in self._cache:
            entry = self._cache[digest]
        else:
            store = await self.store()
            try:
                entry = await asyncio.to_thread(store.lookup, digest)
            except Exception as exc:  # fail closed: a key is never let in unchecked
                raise _store_error(exc) from None
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = entry
        return _active(entry)

    async def _refresh(self) -> None:
        """Every request waits for one shared check of the change counter."""
        if self._check is None:
            self._check = asyncio.ensure_future(self._read_counter())
        check = self._check
        try:
            await asyncio.shield(check)
        finally:
            if self._check is check and check.done():
                self._check = None

    def _refresh_in_background(self) -> None:
        if self._check is None:
            check = asyncio.ensure_future(self._read_counter())
            self._check = check

            def done(fut: asyncio.Future[None]) -> None:
                if self._check is fut:
                    self._check = None
                if not fut.cancelled():
                    fut.exception()  # seen: _read_counter logs what matters

            check.add_done_callback(done)

    async def _read_counter(self) -> None:
        store = await self.store()
        started = time.monotonic()
        try:
            counter = await asyncio.to_thread(store.changes)
        except Exception as exc:
            if self._counter < 0 or started - self._confirmed > STALE_FOR:
                raise _store_error(exc) from None
            if not self._stale:
                self._stale = True
                log.warning(
                    "key store unreachable (%s): keys already checked keep working for up to "
                    "%.0f s, new ones are refused",
                    type(exc).__name__,
                    STALE_FOR,
                )
            self._checked = started  # ask again after REFRESH, not on every request
            return
        if self._stale:
            self._stale = False
            log.warning("key store reachable again")
        self._confirmed = started
        if counter != self._counter:
            self._cache.clear()
            self._counter = counter
        self._checked = started

    def changed(self) -> None:
        """Something changed (an announcement, or this worker's own admin call)."""
        self._cache.clear()
        self._checked = -1e9

    async def _listen(self, url: str) -> None:
        """Redis announcements: drop the cache at once. Reconnects with back-off; while Redis
        is down the change counter still bounds staleness."""
        import redis.asyncio as aioredis

        delay = 0.5
        while True:
            client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
            try:
                pubsub = client.pubsub()
                await pubsub.subscribe(CHANNEL)
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.changed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "key announcements: Redis unavailable (%s); polling only", type(exc).__name__
                )
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
            self._store = None


def _active(entry: _Entry) -> VirtualKey | None:
    if entry is None:
        return None
    key, not_after = entry
    if not_after is not None and time.time() >= not_after:
        return None  # a rotated key whose grace period is over
    return key


def refuse_ferrule_keys(ctx: RequestContext, admin_sha256: str) -> None:
    """Passthrough mode: the caller's key goes upstream, so a virtual key (``fk-``) or the admin
    key sent by mistake would reach Anthropic. Refused here instead, with a hint."""
    key = ctx.api_key
    if not key:
        return
    if key.startswith(KEY_PREFIX):
        raise _unauthorized(
            "a Ferrule virtual key works only when Ferrule runs with FERRULE_AUTH=keys; "
            "in passthrough mode send your Anthropic key"
        )
    if admin_sha256 and hmac.compare_digest(digest_of(key), admin_sha256):
        raise _unauthorized("the admin key opens /admin/keys only, never the API routes")


def _store_error(exc: Exception) -> ProxyError:
    log.error("key store unavailable (%s: %s)", type(exc).__name__, exc)
    return ProxyError(
        503,
        "the key store is unavailable; retry shortly",
        type="overloaded_error",
        headers=[(b"retry-after", b"1")],
    )


def _unauthorized(message: str) -> ProxyError:
    return ProxyError(401, message, type="authentication_error", code="invalid_api_key")


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
