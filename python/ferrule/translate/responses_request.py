"""OpenAI Responses request (``POST /v1/responses``) -> Anthropic Messages request.

Follows the OpenAI API reference for ``responses.create`` as the installed ``openai`` SDK types it
(``openai/types/responses/response_create_params.py``, ``response_input_item_param.py``,
``tool_param.py``) and ../shared/reference/responses-api.md (what Codex CLI and the Agents SDK
send). Issue 14.

How it works: the ``input`` items become Anthropic turns here (with errors naming ``input[i]``);
every knob Chat Completions also has (``max_output_tokens``, sampling, ``reasoning.effort``,
``text.format``, tools, ``tool_choice``, identity, service tier) is handed to the Chat translator
(:func:`ferrule.translate.request.to_anthropic`) as the equivalent chat field, so both routes obey
the model table (``model_rules``) through one code path; its messages are then replaced by the
turns built here.

Rules beyond the Chat ones:

- ``instructions`` and leading ``system``/``developer`` messages -> ``system``; later ones stay in
  place as user text (as on chat: the cached prefix before them never changes).
- ``reasoning`` items carry Claude's thinking / redacted_thinking blocks in ``encrypted_content``,
  sealed (:mod:`ferrule.seal`) for the caller's tenant; they go back into the assistant turn where
  they were, byte for byte, so thinking with tools works across turns without server state. An item
  that does not open is a 400 naming it; one without ``encrypted_content`` (a summary only) is
  dropped: there is nothing Claude could verify.
- ``custom`` (freeform) tools, such as Codex's ``apply_patch``, become Anthropic tools taking one
  string property ``input``; their format (a Lark or regex grammar) is described to the model in the
  tool's description. ``namespace`` tools (Codex's ``multi_agent_v1``) offer their inner tools as
  ``<namespace>__<name>``. :attr:`ResponsesTranslated.tools` maps every name back.
- Codex's remote compaction (v2, ../shared/reference/responses-api.md): ``input`` ending with a
  ``compaction_trigger`` item asks Claude, with the same request and tools (``tool_choice: none``),
  for a handoff summary (:data:`COMPACTION_PROMPT`); the answer is exactly one ``compaction``
  item whose ``encrypted_content`` seals that summary. A ``compaction`` item in ``input`` opens
  to user text (:data:`COMPACTION_PREFIX` + the summary) in its place; one that does not open is a
  400 naming it. A ``text.format`` asking for JSON does not apply to the summary.
- ``web_search`` / ``web_search_preview`` -> Anthropic's ``web_search_20250305`` server tool
  (``filters.allowed_domains`` and ``user_location`` kept; ``external_web_access: false`` cannot be
  honoured: Anthropic's search is live; a warning says so; ``max_tool_calls`` -> ``max_uses``). It
  goes through the Chat translator as a stand-in function tool, so ``tool_choice`` and JSON mode
  treat it like any tool, and is swapped for the server tool after. ``web_search_call`` items in
  ``input`` are dropped: the answer that followed them is in the conversation, the search results
  are not needed again.
- ``input_image`` -> an image block (URL or base64 data URL); ``input_file`` -> a document block
  (a PDF as base64 or URL, or UTF-8 text); uploaded-file ids (``file_id``) are a 400.
- ``reasoning.summary`` (auto / concise / detailed) asks for summarized thinking
  (``thinking.display: "summarized"``) on models whose default display is ``omitted``, and the
  answer carries the thinking text as the reasoning item's summary.
- ``truncation``: ``disabled`` and ``auto`` are accepted and change nothing: Ferrule never drops
  input (a prompt over the context window is Anthropic's 400, as with ``disabled``).
- ``metadata`` is not forwarded (Anthropic's metadata holds only ``user_id``); ``user`` /
  ``safety_identifier`` -> ``metadata.user_id``; ``prompt_cache_key`` is accepted, not forwarded.
- ``store`` (default true) and ``previous_response_id`` are returned for the route, which keeps
  responses and resolves a previous one by putting its input and output items before ``input``.
- Hosted tools and features Claude cannot offer (``file_search``, ``computer_use_preview``,
  ``code_interpreter``, ``image_generation``, ``mcp``, …, ``background: true``, ``conversation``,
  ``prompt``, log probabilities): a 400 naming the field. Unknown top-level fields are ignored
  (Codex sends ``client_metadata``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from ..errors import ProxyError
from ..limits import MAX_MESSAGES, check_depth, check_identifier
from ..models import capabilities, resolve_model
from ..seal import Sealer, SealError
from .model_rules import OPENAI_EFFORTS
from .request import (
    _DATA_URL,
    _WEB_SEARCH_TOOL,
    _has_tool_blocks,
    _history_tools,
    _image_block,
    _merge,
)
from .request import (
    to_anthropic as chat_to_anthropic,
)

__all__ = [
    "COMPACTION_PREFIX",
    "COMPACTION_PROMPT",
    "CUSTOM_INPUT",
    "NAMESPACE_SEP",
    "REASONING_CONTEXT",
    "ResponsesTranslated",
    "ToolRef",
    "compaction_context",
    "reasoning_context",
    "to_anthropic",
]

# A custom tool's freeform text travels in this one string property of the Anthropic tool input.
CUSTOM_INPUT = "input"
# Inner tools of a namespace tool are offered to Claude as <namespace>__<name>.
NAMESPACE_SEP = "__"
# Associated data of a sealed reasoning item, before the tenant: a token sealed for another purpose
# (a thinking-memory entry, a compaction item) never opens as a reasoning item.
REASONING_CONTEXT = b"ferrule.responses.reasoning\x00"

COMPACTION_CONTEXT = b"ferrule.responses.compaction\x00"
# What Claude is asked when Codex compacts remotely (a ``compaction_trigger`` item): a summary that
# replaces the history; sealed into the ``compaction`` item, it comes back as the text below.
COMPACTION_PROMPT = (
    "Context checkpoint: this conversation is about to be replaced by your summary of it. Write a "
    "handoff summary for whoever continues the task, with no preamble: the goal and the user's "
    "requests and preferences; what has been done so far and the key decisions; files, commands, "
    "identifiers, errors and other facts needed to continue; what remains to be done, as clear "
    "next steps. Do not call any tool."
)
COMPACTION_PREFIX = "Summary of the earlier conversation, written when it was compacted:\n\n"

_SUMMARIES = ("auto", "concise", "detailed")
_INCLUDABLE = frozenset(
    {
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
    }
)
# Hosted OpenAI tools Claude has no counterpart for (tool_param.py's union).
_HOSTED_TOOLS = frozenset(
    {
        "file_search",
        "computer",
        "computer_use_preview",
        "mcp",
        "code_interpreter",
        "programmatic_tool_calling",
        "image_generation",
        "local_shell",
        "shell",
        "tool_search",
        "apply_patch",
    }
)
_WEB_SEARCH_TYPES = frozenset(
    {"web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11"}
)
# Top-level fields that ask for something Ferrule cannot do: a 400 rather than a silent change.
_REFUSED_FIELDS = {
    "conversation": "is not supported: chain responses with 'previous_response_id'",
    "prompt": "is not supported: reusable prompts live in OpenAI's dashboard",
    "top_logprobs": "is not supported: Anthropic does not return log probabilities",
}
_TEXT_FILE_TYPES = frozenset({"text/plain", "text/markdown", "text/csv", "application/json"})


class ToolRef(NamedTuple):
    """What an Anthropic tool name stands for on the Responses side."""

    kind: str  # "function" | "custom"
    name: str
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class ResponsesTranslated:
    """The Anthropic request and what the answer side needs to know about the original."""

    body: dict[str, Any]
    model: str  # the model name the client asked for (echoed back)
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    thinking: bool = False  # the model thinks up front on this request
    warnings: tuple[str, ...] = ()
    # Anthropic tool name -> the function / custom tool it stands for
    tools: Mapping[str, ToolRef] = field(default_factory=dict)
    json_tool: str | None = None  # text.format emulated with this forced tool
    summary: bool = False  # reasoning.summary asked: thinking text goes into the summary
    include: tuple[str, ...] = ()
    compact: bool = False  # a compaction_trigger: the answer is one compaction item
    # The request fields a Response object echoes (instructions, tools, tool_choice, ...)
    echo: Mapping[str, Any] = field(default_factory=dict)

    @property
    def custom_tools(self) -> frozenset[str]:
        """Anthropic names of the tools whose calls are ``custom_tool_call`` items."""
        return frozenset(n for n, ref in self.tools.items() if ref.kind == "custom")


def reasoning_context(tenant: str) -> bytes:
    """The associated data a reasoning item is sealed with for ``tenant``."""
    return REASONING_CONTEXT + tenant.encode()


def compaction_context(tenant: str) -> bytes:
    """The associated data a compaction item is sealed with for ``tenant``."""
    return COMPACTION_CONTEXT + tenant.encode()


def _bad(message: str, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, type="invalid_request_error", param=param)


def _str(value: Any, param: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise _bad(f"'{param}' must be a{'' if empty else ' non-empty'} string", param)
    return value


# -- input items ---------------------------------------------------------------------------------


def _file_block(part: Mapping[str, Any], p: str) -> dict[str, Any]:
    """``input_file`` -> an Anthropic document block (PDF or plain text)."""
    if part.get("file_id") is not None:
        raise _bad(f"'{p}.file_id': uploaded files are not supported; send file_data", p)
    block: dict[str, Any] = {"type": "document"}
    name = part.get("filename")
    if isinstance(name, str) and name:
        block["title"] = name
    data, url = part.get("file_data"), part.get("file_url")
    if isinstance(url, str) and url:
        if not url.startswith(("https://", "http://")):
            raise _bad(f"'{p}.file_url' must be an http(s) URL", p)
        # NOTE: never fetched here (no SSRF): Anthropic fetches URL documents itself (PDF only).
        block["source"] = {"type": "url", "url": url}
        return block
    if not isinstance(data, str) or not data:
        raise _bad(f"'{p}' needs file_data (a base64 data URL) or file_url", p)
    m = _DATA_URL.match(data)
    if not m:
        raise _bad(f"'{p}.file_data' must be a base64 data URL (data:<type>;base64,...)", p)
    media_type = m["mt"].lower()
    if media_type == "application/pdf":
        block["source"] = {"type": "base64", "media_type": media_type, "data": m["data"]}
        return block
    if media_type in _TEXT_FILE_TYPES:
        try:
            text = base64.b64decode(m["data"], validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise _bad(f"'{p}.file_data' is not base64 of UTF-8 text", p) from None
        block["source"] = {"type": "text", "media_type": "text/plain", "data": text}
        return block
    raise _bad(f"'{p}': file type {media_type} is not supported (PDF or text)", p)


def _parts(content: Any, param: str, allowed: frozenset[str]) -> list[dict[str, Any]]:
    """Anthropic blocks for a message's content (a string or a list of parts)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad(f"'{param}' must be a string or a list of content parts", param)
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        p = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed or not isinstance(part, dict):
            raise _bad(
                f"'{p}': content part type {kind!r} is not supported here "
                f"(expected {', '.join(sorted(allowed))})",
                p,
            )
        if kind in ("input_text", "output_text", "refusal"):
            text = part.get("refusal" if kind == "refusal" else "text")
            if not isinstance(text, str):
                raise _bad(f"'{p}' must hold a string", p)
            if text:  # the API rejects empty text blocks
                blocks.append({"type": "text", "text": text})
        elif kind == "input_image":
            if part.get("file_id") is not None and part.get("image_url") is None:
                raise _bad(f"'{p}.file_id': uploaded files are not supported; send image_url", p)
            blocks.append(_image_block(part, p))
        else:  # input_file
            blocks.append(_file_block(part, p))
    return blocks


