"""Deterministic, realistic Anthropic SSE streams for the kernel benchmarks.

Two answers, framed byte for byte as the Messages API streams them:

- ``text``: a long prose answer, ~2000 ``text_delta`` events of one to three words (Claude's
  deltas are word-sized), with the odd newline, quote and non-ASCII character, pings every
  ~100 events, usage in ``message_start`` and ``message_delta``;
- ``tools``: a short text block, then five ``tool_use`` blocks whose JSON input arrives in many
  small ``input_json_delta`` fragments.

Each is chunked two ways: 4 KiB network reads (events cut anywhere, CRLF and UTF-8 included) and
one event per chunk (a proxy reading line-delimited events). Run this file to print sizes.
"""

from __future__ import annotations

import json
import random
from functools import cache

__all__ = ["CHUNKINGS", "CORPORA", "agent_turn", "chunks", "corpus", "event_count"]

CORPORA = ("text", "tools")
CHUNKINGS = ("4k", "per-event")

_VOCABULARY = (
    "the of and to a in is that for it as with was on be by this are or from at an which but not "
    "have has can will would should could may more also than other such into these their there "
    "function value request response stream token model proxy server client error cache latency "
    "Rust Python kernel buffer chunk event message content delta index usage reason translation "
    "naïve café façade résumé — “quoted” 東京 😀 x² ±"
)
_WORDS = _VOCABULARY.split()


def _sse(event: str, payload: object) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {data}\n\n".encode()


def _message_start() -> bytes:
    message = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-4-5-20250929",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 2095,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 1800,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 1,
            "service_tier": "standard",
        },
    }
    return _sse("message_start", {"type": "message_start", "message": message})


_PING = _sse("ping", {"type": "ping"})


def _text_deltas(rng: random.Random, index: int, count: int) -> list[bytes]:
    events = []
    for i in range(count):
        text = " " + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
        roll = rng.random()
        if roll < 0.05:
            text += ".\n\n"
        elif roll < 0.12:
            text += ","
        delta = {"type": "text_delta", "text": text}
        events.append(
            _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        )
        if i % 100 == 99:
            events.append(_PING)
    return events


def _block(index: int, block: dict[str, object], deltas: list[bytes]) -> list[bytes]:
    start = {"type": "content_block_start", "index": index, "content_block": block}
    stop = {"type": "content_block_stop", "index": index}
    return [_sse("content_block_start", start), *deltas, _sse("content_block_stop", stop)]


def _end(stop_reason: str, output_tokens: int) -> list[bytes]:
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }
    return [_sse("message_delta", delta), _sse("message_stop", {"type": "message_stop"})]


def _tool_input(rng: random.Random) -> str:
    args = {
        "path": f"src/module_{rng.randint(1, 99)}/file_{rng.randint(1, 999)}.py",
        "pattern": " ".join(rng.choice(_WORDS) for _ in range(4)),
        "context_lines": rng.randint(0, 10),
        "edits": [
            {
                "old": " ".join(rng.choice(_WORDS) for _ in range(8)),
                "new": " ".join(rng.choice(_WORDS) for _ in range(9)),
            }
            for _ in range(6)
        ],
    }
    return json.dumps(args, ensure_ascii=False)


def _json_fragments(rng: random.Random, text: str) -> list[str]:
    parts, pos = [], 0
    while pos < len(text):
        step = rng.randint(3, 14)
        parts.append(text[pos : pos + step])
        pos += step
    return parts


@cache
def event_list(name: str) -> tuple[bytes, ...]:
    """The stream ``name`` as a tuple of complete SSE events."""
    rng = random.Random(f"ferrule-bench-{name}")
    if name == "text":
        body = _block(0, {"type": "text", "text": ""}, _text_deltas(rng, 0, 2000))
        return (_message_start(), *body, *_end("end_turn", 2431))
    if name == "tools":
        events = [
            _message_start(),
            *_block(0, {"type": "text", "text": ""}, _text_deltas(rng, 0, 60)),
        ]
        for i in range(1, 6):
            block = {
                "type": "tool_use",
                "id": f"toolu_01A09q90qw90lq91788{i}",
                "name": "edit_file",
                "input": {},
            }
            deltas = [
                _sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": p},
                    },
                )
                for p in _json_fragments(rng, _tool_input(rng))
            ]
            events += _block(i, block, deltas)
        return (*events, *_end("tool_use", 1290))
    raise ValueError(f"unknown corpus {name!r}")


@cache
def corpus(name: str) -> bytes:
    """The whole stream ``name``."""
    return b"".join(event_list(name))


def event_count(name: str) -> int:
    return len(event_list(name))


@cache
def chunks(name: str, chunking: str) -> tuple[bytes, ...]:
    """The stream ``name`` as the network would deliver it."""
    if chunking == "per-event":
        return event_list(name)
    if chunking == "4k":
        data = corpus(name)
        return tuple(data[i : i + 4096] for i in range(0, len(data), 4096))
    raise ValueError(f"unknown chunking {chunking!r}")


@cache
def agent_turn() -> tuple[bytes, ...]:
    """One agent turn of 56 events, as a Responses client (Codex) gets them: thinking with a
    signature, a short answer, one tool call whose JSON input arrives in nine fragments."""
    rng = random.Random("ferrule-bench-agent")
    thinking = [
        _sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {
                    "type": "thinking_delta",
                    "thinking": " " + " ".join(rng.choice(_WORDS) for _ in range(6)),
                },
            },
        )
        for _ in range(12)
    ]
    signature = {"type": "signature_delta", "signature": "EqQBCgIYAhIM" + "x" * 200}
    thinking.append(
        _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": signature})
    )
    fragments = _json_fragments(rng, _tool_input(rng))
    size = -(-len("".join(fragments)) // 9)
    text = "".join(fragments)
    tool_deltas = [
        _sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": text[i : i + size]},
            },
        )
        for i in range(0, len(text), size)
    ]
    tool = {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835", "name": "edit_file"}
    events = (
        _message_start(),
        *_block(0, {"type": "thinking", "thinking": "", "signature": ""}, thinking),
        *_block(1, {"type": "text", "text": ""}, _text_deltas(rng, 1, 25)),
        *_block(2, {**tool, "input": {}}, tool_deltas),
        *_end("tool_use", 412),
    )
    assert len(events) == 56, len(events)
    return events


if __name__ == "__main__":
    for name in CORPORA:
        print(f"{name}: {len(corpus(name))} bytes, {event_count(name)} events")
