"""``POST /v1/chat/completions``: OpenAI in, Anthropic upstream, OpenAI out."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .. import backend
from .._pure.stream import StreamTranslator as StreamTranslatorT
from ..asgi import Send, send_bytes
from ..cache import MessageAccumulator, hit_usage, message_to_sse, storable_json
from ..errors import ProxyError, openai_error_body
from ..exchange import Exchange, usage_from_counts
from ..largebody import prepare
from ..models import capabilities, effort_rank
from ..pricing import Usage
from ..thinking import degrade
from ..translate.request import Translated, to_anthropic
from ..translate.response import to_openai
from ..upstream import UpstreamError, UpstreamResponse, UpstreamTimeout
from .common import (
    SSE_HEADERS,
    RequestContext,
    held_secrets,
    parse_json,
    read_all,
    redact,
    redact_bytes,
    upstream_error,
    upstream_headers,
)

if TYPE_CHECKING:
    from ..app import App

__all__ = ["chat_completions"]

# Anthropic error types that can arrive as the first event of a 200 stream, and the HTTP status
# they get when no byte has reached the client yet.
# translator outcome -> ledger outcome
_OUTCOMES = {"truncated": "truncated", "upstream_error": "upstream_error"}

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
    tr = await prepare(
        ctx.large,
        to_anthropic,
        body,
        aliases=app.cfg.model_aliases,
        version=app.cfg.anthropic_version,
        strict=app.cfg.strict_params,
    )
    ctx.warnings.extend(tr.warnings)
    ctx.keep(tr.body)
    with Exchange(app, ctx, "/v1/chat/completions", tr.body["model"], tr.stream) as ex:
        await _restore_thinking(app, ctx, ex, tr)
        await _answer(app, ctx, ex, tr, key, send)


async def _restore_thinking(app: App, ctx: RequestContext, ex: Exchange, tr: Translated) -> None:
    """Put a tool turn's thinking blocks back (OpenAI clients cannot send them); when the open
    tool loop's are gone, make the request one the API accepts and say so (ferrule.thinking)."""
    tenant = ex.record.tenant
    if (
        app.thinking is None
        or tenant is None
        or not any(m["role"] == "assistant" for m in tr.body["messages"])
    ):
        return
    restored = await app.thinking.restore(tenant, tr.body)
    if restored.loop_missing and tr.thinking:
        caps = capabilities(tr.body["model"])
        can_disable = caps is None or caps.thinking.accepts("disabled")
        warning = degrade(tr.body, can_disable=can_disable)
        if caps is not None and can_disable:
            cap = caps.thinking.disabled_max_effort
            cfg = tr.body.get("output_config")
            effort = cfg.get("effort") if isinstance(cfg, dict) else caps.effort_default
            if cap is not None and effort is not None and effort_rank(effort) > effort_rank(cap):
                tr.body.setdefault("output_config", {})["effort"] = cap
        if warning:
            ctx.warnings.append(warning)


async def _remember_thinking(app: App, ex: Exchange, message: Any) -> None:
    if app.thinking is not None and ex.record.tenant is not None:
        await app.thinking.remember(ex.record.tenant, message)


