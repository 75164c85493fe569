"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: the Anthropic-native route.

Byte-faithful: the client's body goes upstream unchanged and Anthropic's answer (JSON or SSE) comes
back unchanged, with ``request-id``, ``anthropic-ratelimit-*`` and ``retry-after``. Upstream errors
keep their status (529 stays 529 for Anthropic clients) in Anthropic's envelope; errors Ferrule
itself raises use the same envelope (rendered by ``ferrule.app``). A stream that fails after its
first byte ends with an Anthropic ``event: error``, the way the API itself reports one."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from ..asgi import Send, header
from ..errors import ProxyError
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
    version = header(ctx.scope, b"anthropic-version")
    headers = upstream_headers(
        ctx.scope, key, version.decode("latin-1") if version else app.cfg.anthropic_version
    )
    resp, ctx.attempts = await app.resilience.send(app.upstream, path, ctx.raw_body, headers)
    try:
        ctx.upstream_request_id = resp.headers.get("request-id")
        if resp.status_code != 200:
            raise await upstream_error(resp, openai=False)
        out_headers = [
            (k.lower(), v)
            for k, v in resp.headers.raw
            if k.lower() in _KEEP or PASSED_BACK.match(k.lower())
        ]
        out_headers.extend(ctx.response_headers())
        await send({"type": "http.response.start", "status": 200, "headers": out_headers})
        deadline = time.monotonic() + app.cfg.stream_deadline
        tail = b""
        try:
            async for chunk in resp.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if time.monotonic() > deadline:
                    ctx.outcome = "deadline"
                    tail = _error_event("the stream ran past Ferrule's stream deadline")
                    break
        except httpx.HTTPError as exc:
            ctx.outcome = "upstream_error"
            if body.get("stream") is True:
                tail = _error_event(f"the upstream connection failed ({type(exc).__name__})")
        await send({"type": "http.response.body", "body": tail, "more_body": False})
    finally:
        await resp.aclose()
