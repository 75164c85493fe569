"""Strict request validation, so that a translation bug fails a test instead of passing silently.

The rules and the wording of the messages follow the real Messages API: schema errors read like
its pydantic-style ``path.to.field: problem`` (``temperature: Extra inputs are not permitted``,
``max_tokens: Field required``), and the semantic checks quote the API's own sentences where they
are known. Sources: the Messages API reference (as shipped in the ``anthropic`` SDK's docstrings),
the errors, versioning, extended/adaptive thinking, tool use and prompt caching pages, and error
texts users have reported. What the real API does that this module does not check is listed in
docs/mock-upstream.md.

Decisions taken from the current docs (the API changed here over time):
- consecutive ``user`` or ``assistant`` turns are accepted and combined into one turn;
- the first message may use either role (the 1P API dropped "first message must use the user role");
- a final ``assistant`` message is a prefill: a 400 on Claude 4.6 models, and elsewhere its text
  may not end with whitespace;
- ``role: "system"`` inside ``messages`` (mid-conversation system messages) is not simulated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..models import EFFORT_LEVELS, ModelCaps, effort_rank
from . import signing
from .errors import ApiError, invalid
from .models import ModelInfo, resolve

__all__ = ["API_VERSIONS", "SAMPLING_VERSION", "Checked", "validate_request"]

SAMPLING_VERSION = "2023-06-01"
"""The version that still accepts ``temperature``, ``top_p`` and ``top_k``."""
API_VERSIONS = (SAMPLING_VERSION, "2026-10-21")

_COMMON_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "cache_control",
    }
)
_CREATE_FIELDS = _COMMON_FIELDS | {
    "max_tokens",
    "metadata",
    "stop_sequences",
    "stream",
    "service_tier",
    "container",
    "inference_geo",
    "speed",
    "diagnostics",
}
_SAMPLING_FIELDS = frozenset({"temperature", "top_p", "top_k"})
# Fields that exist only behind an ``anthropic-beta`` header.
_BETA_FIELDS = frozenset({"mcp_servers", "context_management"})

_MESSAGE_BLOCK_TAGS = (
    "bash_code_execution_tool_result",
    "code_execution_tool_result",
    "container_upload",
    "document",
    "image",
    "redacted_thinking",
    "search_result",
    "server_tool_use",
    "text",
    "text_editor_code_execution_tool_result",
    "thinking",
    "tool_result",
    "tool_search_tool_result",
    "tool_use",
    "web_fetch_tool_result",
    "web_search_tool_result",
)
_TOOL_RESULT_BLOCK_TAGS = ("document", "image", "search_result", "text")
_TOOL_TAGS = (
    "bash_20250124",
    "code_execution_20250825",
    "custom",
    "memory_20250818",
    "text_editor_20250728",
    "tool_search_tool_bm25_20251119",
    "tool_search_tool_regex_20251119",
    "web_fetch_20250910",
    "web_search_20250305",
)
# Server tools are versioned by date; any ``name_YYYYMMDD`` type is let through unchecked.
_SERVER_TOOL_TYPE = re.compile(r"^[a-z_]+_\d{8}$")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_TOOL_NAME_PATTERN = "^[a-zA-Z0-9_-]{1,128}$"
_IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_CUSTOM_TOOL_FIELDS = frozenset(
    {
        "type",
        "name",
        "description",
        "input_schema",
        "cache_control",
        "strict",
        "input_examples",
        "defer_loading",
        "allowed_callers",
        "eager_input_streaming",
    }
)
_MAX_CACHE_BREAKPOINTS = 4
_THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"


@dataclass
class Checked:
    """What validation learned that the answer needs."""

    model: ModelInfo
    thinking_on: bool = False
    thinking_display: str = "summarized"
    tool_ids: set[str] = field(default_factory=set)
    thinking_mode: str | None = None
    """``thinking.type`` as sent (None when absent: the model's default applies)."""
    effort: str | None = None
    """The effort in force: the request's, else the model's default (None: no effort)."""


@dataclass
class _Ctx:
    version: str
    cache_breakpoints: int = 0


# ---------------------------------------------------------------------------------------------
# small typed checks, each raising the API's message for its path


def _at(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def _required(path: str, key: str) -> ApiError:
    return invalid(f"{_at(path, key)}: Field required")


def _extra(path: str, obj: Mapping[str, Any], allowed: frozenset[str] | set[str]) -> None:
    for key in obj:
        if key not in allowed:
            raise invalid(f"{_at(path, key)}: Extra inputs are not permitted")


def _dict(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(
            f"{path}: Input should be a valid dictionary or object to extract fields from"
        )
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid(f"{path}: Input should be a valid list")
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"{path}: Input should be a valid string")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"{path}: Input should be a valid boolean")
    return value


def _int(value: Any, path: str) -> int:
    # NOTE: JSON true/false are not integers here, although Python's bool is an int subclass.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"{path}: Input should be a valid integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise invalid(
                f"{path}: Input should be a valid integer, got a number with a fractional part"
            )
        return int(value)
    return value


