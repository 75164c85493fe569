"""One proxied request, every route: the stages, written once, in order.

Read top to bottom; each stage and where it lives:

 1. admit         ``App._http`` (ferrule.app): route, Host/Origin/type (``routes.common``), load
 2. authorize     ``App._authorize``: the access key, or a virtual key (``keys.gate``)
 3. read body     ``RequestContext.read_json`` (routes.common): bounded; a large one in a thread
 4. parse         ``Dialect.prepare`` (routes/chat.py, messages.py, responses.py), :func:`translate`
 5. quota         ``Exchange.admit`` (ferrule.exchange, ferrule.quota): limits and budget, a 429
 6. restore       ``Dialect.restore``: a tool turn's thinking blocks (chat, ferrule.thinking)
 7. compress      ``Exchange.compress`` (ferrule.compression)
 8. cache lookup  ``Exchange.lookup`` (ferrule.cache); a hit is answered by ``Dialect.hit``
 9. breakpoints   ``Exchange.payload`` (ferrule.breakpoints): the bytes that go upstream
10. upstream      ``upstream_pool.send`` or ``Services.resilience.send`` (ferrule.resilience),
                  through the worker's engine: native (``upstream_native``, hyper in the
                  extension) or aiohttp (``upstream``); ``upstream_native.open_upstream`` picks
11. relay         :func:`_json` (``Dialect.translate_answer``: one native call; else
                  ``Dialect.answer``) or :func:`_stream` (``Dialect.relay``)
12. store         ``Exchange.store`` (response cache), ``Dialect.finished`` (thinking, Responses)
13. account       ``Exchange.close``: quota settled, ledger row (ferrule.ledger), live feed

Stages 1-3 are ``ferrule.app``'s; :func:`run` does the rest. On the chat route, stages 4 and
6-9 are usually one native call (``ChatRequests`` in ``ferrule.backend``, from
``ChatDialect.prepare``): the client's bytes to the upstream bytes, translated, compressed and
marked, when no stage needs the request as objects (``ChatDialect._native`` says when); the
``Prepared`` then carries the payload and the facts, and :func:`_stages` is skipped. A route is a *dialect* (a
``Dialect`` in ``ferrule.routes``): how its request becomes an Anthropic request, and how
Anthropic's answers, stream events and errors become its own. The pipeline never asks which
route it runs.

Every stage gets the worker's ``Services`` (``ferrule.services``: config, upstream, resilience,
stores, recorder, metrics), never the ``App``. The accounting record is written once, by
``Exchange`` (a context manager), however the request ends: answered, failed, cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import orjson

from . import upstream_pool
from .asgi import ClientGone, Send, body_now, header, send_bytes
from .cache import Decision, MessageAccumulator, hit_usage, storable_json
from .compression import CompressionResult
from .errors import ProxyError
from .exchange import Exchange, usage_from_counts
from .largebody import prepare
from .pricing import Usage
from .routes.common import (
    SSE_HEADERS,
    RequestContext,
    held_secrets,
    read_all,
    redact,
    redact_bytes,
    upstream_error,
    upstream_headers,
)
from .upstream import UpstreamError, UpstreamResponse, UpstreamTimeout

if TYPE_CHECKING:
    from .services import Services

__all__ = ["STREAM_ERROR_STATUS", "Dialect", "KernelRelay", "Prepared", "Relay", "run"]


@dataclass(slots=True)
class Prepared:
    """A request translated for Anthropic, and what the stages need to know about it."""

    body: dict[str, Any]  # the Anthropic request (compressed and marked in place)
    model: str  # for the ledger
    stream: bool
    path: str = "/v1/messages"  # upstream path
    faithful: bytes | None = None  # the client's own bytes, sent when nothing was changed
    cacheable: bool = True  # compression, response cache and breakpoints apply
    openai_errors: bool = True  # upstream errors in OpenAI's shape (529 -> 503)
    anthropic_version: str | None = None  # the client's, on Anthropic routes
    keep_message: bool = False  # rebuild a streamed answer for the dialect's finished()
    state: Any = None  # the dialect's own facts (e.g. the chat translation)
    # The native request path (``ChatRequests``): the dialect made the upstream bytes in one
    # call (translated, compressed, with breakpoints). ``body`` is then empty: restore,
    # compress, lookup and payload are done, and the facts they would have read are here.
    payload: bytes | None = None
    compression: CompressionResult | None = None
    decision: Decision | None = None  # the cache decision (not to use it), when a store is on
    max_tokens: Any = None  # the translated request's, for the quota (native path)


class Relay(Protocol):
    """A stream's translation, chunk by chunk, in the dialect's own events."""

    @property
    def lazy_start(self) -> bool:
        """The response starts with the first bytes out (an upstream error event that comes
        first is then an HTTP error); else at once."""
        ...

    @property
    def stop(self) -> bool:
        """No more upstream bytes are wanted."""
        ...

    @property
    def usage(self) -> tuple[int, int, int, int, int, int]: ...

    @property
    def complete(self) -> bool: ...

    def headers(self) -> list[tuple[bytes, bytes]]: ...

    def feed(self, chunk: bytes) -> bytes: ...

    def early_error(self) -> ProxyError | None:
        """An upstream error event that came before any byte went out, as an HTTP error."""
        ...

    def finish(self) -> bytes:
        """The end of a stream that was not failed: the rest, or an error if it is cut short."""
        ...

    def fail(self, message: str, etype: str) -> bytes:
        """The end of a stream Ferrule stops (upstream connection lost, deadline)."""
        ...

    def outcome(self) -> str | None:
        """The ledger outcome when the stream did not complete."""
        ...


class Dialect(Protocol):
    route: str  # the ledger's route name

    async def prepare(self, svc: Services, ctx: RequestContext, body: Any) -> Prepared: ...

    async def restore(self, svc: Services, ctx: RequestContext, ex: Exchange, p: Prepared) -> None:
        """State the client cannot send (thinking blocks, a previous response), put back."""
        ...

    def hit(
        self, p: Prepared, message: dict[str, Any], ctx: RequestContext
    ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
        """A cached Anthropic message as this route's answer: (body, content type, headers)."""
        ...

    def answer(self, p: Prepared, raw: bytes, message: dict[str, Any] | None) -> bytes:
        """A whole Anthropic answer (None: not a JSON object) as this route's JSON."""
        ...

    def translate_answer(
        self, svc: Services, ex: Exchange, p: Prepared, raw: bytes
    ) -> tuple[bytes, tuple[int, int, int, int, int, int]] | None:
        """A whole Anthropic answer as this route's JSON and its usage counts in one call (the
        native kernel parses, translates and writes it), when nothing else of the message is
        needed (``finished`` would do nothing with it); None sends it down ``answer``'s path."""
        ...

    def relay(self, svc: Services, ctx: RequestContext, p: Prepared) -> Relay: ...

    def answer_headers(
        self, p: Prepared, resp: UpstreamResponse, ctx: RequestContext
    ) -> list[tuple[bytes, bytes]]: ...

    async def finished(self, svc: Services, ex: Exchange, p: Prepared, message: Any) -> None:
        """A complete answer (JSON, stream or cache hit) went out."""
        ...


