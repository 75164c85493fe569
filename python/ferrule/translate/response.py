"""Anthropic Messages response (JSON) -> OpenAI ``chat.completion`` (JSON).

The streaming twin of this lives in the kernels (``StreamTranslator``); both follow
../shared/reference/translation.md, "Response"."""

from __future__ import annotations

from typing import Any

import orjson

from .._pure.stream import finish_reason_for

__all__ = ["openai_usage", "to_openai"]


def _count(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def openai_usage(usage: Any) -> dict[str, Any]:
    """OpenAI usage from Anthropic usage: prompt = uncached input + cache writes + cache reads."""
    u = usage if isinstance(usage, dict) else {}
    uncached = _count(u.get("input_tokens"))
    written = _count(u.get("cache_creation_input_tokens"))
    read = _count(u.get("cache_read_input_tokens"))
    output = _count(u.get("output_tokens"))
    prompt = uncached + written + read
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read},
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }


def to_openai(msg: dict[str, Any], *, model: str, created: int, json_tool: str | None) -> bytes:
    """Serialized chat.completion for an Anthropic message (already known to be a dict)."""
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    json_text: str | None = None
    content = msg.get("content")
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        elif kind == "tool_use":
            args = orjson.dumps(block.get("input", {})).decode()
            if json_tool is not None and block.get("name") == json_tool:
                json_text = args
                continue
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": args},
                }
            )
    stop_reason = msg.get("stop_reason")
    finish = finish_reason_for(stop_reason if isinstance(stop_reason, str) else None)
    if json_text is not None:
        # JSON mode: the forced tool's input is the answer, not a tool call.
        texts = [json_text]
        if not calls and finish == "tool_calls":
            finish = "stop"
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    mid = msg.get("id")
    return orjson.dumps(
        {
            "id": "chatcmpl-" + (mid if isinstance(mid, str) else ""),
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": openai_usage(msg.get("usage")),
        }
    )