def _number(value: Any, path: str, *, ge: float | None = None, le: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"{path}: Input should be a valid number")
    if ge is not None and value < ge:
        raise invalid(f"{path}: Input should be greater than or equal to {ge:g}")
    if le is not None and value > le:
        raise invalid(f"{path}: Input should be less than or equal to {le:g}")
    return float(value)


def _literal(value: Any, path: str, choices: Sequence[str]) -> str:
    if value not in choices:
        quoted = [f"'{c}'" for c in choices]
        expected = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
        raise invalid(f"{path}: Input should be {expected}")
    return str(value)


def _tag(obj: dict[str, Any], path: str, tags: Sequence[str]) -> str:
    """The ``type`` discriminator of a tagged union, with pydantic's message when it is wrong."""
    if "type" not in obj:
        raise invalid(f"{path}: Unable to extract tag using discriminator 'type'")
    tag = obj["type"]
    if tag not in tags:
        expected = ", ".join(f"'{t}'" for t in tags)
        raise invalid(
            f"{path}: Input tag '{tag}' found using 'type' does not match any of the expected tags: {expected}"
        )
    return str(tag)


def _cache_control(value: Any, path: str, ctx: _Ctx) -> None:
    obj = _dict(value, path)
    if obj.get("type") != "ephemeral":
        _tag(obj, path, ("ephemeral",))
    _extra(path, obj, {"type", "ttl"})
    if "ttl" in obj:
        _literal(obj["ttl"], f"{path}.ttl", ("5m", "1h"))
    ctx.cache_breakpoints += 1


# ---------------------------------------------------------------------------------------------
# content blocks


def _text_block(block: dict[str, Any], path: str, ctx: _Ctx, *, where: str, role: str) -> None:
    _extra(path, block, {"type", "text", "cache_control", "citations"})
    if "text" not in block:
        raise _required(path, "text")
    text = _str(block["text"], f"{path}.text")
    # The API reports these two for the whole field ("messages: ...", "system: ..."), not per block.
    if not text:
        raise invalid(f"{where}: text content blocks must be non-empty")
    if not text.strip():
        raise invalid(f"{where}: text content blocks must contain non-whitespace text")
    citations = block.get("citations")
    if citations and role == "user" and ctx.version != SAMPLING_VERSION:
        raise invalid(
            f"{path}.citations: citations are not supported on text blocks in user messages"
        )
    if block.get("cache_control") is not None:
        _cache_control(block["cache_control"], f"{path}.cache_control", ctx)


def _image_block(block: dict[str, Any], path: str, ctx: _Ctx) -> None:
    _extra(path, block, {"type", "source", "cache_control"})
    if "source" not in block:
        raise _required(path, "source")
    spath = f"{path}.source"
    source = _dict(block["source"], spath)
    kind = _tag(source, spath, ("base64", "file", "url"))
    if kind == "base64":
        _extra(f"{spath}.base64", source, {"type", "media_type", "data"})
        for key in ("media_type", "data"):
            if key not in source:
                raise _required(f"{spath}.base64", key)
        _literal(source["media_type"], f"{spath}.base64.media_type", _IMAGE_MEDIA_TYPES)
        _str(source["data"], f"{spath}.base64.data")
    elif kind == "url":
        _extra(f"{spath}.url", source, {"type", "url"})
        if "url" not in source:
            raise _required(f"{spath}.url", "url")
        _str(source["url"], f"{spath}.url.url")
    else:
        _extra(f"{spath}.file", source, {"type", "file_id"})
        if "file_id" not in source:
            raise _required(f"{spath}.file", "file_id")
    if block.get("cache_control") is not None:
        _cache_control(block["cache_control"], f"{path}.cache_control", ctx)


