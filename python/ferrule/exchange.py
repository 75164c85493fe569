"""One proxied request from arrival to its ledger row, shared by both routes.

An ``Exchange`` owns what every route does around the upstream call: the response-cache
decision, lookup and store; the prompt-cache breakpoints; and the accounting record, which is
written exactly once, in ``close()``, whatever happened (answered, failed, cancelled)."""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

from . import backend, jsonbody
from .asgi import ClientGone, header
from .breakpoints import place_breakpoints, place_breakpoints_json
from .cache import (
    Decision,
    StoreUnavailable,
    cache_key,
    decide,
    load_message,
)
from .compression import MODES, CompressionResult, compress_request
from .errors import ProxyError
from .keys.gate import model_allowed, model_refused
from .largebody import prepare
from .ledger import RequestRecord
from .pricing import Usage
from .tenant import tenant_id

if TYPE_CHECKING:
    from .quota import Ticket
    from .routes.common import RequestContext
    from .services import Services

__all__ = ["Exchange", "compression_mode", "usage_from_counts"]

log = logging.getLogger("ferrule.exchange")

# Rewritten blocks smaller than this (in all) have their tokens counted inline, not in a thread.
_INLINE_COUNT_BYTES = 16 * 1024
# Strings from the upstream that go into the ledger (an error type, a request id) are cut here.
_MAX_UPSTREAM_TEXT = 128


def usage_from_counts(counts: tuple[int, int, int, int, int, int]) -> Usage:
    """Usage from a kernel's ``usage`` tuple (``StreamTranslator.usage``, ``answer_to_openai``):
    what ``Usage.from_anthropic`` makes of the usage object the counts were read from (they are
    never negative), without building that object (every request)."""
    uncached, created, read, output, w5m, w1h = counts
    # the cache writes split by TTL; what the split does not cover is a 5-minute write
    return Usage(uncached, max(w5m, created - w1h), w1h, read, output)


def compression_mode(ctx: RequestContext, svc: Services) -> str | None:
    """The compression mode the request's ``x-ferrule-compression`` header, else the config,
    asks for; None when the header names no mode (a 400)."""
    given = header(ctx.scope, b"x-ferrule-compression")
    mode = given.decode("latin-1").strip().lower() if given else svc.cfg.compression
    return mode if mode in MODES else None


