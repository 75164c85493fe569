"""Anthropic Messages response -> OpenAI Responses ``response`` object.

The shapes follow the installed ``openai`` SDK's models (``openai/types/responses/response.py``,
``response_output_item.py``, ``response_usage.py``); the streamed twin
(:class:`ferrule._pure.responses_stream.ResponsesStreamEncoder`) builds its final object with
:func:`to_responses`, so both agree.

Output items, in the order of the content blocks:

- consecutive ``thinking`` / ``redacted_thinking`` blocks -> one ``reasoning`` item. Its
  ``encrypted_content`` is the sealed JSON list of those blocks (:mod:`ferrule.seal`, the tenant as
  associated data), sent back in the next request's ``input`` to restore them exactly. Decision: it
  is always present, whatever ``include`` and ``store`` say: sealed, it tells the client nothing,
  and without it the thinking of a tool turn is lost whenever a client chains turns by resending
  items (the Agents SDK does, with ``store`` true and no ``include``), which breaks the next turn
  on models that check it. Its ``summary`` holds the thinking text (one part per block that shows
  any) when the request asked for ``reasoning.summary``, else it is empty, as OpenAI's is.
- consecutive ``text`` blocks -> one ``message`` item, one ``output_text`` part per block (so the
  blocks come back exactly as they were); web search citations -> ``url_citation`` annotations
  spanning their part.
- ``tool_use`` -> ``function_call`` (``arguments`` a JSON string) or, for a custom tool,
  ``custom_tool_call`` (``input`` the freeform text); a namespace tool's call carries its
  ``namespace``. With ``text.format`` emulated by a forced tool, that tool's input is the answer
  text instead.
- a compaction request (``tr.compact``, Codex's remote compaction): exactly one ``compaction``
  item whose ``encrypted_content`` seals ``{"summary": <the text>}`` for the tenant.
- ``server_tool_use`` of ``web_search`` -> a ``web_search_call`` item (``action.query``); the
  result blocks are not items (the Responses API has none for them).

``status``: ``incomplete`` with ``incomplete_details.reason`` ``max_output_tokens`` when Anthropic
stopped at ``max_tokens`` (or the context window), ``content_filter`` on ``refusal``; else
``completed``. Usage: ``input_tokens`` = uncached + cache writes + cache reads,
``input_tokens_details.cached_tokens`` = cache reads, ``cache_write_tokens`` = cache writes,
``output_tokens_details.reasoning_tokens`` = 0 (Anthropic does not count thinking apart).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from .responses_request import (
    CUSTOM_INPUT,
    ResponsesTranslated,
    compaction_context,
    reasoning_context,
)

__all__ = [
    "Seals",
    "citation_annotations",
    "compaction_item",
    "item_id",
    "output_items",
    "response_object",
    "response_status",
    "responses_usage",
    "to_compacted",
    "to_responses",
]


class Seals(Protocol):
    def seal(self, plaintext: bytes, context: bytes) -> str: ...


_INCOMPLETE = {
    "max_tokens": "max_output_tokens",
    "model_context_window_exceeded": "max_output_tokens",
    "refusal": "content_filter",
}
_PREFIX = {
    "reasoning": "rs",
    "message": "msg",
    "function_call": "fc",
    "custom_tool_call": "ctc",
    "web_search_call": "ws",
    "compaction": "cmp",
}


_U64_MAX = 2**64 - 1


def _count(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def item_id(response_id: str, kind: str, index: int) -> str:
    """A deterministic id for output item ``index`` (the stream and the JSON answer agree)."""
    base = response_id[5:] if response_id.startswith("resp_") else response_id
    return f"{_PREFIX[kind]}_{base}_{index}"


def response_status(stop_reason: str | None) -> tuple[str, dict[str, str] | None]:
    """(status, incomplete_details) for an Anthropic stop reason."""
    reason = _INCOMPLETE.get(stop_reason or "")
    if reason is None:
        return "completed", None
    return "incomplete", {"reason": reason}


def responses_usage(usage: Any) -> dict[str, Any]:
    u = usage if isinstance(usage, Mapping) else {}
    uncached = _count(u.get("input_tokens"))
    written = _count(u.get("cache_creation_input_tokens"))
    read = _count(u.get("cache_read_input_tokens"))
    output = _count(u.get("output_tokens"))
    # NOTE: sums capped at 2**64 - 1 (orjson writes no larger int): only a broken upstream gets
    # there, and its answer should still go out
    total_in = min(uncached + written + read, _U64_MAX)
    return {
        "input_tokens": total_in,
        "input_tokens_details": {"cached_tokens": read, "cache_write_tokens": written},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": min(total_in + output, _U64_MAX),
    }


def citation_annotations(block: Mapping[str, Any], text: str) -> list[dict[str, Any]]:
    out = []
    citations = block.get("citations")
    for c in citations if isinstance(citations, list) else []:
        if isinstance(c, dict) and c.get("type") == "web_search_result_location":
            url, title = c.get("url"), c.get("title")
            if isinstance(url, str):
                out.append(
                    {
                        "type": "url_citation",
                        "url": url,
                        "title": title if isinstance(title, str) else "",
                        "start_index": 0,
                        "end_index": len(text),
                    }
                )
    return out


def text_part(text: str, annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations or [], "logprobs": []}


def reasoning_item(
    rid: str,
    blocks: list[dict[str, Any]],
    *,
    summary: bool,
    sealer: Seals,
    tenant: str,
) -> dict[str, Any]:
    texts = [b["thinking"] for b in blocks if b.get("type") == "thinking" and b.get("thinking")]
    return {
        "id": rid,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": t} for t in texts] if summary else [],
        "encrypted_content": sealer.seal(orjson.dumps(blocks), reasoning_context(tenant)),
    }


def tool_item(iid: str, block: Mapping[str, Any], tr: ResponsesTranslated) -> dict[str, Any]:
    """The function_call / custom_tool_call item for a tool_use block."""
    wire = block.get("name")
    wire = wire if isinstance(wire, str) else ""
    call_id = block.get("id")
    call_id = call_id if isinstance(call_id, str) else ""
    tool_input = block.get("input")
    ref = tr.tools.get(wire)
    item: dict[str, Any]
    if ref is not None and ref.kind == "custom":
        text = tool_input.get(CUSTOM_INPUT) if isinstance(tool_input, dict) else None
        if not isinstance(text, str):  # the model did not follow the schema: give what it sent
            text = orjson.dumps(tool_input if tool_input is not None else {}).decode()
        item = {"id": iid, "type": "custom_tool_call", "call_id": call_id, "name": ref.name}
        item["input"] = text
    else:
        arguments = orjson.dumps(tool_input if tool_input is not None else {}).decode()
        item = {
            "id": iid,
            "type": "function_call",
            "call_id": call_id,
            "name": ref.name if ref is not None else wire,
            "arguments": arguments,
            "status": "completed",
        }
    if ref is not None and ref.namespace is not None:
        item["namespace"] = ref.namespace
    return item


def web_search_item(iid: str, block: Mapping[str, Any]) -> dict[str, Any]:
    tool_input = block.get("input")
    query = tool_input.get("query") if isinstance(tool_input, dict) else None
    action: dict[str, Any] = {"type": "search"}
    if isinstance(query, str):
        action["query"] = query
    return {"id": iid, "type": "web_search_call", "status": "completed", "action": action}


def compaction_item(
    response_id: str, content: Any, *, sealer: Seals, tenant: str
) -> dict[str, Any]:
    """The one output item of a compaction request: the summary (the text blocks), sealed."""
    blocks = content if isinstance(content, list) else []
    summary = "".join(
        b["text"]
        for b in blocks
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    )
    plaintext = orjson.dumps({"summary": summary})
    return {
        "id": item_id(response_id, "compaction", 0),
        "type": "compaction",
        "encrypted_content": sealer.seal(plaintext, compaction_context(tenant)),
    }


def output_items(
    content: Any,
    *,
    tr: ResponsesTranslated,
    response_id: str,
    sealer: Seals,
    tenant: str,
    incomplete: bool,
) -> list[dict[str, Any]]:
    """The output items for an Anthropic message's content blocks (module docstring)."""
    if tr.compact:
        return [compaction_item(response_id, content, sealer=sealer, tenant=tenant)]
    items: list[dict[str, Any]] = []
    thoughts: list[dict[str, Any]] = []
    message: dict[str, Any] | None = None

    def close_reasoning() -> None:
        if thoughts:
            rid = item_id(response_id, "reasoning", len(items))
            items.append(
                reasoning_item(
                    rid, list(thoughts), summary=tr.summary, sealer=sealer, tenant=tenant
                )
            )
            thoughts.clear()

    def open_message() -> dict[str, Any]:
        nonlocal message
        if message is None:
            close_reasoning()
            message = {
                "id": item_id(response_id, "message", len(items)),
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [],
            }
            items.append(message)
        return message

    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in ("thinking", "redacted_thinking"):
            message = None
            thoughts.append(block)
        elif kind == "text":
            text = block.get("text")
            text = text if isinstance(text, str) else ""
            open_message()["content"].append(text_part(text, citation_annotations(block, text)))
        elif kind == "tool_use" and tr.json_tool is not None and block.get("name") == tr.json_tool:
            # JSON mode emulated with a forced tool: its input is the answer text.
            open_message()["content"].append(text_part(orjson.dumps(block.get("input")).decode()))
        elif kind == "tool_use":
            close_reasoning()
            message = None
            name = block.get("name")  # any JSON value: not always hashable
            custom = isinstance(name, str) and name in tr.custom_tools
            kind_out = "custom_tool_call" if custom else "function_call"
            items.append(tool_item(item_id(response_id, kind_out, len(items)), block, tr))
        elif kind == "server_tool_use" and block.get("name") == "web_search":
            close_reasoning()
            message = None
            items.append(
                web_search_item(item_id(response_id, "web_search_call", len(items)), block)
            )
        # web_search_tool_result and unknown blocks: no item (module docstring)
    close_reasoning()
    if incomplete and items and items[-1]["type"] == "message":
        items[-1]["status"] = "incomplete"
    return items