def _document_block(block: dict[str, Any], path: str, ctx: _Ctx) -> None:
    _extra(path, block, {"type", "source", "cache_control", "citations", "context", "title"})
    if "source" not in block:
        raise _required(path, "source")
    source = _dict(block["source"], f"{path}.source")
    _tag(source, f"{path}.source", ("base64", "content", "file", "text", "url"))
    if block.get("cache_control") is not None:
        _cache_control(block["cache_control"], f"{path}.cache_control", ctx)


def _tool_result_block(block: dict[str, Any], path: str, ctx: _Ctx) -> None:
    _extra(path, block, {"type", "tool_use_id", "content", "is_error", "cache_control"})
    if "tool_use_id" not in block:
        raise _required(path, "tool_use_id")
    _str(block["tool_use_id"], f"{path}.tool_use_id")
    if "is_error" in block:
        _bool(block["is_error"], f"{path}.is_error")
    content = block.get("content")
    if isinstance(content, list):
        for j, inner in enumerate(content):
            ipath = f"{path}.content.{j}"
            inner = _dict(inner, ipath)
            kind = _tag(inner, ipath, _TOOL_RESULT_BLOCK_TAGS)
            if kind == "text":
                _text_block(inner, ipath, ctx, where="messages", role="user")
            elif kind == "image":
                _image_block(inner, ipath, ctx)
            elif kind == "document":
                _document_block(inner, ipath, ctx)
    elif content is not None and not isinstance(content, str):
        raise invalid(f"{path}.content: Input should be a valid string or a valid list")
    if block.get("cache_control") is not None:
        _cache_control(block["cache_control"], f"{path}.cache_control", ctx)


def _content_block(value: Any, path: str, role: str, ctx: _Ctx) -> dict[str, Any]:
    block = _dict(value, path)
    kind = _tag(block, path, _MESSAGE_BLOCK_TAGS)
    if kind == "text":
        _text_block(block, path, ctx, where="messages", role=role)
    elif kind == "image":
        _image_block(block, path, ctx)
    elif kind == "document":
        if role == "assistant" and ctx.version != SAMPLING_VERSION:
            raise invalid(f"{path}: document blocks are not supported in assistant messages")
        _document_block(block, path, ctx)
    elif kind == "tool_use":
        if role != "assistant":
            raise invalid(f"{path}: tool_use blocks may only appear in assistant messages")
        _extra(path, block, {"type", "id", "name", "input", "cache_control", "caller"})
        for key in ("id", "name", "input"):
            if key not in block:
                raise _required(path, key)
        _str(block["id"], f"{path}.id")
        _str(block["name"], f"{path}.name")
        _dict(block["input"], f"{path}.input")
        if block.get("cache_control") is not None:
            _cache_control(block["cache_control"], f"{path}.cache_control", ctx)
    elif kind == "tool_result":
        if role != "user":
            raise invalid(f"{path}: tool_result blocks may only appear in user messages")
        _tool_result_block(block, path, ctx)
    elif kind == "thinking":
        if role != "assistant":
            raise invalid(f"{path}: thinking blocks may only appear in assistant messages")
        _extra(path, block, {"type", "thinking", "signature"})
        for key in ("thinking", "signature"):
            if key not in block:
                raise _required(path, key)
            _str(block[key], f"{path}.{key}")
    elif kind == "redacted_thinking":
        _extra(path, block, {"type", "data"})
        if "data" not in block:
            raise _required(path, "data")
    elif block.get("cache_control") is not None:
        # Server-tool blocks are passed through unchecked, but their breakpoints still count.
        _cache_control(block["cache_control"], f"{path}.cache_control", ctx)
    return block


# ---------------------------------------------------------------------------------------------
# messages and the turn structure


@dataclass
class _Turn:
    """Consecutive messages of one role, combined as the API combines them."""

    role: str
    first_index: int
    blocks: list[tuple[int, int, dict[str, Any]]]  # (message index, block index, block)


