"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: the Anthropic-native route.

Byte-faithful: the client's body goes upstream unchanged and Anthropic's answer (JSON or SSE) comes
back unchanged, with ``request-id``, ``anthropic-ratelimit-*`` and ``retry-after``. Errors that
Ferrule itself raises use Anthropic's error envelope (rendered by ``ferrule.app``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from ..asgi import Send, header
from ..errors import ProxyError
from .common import PASSED_BACK, RequestContext, upstream_headers

if TYPE_CHECKING:
    from ..app import App

__all__ = ["count_tokens", "messages"]

# Response headers from Anthropic that an Anthropic client reads.
_KEEP = (b"content-type", b"request-id")


async def messages(app: App, ctx: RequestContext, body: Any, send: Send) -> None:
    await _pass_through(app, ctx, body, send, "/v1/messages")


async def count_tokens(app: App, ctx: RequestContext, body: Any, send: Send) -> None:
    await _pass_through(app, ctx, body, send, "/v1/messages/count_tokens")


async def _pass_through(app: App, ctx: RequestContext, body: Any, send: Send, path: str) -> None:
    if not isinstance(body, dict):
        raise ProxyError(400, "the request body must be a JSON object")
    key = ctx.require_key()
    version = header(ctx.scope, b"anthropic-version")
    headers = upstream_headers(
        ctx.scope, key, version.decode("latin-1") if version else app.cfg.anthropic_version
    )
    resp = await app.upstream.send(path, ctx.raw_body, headers)
    try:
        ctx.upstream_request_id = resp.headers.get("request-id")
        out_headers = [
            (k.lower(), v)
            for k, v in resp.headers.raw
            if k.lower() in _KEEP or PASSED_BACK.match(k.lower())
        ]
        out_headers.append((b"x-request-id", ctx.request_id.encode()))
        await send(
            {"type": "http.response.start", "status": resp.status_code, "headers": out_headers}
        )
        try:
            async for chunk in resp.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError:
            pass  # headers are out: the client sees the stream end early (no message_stop)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await resp.aclose()
