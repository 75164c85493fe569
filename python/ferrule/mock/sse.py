"""Writing the answer as Anthropic's server-sent events.

Every event is ``event: NAME\\ndata: JSON\\n\\n`` and the JSON repeats the name as ``"type"``. The
order is the streaming guide's: ``message_start``; for each content block ``content_block_start``,
deltas and ``content_block_stop`` (with a ``ping`` after the first start, where the API sends it);
then ``message_delta`` (stop reason and cumulative usage) and ``message_stop``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from .answers import Block, Plan
from .errors import error_body

__all__ = ["CONTENT_TYPE", "FAULT_AFTER_DELTAS", "encode", "error_event", "events"]

CONTENT_TYPE = "text/event-stream; charset=utf-8"
FAULT_AFTER_DELTAS = 3
"""How many deltas ``[mock:midstream_error]`` and ``[mock:truncate]`` send before failing."""


def encode(event: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def error_event(error_type: str = "overloaded_error", message: str = "Overloaded") -> bytes:
    """The in-stream error the API sends after a 200 (no ``request_id`` inside, unlike a body)."""
    return b"event: error\ndata: " + error_body(error_type, message, None) + b"\n\n"


def _delta(block: Block, piece: str) -> dict[str, Any]:
    if block.type == "text":
        return {"type": "text_delta", "text": piece}
    if block.type == "thinking":
        return {"type": "thinking_delta", "thinking": piece}
    return {"type": "input_json_delta", "partial_json": piece}


def events(plan: Plan) -> Iterator[tuple[bytes, bool]]:
    """``(event bytes, is_token)`` pairs; the writer paces itself before each token event.

    With a fault planned the sequence stops early: after :data:`FAULT_AFTER_DELTAS` deltas it ends
    with an ``error`` event (``midstream_error``) or just ends (``truncate``).
    """
    usage = plan.usage()
    start_usage = dict(usage, output_tokens=min(1, plan.output_tokens))
    yield (
        encode(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": plan.message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": plan.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        False,
    )
    deltas_sent = 0
    faulty = plan.fault in ("midstream_error", "truncate")
    for index, block in enumerate(plan.blocks):
        yield (
            encode(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": block.start_json(),
                },
            ),
            False,
        )
        if index == 0:
            yield encode("ping", {"type": "ping"}), False
        for piece in block.pieces:
            if faulty and deltas_sent >= FAULT_AFTER_DELTAS:
                break
            payload = {"type": "content_block_delta", "index": index, "delta": _delta(block, piece)}
            yield encode("content_block_delta", payload), True
            deltas_sent += 1
        if faulty and deltas_sent >= FAULT_AFTER_DELTAS:
            break
        if block.type == "thinking":
            signature = {"type": "signature_delta", "signature": block.signature}
            yield (
                encode(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": signature},
                ),
                False,
            )
        yield encode("content_block_stop", {"type": "content_block_stop", "index": index}), False
    if faulty:
        # NOTE: a plan with fewer deltas than FAULT_AFTER_DELTAS fails right after them.
        if plan.fault == "midstream_error":
            yield error_event(), False
        return
    if not plan.blocks:
        yield encode("ping", {"type": "ping"}), False
    delta: dict[str, Any] = {"stop_reason": plan.stop_reason, "stop_sequence": plan.stop_sequence}
    if plan.stop_details is not None:
        delta["stop_details"] = plan.stop_details
    yield (
        encode(
            "message_delta",
            {
                "type": "message_delta",
                "delta": delta,
                "usage": {
                    "input_tokens": usage["input_tokens"],
                    "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                    "cache_read_input_tokens": usage["cache_read_input_tokens"],
                    "output_tokens": plan.output_tokens,
                },
            },
        ),
        False,
    )
    yield encode("message_stop", {"type": "message_stop"}), False