def _messages(value: Any, ctx: _Ctx) -> list[_Turn]:
    messages = _list(value, "messages")
    if not messages:
        raise invalid("messages: at least one message is required")
    turns: list[_Turn] = []
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        message = _dict(message, path)
        for key in ("role", "content"):
            if key not in message:
                raise _required(path, key)
        _extra(path, message, {"role", "content"})
        role = _literal(message["role"], f"{path}.role", ("user", "assistant"))
        content = message["content"]
        is_final_assistant = i == len(messages) - 1 and role == "assistant"
        if isinstance(content, str):
            blocks = [{"type": "text", "text": content}] if content else []
        elif isinstance(content, list):
            blocks = [
                _content_block(b, f"{path}.content.{j}", role, ctx) for j, b in enumerate(content)
            ]
        else:
            raise invalid(f"{path}.content: Input should be a valid string or a valid list")
        if not blocks and not is_final_assistant:
            raise invalid(
                f"{path}: all messages must have non-empty content except for the optional final assistant message"
            )
        indexed = [(i, j, b) for j, b in enumerate(blocks)]
        if turns and turns[-1].role == role:
            turns[-1].blocks.extend(indexed)
        else:
            turns.append(_Turn(role, i, indexed))
    return turns


def _check_tool_pairing(turns: list[_Turn]) -> set[str]:
    """Every tool_use answered at the start of the next turn; every tool_result answering one."""
    all_ids: set[str] = set()
    for t, turn in enumerate(turns):
        if turn.role == "user":
            previous = turns[t - 1] if t > 0 else None
            offered = {
                b["id"]
                for _, _, b in (previous.blocks if previous else [])
                if b.get("type") == "tool_use"
            }
            for i, j, block in turn.blocks:
                if block.get("type") == "tool_result" and block["tool_use_id"] not in offered:
                    raise invalid(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block['tool_use_id']}. Each `tool_result` block must have a corresponding "
                        "`tool_use` block in the previous message."
                    )
            continue
        ids = [b["id"] for _, _, b in turn.blocks if b.get("type") == "tool_use"]
        all_ids.update(ids)
        if not ids or t + 1 == len(turns):
            continue
        # Only tool_result blocks at the very start of the next turn count: the docs require
        # them to come first, before any text.
        answered: set[str] = set()
        for _, _, block in turns[t + 1].blocks:
            if block.get("type") != "tool_result":
                break
            answered.add(block["tool_use_id"])
        missing = [tool_id for tool_id in ids if tool_id not in answered]
        if missing:
            raise invalid(
                f"messages.{turn.first_index}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
    return all_ids


# ---------------------------------------------------------------------------------------------
# the other top-level fields


def _system(value: Any, ctx: _Ctx) -> None:
    if isinstance(value, str):
        return
    blocks = _list(value, "system")
    for j, block in enumerate(blocks):
        path = f"system.{j}"
        block = _dict(block, path)
        _tag(block, path, ("text",))
        _text_block(block, path, ctx, where="system", role="system")


def _tools(value: Any, ctx: _Ctx) -> list[str]:
    tools = _list(value, "tools")
    names: list[str] = []
    for i, tool in enumerate(tools):
        path = f"tools.{i}"
        tool = _dict(tool, path)
        kind = tool.get("type")
        if kind is not None and kind != "custom":
            if not isinstance(kind, str) or not _SERVER_TOOL_TYPE.match(kind):
                _tag(tool, path, _TOOL_TAGS)
            if isinstance(tool.get("name"), str):
                names.append(tool["name"])
            continue
        cpath = f"{path}.custom"
        for key in ("name", "input_schema"):
            if key not in tool:
                raise _required(cpath, key)
        _extra(cpath, tool, _CUSTOM_TOOL_FIELDS)
        name = _str(tool["name"], f"{cpath}.name")
        if not _TOOL_NAME.match(name):
            raise invalid(f"{cpath}.name: String should match pattern '{_TOOL_NAME_PATTERN}'")
        schema = _dict(tool["input_schema"], f"{cpath}.input_schema")
        if "type" not in schema:
            raise _required(f"{cpath}.input_schema", "type")
        _literal(schema["type"], f"{cpath}.input_schema.type", ("object",))
        if "description" in tool:
            _str(tool["description"], f"{cpath}.description")
        if "strict" in tool:
            _bool(tool["strict"], f"{cpath}.strict")
        if tool.get("cache_control") is not None:
            _cache_control(tool["cache_control"], f"{cpath}.cache_control", ctx)
        names.append(name)
    if len(set(names)) != len(names):
        raise invalid("tools: Tool names must be unique.")
    return names


def _tool_choice(value: Any, tool_names: list[str] | None) -> str:
    choice = _dict(value, "tool_choice")
    kind = _tag(choice, "tool_choice", ("any", "auto", "none", "tool"))
    path = f"tool_choice.{kind}"
    allowed = {"type"} if kind == "none" else {"type", "disable_parallel_tool_use"}
    if kind == "tool":
        allowed.add("name")
        if "name" not in choice:
            raise _required(path, "name")
        _str(choice["name"], f"{path}.name")
    _extra(path, choice, allowed)
    if "disable_parallel_tool_use" in choice:
        _bool(choice["disable_parallel_tool_use"], f"{path}.disable_parallel_tool_use")
    if kind in ("any", "tool") and not tool_names:
        raise invalid("tool_choice: tool_choice may only be specified while providing tools")
    if kind == "tool" and tool_names is not None and choice["name"] not in tool_names:
        raise invalid(
            f"tool_choice.name: tool '{choice['name']}' was not found in the provided tools"
        )
    return kind


@dataclass
class _ThinkingParam:
    kind: str
    budget: int | None = None
    display: str | None = None
    on_mismatch: str | None = None  # thinking.block_binding.prefix_mismatch_behavior


def _thinking(value: Any, beta: bool) -> _ThinkingParam:
    obj = _dict(value, "thinking")
    kind = _tag(obj, "thinking", ("adaptive", "between_tools", "disabled", "enabled"))
    path = f"thinking.{kind}"
    param = _ThinkingParam(kind)
    if kind == "enabled":
        if "budget_tokens" not in obj:
            raise _required(path, "budget_tokens")
        param.budget = _int(obj["budget_tokens"], f"{path}.budget_tokens")
        if param.budget < 1024:
            raise invalid(f"{path}.budget_tokens: Input should be greater than or equal to 1024")
    allowed = (
        {"type"} if kind in ("disabled", "between_tools") else {"type", "budget_tokens", "display"}
    )
    if kind != "enabled":
        allowed.discard("budget_tokens")
    if beta and kind != "disabled":
        # Preserved-thinking controls, behind the thinking-binding-controls-2026-08-01 beta.
        allowed.add("block_binding")
    _extra(path, obj, allowed)
    if obj.get("display") is not None:
        param.display = _literal(obj["display"], f"{path}.display", ("summarized", "omitted"))
    if obj.get("block_binding") is not None:
        binding = _dict(obj["block_binding"], f"{path}.block_binding")
        _extra(f"{path}.block_binding", binding, {"prefix_mismatch_behavior"})
        if binding.get("prefix_mismatch_behavior") is not None:
            param.on_mismatch = _literal(
                binding["prefix_mismatch_behavior"],
                f"{path}.block_binding.prefix_mismatch_behavior",
                ("error", "drop_block"),
            )
    return param


def _output_config(value: Any) -> tuple[str | None, bool]:
    """The requested effort and whether a JSON output format was asked for."""
    obj = _dict(value, "output_config")
    _extra("output_config", obj, {"effort", "format"})
    effort = None
    if obj.get("effort") is not None:
        effort = _literal(obj["effort"], "output_config.effort", EFFORT_LEVELS)
    if obj.get("format") is not None:
        fmt = _dict(obj["format"], "output_config.format")
        _tag(fmt, "output_config.format", ("json_schema",))
        _extra("output_config.format", fmt, {"type", "schema"})
        if "schema" not in fmt:
            raise _required("output_config.format", "schema")
        _dict(fmt["schema"], "output_config.format.schema")
    return effort, obj.get("format") is not None


def _metadata(value: Any) -> None:
    obj = _dict(value, "metadata")
    _extra("metadata", obj, {"user_id"})
    if obj.get("user_id") is not None:
        _str(obj["user_id"], "metadata.user_id")


def _stop_sequences(value: Any) -> None:
    for i, item in enumerate(_list(value, "stop_sequences")):
        text = _str(item, f"stop_sequences.{i}")
        if not text.strip():
            raise invalid(
                "stop_sequences: each stop sequence must contain non-whitespace characters"
            )


# ---------------------------------------------------------------------------------------------


def _uses_tools(messages: Any) -> bool:
    return any(
        isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result")
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), list)
        for b in m["content"]
    )


