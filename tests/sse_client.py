"""Test-side reading of OpenAI SSE responses, validated with the openai SDK's own types."""

from __future__ import annotations

from typing import Any

import orjson
from openai.types.chat import ChatCompletionChunk


def data_lines(raw: bytes) -> list[bytes]:
    """The ``data:`` payloads of an OpenAI stream, in order (events are ``data: ...\\n\\n``)."""
    assert raw.endswith(b"\n\n"), raw[-200:]
    out = []
    for event in raw.split(b"\n\n")[:-1]:
        assert event.startswith(b"data: "), event[:200]
        out.append(event[len(b"data: ") :])
    return out


def check_stream(raw: bytes, *, expect_usage: bool = False) -> list[ChatCompletionChunk]:
    """Assert the stream rules of translation.md and return the validated chunks."""
    payloads = data_lines(raw)
    assert payloads[-1] == b"[DONE]", payloads[-3:]
    chunks = [ChatCompletionChunk.model_validate(orjson.loads(p)) for p in payloads[:-1]]
    assert chunks, "no chunks"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1
    finishes = [c for c in chunks if c.choices and c.choices[0].finish_reason is not None]
    assert len(finishes) == 1
    usage_chunks = [c for c in chunks if not c.choices]
    if expect_usage:
        assert len(usage_chunks) == 1 and chunks[-1].usage is not None
        assert chunks.index(finishes[0]) == len(chunks) - 2
    else:
        assert usage_chunks == []
    return chunks


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def error_of(raw: bytes) -> dict[str, Any]:
    """The error object that ends a failed stream (which must not end with [DONE])."""
    payloads = data_lines(raw)
    assert payloads[-1] != b"[DONE]"
    last = orjson.loads(payloads[-1])
    assert set(last) == {"error"}, last
    err: dict[str, Any] = last["error"]
    return err