_USER_PARTS = frozenset({"input_text", "input_image", "input_file"})
_SYSTEM_PARTS = frozenset({"input_text"})
_ASSISTANT_PARTS = frozenset({"output_text", "refusal", "input_text"})


def _output_blocks(output: Any, param: str) -> str | list[dict[str, Any]]:
    """A function/custom tool output: a string, or a list of input parts."""
    if isinstance(output, str):
        return output
    return _parts(output, param, _USER_PARTS)


def _tool_result(item: Mapping[str, Any], p: str) -> dict[str, Any]:
    call_id = _str(item.get("call_id"), f"{p}.call_id")
    out = _output_blocks(item.get("output"), f"{p}.output")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if out:  # an empty result is a result with no content (empty text blocks are rejected)
        block["content"] = out
    return block


def _tool_name(name: str, namespace: Any, p: str) -> str:
    if namespace is None:
        return name
    return _str(namespace, f"{p}.namespace") + NAMESPACE_SEP + name


def _reasoning_blocks(
    item: Mapping[str, Any], p: str, sealer: Sealer, tenant: str
) -> list[dict[str, Any]]:
    token = item.get("encrypted_content")
    if token is None:
        return []  # a summary alone: nothing Claude could verify
    if not isinstance(token, str):
        raise _bad(f"'{p}.encrypted_content' must be a string", p)
    try:
        blocks = orjson.loads(sealer.open(token, reasoning_context(tenant)))
    except SealError:
        raise _bad(
            f"'{p}.encrypted_content' does not open: it was changed, belongs to another caller, "
            "or was sealed with a key this server no longer holds",
            p,
        ) from None
    except orjson.JSONDecodeError:
        raise _bad(f"'{p}.encrypted_content' is not a reasoning item of this server", p) from None
    if not isinstance(blocks, list) or not all(
        isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking") for b in blocks
    ):
        raise _bad(f"'{p}.encrypted_content' is not a reasoning item of this server", p)
    return blocks


