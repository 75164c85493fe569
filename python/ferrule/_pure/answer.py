"""An Anthropic Messages answer (JSON bytes) to an OpenAI ``chat.completion`` (JSON bytes) and
its usage counts, in one call: the twin of the native ``answer_to_openai``.

The translation rules are ``ferrule.translate.response.to_openai``'s; this is the one call the
pipeline makes for a JSON answer when it needs nothing else of the parsed message (no response
cache to store it in, no thinking blocks to keep), so the native side can do the parsing,
translating and serializing without building Python objects for the message.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..translate.response import to_openai

__all__ = ["answer_to_openai", "answer_usage"]

_U64 = 1 << 64
_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def _count(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _U64:
        return value
    return 0


def _usage_counts(usage: Any) -> tuple[int, int, int, int, int, int]:
    """``(input, cache_creation, cache_read, output, 5m writes, 1h writes)`` as
    ``StreamTranslator.usage`` reports a stream's (absent or invalid counts: 0)."""
    if not isinstance(usage, dict):
        return (0, 0, 0, 0, 0, 0)
    a, b, c, d = (_count(usage.get(name)) for name in _FIELDS)
    creation = usage.get("cache_creation")
    if not isinstance(creation, dict):
        return (a, b, c, d, 0, 0)
    w5 = _count(creation.get("ephemeral_5m_input_tokens"))
    w1 = _count(creation.get("ephemeral_1h_input_tokens"))
    return (a, b, c, d, w5, w1)


def answer_to_openai(
    raw: bytes, model: str, created: int, json_tool: str | None = None
) -> tuple[bytes, tuple[int, int, int, int, int, int]] | None:
    """The translated answer and its usage counts; None when ``raw`` is not a JSON object, or
    when a usage sum does not fit 64 bits (orjson cannot write it): the caller's general path
    then answers (and says why)."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict):
        return None
    try:
        body = to_openai(msg, model=model, created=created, json_tool=json_tool)
    except orjson.JSONEncodeError:
        return None
    return body, _usage_counts(msg.get("usage"))


def answer_usage(raw: bytes) -> tuple[int, int, int, int, int, int] | None:
    """The usage counts of an answer relayed as it is (``/v1/messages``); None when ``raw`` is
    not a JSON object."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return _usage_counts(msg.get("usage")) if isinstance(msg, dict) else None
