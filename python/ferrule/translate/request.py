"""OpenAI Chat Completions request -> Anthropic Messages request.

Follows ../shared/reference/translation.md ("Request"). The translation is a pure, deterministic
function of the request (same history, same bytes every turn) because Anthropic's prompt cache
matches prefixes byte for byte. Anything the API would reject is either translated, dropped (when
it is an OpenAI-only knob with no effect on the answer) or refused here with a 400 naming the
field, so nothing is sent upstream that Anthropic would reject.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from ..breakpoints import min_cacheable_tokens
from ..errors import ProxyError
from ..limits import (
    MAX_MESSAGES,
    MAX_TOKENS,
    check_depth,
    check_identifier,
    required_identifier,
)
from ..models import (
    FALLBACK_MAX_TOKENS,
    ModelCaps,
    capabilities,
    default_max_tokens,
    resolve_model,
)
from .model_rules import OPENAI_EFFORTS, Notes, apply_reasoning, apply_sampling

__all__ = ["JSON_TOOL_NAME", "Translated", "model_facts", "to_anthropic"]

# The forced tool that carries response_format JSON when it is emulated with tool use.
JSON_TOOL_NAME = "json_response"

# json_object: any JSON object (the forced tool's schema, or structured outputs' where needed)
_ANY_OBJECT: dict[str, Any] = {"type": "object"}
# OpenAI service tiers -> Anthropic's (auto: priority capacity when the account has it)
_SERVICE_TIER = {
    "auto": "auto",
    "priority": "auto",
    "default": "standard_only",
    "flex": "standard_only",
    "scale": "auto",
}
_WEB_SEARCH_TOOL = "web_search_20250305"
_DATA_URL = re.compile(r"^data:(?P<mt>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$", re.S)
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


@dataclass(frozen=True, slots=True)
class Translated:
    """The Anthropic request and what the response side needs to know about the original."""

    body: dict[str, Any]
    model: str  # the model name the client asked for (echoed back in responses)
    stream: bool
    include_usage: bool
    json_tool: str | None  # response_format emulated with this forced tool
    thinking: bool = False  # the model thinks up front on this request
    warnings: tuple[str, ...] = ()  # what was dropped or changed, for x-ferrule-warning


def _bad(message: str, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, type="invalid_request_error", param=param)


def _number(body: Mapping[str, Any], key: str) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _bad(f"'{key}' must be a number", key)
    if v != v or v in (float("inf"), float("-inf")):
        raise _bad(f"'{key}' must be a finite number", key)
    return float(v) if isinstance(v, float) else v


def _text_of(content: Any, param: str) -> str:
    """Plain text of a system/developer/tool content (a string or a list of text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise _bad(f"'{param}[{i}]' must be a text part", f"{param}[{i}]")
            parts.append(part["text"])
        return "\n".join(parts)
    raise _bad(f"'{param}' must be a string or a list of content parts", param)


def _image_block(part: Mapping[str, Any], param: str) -> dict[str, Any]:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str) or not url:
        raise _bad(f"'{param}.image_url.url' must be a non-empty string", f"{param}.image_url")
    if url.startswith("data:"):
        m = _DATA_URL.match(url)
        if not m:
            raise _bad(f"'{param}' is not a base64 data URL", f"{param}.image_url")
        media_type = m["mt"].lower()
        if media_type not in _IMAGE_TYPES:
            raise _bad(
                f"'{param}': image type {media_type} is not supported (use jpeg, png, gif or webp)",
                f"{param}.image_url",
            )
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": m["data"]},
        }
    if url.startswith(("https://", "http://")):
        # NOTE: never fetched here (no SSRF): Anthropic fetches URL sources itself.
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _bad(f"'{param}.image_url.url' must be a data: or http(s) URL", f"{param}.image_url")


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad(f"'{param}' must be a string or a list of content parts", param)
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        p = f"{param}[{i}]"
        if not isinstance(part, dict):
            raise _bad(f"'{p}' must be an object", p)
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise _bad(f"'{p}.text' must be a string", p)
            if text:  # the API rejects empty text blocks
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part, p))
        else:
            raise _bad(f"'{p}': content part type {kind!r} is not supported", p)
    return blocks