class Exchange:
    __slots__ = (
        "_closed",
        "_counts",
        "_key",
        "_open_stream",
        "_t0",
        "compression",
        "ctx",
        "decision",
        "quota",
        "record",
        "svc",
    )

    def __init__(
        self, svc: Services, ctx: RequestContext, route: str, model: str, stream: bool
    ) -> None:
        vkey = ctx.vkey  # keys mode: the model sent upstream must be one the key may use
        if vkey is not None and not model_allowed(vkey, model):
            raise model_refused(vkey, model)
        self.svc = svc
        self.ctx = ctx
        self._t0 = time.monotonic()
        self._closed = False
        self._open_stream = False
        self._key: str | None = None
        self.decision: Decision | None = None
        self.quota: Ticket | None = None  # what the virtual key's limits reserved
        self.compression: CompressionResult | None = None
        self._counts: asyncio.Future[int] | None = None  # tokens compression removed
        self.record = RequestRecord(
            request_id=ctx.request_id,
            route=route,
            model=model,
            tenant=tenant_id(source) if (source := ctx.tenant_source()) else None,
            stream=stream,
            backend=backend.NAME,
            key_name=vkey.name if vkey is not None else None,
        )
        svc.live.started(self.record)  # the dashboard's live feed: nothing unless a page watches

    # -- virtual key limits and budget (ferrule.quota) -----------------------------------------

    async def admit(self, max_tokens: Any, *, rpm_only: bool = False) -> None:
        """Reserve this request's share of its virtual key's limits and budget (a 429 when it
        does not fit); settled in ``close``. Nothing without a virtual key. ``max_tokens``: the
        translated request's."""
        if self.ctx.vkey is not None:
            self.quota = await self.svc.quota.admit(
                self.ctx, model=self.record.model, max_tokens=max_tokens, rpm_only=rpm_only
            )

    @property
    def quota_headers(self) -> list[tuple[bytes, bytes]]:
        return self.quota.headers if self.quota is not None else []

    # -- response cache -----------------------------------------------------------------------

    async def lookup(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The cached answer for this (already translated) request, or None. Sets x-cache."""
        store = self.svc.store
        if store is None or self.record.tenant is None:
            return None
        self.decision = decide(self.ctx.scope["headers"], body)
        self.ctx.x_cache = self.decision.upstream_x_cache
        self.record.cache_status = self.ctx.x_cache.lower()
        if not self.decision.uses_cache:
            return None
        beta = header(self.ctx.scope, b"anthropic-beta")
        try:
            self._key = await prepare(
                self.ctx.large,
                cache_key,
                tenant=self.record.tenant,
                route=self.record.route,
                body=body,
                anthropic_version=self._version(),
                betas=beta.decode("latin-1") if beta else None,
            )
        except orjson.JSONEncodeError as exc:
            raise _unencodable(exc) from None
        if not self.decision.read:
            return None
        try:
            value = await store.get(self._key)
        except StoreUnavailable:
            self._bypass()
            return None
        message = load_message(value) if value is not None else None
        if message is not None:
            self.ctx.x_cache = "HIT"
            self.record.cache_status = "hit"
        return message

    def decided(self, decision: Decision | None) -> None:
        """The cache decision the native request path made (``decide_for``) when it was not to
        use the cache: ``x-cache`` and the ledger say so, as ``lookup`` would."""
        if decision is None or self.svc.store is None or self.record.tenant is None:
            return
        self.decision = decision
        self.ctx.x_cache = decision.upstream_x_cache
        self.record.cache_status = self.ctx.x_cache.lower()

    @property
    def storing(self) -> bool:
        """Whether a complete answer to this request should be stored."""
        return self._key is not None and self.decision is not None and self.decision.store

    async def store(self, value: bytes | None) -> None:
        store = self.svc.store
        if value is None or store is None or not self.storing or self._key is None:
            return
        try:
            await store.set(self._key, value, self.svc.cfg.response_cache_ttl)
        except StoreUnavailable:
            log.info("response cache unavailable: answer not stored")

    def _bypass(self) -> None:
        self.ctx.x_cache = "BYPASS"
        self.record.cache_status = "bypass"
        self._key = None

    def _version(self) -> str:
        given = header(self.ctx.scope, b"anthropic-version")
        if self.ctx.route == "anthropic" and given:
            return given.decode("latin-1")
        return self.svc.cfg.anthropic_version

    # -- compression ----------------------------------------------------------------------------

    async def compress(self, body: dict[str, Any]) -> None:
        """Compress the translated request in place, in the mode the config or the request's
        ``x-ferrule-compression`` header asks for (in a thread for a large request)."""
        mode = compression_mode(self.ctx, self.svc)
        if mode is None:
            raise ProxyError(
                400,
                "x-ferrule-compression must be off, lossless or aggressive",
                param="x-ferrule-compression",
            )
        if mode == "off":
            return
        self.compressed(await prepare(self.ctx.large, compress_request, body, mode))

    def compressed(self, result: CompressionResult) -> None:
        """What compression did (here, or in the native request path). The tokens the rewrites
        removed are counted while the upstream works (in a thread when the rewritten blocks are
        large: tiktoken releases the GIL), and read when the response starts."""
        self.compression = result
        # Only the rewritten blocks are counted (the prompt's size comes from the upstream's
        # usage, exactly); nothing when nothing changed, which is most requests.
        if not result.changed:
            return
        if result.rewritten_bytes < _INLINE_COUNT_BYTES:
            # a few small blocks count faster than a hop to a thread and back (and are memoized)
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            done.set_result(result.count_saved())
            self._counts = done
        else:
            self._counts = asyncio.ensure_future(asyncio.to_thread(result.count_saved))

    async def _saved(self) -> int | None:
        """The tokens compression removed (None: not counted, logged)."""
        if self._counts is None:
            return 0
        try:
            saved = await self._counts
        except (TypeError, ValueError) as exc:  # a figure is not worth failing the request
            log.warning("request %s: tokens not counted (%s)", self.ctx.request_id, exc)
            self._counts = None
            return None
        self.record.compression_removed_tokens = saved
        return saved

    async def compression_headers(self, prompt_tokens: int | None) -> list[tuple[bytes, bytes]]:
        """x-ferrule-compression and the token figures for the response (and the ledger).

        ``prompt_tokens``: the prompt as Anthropic counted it (its usage: uncached input, cache
        writes and reads), which is the size after compression; before is that plus what the
        rewrites removed. None when the answer has not said yet (a stream's first bytes): the
        saved figure alone goes out."""
        if self.compression is None:
            return []
        saved = await self._saved()
        headers = [(b"x-ferrule-compression", self.compression.mode.encode())]
        if saved is None:
            return headers
        if prompt_tokens is not None:
            headers.append((b"x-ferrule-tokens-before", str(prompt_tokens + saved).encode()))
            headers.append((b"x-ferrule-tokens-after", str(prompt_tokens).encode()))
        headers.append((b"x-ferrule-tokens-saved", str(saved).encode()))
        return headers

    # -- prompt cache -------------------------------------------------------------------------

    def with_breakpoints(self, body: dict[str, Any]) -> dict[str, Any]:
        if not self.svc.cfg.prompt_cache:
            return body
        return place_breakpoints(body, ttl=self.svc.cfg.prompt_cache_ttl)

    async def payload(self, body: dict[str, Any], raw: bytes | None = None) -> bytes:
        """The bytes that go upstream: ``body`` with Ferrule's prompt-cache breakpoints, or
        ``raw`` (the client's own bytes, forwarded unchanged) when Ferrule adds none and ``raw``
        is given. A large request is prepared in a thread, in slices (ferrule.jsonbody), and
        its objects are then set aside from garbage collection (ferrule.largebody)."""
        try:
            return await prepare(self.ctx.large, self._payload, body, raw)
        except orjson.JSONEncodeError as exc:
            raise _unencodable(exc) from None
        finally:
            self.ctx.prepared()

    def _payload(self, body: dict[str, Any], raw: bytes | None) -> bytes:
        cfg = self.svc.cfg
        if cfg.prompt_cache:
            marked = place_breakpoints_json(body, ttl=cfg.prompt_cache_ttl)
            if marked is not None:
                return marked
        if raw is not None:
            return raw
        return jsonbody.dumps(body) if self.ctx.large else orjson.dumps(body)

    # -- accounting -----------------------------------------------------------------------------

    def first_byte(self) -> None:
        if self.record.ttfb_ms is None:
            self.record.ttfb_ms = (time.monotonic() - self._t0) * 1000.0
            if self.record.stream:
                self._open_stream = True
                self.svc.metrics.stream_opened()

    def set_usage(self, usage: Usage, *, estimated: bool = False) -> None:
        self.record.set_usage(usage)
        self.record.usage_estimated = estimated

    def prompt_tokens(self) -> int | None:
        """The prompt as the answer's usage counts it (uncached input, cache writes and reads);
        None when the usage is only an estimate or says nothing."""
        r = self.record
        if r.usage_estimated:
            return None
        n = r.input_tokens + r.cache_write_5m_tokens + r.cache_write_1h_tokens + r.cache_read_tokens
        return n or None

    def failed(self, err: ProxyError) -> None:
        # After the first byte the client already has its status: the row keeps it.
        if self.record.ttfb_ms is None:
            self.record.status = err.status
        self.record.error_type = err.type[:_MAX_UPSTREAM_TEXT] if err.type else err.type
        if self.record.outcome == "complete":
            self.record.outcome = "upstream_error" if err.status >= 500 else "error"

    def crashed(self) -> None:
        """An unexpected exception: the client gets a 500 from ``ferrule.app`` (or, after the
        first byte, an answer cut short), and the row says so rather than "complete"."""
        if self.record.ttfb_ms is None:
            self.record.status = 500
        self.record.error_type = "api_error"
        self.record.outcome = "error"

    def cancelled(self) -> None:
        self.record.outcome = "client_cancelled"
        self.record.status = 499  # nginx's "client closed request"

    def __enter__(self) -> Exchange:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """However the request ended, its ledger row is written, with how it ended."""
        if isinstance(exc, ProxyError):
            self.failed(exc)
        elif isinstance(exc, asyncio.CancelledError | ClientGone):
            self.cancelled()
        elif exc is not None:
            self.crashed()
        self.close()

    def close(self) -> None:
        """Write the ledger row (once)."""
        if self._closed:
            return
        self._closed = True
        if self._counts is not None:
            if (
                self._counts.done()
                and not self._counts.cancelled()
                and self._counts.exception() is None
            ):
                self.record.compression_removed_tokens = self._counts.result()
            else:
                self._counts.cancel()
        if self._open_stream:
            self.svc.metrics.stream_closed()
        rec = self.record
        rec.attempts = max(1, self.ctx.attempts) if rec.cache_status != "hit" else 0
        upstream_id = self.ctx.upstream_request_id
        rec.upstream_request_id = upstream_id[:_MAX_UPSTREAM_TEXT] if upstream_id else upstream_id
        rec.latency_ms = (time.monotonic() - self._t0) * 1000.0
        if rec.outcome == "complete" and self.ctx.outcome != "complete":
            rec.outcome = self.ctx.outcome
        if self.quota is not None:  # release, charge the exact cost, refund unused tokens
            self.svc.quota.settle(self.quota, rec)
        self.svc.recorder.record(rec)
        self.svc.live.finished(rec)  # one bounded deque append (ferrule.ui.live)


def _unencodable(exc: Exception) -> ProxyError:
    """orjson could not write the request back (nesting or an integer beyond what it encodes):
    the client's request is at fault, not Ferrule."""
    return ProxyError(400, f"the request cannot be encoded for the upstream: {exc}")
