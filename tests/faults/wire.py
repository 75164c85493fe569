"""Anthropic's wire formats, written by hand so the fake owns every byte it sends.

The fake does not reuse ``ferrule.mock``: a test of the proxy must not pass because the proxy and
its fake upstream share a bug. Shapes follow Anthropic's streaming and errors pages: each event is
``event: NAME\\ndata: JSON\\n\\n`` whose JSON repeats the name as ``"type"``; the order is
``message_start``, ``content_block_start``, ``ping``, deltas, ``content_block_stop``,
``message_delta`` (stop reason and cumulative usage), ``message_stop``. Error bodies are
``{"type": "error", "error": {"type", "message"}, "request_id"}``.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

__all__ = [
    "ERROR_TYPES",
    "JSON_TYPE",
    "SSE_TYPE",
    "error_body",
    "error_event",
    "event",
    "html_page",
    "message_json",
    "ok_events",
    "request_id",
    "words",
]

SSE_TYPE = "text/event-stream; charset=utf-8"
JSON_TYPE = "application/json"
DEFAULT_MODEL = "claude-sonnet-4-6"

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}
_WORDS = [
    "Ferrules",
    "hold",
    "brushes",
    "together",
    "while",
    "the",
    "bristles",
    "do",
    "the",
    "painting",
    "and",
    "nobody",
    "thanks",
    "them",
    "for",
    "the",
    "quiet",
    "work",
    "they",
    "keep",
    "doing",
    "every",
    "day",
]
_ids = itertools.count(1)


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def request_id() -> str:
    """A ``request-id`` shaped like the API's (``req_011C…``), unique within the process."""
    return f"req_011CFAULT{next(_ids):016d}"


def message_id() -> str:
    return f"msg_01FAULT{next(_ids):016d}"


def words(n: int) -> list[str]:
    """``n`` deterministic words; each delta of an ``ok`` stream carries one (with its space)."""
    picked = list(itertools.islice(itertools.cycle(_WORDS), n))
    return [w if i == 0 else " " + w for i, w in enumerate(picked)]


def error_type_for(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error")


def error_body(error_type: str, message: str | None = None, request_id: str | None = None) -> bytes:
    """The JSON error envelope; in-stream ``event: error`` payloads carry no ``request_id``."""
    payload: dict[str, Any] = {
        "type": "error",
        "error": {"type": error_type, "message": message or _MESSAGES.get(error_type, "Error")},
    }
    if request_id is not None:
        payload["request_id"] = request_id
    return _dumps(payload)


def html_page(status: int) -> bytes:
    """What an intermediary (Cloudflare, a load balancer) in front of the API sends: HTML."""
    titles = {502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable"}
    title = titles.get(status, f"{status} Error")
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


def event(name: str, payload: dict[str, Any]) -> bytes:
    """One SSE event in the API's layout (``event:`` line, one ``data:`` line, blank line)."""
    return b"event: " + name.encode() + b"\ndata: " + _dumps(payload) + b"\n\n"


def error_event(error_type: str = "overloaded_error", message: str | None = None) -> bytes:
    return b"event: error\ndata: " + error_body(error_type, message) + b"\n\n"


def usage_for(
    body: dict[str, Any], output_tokens: int, usage: dict[str, Any] | None
) -> dict[str, Any]:
    """Final usage: input tokens estimated from the request size, then the test's overrides."""
    estimate = max(1, len(_dumps(body.get("messages", ""))) // 4)
    out: dict[str, Any] = {
        "input_tokens": estimate,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }
    out.update(usage or {})
    return out


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else DEFAULT_MODEL


def message_json(
    body: dict[str, Any], n: int, usage: dict[str, Any] | None, stop_reason: str = "end_turn"
) -> dict[str, Any]:
    """The non-streaming response: one text block of ``n`` words."""
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model_of(body),
        "content": [{"type": "text", "text": "".join(words(n))}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_for(body, n, usage),
    }


def ok_events(
    body: dict[str, Any],
    n: int,
    usage: dict[str, Any] | None = None,
    *,
    stop_reason: str = "end_turn",
    extra: dict[str, bytes] | None = None,
) -> list[bytes]:
    """The complete event list of a one-text-block answer of ``n`` words.

    ``extra`` inserts raw events after the named event type (first occurrence), which is how
    ``unknown_event`` slips a ``future_thing`` into an otherwise valid stream.
    """
    final = usage_for(body, n, usage)
    start_usage = dict(final, output_tokens=min(1, final["output_tokens"]))
    out = [
        event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": message_id(),
                    "type": "message",
                    "role": "assistant",
                    "model": model_of(body),
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        event("ping", {"type": "ping"}),
    ]
    out += [
        event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}},
        )
        for w in words(n)
    ]
    out += [
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": final,
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    ]
    if extra:
        for after, raw in extra.items():
            marker = b"event: " + after.encode() + b"\n"
            at = next(i for i, e in enumerate(out) if e.startswith(marker))
            out.insert(at + 1, raw)
    return out


def delta_event(index: int, text: str) -> bytes:
    return event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        },
    )
