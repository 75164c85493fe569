"""Write the seed corpora (fuzz/seeds/<target>/) and keep them reproducible: small, hand-shaped
Anthropic SSE streams behind the targets' 2-byte header (config byte, number of cut points), some
with cut points. Run from the repository root: ``.venv/bin/python fuzz/make_seeds.py``."""

from __future__ import annotations

import json
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent


def ev(name: str, payload: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def start(usage: dict[str, int] | None = None) -> bytes:
    msg = {
        "id": "msg_01abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [],
        "stop_reason": None,
        "usage": usage or {"input_tokens": 12, "output_tokens": 1},
    }
    return ev("message_start", {"type": "message_start", "message": msg})


def end(stop: str = "end_turn", out: int = 5) -> bytes:
    return ev(
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": out}},
    ) + ev("message_stop", {"type": "message_stop"})


def text_block(i: int, words: list[str]) -> bytes:
    out = ev(
        "content_block_start",
        {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
    )
    for w in words:
        out += ev(
            "content_block_delta",
            {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": w}},
        )
    return out + ev("content_block_stop", {"type": "content_block_stop", "index": i})


def tool_block(i: int, name: str, parts: list[str]) -> bytes:
    out = ev(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": i,
            "content_block": {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": {}},
        },
    )
    for p in parts:
        out += ev(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": i,
                "delta": {"type": "input_json_delta", "partial_json": p},
            },
        )
    return out + ev("content_block_stop", {"type": "content_block_stop", "index": i})


PING = ev("ping", {"type": "ping"})

STREAMS: dict[str, bytes] = {
    "ok": start() + text_block(0, ["Hello", " wor", "ld \u00e9\U0001f600", '\n"q"']) + PING + end(),
    "usage": start(
        {
            "input_tokens": 10,
            "cache_creation_input_tokens": 3,
            "cache_read_input_tokens": 4,
            "output_tokens": 1,
            "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 1},
        }
    )
    + text_block(0, ["a"])
    + end("max_tokens", 9),
    "tools": start()
    + text_block(0, ["Let me"])
    + tool_block(1, "get_weather", ['{"ci', 'ty": "Par', 'is"}'])
    + end("tool_use"),
    "json_tool": start() + tool_block(0, "json_answer", ['{"a"', ": 1}"]) + end("tool_use"),
    "thinking": start()
    + ev(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}},
    )
    + ev(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"},
        },
    )
    + ev(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "c2ln"},
        },
    )
    + text_block(1, ["ok"])
    + end("refusal"),
    "error": start()
    + text_block(0, ["x"])
    + ev(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    ),
    "truncated": start() + text_block(0, ["cut"]),
    "crlf": (start() + text_block(0, ["a", "b"]) + end()).replace(b"\n", b"\r\n"),
    "cr": (start() + text_block(0, ["a"]) + end()).replace(b"\n", b"\r"),
    "bom_comments_ids": b"\xef\xbb\xbf: comment\nid: 7\nretry: 1500\n"
    + start()
    + b"event: future_thing\ndata: {}\n\n"
    + b"data\n\ndata:\n\n"
    + text_block(0, ["z"])
    + end(),
    "garbage": start()
    + b"\xff\xfe not utf-8 \xc3\x28\n\n"
    + b'event: content_block_delta\ndata: {"type": "content_block_delta", "del\n\n',
    "multiline_data": b'event: message_start\ndata: {"type":"message_start",\ndata: '
    b'"message":{"id":"m"}}\n\n' + end(),
    "before_start": text_block(0, ["early"]) + end(),
    "non_object": b"event: message_start\ndata: [1,2]\n\n",
}

# The Responses encoder's own blocks: custom tool input decoded as it streams (split inside an
# escape and a surrogate pair), namespace tools, web search, redacted thinking, citations.
RESPONSES_STREAMS: dict[str, bytes] = {
    "custom_tool": start()
    + tool_block(0, "apply_patch", ['{"input": "*** Begin\\n\\ud83d', "\\ude00 \\u00", 'e9"}'])
    + tool_block(1, "multi__spawn", ['{"x": [-0, 1e16, 1.5e-7]}'])
    + end("tool_use"),
    "web_search": start()
    + ev(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "server_tool_use", "id": "srv_1", "name": "web_search"},
        },
    )
    + ev(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"query": "ferrule"}'},
        },
    )
    + ev(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "web_search_tool_result", "tool_use_id": "srv_1"},
        },
    )
    + ev(
        "content_block_start",
        {"type": "content_block_start", "index": 2, "content_block": {"type": "text"}},
    )
    + ev(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {
                "type": "citations_delta",
                "citation": {
                    "type": "web_search_result_location",
                    "url": "https://a.example",
                    "title": "A",
                },
            },
        },
    )
    + end(),
    "redacted": start()
    + ev(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "redacted_thinking", "data": {"b": [1.0, -0.0], "a": "x"}},
        },
    )
    + text_block(1, ["after"])
    + end("max_tokens"),
}


def header(config: int, cuts: list[int]) -> bytes:
    return bytes([config, len(cuts)]) + b"".join(struct.pack("<H", c) for c in cuts)


def main() -> None:
    for target in ("sse_decoder", "stream_translator", "responses_encoder"):
        folder = HERE / "seeds" / target
        folder.mkdir(parents=True, exist_ok=True)
        streams = STREAMS | RESPONSES_STREAMS if target == "responses_encoder" else STREAMS
        for name, body in streams.items():
            (folder / f"{name}").write_bytes(header(0, []) + body)
            n = len(body)
            cuts = [1, n // 3, n // 2, n // 2, n - 1]  # a repeated cut feeds an empty chunk
            # some limits, usage on (stream_translator); summary, limit (responses_encoder)
            config = {"sse_decoder": 0x23, "stream_translator": 0x41}.get(target, 0x49)
            (folder / f"{name}-cut").write_bytes(header(config, cuts) + body)
    print("seeds written to", HERE / "seeds")


if __name__ == "__main__":
    main()