def validate_request(
    body: Any, *, version: str, beta: bool = False, count_tokens: bool = False
) -> Checked:
    """Check a ``/v1/messages`` (or ``count_tokens``) body; raise :class:`ApiError` like the API.

    ``version`` is the request's ``anthropic-version``; ``beta`` says whether an
    ``anthropic-beta`` header was sent (which unlocks the beta-only fields).
    """
    body = _dict(body, "body")
    allowed = set(_COMMON_FIELDS if count_tokens else _CREATE_FIELDS)
    if version == SAMPLING_VERSION and not count_tokens:
        allowed |= _SAMPLING_FIELDS
    if beta:
        allowed |= _BETA_FIELDS
    ctx = _Ctx(version=version)

    required = ("model", "messages") if count_tokens else ("model", "max_tokens", "messages")
    for key in required:
        if key not in body:
            raise _required("", key)
    _extra("", body, allowed)

    model_name = _str(body["model"], "model")
    max_tokens: int | None = None
    if not count_tokens:
        max_tokens = _int(body["max_tokens"], "max_tokens")
        if max_tokens < 0:
            raise invalid("max_tokens: Input should be greater than or equal to 0")
    if body.get("system") is not None:
        _system(body["system"], ctx)
    tool_names: list[str] | None = None
    if body.get("tools") is not None:
        tool_names = _tools(body["tools"], ctx)
    turns = _messages(body["messages"], ctx)
    choice_kind = None
    if body.get("tool_choice") is not None:
        choice_kind = _tool_choice(body["tool_choice"], tool_names)
    thinking: _ThinkingParam | None = None
    if body.get("thinking") is not None:
        thinking = _thinking(body["thinking"], beta)
    effort: str | None = None
    wants_format = False
    if body.get("output_config") is not None:
        effort, wants_format = _output_config(body["output_config"])
    if body.get("cache_control") is not None:
        _cache_control(body["cache_control"], "cache_control", ctx)
    if body.get("metadata") is not None:
        _metadata(body["metadata"])
    if body.get("stop_sequences") is not None:
        _stop_sequences(body["stop_sequences"])
    if "stream" in body:
        _bool(body["stream"], "stream")
    if body.get("service_tier") is not None:
        _literal(body["service_tier"], "service_tier", ("auto", "standard_only"))
    if body.get("speed") is not None:
        _literal(body["speed"], "speed", ("standard", "fast"))
    if body.get("inference_geo") is not None:
        _str(body["inference_geo"], "inference_geo")
    temperature = top_p = None
    if body.get("temperature") is not None:
        temperature = _number(body["temperature"], "temperature", ge=0, le=1)
    if body.get("top_p") is not None:
        top_p = _number(body["top_p"], "top_p", ge=0, le=1)
    if body.get("top_k") is not None and _int(body["top_k"], "top_k") < 0:
        raise invalid("top_k: Input should be greater than or equal to 0")

    if ctx.cache_breakpoints > _MAX_CACHE_BREAKPOINTS:
        raise invalid(
            f"A maximum of {_MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {ctx.cache_breakpoints}."
        )

    # Schema is fine: now the rules that depend on the model, as the API checks them. Every rule
    # reads the model table (ferrule/data/models.toml) through ModelInfo.caps.
    model = resolve(model_name)
    if model is None or model.caps.retired:
        raise ApiError(404, f"model: {model_name}")
    caps = model.caps
    if max_tokens is not None and max_tokens > model.max_tokens:
        raise invalid(
            f"max_tokens: {max_tokens} > {model.max_tokens}, which is the maximum allowed number "
            f"of output tokens for {model.id}"
        )
    if turns[-1].role == "assistant":
        if not model.prefill:
            raise invalid(
                "This model does not support assistant message prefill. "
                "The conversation must end with a user message."
            )
        last = turns[-1].blocks[-1][2] if turns[-1].blocks else None
        if (
            last is not None
            and last.get("type") == "text"
            and last["text"] != last["text"].rstrip()
        ):
            raise invalid("messages: final assistant content cannot end with trailing whitespace")
    tool_ids = _check_tool_pairing(turns)
    if not tool_names and _uses_tools(body["messages"]):
        # The API's own check: history with tool blocks needs the tools defined.
        raise invalid(
            "Requests which include `tool_use` or `tool_result` blocks must define tools."
        )

    _check_sampling(caps, {"temperature": temperature, "top_p": top_p, "top_k": body.get("top_k")})
    kind = thinking.kind if thinking is not None else None
    if kind is not None and not caps.thinking.accepts(kind):
        raise invalid(_unsupported_thinking(kind, caps))
    _check_effort(caps, kind, effort)
    if wants_format and not caps.structured_outputs:
        raise invalid("output_config.format: structured outputs are not supported for this model")
    if not caps.strict_tools and any(
        isinstance(t, dict) and t.get("strict") is True for t in body.get("tools") or []
    ):
        raise invalid("tools: strict tool use is not supported for this model")
    if choice_kind in ("any", "tool"):
        if not caps.forced_tool_choice:
            # NOTE: the docs say forced tool use "returns an error" on these models; the exact
            # wording is not published, so this message is the mock's own.
            raise invalid(
                f"tool_choice: forced tool use (`{choice_kind}`) is not supported for this model. "
                "Use `auto` or `none`."
            )
        if kind == "enabled":
            # Manual extended thinking only; adaptive thinking supports forced tool use
            # (https://platform.claude.com/docs/en/build-with-claude/thinking-tool-workflows).
            raise invalid("Thinking may not be enabled when tool_choice forces tool use.")
    budget = thinking.budget if thinking is not None else None
    if budget is not None and max_tokens is not None and budget >= max_tokens:
        raise invalid(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation "
            f"at {_THINKING_DOCS}#max-tokens-and-context-window-size"
        )
    thinking_on = caps.thinking.on(kind)
    if thinking_on:
        if temperature is not None and temperature != 1:
            raise invalid(
                "`temperature` may only be set to 1 when thinking is enabled. Please consult our "
                f"documentation at {_THINKING_DOCS}#feature-compatibility"
            )
        if top_p is not None and top_p < 0.95:
            raise invalid(
                "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled. Please "
                f"consult our documentation at {_THINKING_DOCS}#feature-compatibility"
            )
        if body.get("top_k") is not None:
            raise invalid(
                "`top_k` must be unset when thinking is enabled. Please consult our documentation at "
                f"{_THINKING_DOCS}#feature-compatibility"
            )
    on_mismatch = thinking.on_mismatch if thinking is not None else None
    dropped = _check_thinking_blocks(body, turns, caps, on_mismatch)
    if thinking_on:
        _check_final_thinking(turns, dropped)
    display = thinking.display if thinking is not None and thinking.display else None
    return Checked(
        model=model,
        thinking_on=thinking_on,
        thinking_display=display or caps.thinking.display,
        tool_ids=tool_ids,
        thinking_mode=kind,
        effort=effort or caps.effort_default,
    )