async def _answer(
    app: App, ctx: RequestContext, ex: Exchange, tr: Translated, key: str, send: Send
) -> None:
    created = int(time.time())
    translator = backend.StreamTranslator(
        tr.model,
        created,
        include_usage=tr.include_usage,
        json_tool=tr.json_tool,
        max_event_bytes=app.cfg.max_event_bytes,
    )
    await ex.compress(tr.body)
    cached = await ex.lookup(tr.body)
    if cached is not None:
        ctx.extra_headers = await ex.compression_headers()
        ex.set_usage(Usage.from_anthropic(hit_usage(cached)))
        await _remember_thinking(app, ex, cached)
        if tr.stream:
            replay = translator.feed(message_to_sse(cached)) + translator.finish()
            ex.first_byte()
            await send_bytes(
                send, 200, replay, SSE_HEADERS[0][1], [*SSE_HEADERS[1:], *ctx.response_headers()]
            )
        else:
            out = to_openai(cached, model=tr.model, created=created, json_tool=tr.json_tool)
            ex.first_byte()
            await send_bytes(send, 200, out, headers=ctx.response_headers())
        return
    payload = await ex.payload(tr.body)
    headers = upstream_headers(ctx.scope, key, app.cfg.anthropic_version)
    # ctx.attempts is kept by send (right even when every attempt failed)
    resp = await app.resilience.send(app.upstream, "/v1/messages", payload, headers, ctx)
    ctx.upstream_request_id = resp.headers.get("request-id")
    try:
        ctx.extra_headers = await ex.compression_headers()
        if resp.status_code != 200:
            raise await upstream_error(resp, secrets=held_secrets(ctx, app.cfg.upstream_api_key))
        if not tr.stream:
            raw = await read_all(resp, app.cfg.max_response_bytes)
            msg = parse_json(raw, "the upstream answer", status=502)
            if not isinstance(msg, dict):
                raise ProxyError(502, "the upstream sent an answer that is not a JSON object")
            ex.set_usage(Usage.from_anthropic(msg.get("usage")))
            await _remember_thinking(app, ex, msg)
            out = to_openai(msg, model=tr.model, created=created, json_tool=tr.json_tool)
            # Stored before answering, so a client's immediate repeat already finds it.
            if ex.storing:
                await ex.store(storable_json(raw))
            ex.first_byte()
            await send_bytes(send, 200, out, headers=ctx.response_headers())
            return
        # The whole answer is rebuilt only when it is stored, or when it may carry thinking
        # blocks that a later tool turn needs back.
        keep_thinking = tr.thinking and app.thinking is not None and "tools" in tr.body
        accumulator = MessageAccumulator() if ex.storing or keep_thinking else None
        try:
            await _stream(translator, resp, ctx, ex, send, app.cfg.stream_deadline, accumulator)
        finally:
            ex.set_usage(
                usage_from_counts(translator.usage), estimated=translator.outcome != "complete"
            )
        if accumulator is not None and translator.outcome == "complete" and accumulator.complete:
            if keep_thinking:
                await _remember_thinking(app, ex, accumulator.message())
            await ex.store(accumulator.storable())
    finally:
        await resp.aclose()


def _error_event(message: str, etype: str) -> bytes:
    """A terminal OpenAI stream error (the openai SDK raises it); never followed by [DONE]."""
    err = ProxyError(502, message, type=etype)
    return b"data: " + openai_error_body(err) + b"\n\n"


def _stream_error(error: tuple[str, str], ctx: RequestContext, ex: Exchange) -> ProxyError:
    """An upstream error event that came before any byte went out, as an HTTP error."""
    secrets = held_secrets(ctx, ex.app.cfg.upstream_api_key)
    etype, message = (redact(part, secrets) for part in error)
    return ProxyError(_STREAM_ERROR_STATUS.get(etype, 502), message, type=etype)


async def _stream(
    translator: StreamTranslatorT,
    resp: UpstreamResponse,
    ctx: RequestContext,
    ex: Exchange,
    send: Send,
    deadline_s: float,
    accumulator: MessageAccumulator | None,
) -> None:
    started = False
    deadline = time.monotonic() + deadline_s

    async def start() -> None:
        nonlocal started
        ex.first_byte()
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
            if accumulator is not None:
                accumulator.feed(chunk)
            out = translator.feed(chunk)
            if translator.done and translator.error is not None:  # it may quote a key we hold
                out = redact_bytes(out, held_secrets(ctx, ex.app.cfg.upstream_api_key))
            if out:
                if not started:
                    if not translator.started and translator.error is not None:
                        # An error event before any byte went out: answer with an HTTP error.
                        raise _stream_error(translator.error, ctx, ex)
                    await start()
                await send({"type": "http.response.body", "body": out, "more_body": True})
                out = b""
            if translator.done:
                break
            if time.monotonic() > deadline:
                ctx.outcome = "error"
                out = _error_event(
                    f"the stream ran past Ferrule's stream deadline ({deadline_s:.0f} s)",
                    "timeout_error",
                )
                break
        else:
            out = translator.finish()  # an error unless message_stop arrived
    except UpstreamError as exc:
        if not started:
            raise ProxyError(
                504 if isinstance(exc, UpstreamTimeout) else 502,
                f"the upstream stream failed: {type(exc).__name__}",
            ) from None
        ctx.outcome = "upstream_error"
        out = _error_event(
            f"the upstream connection failed mid-stream ({type(exc).__name__})", "api_error"
        )
    if translator.outcome not in ("complete", "streaming") and ctx.outcome == "complete":
        # an in-stream error event, a truncated or garbled stream
        ctx.outcome = _OUTCOMES.get(translator.outcome, "upstream_error")
    if not started:
        if translator.error is not None:
            raise _stream_error(translator.error, ctx, ex)
        await start()
    await send({"type": "http.response.body", "body": out, "more_body": False})
