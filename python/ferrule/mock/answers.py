"""What the simulated model answers: a :class:`Plan` of content blocks, stop reason and usage.

Everything is derived from the request, so the same request always gets the same answer: the words
come from a hash of the body (without ``stream``, so the streamed and the plain answer match), and
tool arguments are generated from the tool's JSON schema. Only ids (``msg_``, ``toolu_``) are
random, as on the real API.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import signing
from .directives import Directives
from .errors import new_id
from .options import MockOptions
from .usage import CacheUsage, estimate

__all__ = ["Block", "Plan", "plan_answer"]

_VOCABULARY = (
    "amber", "anchor", "arrow", "basin", "beacon", "birch", "bridge", "cedar", "channel", "cobalt",
    "compass", "copper", "delta", "ember", "falcon", "ferrule", "field", "fjord", "garnet", "glacier",
    "granite", "harbor", "heron", "indigo", "island", "juniper", "kernel", "lagoon", "lantern",
    "linen", "maple", "meadow", "mesa", "nickel", "north", "oak", "orbit", "pebble", "prairie",
    "quartz", "quill", "river", "saffron", "signal", "slate", "spruce", "summit", "thistle", "timber",
    "tundra", "umber", "valley", "velvet", "willow", "window", "yarrow", "zephyr", "zinc",
)  # fmt: skip
_THINKING_PER_DELTA = 4
_ECHO_CHUNK = 24
_REFUSAL_WORDS = 6


@dataclass
class Block:
    """One content block of the answer and the fragments it streams as."""

    type: str  # "text" | "thinking" | "redacted_thinking" | "tool_use"
    pieces: list[str] = field(default_factory=list)
    signature: str = ""  # a thinking block's signature, or a redacted_thinking block's data
    id: str = ""
    name: str = ""
    input: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The block as it appears in a non-streaming message's ``content``."""
        if self.type == "text":
            return {"type": "text", "text": "".join(self.pieces)}
        if self.type == "thinking":
            return {
                "type": "thinking",
                "thinking": "".join(self.pieces),
                "signature": self.signature,
            }
        if self.type == "redacted_thinking":
            return {"type": "redacted_thinking", "data": self.signature}
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": self.input}

    def start_json(self) -> dict[str, Any]:
        """The ``content_block`` of a ``content_block_start`` event: the block, still empty."""
        if self.type == "text":
            return {"type": "text", "text": ""}
        if self.type == "thinking":
            return {"type": "thinking", "thinking": "", "signature": ""}
        if self.type == "redacted_thinking":
            # Streamed whole in its content_block_start, with no deltas, as the API does.
            return self.to_json()
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": {}}


@dataclass
class Plan:
    """Everything needed to write the answer, as JSON or as a stream."""

    message_id: str
    model: str
    blocks: list[Block]
    stop_reason: str
    stop_sequence: str | None
    cache: CacheUsage
    output_tokens: int
    stop_details: dict[str, Any] | None = None
    delay_s: float = 0.0
    fault: str | None = None  # "midstream_error" | "truncate" | "hang"

    def usage(self) -> dict[str, Any]:
        return self.cache.to_json(self.output_tokens)

    def to_json(self) -> dict[str, Any]:
        """The non-streaming response body."""
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [b.to_json() for b in self.blocks],
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
        }
        if self.stop_details is not None:
            message["stop_details"] = self.stop_details
        message["usage"] = self.usage()
        return message


def _seed(body: dict[str, Any]) -> bytes:
    canonical = {k: v for k, v in body.items() if k != "stream"}
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).digest()


def _words(seed: bytes, salt: str, count: int) -> list[str]:
    words: list[str] = []
    counter = 0
    while len(words) < count:
        digest = hashlib.sha256(seed + salt.encode() + counter.to_bytes(4, "big")).digest()
        words.extend(_VOCABULARY[b % len(_VOCABULARY)] for b in digest)
        counter += 1
    return words[:count]