def _compaction_blocks(
    item: Mapping[str, Any], p: str, sealer: Sealer, tenant: str
) -> list[dict[str, Any]]:
    token = item.get("encrypted_content")
    if not isinstance(token, str):
        raise _bad(f"'{p}.encrypted_content' must be a string", p)
    try:
        value = orjson.loads(sealer.open(token, compaction_context(tenant)))
    except (SealError, orjson.JSONDecodeError):
        raise _bad(
            f"'{p}.encrypted_content' does not open: it was changed, belongs to another caller, "
            "or was not made by this server",
            p,
        ) from None
    summary = value.get("summary") if isinstance(value, dict) else None
    if not isinstance(summary, str):
        raise _bad(f"'{p}.encrypted_content' is not a compaction item of this server", p)
    return [{"type": "text", "text": COMPACTION_PREFIX + summary}]


def _turns(
    items: list[Any], sealer: Sealer, tenant: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, Anthropic turns) from the input items, in order."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    leading = True
    for i, item in enumerate(items):
        p = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"'{p}' must be an object", p)
        kind = item.get("type", "message" if "role" in item else None)
        role: str
        if kind == "message":
            role = item.get("role", "")
            content = item.get("content")
            if role in ("system", "developer"):
                blocks = _parts(content, f"{p}.content", _SYSTEM_PARTS)
                if leading:
                    system.extend(blocks)
                    continue
                role = "user"  # later system text stays in place (translation.md decision)
            elif role == "user":
                blocks = _parts(content, f"{p}.content", _USER_PARTS)
            elif role == "assistant":
                blocks = _parts(content, f"{p}.content", _ASSISTANT_PARTS)
            else:
                raise _bad(f"'{p}.role' must be user, system, developer or assistant", p)
        elif kind == "function_call":
            role = "assistant"
            name = _str(item.get("name"), f"{p}.name")
            args = item.get("arguments")
            if args is None or (isinstance(args, str) and not args.strip()):
                tool_input: Any = {}
            elif isinstance(args, str):
                try:
                    tool_input = orjson.loads(args)
                except orjson.JSONDecodeError:
                    raise _bad(f"'{p}.arguments' is not valid JSON", p) from None
            else:
                raise _bad(f"'{p}.arguments' must be a JSON string", p)
            if not isinstance(tool_input, dict):
                raise _bad(f"'{p}.arguments' must be a JSON object", p)
            check_depth(tool_input, f"{p}.arguments", args if isinstance(args, str) else None)
            blocks = [
                {
                    "type": "tool_use",
                    "id": _str(item.get("call_id"), f"{p}.call_id"),
                    "name": _tool_name(name, item.get("namespace"), p),
                    "input": tool_input,
                }
            ]
        elif kind == "custom_tool_call":
            role = "assistant"
            name = _str(item.get("name"), f"{p}.name")
            blocks = [
                {
                    "type": "tool_use",
                    "id": _str(item.get("call_id"), f"{p}.call_id"),
                    "name": _tool_name(name, item.get("namespace"), p),
                    "input": {CUSTOM_INPUT: _str(item.get("input"), f"{p}.input", empty=True)},
                }
            ]
        elif kind in ("function_call_output", "custom_tool_call_output"):
            role, blocks = "user", [_tool_result(item, p)]
        elif kind == "reasoning":
            role, blocks = "assistant", _reasoning_blocks(item, p, sealer, tenant)
        elif kind == "compaction":
            role, blocks = "user", _compaction_blocks(item, p, sealer, tenant)
        elif kind == "web_search_call":
            continue  # the answer that used it is in the conversation (module docstring)
        else:
            raise _bad(f"'{p}': input item type {kind!r} is not supported", f"{p}.type")
        leading = False
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            _merge(turns[-1]["content"], blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


# -- tools ---------------------------------------------------------------------------------------


def _custom_description(tool: Mapping[str, Any], p: str) -> str:
    """The custom tool's description with its input format spelled out for the model."""
    desc = tool.get("description")
    text = desc if isinstance(desc, str) else ""
    fmt = tool.get("format")
    if fmt is None:
        return text
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return text
    if kind != "grammar" or not isinstance(fmt, dict):
        raise _bad(f"'{p}.format.type' must be text or grammar", f"{p}.format")
    syntax = fmt.get("syntax")
    definition = _str(fmt.get("definition"), f"{p}.format.definition")
    if syntax not in ("lark", "regex"):
        raise _bad(f"'{p}.format.syntax' must be lark or regex", f"{p}.format")
    what = "Lark grammar" if syntax == "lark" else "regular expression"
    return (f"{text}\n\n" if text else "") + (
        f"Put the tool's raw input text in the `{CUSTOM_INPUT}` string. That text must match "
        f"this {what} exactly:\n```\n{definition}\n```"
    )


def _tools(
    body: Mapping[str, Any], notes: list[str]
) -> tuple[list[dict[str, Any]], dict[str, ToolRef], dict[str, Any] | None]:
    """(chat-style function tools, Anthropic name -> ref, Anthropic web search tool or None)."""
    tools = body.get("tools")
    if tools is None:
        return [], {}, None
    if not isinstance(tools, list):
        raise _bad("'tools' must be a list", "tools")
    chat: list[dict[str, Any]] = []
    refs: dict[str, ToolRef] = {}
    web: dict[str, Any] | None = None

    def add(tool: Any, p: str, namespace: str | None, ns_desc: str = "") -> None:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or kind not in ("function", "custom"):
            raise _bad(f"'{p}' must be a function or custom tool", p)
        name = _str(tool.get("name"), f"{p}.name")
        wire = name if namespace is None else namespace + NAMESPACE_SEP + name
        if wire in refs or (wire == "web_search" and web is not None):
            raise _bad(f"'{p}.name': a tool named {wire!r} is offered twice", p)
        refs[wire] = ToolRef(kind, name, namespace)
        fn: dict[str, Any] = {"name": wire}
        if kind == "function":
            desc = tool.get("description")
            if desc is not None:
                desc = _str(desc, f"{p}.description", empty=True)
            if ns_desc:  # the namespace's description is shown once per inner tool
                desc = f"{ns_desc}\n\n{desc}" if desc else ns_desc
            if desc:
                fn["description"] = desc
            params = tool.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise _bad(f"'{p}.parameters' must be an object", p)
            if params is not None:
                fn["parameters"] = params
            if tool.get("strict") is True:
                fn["strict"] = True
        else:
            desc = _custom_description(tool, p)
            fn["description"] = f"{ns_desc}\n\n{desc}" if ns_desc and desc else ns_desc or desc
            fn["parameters"] = {
                "type": "object",
                "properties": {CUSTOM_INPUT: {"type": "string"}},
                "required": [CUSTOM_INPUT],
                "additionalProperties": False,
            }
        chat.append({"type": "function", "function": fn})

    for i, tool in enumerate(tools):
        p = f"tools[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or not isinstance(kind, str):
            raise _bad(f"'{p}' must be an object with a 'type'", p)
        if kind in ("function", "custom"):
            add(tool, p, None)
        elif kind == "namespace":
            ns = _str(tool.get("name"), f"{p}.name")
            inner = tool.get("tools")
            if not isinstance(inner, list):
                raise _bad(f"'{p}.tools' must be a list", p)
            ns_desc = tool.get("description")
            for j, sub in enumerate(inner):
                add(sub, f"{p}.tools[{j}]", ns, ns_desc if isinstance(ns_desc, str) else "")
        elif kind in _WEB_SEARCH_TYPES:
            if web is not None:
                raise _bad(f"'{p}': web search is offered twice", p)
            web = {"type": _WEB_SEARCH_TOOL, "name": "web_search"}
            filters = tool.get("filters")
            domains = filters.get("allowed_domains") if isinstance(filters, dict) else None
            if isinstance(domains, list) and domains:
                if not all(isinstance(d, str) for d in domains):
                    raise _bad(f"'{p}.filters.allowed_domains' must be strings", p)
                web["allowed_domains"] = domains
            loc = tool.get("user_location")
            if isinstance(loc, dict):
                where = {
                    k: v
                    for k, v in loc.items()
                    if k in ("city", "region", "country", "timezone") and isinstance(v, str) and v
                }
                if where:
                    web["user_location"] = {"type": "approximate", **where}
            if tool.get("external_web_access") is False:
                notes.append(
                    f"{p}.external_web_access false not honoured: Anthropic's web search is live"
                )
            if "web_search" in refs:
                raise _bad(f"'{p}': a function tool is already named web_search", p)
            # A stand-in function tool, so that tool_choice and JSON mode treat it as any
            # other tool; the server tool replaces it after the chat translation.
            chat.append({"type": "function", "function": {"name": "web_search"}})
        elif kind in _HOSTED_TOOLS:
            raise _bad(f"'{p}': the hosted {kind} tool is not supported", f"{p}.type")
        else:
            raise _bad(f"'{p}': tool type {kind!r} is not supported", f"{p}.type")
    return chat, refs, web


def _chat_choice(choice: Any, refs: Mapping[str, ToolRef], web: bool) -> Any:
    """``tool_choice`` in Chat Completions' shape (the web search one in Anthropic's)."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("function", "custom") and isinstance(choice, dict):
        name = _str(choice.get("name"), "tool_choice.name")
        ns = choice.get("namespace")
        for wire, ref in refs.items():
            if ref.name == name and ref.kind == kind and (ns is None or ref.namespace == ns):
                return {"type": "function", "function": {"name": wire}}
        raise _bad(f"'tool_choice': no {kind} tool named {name!r} is offered", "tool_choice")
    if kind in _WEB_SEARCH_TYPES:
        if not web:
            raise _bad("'tool_choice': web search is not offered in 'tools'", "tool_choice")
        return {"type": "function", "function": {"name": "web_search"}}
    raise _bad(
        "'tool_choice' must be auto, none, required, or a function, custom or web_search tool",
        "tool_choice",
    )


# -- the rest ------------------------------------------------------------------------------------


def _text_format(body: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(chat response_format, verbosity) from ``text``."""
    text = body.get("text")
    if text is None:
        return None, None
    if not isinstance(text, dict):
        raise _bad("'text' must be an object", "text")
    verbosity = text.get("verbosity")
    fmt = text.get("format")
    if fmt is None:
        return None, verbosity
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None, verbosity
    if kind == "json_object":
        return {"type": "json_object"}, verbosity
    if kind == "json_schema" and isinstance(fmt, dict):
        schema = fmt.get("schema")
        if not isinstance(schema, dict) or schema.get("type", "object") != "object":
            raise _bad(
                "'text.format.schema' must be a JSON schema of an object", "text.format.schema"
            )
        check_depth(schema, "text.format.schema")
        return {"type": "json_schema", "json_schema": {"schema": schema}}, verbosity
    raise _bad("'text.format.type' must be text, json_object or json_schema", "text.format")


def _reasoning(body: Mapping[str, Any]) -> tuple[str | None, bool]:
    """(effort, summary asked) from ``reasoning``."""
    r = body.get("reasoning")
    if r is None:
        return None, False
    if not isinstance(r, dict):
        raise _bad("'reasoning' must be an object", "reasoning")
    effort = r.get("effort")
    if effort is not None and effort not in OPENAI_EFFORTS:
        raise _bad(
            f"'reasoning.effort' must be one of {', '.join(OPENAI_EFFORTS)}", "reasoning.effort"
        )
    summary = r.get("summary", r.get("generate_summary"))
    if summary is not None and summary not in _SUMMARIES:
        raise _bad(
            f"'reasoning.summary' must be one of {', '.join(_SUMMARIES)}", "reasoning.summary"
        )
    return effort, summary is not None


def _include(body: Mapping[str, Any]) -> tuple[str, ...]:
    inc = body.get("include")
    if inc is None:
        return ()
    if not isinstance(inc, list) or not all(isinstance(v, str) for v in inc):
        raise _bad("'include' must be a list of strings", "include")
    for v in inc:
        if v not in _INCLUDABLE:
            raise _bad(f"'include': {v!r} is not a known includable", "include")
        if v == "message.output_text.logprobs":
            raise _bad(
                "'include': log probabilities are not supported: Anthropic does not return them",
                "include",
            )
    return tuple(inc)


def _bool(body: Mapping[str, Any], key: str, default: bool) -> bool:
    v = body.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise _bad(f"'{key}' must be a boolean", key)
    return v


# Fields with the same name and meaning on both APIs, checked by the Chat translator.
_PASSED = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "service_tier",
    "user",
    "safety_identifier",
    "prompt_cache_key",
)
# Chat field -> Responses field, to name the client's field in errors the Chat translator raises.
_PARAMS = {
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
    "response_format": "text.format",
}


