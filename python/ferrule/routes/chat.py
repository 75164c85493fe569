"""``POST /v1/chat/completions``: OpenAI in, Anthropic upstream, OpenAI out."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from .. import backend
from .._pure.stream import StreamTranslator as StreamTranslatorT
from ..asgi import Send, send_bytes
from ..errors import ProxyError, openai_error_body
from ..translate.request import to_anthropic
from ..translate.response import to_openai
from .common import (
    SSE_HEADERS,
    RequestContext,
    parse_json,
    read_all,
    upstream_error,
    upstream_headers,
)

if TYPE_CHECKING:
    from ..app import App

__all__ = ["chat_completions"]

# Anthropic error types that can arrive as the first event of a 200 stream, and the HTTP status
# they get when no byte has reached the client yet.
_STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 502,
    "overloaded_error": 503,
}


async def chat_completions(app: App, ctx: RequestContext, body: Any, send: Send) -> None:
    key = ctx.require_key()
    tr = to_anthropic(body, aliases=app.cfg.model_aliases, version=app.cfg.anthropic_version)
    payload = orjson.dumps(tr.body)
    headers = upstream_headers(ctx.scope, key, app.cfg.anthropic_version)
    created = int(time.time())
    resp, ctx.attempts = await app.resilience.send(app.upstream, "/v1/messages", payload, headers)
    ctx.upstream_request_id = resp.headers.get("request-id")
    try:
        if resp.status_code != 200:
            raise await upstream_error(resp)
        if not tr.stream:
            raw = await read_all(resp)
            msg = parse_json(raw, "the upstream answer", status=502)
            if not isinstance(msg, dict):
                raise ProxyError(502, "the upstream sent an answer that is not a JSON object")
            out = to_openai(msg, model=tr.model, created=created, json_tool=tr.json_tool)
            await send_bytes(send, 200, out, headers=ctx.response_headers())
            return
        translator = backend.StreamTranslator(
            tr.model,
            created,
            include_usage=tr.include_usage,
            json_tool=tr.json_tool,
            max_event_bytes=app.cfg.max_event_bytes,
        )
        await _stream(translator, resp, ctx, send, app.cfg.stream_deadline)
    finally:
        await resp.aclose()


def _error_event(message: str, etype: str) -> bytes:
    """A terminal OpenAI stream error (the openai SDK raises it); never followed by [DONE]."""
    err = ProxyError(502, message, type=etype)
    return b"data: " + openai_error_body(err) + b"\n\n"


async def _stream(
    translator: StreamTranslatorT,
    resp: httpx.Response,
    ctx: RequestContext,
    send: Send,
    deadline_s: float,
) -> None:
    started = False
    deadline = time.monotonic() + deadline_s

    async def start() -> None:
        nonlocal started
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*SSE_HEADERS, *ctx.response_headers()],
            }
        )
        started = True

    out = b""
    try:
        async for chunk in resp.aiter_raw():
            out = translator.feed(chunk)
            if out:
                if not started:
                    if not translator.started and translator.error is not None:
                        # An error event before any byte went out: answer with an HTTP error.
                        etype, message = translator.error
                        raise ProxyError(_STREAM_ERROR_STATUS.get(etype, 502), message, type=etype)
                    await start()
                await send({"type": "http.response.body", "body": out, "more_body": True})
                out = b""
            if translator.done:
                break
            if time.monotonic() > deadline:
                ctx.outcome = "deadline"
                out = _error_event(
                    f"the stream ran past Ferrule's stream deadline ({deadline_s:.0f} s)",
                    "timeout_error",
                )
                break
        else:
            out = translator.finish()  # an error unless message_stop arrived
    except httpx.HTTPError as exc:
        if not started:
            raise ProxyError(
                504 if isinstance(exc, httpx.TimeoutException) else 502,
                f"the upstream stream failed: {type(exc).__name__}",
            ) from None
        ctx.outcome = "upstream_error"
        out = _error_event(
            f"the upstream connection failed mid-stream ({type(exc).__name__})", "api_error"
        )
    if not started:
        if translator.error is not None:
            etype, message = translator.error
            raise ProxyError(_STREAM_ERROR_STATUS.get(etype, 502), message, type=etype)
        await start()
    await send({"type": "http.response.body", "body": out, "more_body": False})