async def run(svc: Services, ctx: RequestContext, dialect: Dialect, body: Any, send: Send) -> None:
    """The stages after admission, for any dialect."""
    key = ctx.require_key()
    p = await dialect.prepare(svc, ctx, body)  # parse + translate
    with Exchange(svc, ctx, dialect.route, p.model, p.stream) as ex:
        # a virtual key's limits and budget (ferrule.quota): a 429 before any other work;
        # count_tokens costs nothing, so only its requests are counted
        max_tokens = p.max_tokens if p.payload is not None else p.body.get("max_tokens")
        await ex.admit(max_tokens, rpm_only=dialect.route == "/v1/messages/count_tokens")
        if p.payload is not None:
            # stages 6-9 were the dialect's one native call
            if p.compression is not None:
                ex.compressed(p.compression)
            ex.decided(p.decision)
            ctx.prepared()
            payload = p.payload
        else:
            staged = await _stages(svc, ctx, ex, dialect, p, send)
            if staged is None:
                return  # answered from the response cache
            payload = staged
        version = p.anthropic_version or svc.cfg.anthropic_version
        # the operator's key goes upstream (operator mode, or keys mode: a virtual key)
        operator = ctx.operator or ctx.vkey is not None
        pool = upstream_pool.of(svc) if operator else None
        if await ctx.client_gone():
            # The client closed while the request waited its turn: the upstream never gets it
            # (the native engine sends within this loop turn, before the watcher's cancellation
            # could land).
            raise ClientGone
        # ctx.attempts is kept by send (right even when every attempt failed)
        if pool is not None:  # [[upstream_keys]]: a member chosen by prompt-prefix affinity
            resp = await upstream_pool.send(
                svc, pool, ctx, ex.record, p.body, p.path, payload, version
            )
        else:
            up_headers = upstream_headers(ctx.scope, key, version)
            resp = await svc.resilience.send(svc.upstream, p.path, payload, up_headers, ctx)
        try:
            ctx.upstream_request_id = resp.headers.get("request-id")
            # for an error answered before the usage is known: the saved figure alone (before
            # and after need the prompt's size); the answer's own headers say it all
            ctx.extra_headers = [*ex.quota_headers, *await ex.compression_headers(None)]
            if resp.status_code != 200:
                secrets = held_secrets(ctx, svc.cfg.upstream_api_key)
                raise await upstream_error(resp, openai=p.openai_errors, secrets=secrets)
            if p.stream:
                await _stream(svc, ctx, ex, dialect, p, resp, send)
            else:
                await _json(svc, ctx, ex, dialect, p, resp, send)
        finally:
            await resp.aclose()


