"""The request bodies of the load benchmark (OpenAI Chat Completions, as agents send them) and the
fake upstream's payloads.

Every body carries ``BENCHID-0000000000`` in its first user message: the load generator writes a
fresh request number into those ten digits for every request, so no two requests are alike (no
response cache can answer them) and the fake upstream can tell which client a request belongs to
(the "request for a client that has gone" count). ``BENCHPACE=20`` in a body makes the fake
upstream pace its stream (50 deltas 20 ms apart). Both markers travel in the message text
because that is the only thing every proxy forwards unchanged.

Every body names ``MODEL``, except for a target that wants its own model name (TensorZero's
``tensorzero::model_name::<name>``): ``write_all(folder, model=...)`` writes the same bodies,
the same sizes, with that name.

* ``2k``: a 2,048-byte request (system prompt and one user message), as in the issue's table.
* ``100k``: a ~100 KB coding-agent turn in OpenAI shape: tools, file views, shell output with
  ANSI colours, progress bars and repeated lines, JSON results, as tool messages. It is built from
  ``ferrule.corpus`` (deterministic synthetic sessions) converted to OpenAI's format, so lossless
  compression has realistic material to work on; a padded request when that module is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL = "claude-sonnet-4-6"
ID_MARK = "BENCHID-0000000000"
PACE_MARK = "BENCHPACE={ms}"
TOKEN_MARKER = "Hello"  # the first streamed word of the fake upstream: time to first token
PACED_TOKENS = 50


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def small(stream: bool, size: int = 2048, pace_ms: int = 0, model: str = MODEL) -> bytes:
    """A ``size``-byte OpenAI request: a short system prompt and one padded user message."""
    pace = f" {PACE_MARK.format(ms=pace_ms)}" if pace_ms else ""
    base: dict[str, Any] = {
        "model": model,
        "max_tokens": 1024,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are a benchmark."},
            {"role": "user", "content": f"{ID_MARK}{pace} "},
        ],
        "user": "bench-user-0001",
    }
    pad = size - len(_dumps(base))
    words = "All work and no play makes Jack a dull boy. " * (size // 40 + 2)
    base["messages"][1]["content"] += words[: max(pad, 0)]
    out = _dumps(base)
    assert len(out) == size or pad < 0, len(out)
    return out


def _openai_messages(anthropic: dict[str, Any]) -> list[dict[str, Any]]:
    """An Anthropic Messages conversation in OpenAI Chat Completions shape."""
    out: list[dict[str, Any]] = []
    system = anthropic.get("system")
    if isinstance(system, list):
        system = "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    if system:
        out.append({"role": "system", "content": system})
    for msg in anthropic["messages"]:
        content = msg["content"]
        if isinstance(content, str):
            out.append({"role": msg["role"], "content": content})
            continue
        if msg["role"] == "assistant":
            text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
            calls = [
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": json.dumps(b["input"])},
                }
                for b in content
                if b.get("type") == "tool_use"
            ]
            item: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                item["tool_calls"] = calls
            out.append(item)
            continue
        texts = []
        for b in content:
            if b.get("type") == "tool_result":
                c = b.get("content")
                if isinstance(c, list):
                    c = "".join(p.get("text", "") for p in c if isinstance(p, dict))
                out.append({"role": "tool", "tool_call_id": b["tool_use_id"], "content": c})
            elif b.get("type") == "text":
                texts.append(b["text"])
        if texts:
            out.append({"role": "user", "content": "\n".join(texts)})
    return out


def large(stream: bool, target: int = 100_000, model: str = MODEL) -> bytes:
    """A ~``target``-byte agent request (see the module docstring)."""
    try:
        from ferrule import corpus
    except ImportError:  # pragma: no cover - an older Ferrule without the corpus
        return small(stream, size=target, model=model)
    best: bytes | None = None
    for seed in range(1, 40):
        for req in corpus.session(seed, turns=24).requests():
            data = _openai_body(req, stream, model)
            if len(data) <= target and (best is None or len(data) > len(best)):
                best = data
        if best is not None and len(best) > 0.97 * target:
            break
    assert best is not None
    return best


def _openai_body(req: dict[str, Any], stream: bool, model: str = MODEL) -> bytes:
    messages = _openai_messages(req)
    first_user = next(m for m in messages if m["role"] == "user")
    first_user["content"] = f"{ID_MARK} {first_user['content']}"
    tools = [
        {
            "type": "function",
            "function": {
                "name": t["name"],
                "description": t.get("description", ""),
                "parameters": t["input_schema"],
            },
        }
        for t in req.get("tools", [])
    ]
    body: dict[str, Any] = {"model": model, "max_tokens": 4096, "stream": stream}
    body["messages"] = messages
    if tools:
        body["tools"] = tools
    return _dumps(body)


def payloads_json() -> str:
    """The fake upstream's answers, byte for byte those of benches/upstream_clients."""
    from benches.upstream_clients.fast_upstream import EVENTS, NON_STREAM_BODY

    return json.dumps(
        {"events": [e.decode() for e in EVENTS], "json_body": NON_STREAM_BODY.decode()}
    )


def write_all(folder: Path, model: str = MODEL) -> dict[str, Path]:
    """Write every body (naming ``model``) and the payload file into ``folder``; name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "ns-2k": small(False, model=model),
        "st-2k": small(True, model=model),
        "ns-100k": large(False, model=model),
        "st-100k": large(True, model=model),
        "paced": small(True, pace_ms=20, model=model),
    }
    out = {}
    for name, data in files.items():
        path = folder / f"{name}.json"
        path.write_bytes(data)
        out[name] = path
    path = folder / "payloads.json"
    path.write_text(payloads_json())
    out["payloads"] = path
    return out