def _sentence_pieces(words: list[str]) -> list[str]:
    """Word-per-delta fragments of one sentence: ``["Amber", " cedar", …, " zinc."]``."""
    if not words:
        return []
    pieces = [words[0].capitalize()] + [" " + w for w in words[1:]]
    pieces[-1] += "."
    return pieces


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _value_for(schema: Any, name: str, depth: int = 0) -> Any:
    """A value that satisfies a simple JSON schema (enough for the tools tests use)."""
    if not isinstance(schema, dict) or depth > 5:
        return f"{name}-value"
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for union in ("anyOf", "oneOf"):
        options = schema.get(union)
        if isinstance(options, list) and options:
            return _value_for(options[0], name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        return _object_for(schema, depth + 1)
    if kind == "array":
        return [_value_for(schema.get("items"), name, depth + 1)]
    if kind == "integer":
        return (
            int(schema.get("minimum", 1)) if isinstance(schema.get("minimum"), (int, float)) else 1
        )
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return f"{name}-value"


def _object_for(schema: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    required = schema.get("required")
    names = (
        [n for n in required if n in properties]
        if isinstance(required, list) and required
        else list(properties)
    )
    return {n: _value_for(properties[n], n, depth) for n in names}


def _tool_block(tool: dict[str, Any] | None) -> Block:
    if tool is None:
        name, arguments = "mock_tool", {"x": 1}
    else:
        name, arguments = str(tool["name"]), _object_for(tool.get("input_schema") or {})
    text = orjson.dumps(arguments).decode()
    # The API opens every tool input with an empty fragment, then sends the JSON in pieces.
    pieces = ["", *_chunks(text, max(1, len(text) // 4 + 1))]
    return Block(type="tool_use", pieces=pieces, id=new_id("toolu"), name=name, input=arguments)


def _custom_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and "input_schema" in t]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool":
        forced = [t for t in tools if t.get("name") == choice.get("name")]
        tools = forced + [t for t in tools if t not in forced]
    return tools


def plan_answer(
    body: dict[str, Any],
    *,
    model: str,
    directives: Directives,
    options: MockOptions,
    cache: CacheUsage,
    thinking_on: bool = False,
    thinking_display: str = "summarized",
) -> Plan:
    """The answer to a validated request, shaped by its directives."""
    seed = _seed(body)
    max_tokens = int(body.get("max_tokens", 0))
    word_count = max(0, int(directives.number("words", options.answer_words)))
    blocks: list[Block] = []
    output_tokens = 0
    budget = max_tokens
    stop_reason = "end_turn"
    stop_sequence: str | None = None
    stop_details: dict[str, Any] | None = None

    # Signatures bind each thinking block to the model and to everything before it
    # (signing.py); the validator checks them when the blocks come back.
    turns = signing.turns_of(body.get("messages"))
    before = len(turns[-1][1]) if turns and turns[-1][0] == "assistant" else 0

    def prefix() -> bytes:
        return signing.prefix_digest(body, turns, "assistant", before + len(blocks))

    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "between_tools":
        # No up-front thinking; the short notes written between tool calls come back as
        # (summarized) thinking blocks (whats-new-sonnet-5-5).
        thinking_on = _answers_tool_results(turns)
        thinking_display = "summarized"
    if directives.has("thinking") or thinking_on:
        thought = _words(seed, "thinking", max(8, word_count // 2))[: max(0, budget)]
        if thought:
            shown = "" if thinking_display == "omitted" else " ".join(thought) + "."
            pieces = [p for p in _chunks_by_words(shown, _THINKING_PER_DELTA)] if shown else []
            signature = signing.sign(model, shown, prefix())
            blocks.append(Block(type="thinking", pieces=pieces, signature=signature))
            output_tokens += len(thought)
            budget -= len(thought)
            if directives.has("redacted"):
                data = signing.sign(model, None, prefix())
                blocks.append(Block(type="redacted_thinking", signature=data))

    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    structured = isinstance(fmt, dict) and fmt.get("type") == "json_schema"
    if structured and not _custom_tools(body):
        # Structured outputs: the answer is JSON text that matches the schema (a tool
        # directive has no tool to call here, so it asks for this JSON too).
        schema = fmt.get("schema") if isinstance(fmt, dict) else None
        text = orjson.dumps(_value_for(schema, "answer")).decode()
        blocks.append(Block(type="text", pieces=_chunks(text, _ECHO_CHUNK)))
        output_tokens += estimate(text)
    elif directives.has("echo"):
        text = orjson.dumps(body).decode()
        blocks.append(Block(type="text", pieces=_chunks(text, _ECHO_CHUNK)))
        output_tokens += estimate(text)
    elif directives.has("refusal"):
        words = _words(seed, "text", min(word_count, _REFUSAL_WORDS, max(0, budget)))
        if words:
            blocks.append(
                Block(type="text", pieces=[words[0].capitalize()] + [" " + w for w in words[1:]])
            )
        output_tokens += len(words)
        stop_reason = "refusal"
        stop_details = {"type": "refusal", "category": None, "explanation": None}
    else:
        want = word_count
        if directives.has("tool"):
            want = 0
        words = _words(seed, "text", min(want, max(0, budget)))
        if words:
            blocks.append(Block(type="text", pieces=_sentence_pieces(words)))
        output_tokens += len(words)
        if len(words) < want or directives.has("max_tokens"):
            stop_reason = "max_tokens"
            output_tokens = max(output_tokens, max_tokens)

    if (
        stop_reason == "end_turn"
        and not (structured and not _custom_tools(body))
        and (directives.has("tool") or directives.has("tools2"))
    ):
        tools = _custom_tools(body)
        count = 2 if directives.has("tools2") else 1
        for n in range(count):
            tool = tools[n % len(tools)] if tools else None
            block = _tool_block(tool)
            blocks.append(block)
            output_tokens += estimate(orjson.dumps(block.input))
        stop_reason = "tool_use"
    elif stop_reason == "end_turn" and directives.has("stop_sequence"):
        requested = body.get("stop_sequences") or []
        if requested:
            stop_reason, stop_sequence = "stop_sequence", str(requested[0])

    fault = next((f for f in ("midstream_error", "truncate", "hang") if directives.has(f)), None)
    delay_ms = directives.number("delay", options.token_delay_ms)
    return Plan(
        message_id=new_id("msg"),
        model=model,
        blocks=blocks,
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        stop_details=stop_details,
        cache=cache,
        output_tokens=output_tokens,
        delay_s=max(0.0, delay_ms) / 1000.0,
        fault=fault,
    )


def _answers_tool_results(turns: list[signing.Turn]) -> bool:
    """Whether the request's last turn returns tool results (the model is between tool calls)."""
    return (
        bool(turns)
        and turns[-1][0] == "user"
        and any(b.get("type") == "tool_result" for b in turns[-1][1])
    )


def _chunks_by_words(text: str, per_chunk: int) -> list[str]:
    words = text.split(" ")
    return [
        (" " if i else "") + " ".join(words[i : i + per_chunk])
        for i in range(0, len(words), per_chunk)
    ]
