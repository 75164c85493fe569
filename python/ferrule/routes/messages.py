"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: the Anthropic-native route.

Byte-faithful: the client's body goes upstream unchanged and Anthropic's answer (JSON or SSE) comes
back unchanged, with ``request-id``, ``anthropic-ratelimit-*`` and ``retry-after``. Upstream errors
keep their status (529 stays 529 for Anthropic clients) in Anthropic's envelope; errors Ferrule
itself raises use the same envelope (rendered by ``ferrule.app``). A stream that fails after its
first byte ends with an Anthropic ``event: error``, the way the API itself reports one."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import orjson

from .. import backend
from ..asgi import Send, header, send_bytes
from ..cache import MessageAccumulator, hit_usage, message_to_sse, storable_json
from ..errors import ProxyError
from ..exchange import Exchange, usage_from_counts
from ..pricing import Usage
from ..upstream import UpstreamError
from .common import PASSED_BACK, RequestContext, upstream_error, upstream_headers

if TYPE_CHECKING:
    from ..app import App

__all__ = ["count_tokens", "messages"]

# Response headers from Anthropic that an Anthropic client reads.
_KEEP = (b"content-type", b"request-id")


async def messages(app: App, ctx: RequestContext, body: Any, send: Send) -> None:
    await _pass_through(app, ctx, body, send, "/v1/messages")


async def count_tokens(app: App, ctx: RequestContext, body: Any, send: Send) -> None:
    await _pass_through(app, ctx, body, send, "/v1/messages/count_tokens")


def _error_event(message: str, etype: str = "api_error") -> bytes:
    data = orjson.dumps({"type": "error", "error": {"type": etype, "message": message}})
    return b"event: error\ndata: " + data + b"\n\n"


async def _pass_through(app: App, ctx: RequestContext, body: Any, send: Send, path: str) -> None:
    if not isinstance(body, dict):
        raise ProxyError(400, "the request body must be a JSON object")
    key = ctx.require_key()
    model = body.get("model")
    stream = body.get("stream") is True
    with Exchange(app, ctx, path, model if isinstance(model, str) else "", stream) as ex:
        if path == "/v1/messages":
            await _messages(app, ctx, ex, body, key, stream, send)
        else:
            await _forward(app, ctx, ex, path, ctx.raw_body, key, False, send, None)


async def _messages(
    app: App,
    ctx: RequestContext,
    ex: Exchange,
    body: dict[str, Any],
    key: str,
    stream: bool,
    send: Send,
) -> None:
    ex.compress(body)  # in place: the raw bytes no longer describe the body if it changed
    changed = ex.compression is not None and ex.compression.changed > 0
    cached = await ex.lookup(body)
    if cached is not None:
        ctx.extra_headers = await ex.compression_headers()
        ex.set_usage(Usage.from_anthropic(hit_usage(cached)))
        ex.first_byte()
        headers = [*ctx.response_headers(), (b"request-id", ctx.request_id.encode())]
        if stream:
            await send_bytes(send, 200, message_to_sse(cached), b"text/event-stream", headers)
        else:
            await send_bytes(send, 200, orjson.dumps(cached), headers=headers)
        return
    sent = ex.with_breakpoints(body)
    # Byte-faithful unless Ferrule changed something on purpose.
    payload = ctx.raw_body if sent == body and not changed else orjson.dumps(sent)
    await _forward(app, ctx, ex, "/v1/messages", payload, key, stream, send, body)


async def _forward(
    app: App,
    ctx: RequestContext,
    ex: Exchange,
    path: str,
    payload: bytes,
    key: str,
    stream: bool,
    send: Send,
    body: dict[str, Any] | None,
) -> None:
    version = header(ctx.scope, b"anthropic-version")
    headers = upstream_headers(
        ctx.scope, key, version.decode("latin-1") if version else app.cfg.anthropic_version
    )
    # ctx.attempts is kept by send (right even when every attempt failed)
    resp = await app.resilience.send(app.upstream, path, payload, headers, ctx)
    try:
        ctx.upstream_request_id = resp.headers.get("request-id")
        ctx.extra_headers = await ex.compression_headers()
        if resp.status_code != 200:
            raise await upstream_error(resp, openai=False)
        out_headers = [
            (k.lower(), v)
            for k, v in resp.raw_headers
            if k.lower() in _KEEP or PASSED_BACK.match(k.lower())
        ]
        out_headers.extend(ctx.response_headers())
        ex.first_byte()
        await send({"type": "http.response.start", "status": 200, "headers": out_headers})
        # The usage tap: the native translator reads the stream's usage and end state; its
        # OpenAI output is discarded. Only answers meant for the response cache are rebuilt.
        tap = backend.StreamTranslator("", 0) if stream else None
        accumulator = MessageAccumulator() if stream and body is not None and ex.storing else None
        whole: list[bytes] | None = [] if not stream else None
        deadline = time.monotonic() + app.cfg.stream_deadline
        tail = b""
        try:
            async for chunk in resp.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if tap is not None:
                    tap.feed(chunk)
                if accumulator is not None:
                    accumulator.feed(chunk)
                if whole is not None:
                    whole.append(chunk)
                if time.monotonic() > deadline:
                    ctx.outcome = "error"
                    tail = _error_event("the stream ran past Ferrule's stream deadline")
                    break
        except asyncio.CancelledError:
            # the client went away: record what the stream had reported so far, as an estimate
            if tap is not None:
                ex.set_usage(usage_from_counts(tap.usage), estimated=True)
            raise
        except UpstreamError as exc:
            ctx.outcome = "upstream_error"
            if stream:
                tail = _error_event(f"the upstream connection failed ({type(exc).__name__})")
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        if tap is not None:
            tap.finish()
            complete = tap.outcome == "complete"
            if not complete and ctx.outcome == "complete":
                ctx.outcome = "truncated" if tap.outcome == "truncated" else "upstream_error"
            ex.set_usage(usage_from_counts(tap.usage), estimated=not complete)
            if accumulator is not None and complete:
                await ex.store(accumulator.storable())
        elif whole is not None and path == "/v1/messages":
            raw = b"".join(whole)
            _usage_of_json(ex, raw)
            if ctx.outcome == "complete" and ex.storing:
                await ex.store(storable_json(raw))
    finally:
        await resp.aclose()


def _usage_of_json(ex: Exchange, raw: bytes) -> None:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        ex.set_usage(Usage(), estimated=True)
        return
    usage = msg.get("usage") if isinstance(msg, dict) else None
    ex.set_usage(Usage.from_anthropic(usage if isinstance(usage, dict) else None))