async def _stages(
    svc: Services, ctx: RequestContext, ex: Exchange, dialect: Dialect, p: Prepared, send: Send
) -> bytes | None:
    """Stages 6-9 one by one: restore, compress, cache lookup, breakpoints. The upstream bytes,
    or None when a cached answer was sent."""
    await dialect.restore(svc, ctx, ex, p)
    if not p.cacheable:
        ctx.prepared()
        return p.faithful if p.faithful is not None else orjson.dumps(p.body)
    await ex.compress(p.body)
    changed = ex.compression is not None and ex.compression.changed > 0
    cached = await ex.lookup(p.body)
    if cached is not None:
        ex.set_usage(Usage.from_anthropic(hit_usage(cached)))
        headers = await ex.compression_headers(ex.prompt_tokens())
        ctx.extra_headers = [*ex.quota_headers, *headers]
        out, ctype, headers = dialect.hit(p, cached, ctx)
        ex.first_byte()
        await send_bytes(send, 200, out, ctype, headers)
        await dialect.finished(svc, ex, p, cached)
        return None
    return await ex.payload(p.body, None if changed else p.faithful)


async def _json(
    svc: Services,
    ctx: RequestContext,
    ex: Exchange,
    dialect: Dialect,
    p: Prepared,
    resp: UpstreamResponse,
    send: Send,
) -> None:
    # Read whole (and bounded) before answering, so that an answer cut off or too large is a
    # clean 502 rather than a 200 with half a document.
    raw = await read_all(resp, svc.cfg.max_response_bytes)
    # One native call when the answer is only to be translated (no response cache to store it
    # in, nothing for ``finished`` to keep): no Python objects are made for the message.
    fast = dialect.translate_answer(svc, ex, p, raw) if p.cacheable and not ex.storing else None
    if fast is not None:
        out, counts = fast
        ex.set_usage(usage_from_counts(counts))
        ctx.extra_headers = [*ex.quota_headers, *await ex.compression_headers(ex.prompt_tokens())]
    else:
        message: dict[str, Any] | None = None
        if p.cacheable:
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = None
            message = parsed if isinstance(parsed, dict) else None
            usage = message.get("usage") if message is not None else None
            ex.set_usage(
                Usage.from_anthropic(usage if isinstance(usage, dict) else None),
                estimated=message is None,
            )
            headers = await ex.compression_headers(ex.prompt_tokens())
            ctx.extra_headers = [*ex.quota_headers, *headers]
        out = dialect.answer(p, raw, message)  # a dialect that needs the message raises a 502
        if message is not None:
            # before answering, so that a client's immediate next request already finds them
            if ex.storing:
                await ex.store(storable_json(raw))
            await dialect.finished(svc, ex, p, message)
    headers = dialect.answer_headers(p, resp, ctx)
    if not any(k == b"content-type" for k, _ in headers):
        headers.insert(0, (b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(out)).encode()))
    ex.first_byte()
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out, "more_body": False})


