"""``POST /v1/chat/completions``: the OpenAI Chat Completions dialect of the pipeline.

OpenAI in (``translate.request``), Anthropic upstream, OpenAI out (``translate.response`` for
JSON, the ``StreamTranslator`` kernel for streams); errors in OpenAI's shape, 529 as 503. Tool
turns' thinking blocks are kept and put back (``ferrule.thinking``): OpenAI clients never see
the signatures Anthropic wants back."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .. import _pure, backend
from ..asgi import Send
from ..cache import decide_for, message_to_sse
from ..compress_walk import FILE_TOOLS
from ..compression import CompressionResult
from ..config import Config
from ..errors import ProxyError, openai_error_body
from ..exchange import Exchange, compression_mode
from ..models import capabilities, effort_rank
from ..pipeline import KernelRelay, Prepared, run, state_of, translate
from ..tenant import tenant_id
from ..thinking import degrade
from ..translate.request import Translated, model_facts, to_anthropic
from ..translate.response import to_openai
from ..upstream import UpstreamResponse
from .common import SSE_HEADERS, RequestContext, held_secrets

if TYPE_CHECKING:
    from ..services import Services

__all__ = ["CHAT", "chat_completions"]


def _error_event(message: str, etype: str) -> bytes:
    """A terminal OpenAI stream error (the openai SDK raises it); never followed by [DONE]."""
    err = ProxyError(502, message, type=etype)
    return b"data: " + openai_error_body(err) + b"\n\n"


class _State:
    __slots__ = ("created", "tools", "tr")

    def __init__(self, tr: Translated, tools: bool) -> None:
        self.tr = tr
        self.tools = tools  # the Anthropic request offers tools
        self.created = int(time.time())


def _state(p: Prepared) -> _State:
    return state_of(p, _State)


class ChatDialect:
    route = "/v1/chat/completions"

    def __init__(self) -> None:
        self._requests: tuple[Config, _pure.ChatRequests] | None = None

    async def prepare(self, svc: Services, ctx: RequestContext, body: Any) -> Prepared:
        native = await self._native(svc, ctx)
        if native is not None:
            return native
        tr = await translate(svc, ctx, to_anthropic, ctx.parsed(body))
        tools = "tools" in tr.body
        return Prepared(
            body=tr.body,
            model=tr.body["model"],
            stream=tr.stream,
            keep_message=self._keep(svc, tr.thinking, tools),
            state=_State(tr, tools),
        )

    @staticmethod
    def _keep(svc: Services, thinking: bool, tools: bool) -> bool:
        """A streamed answer is rebuilt when it may carry thinking blocks a later tool turn
        needs back."""
        return thinking and svc.thinking is not None and tools

    async def _native(self, svc: Services, ctx: RequestContext) -> Prepared | None:
        """The request path in one native call (``ChatRequests``: translated, compressed, with
        breakpoints), when no later stage needs the request as objects: not a large body (the
        stages slice those), no thinking to put back into a tool turn (none kept for its tool
        calls, and no tool loop to degrade for a model that thinks by default), no upstream key
        pool (it picks a member by the prompt's prefix), no response cache to look in. None:
        the stages run one by one."""
        cfg = svc.cfg
        if ctx.large or cfg.upstream_keys:
            return None
        mode = compression_mode(ctx, svc)
        if mode is None:
            return None  # the compress stage answers the 400
        got = self._chat_requests(cfg).prepare(ctx.raw_body, mode)
        if got is None:
            return None
        payload, asked, model, stream, include_usage, thinking, max_tokens, tools = got[:8]
        temperature, rewrites, blocks, tool_turns = got[8:]
        tenant = ctx.tenant_source()
        # what _restore_thinking would do: nothing, unless thinking is kept for a tool turn, or
        # the model thinks and an open tool loop lacks it (``thinking.degrade``)
        if (
            svc.thinking is not None
            and tenant
            and tool_turns
            and (thinking or await svc.thinking.kept(tenant_id(tenant), tool_turns))
        ):
            return None
        decision = None
        if svc.store is not None and tenant:
            # ``cache.policy.is_deterministic`` of the request it made (no ``thinking`` in it)
            deterministic = temperature is not None and temperature == 0
            decision = decide_for(ctx.scope["headers"], False, deterministic)
            if decision.uses_cache:
                return None  # the lookup wants the request as objects
        compression = None
        if mode != "off":
            compression = CompressionResult(
                body=None, mode=mode, blocks=blocks, changed=len(rewrites), _rewrites=rewrites
            )
        tr = Translated(
            body={},
            model=asked,
            stream=stream,
            include_usage=include_usage,
            json_tool=None,
            thinking=thinking,
        )
        return Prepared(
            body={},
            model=model,
            stream=stream,
            keep_message=self._keep(svc, thinking, tools),
            state=_State(tr, tools),
            payload=payload,
            compression=compression,
            decision=decision,
            max_tokens=max_tokens,
        )

    def _chat_requests(self, cfg: Config) -> _pure.ChatRequests:
        made = self._requests
        if made is None or made[0] is not cfg:
            ttl = cfg.prompt_cache_ttl if cfg.prompt_cache else None
            requests = backend.ChatRequests(
                model_facts(cfg.model_aliases),
                aliases=cfg.model_aliases,
                version=cfg.anthropic_version,
                strict=cfg.strict_params,
                ttl=ttl,
                file_tools=FILE_TOOLS,
            )
            made = self._requests = (cfg, requests)
        return made[1]

    async def restore(self, svc: Services, ctx: RequestContext, ex: Exchange, p: Prepared) -> None:
        await _restore_thinking(svc, ctx, ex, _state(p).tr)

    def hit(
        self, p: Prepared, message: dict[str, Any], ctx: RequestContext
    ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
        st = _state(p)
        if p.stream:
            translator = backend.StreamTranslator(
                st.tr.model,
                st.created,
                include_usage=st.tr.include_usage,
                json_tool=st.tr.json_tool,
            )
            out = translator.feed(message_to_sse(message)) + translator.finish()
            return out, SSE_HEADERS[0][1], [*SSE_HEADERS[1:], *ctx.response_headers()]
        out = to_openai(message, model=st.tr.model, created=st.created, json_tool=st.tr.json_tool)
        return out, b"application/json", ctx.response_headers()

    def answer(self, p: Prepared, raw: bytes, message: dict[str, Any] | None) -> bytes:
        if message is None:
            raise ProxyError(502, "the upstream sent an answer that is not a JSON object")
        st = _state(p)
        return to_openai(message, model=st.tr.model, created=st.created, json_tool=st.tr.json_tool)

    def translate_answer(
        self, svc: Services, ex: Exchange, p: Prepared, raw: bytes
    ) -> tuple[bytes, tuple[int, int, int, int, int, int]] | None:
        st = _state(p)
        if svc.thinking is not None and ex.record.tenant is not None and st.tools:
            return None  # ``finished`` may keep this answer's thinking blocks: it needs them
        return backend.answer_to_openai(raw, st.tr.model, st.created, st.tr.json_tool)

    def relay(self, svc: Services, ctx: RequestContext, p: Prepared) -> KernelRelay:
        st = _state(p)
        translator = backend.StreamTranslator(
            st.tr.model,
            st.created,
            include_usage=st.tr.include_usage,
            json_tool=st.tr.json_tool,
            max_event_bytes=svc.cfg.max_event_bytes,
        )
        secrets = held_secrets(ctx, svc.cfg.upstream_api_key)
        return KernelRelay(translator, secrets=secrets, fail=_error_event)

    def answer_headers(
        self, p: Prepared, resp: UpstreamResponse, ctx: RequestContext
    ) -> list[tuple[bytes, bytes]]:
        return ctx.response_headers()

    async def finished(self, svc: Services, ex: Exchange, p: Prepared, message: Any) -> None:
        if svc.thinking is not None and ex.record.tenant is not None:
            await svc.thinking.remember(ex.record.tenant, message)


CHAT = ChatDialect()


async def chat_completions(svc: Services, ctx: RequestContext, body: Any, send: Send) -> None:
    await run(svc, ctx, CHAT, body, send)


async def _restore_thinking(
    svc: Services, ctx: RequestContext, ex: Exchange, tr: Translated
) -> None:
    """Put a tool turn's thinking blocks back (OpenAI clients cannot send them); when the open
    tool loop's are gone, make the request one the API accepts and say so (ferrule.thinking)."""
    tenant = ex.record.tenant
    if (
        svc.thinking is None
        or tenant is None
        or not any(m["role"] == "assistant" for m in tr.body["messages"])
    ):
        return
    restored = await svc.thinking.restore(tenant, tr.body, offload=ctx.large)
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