# ---------------------------------------------------------------------------------------------
# per-model rules (the model table)


def _check_sampling(caps: ModelCaps, values: dict[str, Any]) -> None:
    for name, value in values.items():
        if caps.sampling.rejects(name, value):
            # The API's words on Claude Opus 4.7 and later (Comfy-Org/ComfyUI#13923,
            # braintrustdata/lingua#335): sampling parameters at non-default values are a 400.
            raise invalid(f"`{name}` is deprecated for this model.")
    if (
        caps.sampling.exclusive
        and values["temperature"] is not None
        and values["top_p"] is not None
    ):
        raise invalid(
            "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
        )


def _unsupported_thinking(kind: str, caps: ModelCaps) -> str:
    """The 400 for a ``thinking.type`` the model refuses."""
    if caps.thinking.accepts("adaptive"):
        if kind == "disabled" and caps.thinking.accepts("between_tools"):
            # Sonnet 5.5: "the message suggests between_tools" (whats-new-sonnet-5-5); the exact
            # text is not published.
            return (
                '"thinking.type.disabled" is not supported for this model. Use '
                '"thinking.type.between_tools" to turn off up-front thinking.'
            )
        # The API's words (whats-new-opus-5-5; NousResearch/hermes-agent#11137).
        return (
            f'"thinking.type.{kind}" is not supported for this model. Use "thinking.type.adaptive" '
            'and "output_config.effort" to control thinking behavior.'
        )
    # Claude 4.5 and earlier: the same form, pointing at the mode they have (mock's wording).
    return (
        f'"thinking.type.{kind}" is not supported for this model. Use "thinking.type.enabled" '
        'with "budget_tokens" to control thinking behavior.'
    )