def _assistant_blocks(msg: Mapping[str, Any], param: str) -> list[dict[str, Any]]:
    content = msg.get("content")
    blocks: list[dict[str, Any]] = []
    if isinstance(content, list):
        for i, part in enumerate(content):
            p = f"{param}.content[{i}]"
            if not isinstance(part, dict):
                raise _bad(f"'{p}' must be an object", p)
            key = "refusal" if part.get("type") == "refusal" else "text"
            text = part.get(key)
            if part.get("type") not in ("text", "refusal") or not isinstance(text, str):
                raise _bad(f"'{p}' must be a text or refusal part", p)
            if text:
                blocks.append({"type": "text", "text": text})
    elif isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif content is not None:
        raise _bad(f"'{param}.content' must be a string, a list or null", f"{param}.content")
    calls = msg.get("tool_calls")
    if calls is None:
        return blocks
    if not isinstance(calls, list):
        raise _bad(f"'{param}.tool_calls' must be a list", f"{param}.tool_calls")
    for i, call in enumerate(calls):
        p = f"{param}.tool_calls[{i}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(call.get("id"), str):
            raise _bad(f"'{p}' must have an 'id' and a 'function'", p)
        name, args = fn.get("name"), fn.get("arguments")
        if not isinstance(name, str) or not name:
            raise _bad(f"'{p}.function.name' must be a non-empty string", p)
        if args is None or args == "" or (isinstance(args, str) and not args.strip()):
            tool_input: Any = {}
        elif isinstance(args, str):
            try:
                tool_input = orjson.loads(args)
            except orjson.JSONDecodeError:
                raise _bad(f"'{p}.function.arguments' is not valid JSON", p) from None
        else:
            tool_input = args
        if not isinstance(tool_input, dict):
            raise _bad(f"'{p}.function.arguments' must be a JSON object", p)
        check_depth(tool_input, f"{p}.function.arguments", args if isinstance(args, str) else None)
        blocks.append({"type": "tool_use", "id": call["id"], "name": name, "input": tool_input})
    return blocks


