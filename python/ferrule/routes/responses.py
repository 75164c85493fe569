"""``POST /v1/responses``: the OpenAI Responses dialect of the pipeline, and its stored state.

Responses in (``translate.responses_request``), Anthropic upstream, Responses out
(``translate.responses_response`` for JSON, ``ResponsesStreamEncoder`` for streams: ``event:``
lines, increasing ``sequence_number``, one terminal event, no ``[DONE]``); errors in OpenAI's
shape. Claude's thinking travels in reasoning items' sealed ``encrypted_content``, so reasoning
with tools works across turns without server state.

State: with ``store`` (the default, as in OpenAI's API) the response and its input items are kept
per tenant, sealed, with a TTL, in a store of the response-cache family
(``ferrule.stored_responses``); ``previous_response_id``
rebuilds the conversation from them; ``GET`` / ``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items``. An unknown id, or another caller's, is a 404.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson

from .. import backend
from ..asgi import Send, send_bytes
from ..cache import message_to_sse
from ..errors import ProxyError
from ..exchange import Exchange
from ..pipeline import KernelRelay, Prepared, run, state_of, translate
from ..seal import Sealer
from ..stored_responses import RESPONSES_SQLITE_NAME, ResponseState
from ..tenant import tenant_id
from ..translate.responses_request import ResponsesTranslated, to_anthropic
from ..translate.responses_response import to_compacted, to_responses
from ..upstream import UpstreamResponse
from .common import SSE_HEADERS, RequestContext, held_secrets

if TYPE_CHECKING:
    from .._pure.responses_stream import ResponsesStreamEncoder
    from ..services import Services

__all__ = [
    "COMPACT",
    "RESPONSES",
    "RESPONSES_SQLITE_NAME",
    "ResponseState",
    "compact",
    "responses",
    "state_route",
]


def _new_id() -> str:
    return "resp_" + secrets.token_hex(24)


def _not_found(response_id: str) -> ProxyError:
    return ProxyError(
        404,
        f"Response with id '{response_id}' not found.",
        type="invalid_request_error",
        param="previous_response_id",
        code="response_not_found",
    )


class _State:
    __slots__ = ("created", "input", "response_id", "sealer", "tenant", "tr")

    def __init__(
        self, tr: ResponsesTranslated, sealer: Sealer, tenant: str, input_items: list[Any]
    ) -> None:
        self.tr = tr
        self.sealer = sealer
        self.tenant = tenant
        self.input = input_items
        self.response_id = _new_id()
        self.created = int(time.time())

    def encoder(self, max_event_bytes: int = 0) -> ResponsesStreamEncoder:
        """The stream encoder of the chosen backend (``FERRULE_BACKEND``)."""
        return backend.ResponsesStreamEncoder(
            self.tr,
            response_id=self.response_id,
            created_at=self.created,
            sealer=self.sealer,
            tenant=self.tenant,
            max_event_bytes=max_event_bytes,
        )

    def response(self, message: dict[str, Any]) -> dict[str, Any]:
        return to_responses(
            message,
            tr=self.tr,
            response_id=self.response_id,
            created_at=self.created,
            sealer=self.sealer,
            tenant=self.tenant,
        )


def _state(p: Prepared) -> _State:
    return state_of(p, _State)


class ResponsesDialect:
    route = "/v1/responses"

    async def prepare(self, svc: Services, ctx: RequestContext, body: Any) -> Prepared:
        if svc.sealer is None or svc.responses is None:
            raise ProxyError(503, "the Responses route is not ready", type="api_error")
        if not isinstance(body, dict):
            raise ProxyError(400, "the request body must be a JSON object")
        # In keys mode the tenant is the virtual key (every key goes upstream with the operator's
        # key): one key must not read another's stored responses or open its sealed items.
        tenant = tenant_id(ctx.tenant_source() or ctx.require_key())
        items = body.get("input")
        current = (
            [{"type": "message", "role": "user", "content": items}]
            if isinstance(items, str)
            else items
        )
        prev_id = body.get("previous_response_id")
        history: list[Any] = []
        if isinstance(prev_id, str) and prev_id:
            record = await svc.responses.load(tenant, prev_id)
            if record is None:
                raise _not_found(prev_id)
            history = [*record.get("input", []), *record["response"].get("output", [])]
            if isinstance(current, list):
                body = {**body, "input": [*history, *current]}
        tr = await translate(svc, ctx, to_anthropic, body, sealer=svc.sealer, tenant=tenant)
        conversation = [*history, *(current if isinstance(current, list) else [])]
        return Prepared(
            body=tr.body,
            model=tr.body["model"],
            stream=tr.stream,
            keep_message=tr.store,
            state=_State(tr, svc.sealer, tenant, conversation),
        )

    async def restore(self, svc: Services, ctx: RequestContext, ex: Exchange, p: Prepared) -> None:
        return None  # reasoning travels sealed in the client's own items

    def hit(
        self, p: Prepared, message: dict[str, Any], ctx: RequestContext
    ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
        st = _state(p)
        if p.stream:
            enc = st.encoder()
            out = enc.feed(message_to_sse(message)) + enc.finish()
            return out, SSE_HEADERS[0][1], [*SSE_HEADERS[1:], *ctx.response_headers()]
        return orjson.dumps(st.response(message)), b"application/json", ctx.response_headers()

    def answer(self, p: Prepared, raw: bytes, message: dict[str, Any] | None) -> bytes:
        if message is None:
            raise ProxyError(502, "the upstream sent an answer that is not a JSON object")
        return orjson.dumps(_state(p).response(message))

    def translate_answer(
        self, svc: Services, ex: Exchange, p: Prepared, raw: bytes
    ) -> tuple[bytes, tuple[int, int, int, int, int, int]] | None:
        return None  # the Responses translation is Python's (and ``finished`` may store it)

    def relay(self, svc: Services, ctx: RequestContext, p: Prepared) -> KernelRelay:
        enc = _state(p).encoder(svc.cfg.max_event_bytes)
        secrets = held_secrets(ctx, svc.cfg.upstream_api_key)
        # the encoder's own terminal event (response.failed): the sequence numbers hold
        return KernelRelay(enc, secrets=secrets, fail=enc.fail)

    def answer_headers(
        self, p: Prepared, resp: UpstreamResponse, ctx: RequestContext
    ) -> list[tuple[bytes, bytes]]:
        return ctx.response_headers()

    async def finished(self, svc: Services, ex: Exchange, p: Prepared, message: Any) -> None:
        st = _state(p)
        if st.tr.store and svc.responses is not None:
            await svc.responses.save(st.tenant, st.response(message), st.input)


class CompactDialect(ResponsesDialect):
    """``POST /v1/responses/compact``: Codex's older (v1) remote compaction. The request is a
    Responses request whose input gets a ``compaction_trigger`` (the v2 form), answered, not
    streamed, as ``{"object": "response.compaction", "output": [one compaction item]}``; nothing
    is stored. The compaction call is a ledger row of its own, on this route."""

    route = "/v1/responses/compact"

    async def prepare(self, svc: Services, ctx: RequestContext, body: Any) -> Prepared:
        if isinstance(body, dict):
            items = body.get("input")
            if isinstance(items, str):
                items = [{"type": "message", "role": "user", "content": items}]
            if isinstance(items, list):
                body = {
                    **body,
                    "input": [*items, {"type": "compaction_trigger"}],
                    "stream": False,
                    "store": False,
                }
        p = await super().prepare(svc, ctx, body)
        p.keep_message = False
        return p

    def hit(
        self, p: Prepared, message: dict[str, Any], ctx: RequestContext
    ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
        return orjson.dumps(_compacted(p, message)), b"application/json", ctx.response_headers()

    def answer(self, p: Prepared, raw: bytes, message: dict[str, Any] | None) -> bytes:
        if message is None:
            raise ProxyError(502, "the upstream sent an answer that is not a JSON object")
        return orjson.dumps(_compacted(p, message))

    async def finished(self, svc: Services, ex: Exchange, p: Prepared, message: Any) -> None:
        return None


def _compacted(p: Prepared, message: dict[str, Any]) -> dict[str, Any]:
    st = _state(p)
    return to_compacted(
        message,
        tr=st.tr,
        response_id=st.response_id,
        created_at=st.created,
        sealer=st.sealer,
        tenant=st.tenant,
    )


RESPONSES = ResponsesDialect()
COMPACT = CompactDialect()


async def responses(svc: Services, ctx: RequestContext, body: Any, send: Send) -> None:
    await run(svc, ctx, RESPONSES, body, send)


async def compact(svc: Services, ctx: RequestContext, body: Any, send: Send) -> None:
    await run(svc, ctx, COMPACT, body, send)


async def state_route(
    svc: Services, ctx: RequestContext, method: str, path: str, send: Send
) -> None:
    """``GET``/``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``."""
    if svc.responses is None:
        raise ProxyError(503, "the response store is not ready", type="api_error")
    tenant = tenant_id(ctx.tenant_source() or ctx.require_key())
    rest = path[len("/v1/responses/") :]
    response_id, _, tail = rest.partition("/")
    if not response_id or tail not in ("", "input_items") or (tail and method != "GET"):
        raise ProxyError(404, f"no route {method} {path}", type="not_found_error")
    if method == "DELETE" and not tail:
        if not await svc.responses.delete(tenant, response_id):
            raise _not_found(response_id)
        body = {"id": response_id, "object": "response.deleted", "deleted": True}
        await send_bytes(send, 200, orjson.dumps(body), headers=ctx.response_headers())
        return
    if method != "GET":
        raise ProxyError(405, f"{method} is not allowed on {path}")
    record = await svc.responses.load(tenant, response_id)
    if record is None:
        raise _not_found(response_id)
    if not tail:
        out: Any = record["response"]
    else:
        items = [
            {**item, "id": item.get("id") or f"item_{response_id[5:21]}_{i}"}
            if isinstance(item, dict)
            else item
            for i, item in enumerate(record.get("input", []))
        ]
        items.reverse()  # OpenAI lists input items newest first by default
        out = {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": False,
        }
    await send_bytes(send, 200, orjson.dumps(out), headers=ctx.response_headers())