async def _stream(
    svc: Services,
    ctx: RequestContext,
    ex: Exchange,
    dialect: Dialect,
    p: Prepared,
    resp: UpstreamResponse,
    send: Send,
) -> None:
    relay = dialect.relay(svc, ctx, p)
    # The whole answer is rebuilt only when it is stored or the dialect needs it.
    accumulator = MessageAccumulator() if ex.storing or p.keep_message else None
    started = False

    async def start() -> None:
        nonlocal started
        # the prompt's size from message_start's usage (a lazy relay starts after it)
        uncached, created, read = relay.usage[:3]
        prompt = uncached + created + read or None
        ctx.extra_headers = [*ex.quota_headers, *await ex.compression_headers(prompt)]
        ex.first_byte()
        headers = [*relay.headers(), *dialect.answer_headers(p, resp, ctx)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        started = True

    if not relay.lazy_start:
        await start()
    deadline_s = svc.cfg.stream_deadline
    deadline = time.monotonic() + deadline_s
    tail: bytes | None = None
    halt = False  # the relay is done, or the stream ran past its deadline: read no more
    now = ctx.body_now or body_now(send)

    async def begin(out: bytes) -> None:
        err = relay.early_error()
        if err is not None:
            raise err
        await start()
        await send({"type": "http.response.body", "body": out, "more_body": True})

    def step(chunk: bytes) -> Literal[True] | Awaitable[None] | None:
        # Called for each piece of the upstream body, once the response is started from the
        # engine's wake-up itself (upstream_native): a send that cannot finish at once is
        # handed back to be awaited in this task.
        nonlocal tail, halt
        then: Awaitable[None] | None = None
        if chunk:
            if accumulator is not None and not relay.complete:
                accumulator.feed(chunk)
            out = relay.feed(chunk)
            if relay.stop:
                halt = True
            elif time.monotonic() > deadline:
                ctx.outcome = "error"
                tail = relay.fail(
                    f"the stream ran past Ferrule's stream deadline ({deadline_s:.0f} s)",
                    "timeout_error",
                )
                halt = True
            if out:
                if not started:
                    return begin(out)  # the step is asked again (no bytes) after it
                then = now(out)
        return True if halt and then is None else then

    try:
        await resp.pump(step)
    except asyncio.CancelledError:
        # the client went away: what the stream had reported so far, as an estimate
        ex.set_usage(usage_from_counts(relay.usage), estimated=True)
        raise
    except UpstreamError as exc:
        if not started:
            raise ProxyError(
                504 if isinstance(exc, UpstreamTimeout) else 502,
                f"the upstream stream failed: {type(exc).__name__}",
            ) from None
        ctx.outcome = "upstream_error"
        tail = relay.fail(
            f"the upstream connection failed mid-stream ({type(exc).__name__})", "api_error"
        )
    if tail is None:
        tail = relay.finish()
    outcome = relay.outcome()
    if outcome is not None and ctx.outcome == "complete":
        ctx.outcome = outcome
    ex.set_usage(usage_from_counts(relay.usage), estimated=not relay.complete)
    if accumulator is not None and relay.complete and accumulator.complete:
        # before the last bytes go out, so that a client's next request already finds them
        await ex.store(accumulator.storable())
        if p.keep_message:
            await dialect.finished(svc, ex, p, accumulator.message())
    if not started:
        err = relay.early_error()
        if err is not None:
            raise err
        await start()
    await send({"type": "http.response.body", "body": tail, "more_body": False})


# Anthropic error types that can arrive as the first event of a 200 stream, and the HTTP status
# they get when no byte has reached the client yet.
STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 502,
    "overloaded_error": 503,
}