def response_object(
    tr: ResponsesTranslated,
    *,
    response_id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete_details: dict[str, str] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``response`` object with the request's echo fields (response.py's required ones)."""
    obj: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete_details,
        "model": tr.model,
        "output": output,
        "usage": usage,
    }
    obj.update(tr.echo)
    return obj


def to_responses(
    message: Mapping[str, Any],
    *,
    tr: ResponsesTranslated,
    response_id: str,
    created_at: int,
    sealer: Seals,
    tenant: str,
) -> dict[str, Any]:
    """The Responses ``response`` object for an Anthropic message (module docstring)."""
    stop = message.get("stop_reason")
    status, details = response_status(stop if isinstance(stop, str) else None)
    output = output_items(
        message.get("content"),
        tr=tr,
        response_id=response_id,
        sealer=sealer,
        tenant=tenant,
        incomplete=status == "incomplete",
    )
    return response_object(
        tr,
        response_id=response_id,
        created_at=created_at,
        status=status,
        output=output,
        usage=responses_usage(message.get("usage")),
        incomplete_details=details,
    )


def to_compacted(
    message: Mapping[str, Any],
    *,
    tr: ResponsesTranslated,
    response_id: str,
    created_at: int,
    sealer: Seals,
    tenant: str,
) -> dict[str, Any]:
    """The answer of Codex's older remote compaction, ``POST /v1/responses/compact``
    (``openai/types/responses/compacted_response.py``): one ``compaction`` item. The route
    translates that request as a Responses request whose ``input`` ends with a
    ``compaction_trigger`` item (so ``tr.compact`` is set)."""
    return {
        "id": response_id,
        "object": "response.compaction",
        "created_at": created_at,
        "output": [
            compaction_item(response_id, message.get("content"), sealer=sealer, tenant=tenant)
        ],
        "usage": responses_usage(message.get("usage")),
    }