def _check_effort(caps: ModelCaps, kind: str | None, effort: str | None) -> None:
    if effort is not None and not caps.accepts_effort(effort):
        if not caps.effort:
            raise invalid(
                f'output_config.effort: "{effort}" was provided, but {caps.id} does not '
                "support the effort parameter"
            )
        levels = ", ".join(caps.effort)
        raise invalid(
            f'output_config.effort: "{effort}" is not supported by {caps.id}; supported values: '
            f"[{levels}]"
        )
    level = effort or caps.effort_default
    ceiling = caps.thinking.disabled_max_effort
    if kind == "disabled" and ceiling and level and effort_rank(level) > effort_rank(ceiling):
        # The API's words on Claude Opus 5 (logancyang/obsidian-copilot#2843).
        raise invalid(
            f"output_config.effort '{level}' is not supported when thinking is disabled on this "
            f"model. Use effort '{ceiling}' or below, or enable thinking."
        )
    if kind == "between_tools" and level not in caps.thinking.between_tools_effort:
        # whats-new-sonnet-5-5: between_tools at low, medium and high effort; xhigh or max is a 400.
        raise invalid(
            f"output_config.effort '{level}' is not supported with thinking type "
            "'between_tools'. Use effort 'high' or below, or adaptive thinking."
        )


