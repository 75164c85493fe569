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
from ..largebody import prepare
from ..limits import check_anthropic_body
from ..pricing import Usage
from ..upstream import UpstreamError, UpstreamResponse
from .common import (
    PASSED_BACK,
    RequestContext,
    held_secrets,
    read_all,
    redact_bytes,
    upstream_error,
    upstream_headers,
)

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
    await prepare(ctx.large, check_anthropic_body, body, ctx.raw_body)  # model, ids, depth
    model = body.get("model")
    stream = body.get("stream") is True
    with Exchange(app, ctx, path, model if isinstance(model, str) else "", stream) as ex:
        if path == "/v1/messages":
            await _messages(app, ctx, ex, body, key, stream, send)
        else:
            ctx.prepared()
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
    await ex.compress(body)  # in place: the raw bytes no longer describe the body if it changed
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
    # Byte-faithful unless Ferrule changed something on purpose.
    payload = await ex.payload(body, None if changed else ctx.raw_body)
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
            secrets = held_secrets(ctx, app.cfg.upstream_api_key)
            raise await upstream_error(resp, openai=False, secrets=secrets)
        out_headers = [
            (k.lower(), v)
            for k, v in resp.raw_headers
            if k.lower() in _KEEP or PASSED_BACK.match(k.lower())
        ]
        out_headers.extend(ctx.response_headers())
        if not stream:
            # Read whole (and bounded) before answering, so that an answer cut off or too large
            # is a clean 502 rather than a 200 with half a JSON document.
            raw = await read_all(resp, app.cfg.max_response_bytes)
            if path == "/v1/messages":
                _usage_of_json(ex, raw)
                if ex.storing:  # before answering, so a client's immediate repeat finds it
                    await ex.store(storable_json(raw))
            out_headers.append((b"content-length", str(len(raw)).encode()))
            ex.first_byte()
            await send({"type": "http.response.start", "status": 200, "headers": out_headers})
            await send({"type": "http.response.body", "body": raw, "more_body": False})
            return
        ex.first_byte()
        await send({"type": "http.response.start", "status": 200, "headers": out_headers})
        await _relay(app, ctx, ex, resp, send, body)
    finally:
        await resp.aclose()