def _renamed(err: ProxyError) -> ProxyError:
    param = err.param
    if param is None:
        return err
    for chat, responses in _PARAMS.items():
        if param == chat or param.startswith(chat + "."):
            new = responses + param[len(chat) :]
            return ProxyError(
                err.status,
                err.message.replace(f"'{chat}", f"'{responses}"),
                type=err.type,
                param=new,
                code=err.code,
                headers=err.headers,
            )
    return err


def _renamed_note(text: str) -> str:
    """A Chat translator warning in the Responses request's own field names."""
    if text.startswith("verbosity "):
        return "text." + text
    for chat, responses in (
        ("reasoning_effort", "reasoning.effort"),
        ("response_format", "text.format"),
    ):
        if text.startswith(chat):
            return responses + text[len(chat) :]
    return text


def to_anthropic(
    body: Any,
    *,
    aliases: Mapping[str, str],
    version: str,
    strict: bool = False,
    sealer: Sealer,
    tenant: str,
) -> ResponsesTranslated:
    """Translate a parsed Responses request body. Raises ProxyError(400) for what cannot be sent."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    for key, why in _REFUSED_FIELDS.items():
        if body.get(key) is not None:
            raise _bad(f"'{key}' {why}", key)
    if _bool(body, "background", False):
        raise _bad("'background' responses are not supported: use stream instead", "background")
    stream = _bool(body, "stream", False)
    store = _bool(body, "store", True)
    prev = body.get("previous_response_id")
    check_identifier(prev, "previous_response_id")

    items = body.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    elif items is None:
        items = []
    elif not isinstance(items, list):
        raise _bad("'input' must be a string or a list of items", "input")
    if len(items) > MAX_MESSAGES:
        raise _bad(f"'input' holds more than {MAX_MESSAGES:,} items", "input")
    compact = bool(items) and isinstance(items[-1], dict)
    compact = compact and items[-1].get("type") == "compaction_trigger"
    if compact:
        items = items[:-1]
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("'instructions' must be a string", "instructions")
    system, turns = _turns(items, sealer, tenant)
    if instructions:
        system.insert(0, {"type": "text", "text": instructions})
    if not turns:
        raise _bad("'input' must contain at least one user or assistant item", "input")

    truncation = body.get("truncation")
    if truncation is not None and truncation not in ("auto", "disabled"):
        raise _bad("'truncation' must be auto or disabled", "truncation")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad("'metadata' must be an object", "metadata")
    include = _include(body)
    effort, summary = _reasoning(body)
    response_format, verbosity = _text_format(body)
    notes: list[str] = []
    chat_tools, refs, web = _tools(body, notes)
    max_tool_calls = body.get("max_tool_calls")
    if max_tool_calls is not None and (
        isinstance(max_tool_calls, bool)
        or not isinstance(max_tool_calls, int)
        or max_tool_calls < 1
    ):
        raise _bad("'max_tool_calls' must be a positive integer", "max_tool_calls")
    max_out = body.get("max_output_tokens")
    if max_out is not None and (
        isinstance(max_out, bool) or not isinstance(max_out, int) or max_out < 1
    ):
        raise _bad("'max_output_tokens' must be a positive integer", "max_output_tokens")

    # The knobs Chat Completions shares go through its translator; a placeholder message stands
    # in for the turns built above, which replace it.
    chat: dict[str, Any] = {
        "model": body.get("model"),
        "messages": [{"role": "user", "content": "."}],
    }
    for key in _PASSED:
        if body.get(key) is not None:
            chat[key] = body[key]
    if max_out is not None:
        chat["max_completion_tokens"] = max_out
    if effort is not None:
        chat["reasoning_effort"] = effort
    if response_format is not None:
        chat["response_format"] = response_format
    if verbosity is not None:
        chat["verbosity"] = verbosity
    if stream:
        chat["stream"] = True
    if chat_tools:
        chat["tools"] = chat_tools
    choice = _chat_choice(body.get("tool_choice"), refs, web is not None)
    if choice is not None:
        chat["tool_choice"] = choice
    try:
        tr = chat_to_anthropic(chat, aliases=aliases, version=version, strict=strict)
    except ProxyError as err:
        raise _renamed(err) from None
    # The turns in place of the placeholder, and the system prompt after them as on chat.
    placed: dict[str, Any] = {}
    for key, value in tr.body.items():
        if key == "messages":
            placed["messages"] = turns
            if system:
                placed["system"] = system
        elif key != "system":
            placed[key] = value
    out = placed
    if web is not None:
        if max_tool_calls is not None:
            web["max_uses"] = max_tool_calls
        out["tools"] = [
            web if t.get("name") == "web_search" and "type" not in t else t for t in out["tools"]
        ]
    elif not out.get("tools") and _has_tool_blocks(turns):
        # As on chat: every tool in the history must be defined; no new calls.
        out["tools"] = _history_tools(turns)
        out["tool_choice"] = {"type": "none"}
    if compact:
        # The same request (tools and all, so the cached prefix still matches), asked for a
        # summary instead of an answer.
        ask = [{"type": "text", "text": COMPACTION_PROMPT}]
        if turns[-1]["role"] == "user":
            _merge(turns[-1]["content"], ask)
        else:
            turns.append({"role": "user", "content": ask})
        if out.get("tools"):
            out["tool_choice"] = {"type": "none"}
        out.get("output_config", {}).pop("format", None)
        if not out.get("output_config", True):
            del out["output_config"]
    if summary:
        _summarized(out)
    model_asked = str(body.get("model"))
    return ResponsesTranslated(
        body=out,
        model=model_asked,
        stream=stream,
        store=store,
        previous_response_id=prev,
        thinking=tr.thinking,
        warnings=(*(_renamed_note(w) for w in tr.warnings), *notes),
        tools=refs,
        json_tool=tr.json_tool,
        summary=summary,
        include=include,
        compact=compact,
        echo=_echo(body, instructions, max_out, metadata, truncation),
    )


def _summarized(out: dict[str, Any]) -> None:
    """Ask for summarized thinking where the model's default display hides it."""
    caps = capabilities(resolve_model(out["model"], {}))
    if caps is None or caps.thinking.display != "omitted":
        return  # summarized already (or a model the table does not know: passed through)
    thinking = out.get("thinking")
    if isinstance(thinking, dict):
        if thinking.get("type") in ("adaptive", "enabled"):
            thinking["display"] = "summarized"
    elif caps.thinking.on(None) and caps.thinking.accepts("adaptive"):
        out["thinking"] = {"type": "adaptive", "display": "summarized"}


def _echo(
    body: Mapping[str, Any],
    instructions: str | None,
    max_out: int | None,
    metadata: Any,
    truncation: Any,
) -> dict[str, Any]:
    """The request fields a Response object repeats (openai/types/responses/response.py)."""
    tools = body.get("tools")
    reasoning = body.get("reasoning")
    text = body.get("text")
    return {
        "instructions": instructions,
        "max_output_tokens": max_out,
        "metadata": metadata if isinstance(metadata, dict) else {},
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {
            "effort": reasoning.get("effort") if isinstance(reasoning, dict) else None,
            "summary": reasoning.get("summary") if isinstance(reasoning, dict) else None,
        },
        "service_tier": body.get("service_tier") or "auto",
        "store": body.get("store") is not False,
        "temperature": body.get("temperature"),
        "text": text
        if isinstance(text, dict) and text.get("format")
        else {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": tools if isinstance(tools, list) else [],
        "top_p": body.get("top_p"),
        "truncation": truncation or "disabled",
        "user": body.get("user"),
        "safety_identifier": body.get("safety_identifier"),
        "prompt_cache_key": body.get("prompt_cache_key"),
    }