class Kernel(Protocol):
    """A stream translation kernel (``StreamTranslator``, ``ResponsesStreamEncoder``)."""

    started: bool
    done: bool
    outcome: str
    error: tuple[str, str] | None

    @property
    def usage(self) -> tuple[int, int, int, int, int, int]: ...

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class KernelRelay:
    """A relay whose events a kernel translates. It starts lazily: an upstream error event that
    comes before any output is answered as an HTTP error in the route's own shape; an error event
    the kernel relays may quote a key Ferrule holds, so it is redacted."""

    __slots__ = ("_fail", "_kernel", "_secrets", "complete", "lazy_start", "stop")

    def __init__(
        self,
        kernel: Kernel,
        *,
        secrets: tuple[str, ...],
        fail: Callable[[str, str], bytes],
    ) -> None:
        self._kernel = kernel
        self._secrets = secrets
        self._fail = fail
        self.lazy_start = True
        self.stop = False
        self.complete = False

    @property
    def usage(self) -> tuple[int, int, int, int, int, int]:
        return self._kernel.usage

    def headers(self) -> list[tuple[bytes, bytes]]:
        return list(SSE_HEADERS)

    def feed(self, chunk: bytes) -> bytes:
        k = self._kernel
        out = k.feed(chunk)
        if k.done:
            self.stop = True
            self.complete = k.outcome == "complete"
            if k.error is not None:
                out = redact_bytes(out, self._secrets)
        return out

    def early_error(self) -> ProxyError | None:
        k = self._kernel
        if k.started or k.error is None:
            return None
        etype, message = (redact(part, self._secrets) for part in k.error)
        return ProxyError(STREAM_ERROR_STATUS.get(etype, 502), message, type=etype)

    def finish(self) -> bytes:
        k = self._kernel
        out = k.finish()  # an error unless the message completed (nothing once done)
        self.complete = k.outcome == "complete"
        return out

    def fail(self, message: str, etype: str) -> bytes:
        self.complete = False
        return self._fail(message, etype)

    def outcome(self) -> str | None:
        oc = self._kernel.outcome
        if oc in ("complete", "streaming"):
            return None
        # an in-stream error event, a truncated or garbled stream
        return "truncated" if oc == "truncated" else "upstream_error"


class _Translation(Protocol):
    @property
    def body(self) -> dict[str, Any]: ...

    @property
    def warnings(self) -> tuple[str, ...]: ...


T = TypeVar("T", bound=_Translation)


async def translate(
    svc: Services, ctx: RequestContext, to_anthropic: Callable[..., T], body: Any, **extra: Any
) -> T:
    """The translate stage of an OpenAI-shaped dialect: the config's aliases, API version and
    strictness; off the loop for a large body; warnings to the response; the translated body
    kept for the large-body bookkeeping."""
    tr = await prepare(
        ctx.large,
        to_anthropic,
        body,
        aliases=svc.cfg.model_aliases,
        version=svc.cfg.anthropic_version,
        strict=svc.cfg.strict_params,
        **extra,
    )
    ctx.warnings.extend(tr.warnings)
    ctx.keep(tr.body)
    return tr


S = TypeVar("S")


def state_of(p: Prepared, kind: type[S]) -> S:
    """The dialect's own facts, typed."""
    assert isinstance(p.state, kind)
    return p.state


def anthropic_version_of(ctx: RequestContext) -> str | None:
    given = header(ctx.scope, b"anthropic-version")
    return given.decode("latin-1") if given else None