async def _relay(
    app: App,
    ctx: RequestContext,
    ex: Exchange,
    resp: UpstreamResponse,
    send: Send,
    body: dict[str, Any] | None,
) -> None:
    """Relay an Anthropic stream byte for byte, in whole events, and end it honestly.

    The usage tap (a StreamTranslator whose OpenAI output is discarded) reads usage and the end
    state, and enforces the per-event limit as on the OpenAI route. Bytes go out only up to the
    end of the last whole event: an event still arriving is held back, so that when the stream
    fails (cut off, an event over the limit, the deadline) the client never gets half an event
    glued to the ``event: error`` that ends it. Every way the stream can fail ends with exactly
    one error event: Anthropic's own, or Ferrule's."""
    cfg = app.cfg
    tap = backend.StreamTranslator("", 0, max_event_bytes=cfg.max_event_bytes)
    # Only answers meant for the response cache are rebuilt.
    accumulator = MessageAccumulator() if body is not None and ex.storing else None
    deadline = time.monotonic() + cfg.stream_deadline
    held = _Held()
    tail = b""
    try:
        async for chunk in resp.aiter_raw():
            if tap.done:
                # message_stop went out: pass on whatever follows (after what was held back) and
                # read to the end, so the upstream connection goes back to the pool
                if held.parts:
                    chunk = b"".join((*held.parts, chunk))
                    held.parts, held.size = [], 0
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if time.monotonic() > deadline:
                    break
                continue
            tap.feed(chunk)
            if accumulator is not None:
                accumulator.feed(chunk)
            if tap.done and tap.outcome != "complete":
                if tap.outcome == "upstream_error":
                    # Anthropic's own error event: it goes out (whole, no key in it), and ends
                    # the stream; nothing after it is read.
                    out = held.take(chunk)
                    secrets = held_secrets(ctx, cfg.upstream_api_key)
                    await send(
                        {
                            "type": "http.response.body",
                            "body": redact_bytes(out, secrets),
                            "more_body": True,
                        }
                    )
                break  # a stream the tap cannot read: this chunk is not relayed
            # Fast path: Anthropic's chunks usually end on an event boundary.
            out = chunk if not held.parts and chunk.endswith(b"\n\n") else held.take(chunk)
            if held.size > cfg.max_event_bytes:
                # an "event" of comment or field lines only, which the tap does not count
                ctx.outcome = "upstream_error"
                tail = _error_event(f"SSE event larger than {cfg.max_event_bytes} bytes")
                break
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
            if time.monotonic() > deadline:
                ctx.outcome = "error"
                tail = _error_event(
                    f"the stream ran past Ferrule's stream deadline ({cfg.stream_deadline:.0f} s)"
                )
                break
    except asyncio.CancelledError:
        # the client went away: record what the stream had reported so far, as an estimate
        ex.set_usage(usage_from_counts(tap.usage), estimated=True)
        raise
    except UpstreamError as exc:
        ctx.outcome = "upstream_error"
        tail = _error_event(f"the upstream connection failed mid-stream ({type(exc).__name__})")
    tap.finish()  # no-op once done: otherwise the stream ended before message_stop
    complete = tap.outcome == "complete"
    if complete:
        tail = b"".join(held.parts) + tail  # byte-faithful to the end
    elif not tail and tap.outcome != "upstream_error":
        # cut off before message_stop, or unreadable (an event over the limit): the client
        # must not take it for a finished answer (the OpenAI route does the same)
        etype, message = tap.error or ("api_error", "")
        if tap.outcome == "truncated":
            # NOTE: worded without the literal event name, so that a client searching the body
            # for "message_stop" (to tell a finished stream) is not misled
            message = "the upstream stream ended before the message was finished (truncated)"
        tail = _error_event(message, etype)
    if not complete and ctx.outcome == "complete":
        ctx.outcome = "truncated" if tap.outcome == "truncated" else "upstream_error"
    await send({"type": "http.response.body", "body": tail, "more_body": False})
    ex.set_usage(usage_from_counts(tap.usage), estimated=not complete)
    if accumulator is not None and complete:
        await ex.store(accumulator.storable())


class _Held:
    """The start of an event whose end has not arrived yet (bounded by the tap's event limit)."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def take(self, chunk: bytes) -> bytes:
        """The held bytes and ``chunk`` up to the end of the last whole event in them; the rest
        is held. An event ends with a blank line: two line ends in a row, which in any mix of
        CR, LF and CRLF always shows "\\n\\n", "\\r\\r" or "\\n\\r"."""
        cut = max(chunk.rfind(b"\n\n"), chunk.rfind(b"\r\r"), chunk.rfind(b"\n\r")) + 2
        if cut < 2:
            cut = 1 if self.parts and _straddles(self.parts[-1], chunk) else 0
        if not cut:
            self.parts.append(chunk)
            self.size += len(chunk)
            return b""
        out = b"".join((*self.parts, chunk[:cut])) if self.parts else chunk[:cut]
        rest = chunk[cut:]
        self.parts = [rest] if rest else []
        self.size = len(rest)
        return out


def _straddles(before: bytes, chunk: bytes) -> bool:
    """Whether a blank line spans the two chunks (one line end at each side; CR then LF is one
    line end, not two)."""
    last, first = before[-1:], chunk[:1]
    return last in (b"\n", b"\r") and first in (b"\n", b"\r") and (last, first) != (b"\r", b"\n")


def _usage_of_json(ex: Exchange, raw: bytes) -> None:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        ex.set_usage(Usage(), estimated=True)
        return
    usage = msg.get("usage") if isinstance(msg, dict) else None
    ex.set_usage(Usage.from_anthropic(usage if isinstance(usage, dict) else None))