def _tool_result(msg: Mapping[str, Any], param: str) -> dict[str, Any]:
    call_id = msg.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"'{param}.tool_call_id' must be a non-empty string", f"{param}.tool_call_id")
    text = _text_of(msg.get("content"), f"{param}.content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if text:  # empty text blocks are rejected; an empty result is a result with no content
        block["content"] = text
    return block


def _turns(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, Anthropic turns) from OpenAI messages."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    leading = True
    for i, msg in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _bad(f"'{param}' must be an object", param)
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _text_of(msg.get("content"), f"{param}.content")
            if leading:
                if text:
                    system.append({"type": "text", "text": text})
                continue
            # Decision (translation.md): later system messages stay in place, as user text,
            # so the cached prefix before them never changes.
            role, blocks = "user", ([{"type": "text", "text": text}] if text else [])
        elif role == "user":
            blocks = _user_blocks(msg.get("content"), f"{param}.content")
        elif role == "assistant":
            blocks = _assistant_blocks(msg, param)
        elif role == "tool":
            role, blocks = "user", [_tool_result(msg, param)]
        else:
            raise _bad(f"'{param}.role' must be system, developer, user, assistant or tool", param)
        leading = False
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            _merge(turns[-1]["content"], blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _merge(into: list[dict[str, Any]], blocks: list[dict[str, Any]]) -> None:
    """Merge a same-role turn; tool_result blocks stay first in a user turn, as the API wants."""
    for block in blocks:
        if block["type"] == "tool_result":
            at = 0
            while at < len(into) and into[at]["type"] == "tool_result":
                at += 1
            into.insert(at, block)
        else:
            into.append(block)


def _tools(
    body: Mapping[str, Any], caps: ModelCaps | None, notes: Notes
) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _bad("'tools' must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        p = f"tools[{i}]"
        fn = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(fn, dict)
        ):
            raise _bad(f"'{p}' must be a function tool", p)
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"'{p}.function.name' must be a non-empty string", p)
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        elif not isinstance(params, dict):
            raise _bad(f"'{p}.function.parameters' must be an object", p)
        check_depth(params, f"{p}.function.parameters")
        entry: dict[str, Any] = {"name": name}
        desc = fn.get("description")
        if isinstance(desc, str) and desc:
            entry["description"] = desc
        entry["input_schema"] = params
        if fn.get("strict") is True:
            if caps is None or caps.strict_tools:
                entry["strict"] = True
            else:
                notes.note(f"{p}.function.strict ignored: {caps.id} has no strict tool use")
        out.append(entry)
    return out or None


def _tool_choice(body: Mapping[str, Any], has_tools: bool) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _bad("'parallel_tool_calls' must be a boolean", "parallel_tool_calls")
    if not has_tools:
        return None  # NOTE: tool_choice without tools is meaningless; the API would reject it
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        out = {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif (
        isinstance(choice, dict)
        and isinstance(choice.get("function"), dict)
        and isinstance(choice["function"].get("name"), str)
    ):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise _bad(
            "'tool_choice' must be auto, none, required or {type: function, function: {name}}",
            "tool_choice",
        )
    if parallel is False:
        if out is None:
            out = {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


def _stop(body: Mapping[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    seqs = [stop] if isinstance(stop, str) else stop
    if not isinstance(seqs, list) or not all(isinstance(s, str) for s in seqs):
        raise _bad("'stop' must be a string or a list of strings", "stop")
    kept = [s for s in seqs if s.strip()]  # the API rejects whitespace-only sequences
    return kept or None


def _response_format(
    body: Mapping[str, Any],
) -> dict[str, Any] | None:
    """The input schema of the forced JSON tool, or None when no JSON mode was asked for."""
    rf = body.get("response_format")
    if rf is None:
        return None
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return _ANY_OBJECT
    if kind == "json_schema":
        spec = rf.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict) or schema.get("type", "object") != "object":
            raise _bad(
                "'response_format.json_schema.schema' must be a JSON schema of an object",
                "response_format",
            )
        check_depth(schema, "response_format.json_schema.schema")
        return schema
    raise _bad("'response_format.type' must be text, json_object or json_schema", "response_format")


def _identity(body: Mapping[str, Any], out: dict[str, Any], notes: Notes) -> None:
    """``safety_identifier`` (or the older ``user``) -> ``metadata.user_id``; ``prompt_cache_key``
    is accepted and never forwarded (an identifier of the client's, not Anthropic's)."""
    for key in ("safety_identifier", "user", "prompt_cache_key"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise _bad(f"'{key}' must be a string", key)
    ident = body.get("safety_identifier") or body.get("user")
    if ident:
        check_identifier(ident, "safety_identifier" if body.get("safety_identifier") else "user")
        out["metadata"] = {"user_id": ident}


def _web_search(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """``web_search_options`` -> Anthropic's server web search tool
    (platform.claude.com/docs/en/agents-and-tools/tool-use/web-search-tool)."""
    opts = body.get("web_search_options")
    if opts is None:
        return None
    if not isinstance(opts, dict):
        raise _bad("'web_search_options' must be an object", "web_search_options")
    tool: dict[str, Any] = {"type": _WEB_SEARCH_TOOL, "name": "web_search"}
    loc = opts.get("user_location")
    approx = loc.get("approximate") if isinstance(loc, dict) else None
    if isinstance(approx, dict):
        where = {
            k: v
            for k, v in approx.items()
            if k in ("city", "region", "country", "timezone") and isinstance(v, str) and v
        }
        if where:
            tool["user_location"] = {"type": "approximate", **where}
    return tool


def _service_tier(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    tier = body.get("service_tier")
    if tier is None:
        return
    if tier not in _SERVICE_TIER:
        raise _bad(f"'service_tier' must be one of {', '.join(_SERVICE_TIER)}", "service_tier")
    out["service_tier"] = _SERVICE_TIER[tier]


def _has_tool_blocks(turns: list[dict[str, Any]]) -> bool:
    return any(b["type"] in ("tool_use", "tool_result") for t in turns for b in t["content"])


def _history_tools(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names: dict[str, None] = {}
    for turn in turns:
        for block in turn["content"]:
            if block["type"] == "tool_use":
                names.setdefault(block["name"], None)
    if not names:  # tool results only: the API still wants a tool defined
        names["tool"] = None
    return [
        {
            "name": name,
            "description": "A tool used earlier in this conversation (not offered now).",
            "input_schema": {"type": "object"},
        }
        for name in names
    ]


def to_anthropic(
    body: Any,
    *,
    aliases: Mapping[str, str],
    version: str,
    strict: bool = False,
) -> Translated:
    """Translate a parsed OpenAI request body. Raises ProxyError(400) for what cannot be sent."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model_asked = required_identifier(body.get("model"), "model")  # the ledger, /stats keep it
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' is required and must be a non-empty list", "messages")
    if len(messages) > MAX_MESSAGES:
        raise _bad(f"'messages' holds more than {MAX_MESSAGES:,} messages", "messages")
    n = body.get("n")
    if n is not None and n != 1:
        raise _bad("'n' other than 1 is not supported: Anthropic returns one choice", "n")
    if body.get("logprobs") is True or body.get("top_logprobs") is not None:
        raise _bad(
            "'logprobs' is not supported: Anthropic does not return log probabilities", "logprobs"
        )
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise _bad("'stream_options' must be an object", "stream_options")
    include_usage = bool(stream and opts and opts.get("include_usage") is True)

    model = resolve_model(model_asked, aliases)
    system, turns = _turns(messages)
    if not turns:
        raise _bad("'messages' must contain at least one user or assistant message", "messages")
    # The API rejects a final assistant (prefill) turn that ends in whitespace.
    last = turns[-1]
    if last["role"] == "assistant" and last["content"][-1]["type"] == "text":
        text = last["content"][-1]["text"].rstrip()
        if text:
            last["content"][-1]["text"] = text
        else:
            last["content"].pop()
            if not last["content"]:
                turns.pop()

    max_tokens: Any = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    asked_max = max_tokens is not None
    if asked_max:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _bad("'max_tokens' must be a positive integer", "max_tokens")
        if max_tokens > MAX_TOKENS:  # thinking budgets are added to it: no 64-bit overflow
            raise _bad(f"'max_tokens' must be at most {MAX_TOKENS}", "max_tokens")
    else:
        max_tokens = default_max_tokens(model)

    out: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
    if system:
        out["system"] = system
    caps = capabilities(model)
    notes = Notes(strict=strict)

    temperature = _number(body, "temperature")
    top_p = _number(body, "top_p")
    if temperature is not None:
        temperature = min(max(temperature, 0), 1)  # OpenAI allows up to 2
    if top_p is not None and not 0 <= top_p <= 1:
        raise _bad("'top_p' must be between 0 and 1", "top_p")

    effort = body.get("reasoning_effort")
    thinking = False
    if effort is not None:
        if effort not in OPENAI_EFFORTS:
            raise _bad(
                f"'reasoning_effort' must be one of {', '.join(OPENAI_EFFORTS)}",
                "reasoning_effort",
            )
        thinking = apply_reasoning(out, effort, caps, asked_max=asked_max, notes=notes)
    elif caps is not None:
        thinking = caps.thinking.on(None)  # models that think unless told otherwise

    if version == "2023-06-01":
        apply_sampling(out, temperature, top_p, caps, thinking=thinking, notes=notes)
    # NOTE: 2026-10-21 rejects temperature/top_p/top_k even at default values: dropped.

    stop = _stop(body)
    if stop:
        out["stop_sequences"] = stop
    _identity(body, out, notes)

    tools = _tools(body, caps, notes)
    web = _web_search(body)
    if web is not None:
        tools = [*(tools or []), web]
    choice = _tool_choice(body, tools is not None)
    json_schema = _response_format(body)
    json_tool = None
    manual = isinstance(out.get("thinking"), dict) and out["thinking"].get("type") == "enabled"
    forced_ok = not manual and (caps is None or caps.forced_tool_choice)
    if json_schema is not None:
        native = caps is not None and caps.structured_outputs
        if native and (json_schema is not _ANY_OBJECT or not forced_ok):
            # structured outputs (output_config.format): the answer is the JSON text itself
            cfg = out.setdefault("output_config", {})
            cfg["format"] = {"type": "json_schema", "schema": json_schema}
        else:
            json_tool = JSON_TOOL_NAME
            tools = [
                *(tools or []),
                {
                    "name": JSON_TOOL_NAME,
                    "description": "Respond with the answer as JSON matching this schema.",
                    "input_schema": json_schema,
                },
            ]
            if not forced_ok or (choice is not None and choice["type"] != "auto"):
                choice = {"type": "any"} if forced_ok else {"type": "auto"}
            elif len(tools) == 1:
                choice = {"type": "tool", "name": JSON_TOOL_NAME}
            else:
                choice = {"type": "any"}
    if not forced_ok and choice is not None and choice["type"] in ("any", "tool"):
        # Manual thinking, and some models, only allow auto/none: forcing a tool is a 400.
        if json_tool is None:
            notes.note("tool_choice: a forced tool is not accepted here; sent as auto")
        choice = {k: v for k, v in choice.items() if k == "disable_parallel_tool_use"}
        choice["type"] = "auto"
    if not tools and _has_tool_blocks(turns):
        # The API wants every tool in the history defined, even when this request offers
        # none (AutoGen reflection, a handoff to an agent without tools): declare the ones
        # used, and forbid new calls.
        tools = _history_tools(turns)
        choice = {"type": "none"}
    if tools:
        out["tools"] = tools
    if choice is not None:
        out["tool_choice"] = choice
    _service_tier(body, out)
    if body.get("verbosity") is not None:
        notes.note("verbosity ignored: Anthropic has no such setting (effort steers length)")
    if stream:
        out["stream"] = True
    return Translated(
        body=out,
        model=model_asked,
        stream=stream,
        include_usage=include_usage,
        json_tool=json_tool,
        thinking=thinking,
        warnings=tuple(notes.warnings),
    )


def model_facts(
    aliases: Mapping[str, str],
) -> Callable[[str], tuple[str, int, bool, bool, bool, bool, bool, bool, int]]:
    """What :func:`to_anthropic` and breakpoint placement read of the model table, for the
    native request path (``ChatRequests`` in ``ferrule.backend``): for a model name as the
    client asks for it, (model sent, default ``max_tokens``, thinks by default, ``strict`` tools,
    ``temperature`` taken at any value, ``top_p`` too, the two not together, forced
    ``tool_choice``, minimum cacheable tokens). An unknown model is passed through as it is, as
    here."""

    @lru_cache(maxsize=256)
    def facts(asked: str) -> tuple[str, int, bool, bool, bool, bool, bool, bool, int]:
        model = resolve_model(asked, aliases)
        caps = capabilities(model)
        cache_min = min_cacheable_tokens(model)
        if caps is None:
            return (model, FALLBACK_MAX_TOKENS, False, True, True, True, False, True, cache_min)
        sampling = caps.sampling
        return (
            model,
            caps.default_max_tokens,
            caps.thinking.on(None),
            caps.strict_tools,
            "temperature" in sampling.accepted,
            "top_p" in sampling.accepted,
            sampling.exclusive,
            caps.forced_tool_choice,
            cache_min,
        )

    return facts