def _check_thinking_blocks(
    body: dict[str, Any], turns: list[_Turn], caps: ModelCaps, on_mismatch: str | None
) -> set[tuple[int, int]]:
    """Every thinking / redacted_thinking block sent back must carry a signature the mock made
    for exactly that block; on models with preserved thinking its prefix must be unchanged.
    Returns the blocks dropped under ``prefix_mismatch_behavior: "drop_block"``."""
    plain = signing.turns_of(body.get("messages"))
    dropped: set[tuple[int, int]] = set()
    invalid_from: int | None = None  # every thinking block after an invalid one is invalid too
    for t, turn in enumerate(turns):
        if turn.role != "assistant":
            continue
        for k, (i, j, block) in enumerate(turn.blocks):
            kind = block.get("type")
            if kind not in ("thinking", "redacted_thinking"):
                continue
            text = block.get("thinking") if kind == "thinking" else None
            field_name = "signature" if kind == "thinking" else "data"
            signed = signing.verify(block.get(field_name), text)
            if signed is None:
                raise invalid(
                    f"messages.{i}.content.{j}: Invalid `{field_name}` in `{kind}` block."
                )
            if not caps.thinking.preserved:
                continue
            moved = signed.prefix != signing.prefix_digest(body, plain[: t + 1], "assistant", k)
            if moved or invalid_from is not None:
                invalid_from = t if invalid_from is None else invalid_from
                if on_mismatch == "drop_block":
                    dropped.add((i, j))
                    continue
                # The API's words (preserved-thinking/fix-bound-to-a-different-conversation).
                raise invalid(
                    f"messages.{i}.content.{j}: Invalid `signature` in `{kind}` block. The block "
                    "is bound to a different conversation. Remove the block, or set "
                    '`thinking.block_binding.prefix_mismatch_behavior` to "drop_block".'
                )
    return dropped


def _check_final_thinking(turns: list[_Turn], dropped: set[tuple[int, int]]) -> None:
    """With thinking on, the assistant turn whose tool calls the final user turn answers must
    start with its thinking block(s) (the mock always thinks when thinking is on, so a turn
    without one lost it on the way)."""
    if len(turns) < 2 or turns[-1].role != "user" or turns[-2].role != "assistant":
        return
    final, answers = turns[-2], turns[-1]
    if not any(b.get("type") == "tool_use" for _, _, b in final.blocks):
        return
    if not answers.blocks or answers.blocks[0][2].get("type") != "tool_result":
        return
    if any((i, j) in dropped for i, j, _ in final.blocks):
        return  # the API dropped them itself ("drop_block"): the request goes on without them
    i, j, block = final.blocks[0]
    if block.get("type") in ("thinking", "redacted_thinking"):
        return
    # The API's words (e.g. n8n-io/n8n#22550, anomalyco/opencode#3077).
    raise invalid(
        f"messages.{i}.content.{j}.type: Expected `thinking` or `redacted_thinking`, but found "
        f"`{block.get('type')}`. When `thinking` is enabled, a final `assistant` message must start "
        "with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` "
        "blocks). We recommend you include thinking blocks from previous turns. To avoid this "
        f"requirement, disable `thinking`. Please consult our documentation at {_THINKING_DOCS}"
    )
