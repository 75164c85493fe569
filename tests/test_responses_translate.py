"""Responses API translation (issue 14): request rules, the answer object, the stream re-encoder.

Pure functions only (no server): every input / tool / format rule of
ferrule.translate.responses_request, ferrule.translate.responses_response, and the event grammar of
the stream re-encoder (``ferrule.backend``'s: run with FERRULE_BACKEND=python and =rust), validated
against the openai SDK's own models.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx2
import openai
import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import CompactedResponse, Response, ResponseStreamEvent
from pydantic import TypeAdapter

from ferrule.backend import ResponsesStreamEncoder  # FERRULE_BACKEND picks the twin under test
from ferrule.errors import ProxyError
from ferrule.mock.answers import plan_answer
from ferrule.mock.directives import from_request
from ferrule.mock.errors import ApiError
from ferrule.mock.options import MockOptions
from ferrule.mock.sse import events as mock_events
from ferrule.mock.usage import forced, segments
from ferrule.mock.validate import validate_request
from ferrule.seal import Sealer
from ferrule.translate.request import JSON_TOOL_NAME
from ferrule.translate.responses_request import (
    COMPACTION_PREFIX,
    COMPACTION_PROMPT,
    ResponsesTranslated,
    compaction_context,
    reasoning_context,
    to_anthropic,
)
from ferrule.translate.responses_response import to_compacted, to_responses

SEALER = Sealer(["test-secret"])
TENANT = "tenant-a"
MODEL = "claude-sonnet-4-6"  # adaptive thinking, structured outputs, strict tools, shown thinking
HIDDEN = "claude-opus-4-7"  # thinking display omitted by default
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def tr(body: dict[str, Any], **kw: Any) -> ResponsesTranslated:
    return to_anthropic(
        {"model": MODEL, **body},
        aliases={},
        version=kw.pop("version", "2023-06-01"),
        sealer=kw.pop("sealer", SEALER),
        tenant=kw.pop("tenant", TENANT),
        **kw,
    )


def out(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return tr(body, **kw).body


def bad(body: dict[str, Any], **kw: Any) -> ProxyError:
    with pytest.raises(ProxyError) as info:
        tr(body, **kw)
    assert info.value.status == 400
    return info.value


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


# -- input ---------------------------------------------------------------------------------------


def test_string_input_is_one_user_turn_and_instructions_the_system() -> None:
    body = out({"input": "hi", "instructions": "be brief"})
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert body["system"] == [{"type": "text", "text": "be brief"}]
    assert list(body)[:4] == ["model", "max_tokens", "messages", "system"]


def test_leading_developer_is_system_later_ones_stay_in_place_as_user_text() -> None:
    body = out(
        {
            "instructions": "I",
            "input": [
                {"role": "developer", "content": [{"type": "input_text", "text": "D"}]},
                {"role": "system", "content": "S"},
                user("U"),
                {"role": "assistant", "content": [{"type": "output_text", "text": "A"}]},
                {"role": "developer", "content": "later"},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            ],
        }
    )
    assert [b["text"] for b in body["system"]] == ["I", "D", "S"]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "U"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A"}]},
        {"role": "user", "content": [{"type": "text", "text": "later"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "no"}]},
    ]


def test_images_and_files_become_image_and_document_blocks() -> None:
    pdf = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4").decode()
    txt = "data:text/plain;base64," + base64.b64encode("héllo".encode()).decode()
    content = [
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "auto"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
        {"type": "input_file", "filename": "a.pdf", "file_data": pdf},
        {"type": "input_file", "file_data": txt},
        {"type": "input_file", "file_url": "https://x.test/b.pdf"},
    ]
    blocks = out({"input": [{"role": "user", "content": content}]})["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}
    assert blocks[2]["source"] == {"type": "base64", "media_type": "image/png", "data": "AAAA"}
    assert blocks[3] == {
        "type": "document",
        "title": "a.pdf",
        "source": {
            "type": "base64",
            "media_type": "application/pdf",
            "data": base64.b64encode(b"%PDF-1.4").decode(),
        },
    }
    assert blocks[4]["source"] == {"type": "text", "media_type": "text/plain", "data": "héllo"}
    assert blocks[5]["source"] == {"type": "url", "url": "https://x.test/b.pdf"}


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "input_file", "file_id": "file-1"}, "input[0].content[0]"),
        ({"type": "input_image", "file_id": "file-1"}, "input[0].content[0]"),
        ({"type": "input_file", "file_data": "data:image/bmp;base64,AA"}, "input[0].content[0]"),
        ({"type": "input_audio", "input_audio": {}}, "input[0].content[0]"),
        ({"type": "output_text", "text": "x"}, "input[0].content[0]"),
    ],
)
def test_unsupported_content_parts_are_400s_naming_the_part(
    part: dict[str, Any], param: str
) -> None:
    assert bad({"input": [{"role": "user", "content": [part]}]}).param == param


def test_function_and_custom_calls_and_outputs_become_tool_use_and_tool_result() -> None:
    body = out(
        {
            "input": [
                user("go"),
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "exec_command",
                    "arguments": '{"cmd": "ls"}',
                },
                {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "P"},
                {"type": "function_call_output", "call_id": "c1", "output": "a\nb"},
                {
                    "type": "custom_tool_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "ok"}],
                },
                user("next"),
            ],
            "tools": [
                {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
                {"type": "custom", "name": "apply_patch"},
            ],
        }
    )
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "c1", "name": "exec_command", "input": {"cmd": "ls"}},
                {"type": "tool_use", "id": "c2", "name": "apply_patch", "input": {"input": "P"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "a\nb"},
                {
                    "type": "tool_result",
                    "tool_use_id": "c2",
                    "content": [{"type": "text", "text": "ok"}],
                },
                {"type": "text", "text": "next"},
            ],
        },
    ]


def test_tool_history_without_tools_declares_the_tools_and_forbids_calls() -> None:
    body = out(
        {
            "input": [
                user("go"),
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "r"},
            ]
        }
    )
    assert [t["name"] for t in body["tools"]] == ["f"]
    assert body["tool_choice"] == {"type": "none"}


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "computer_call", "call_id": "x"}, "input[1].type"),
        ({"type": "item_reference", "id": "msg_1"}, "input[1].type"),
        ({"type": "mcp_call", "id": "x"}, "input[1].type"),
        ({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}, "input[1]"),
        ({"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}, "input[1]"),
        ({"type": "function_call_output", "output": "x"}, "input[1].call_id"),
        ({"role": "tool", "content": "x"}, "input[1]"),
        ("text", "input[1]"),
    ],
)
def test_bad_or_unsupported_input_items_are_400s_naming_the_item(item: Any, param: str) -> None:
    assert bad({"input": [user("hi"), item]}).param == param


def test_web_search_calls_in_input_are_dropped() -> None:
    ws = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {}}
    body = out({"input": [user("q"), ws, {"role": "assistant", "content": "A"}]})
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]


def test_empty_input_is_a_400() -> None:
    assert bad({"input": []}).param == "input"
    assert bad({"input": 3}).param == "input"


# -- tools ---------------------------------------------------------------------------------------


def test_function_tools_take_input_schema_and_strict_where_the_model_has_it() -> None:
    params = {"type": "object", "properties": {"x": {"type": "string"}}}
    tool = {"type": "function", "name": "f", "description": "d", "parameters": params}
    body = out({"input": "hi", "tools": [{**tool, "strict": True}]})
    assert body["tools"] == [
        {"name": "f", "description": "d", "input_schema": params, "strict": True}
    ]
    # a model that refuses forced tool choice: required is sent as auto, with a warning
    t = tr({"model": "claude-fable-5-2", "input": "hi", "tools": [tool], "tool_choice": "required"})
    assert t.body["tool_choice"] == {"type": "auto"}
    assert any("forced tool" in w for w in t.warnings)


def test_custom_tools_take_one_string_and_describe_their_grammar() -> None:
    grammar = 'start: "*** Begin Patch" /(.|\\n)*/ "*** End Patch"'
    t = tr(
        {
            "input": "hi",
            "tools": [
                {
                    "type": "custom",
                    "name": "apply_patch",
                    "description": "Apply a patch.",
                    "format": {"type": "grammar", "syntax": "lark", "definition": grammar},
                },
                {"type": "custom", "name": "note", "format": {"type": "text"}},
            ],
        }
    )
    patch, note = t.body["tools"]
    assert patch["input_schema"] == {
        "type": "object",
        "properties": {"input": {"type": "string"}},
        "required": ["input"],
        "additionalProperties": False,
    }
    assert patch["description"].startswith("Apply a patch.\n\n")
    assert grammar in patch["description"] and "Lark grammar" in patch["description"]
    assert "description" not in note
    assert t.custom_tools == {"apply_patch", "note"}


def test_namespace_tools_are_offered_by_qualified_name_and_mapped_back() -> None:
    t = tr(
        {
            "input": [
                user("hi"),
                {
                    "type": "function_call",
                    "call_id": "c",
                    "name": "spawn",
                    "namespace": "multi_agent_v1",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "c", "output": "ok"},
            ],
            "tools": [
                {
                    "type": "namespace",
                    "name": "multi_agent_v1",
                    "description": "Agents.",
                    "tools": [{"type": "function", "name": "spawn", "description": "Spawn."}],
                }
            ],
        }
    )
    assert t.body["tools"][0]["name"] == "multi_agent_v1__spawn"
    assert t.body["tools"][0]["description"] == "Agents.\n\nSpawn."
    assert t.body["messages"][1]["content"][0]["name"] == "multi_agent_v1__spawn"
    assert t.tools["multi_agent_v1__spawn"] == ("function", "spawn", "multi_agent_v1")


@pytest.mark.parametrize("kind", ["web_search", "web_search_preview", "web_search_2025_08_26"])
def test_web_search_becomes_the_anthropic_server_tool(kind: str) -> None:
    t = tr(
        {
            "input": "news?",
            "tools": [
                {
                    "type": kind,
                    "filters": {"allowed_domains": ["a.test"]},
                    "user_location": {"type": "approximate", "city": "Paris", "country": "FR"},
                    "external_web_access": False,
                }
            ],
            "tool_choice": {"type": kind},
            "max_tool_calls": 3,
        }
    )
    assert t.body["tools"] == [
        {
            "type": "web_search_20250305",
            "name": "web_search",
            "allowed_domains": ["a.test"],
            "user_location": {"type": "approximate", "city": "Paris", "country": "FR"},
            "max_uses": 3,
        }
    ]
    assert t.body["tool_choice"] == {"type": "tool", "name": "web_search"}
    assert any("external_web_access" in w for w in t.warnings)


@pytest.mark.parametrize(
    "kind",
    [
        "file_search",
        "computer_use_preview",
        "code_interpreter",
        "image_generation",
        "mcp",
        "local_shell",
        "something_new",
    ],
)
def test_hosted_tools_are_400s_naming_the_tool(kind: str) -> None:
    err = bad({"input": "hi", "tools": [{"type": "function", "name": "f"}, {"type": kind}]})
    assert err.param == "tools[1].type"
    assert kind in err.message


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "name": "f"}, {"type": "tool", "name": "f"}),
        ({"type": "custom", "name": "apply_patch"}, {"type": "tool", "name": "apply_patch"}),
    ],
)
def test_tool_choice(choice: Any, sent: dict[str, Any]) -> None:
    tools = [{"type": "function", "name": "f"}, {"type": "custom", "name": "apply_patch"}]
    assert out({"input": "hi", "tools": tools, "tool_choice": choice})["tool_choice"] == sent


def test_parallel_tool_calls_false_disables_parallel_use() -> None:
    body = out(
        {"input": "hi", "tools": [{"type": "function", "name": "f"}], "parallel_tool_calls": False}
    )
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    "choice",
    [{"type": "function", "name": "nope"}, {"type": "file_search"}, {"type": "allowed_tools"}],
)
def test_bad_tool_choice_is_a_400(choice: Any) -> None:
    err = bad({"input": "hi", "tools": [{"type": "function", "name": "f"}], "tool_choice": choice})
    assert err.param == "tool_choice"


# -- knobs ---------------------------------------------------------------------------------------


def test_max_output_tokens_is_max_tokens_and_errors_name_it() -> None:
    assert out({"input": "hi", "max_output_tokens": 300})["max_tokens"] == 300
    assert bad({"input": "hi", "max_output_tokens": 0}).param == "max_output_tokens"


def test_reasoning_effort_goes_through_the_model_table() -> None:
    body = out({"input": "hi", "reasoning": {"effort": "high"}, "max_output_tokens": 1000})
    assert body["thinking"] == {"type": "adaptive"}
    assert body["output_config"] == {"effort": "high"}
    assert body["max_tokens"] > 1000  # thinking headroom on top of the answer budget
    assert bad({"input": "hi", "reasoning": {"effort": "huge"}}).param == "reasoning.effort"
    assert bad({"input": "hi", "reasoning": {"summary": "long"}}).param == "reasoning.summary"


def test_reasoning_summary_asks_for_summarized_thinking_where_it_is_hidden() -> None:
    hidden = tr({"model": HIDDEN, "input": "hi", "reasoning": {"effort": "low", "summary": "auto"}})
    assert hidden.body["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert hidden.summary
    shown = out({"input": "hi", "reasoning": {"effort": "low", "summary": "detailed"}})
    assert shown["thinking"] == {"type": "adaptive"}  # summarized already
    plain = tr({"model": HIDDEN, "input": "hi", "reasoning": {"effort": "low"}})
    assert plain.body["thinking"] == {"type": "adaptive"} and not plain.summary
    # a model that thinks unless told otherwise: the summary alone asks for the display
    always = out({"model": "claude-fable-5-2", "input": "hi", "reasoning": {"summary": "auto"}})
    assert always["thinking"] == {"type": "adaptive", "display": "summarized"}


def test_warnings_name_the_responses_fields() -> None:
    t = tr(
        {
            "model": "claude-fable-5-2",
            "input": "hi",
            "reasoning": {"effort": "none"},
            "text": {"verbosity": "low"},
        }
    )
    assert any(w.startswith("reasoning.effort none:") for w in t.warnings), t.warnings
    assert any(w.startswith("text.verbosity ignored") for w in t.warnings), t.warnings


def test_sampling_follows_the_model_rules_and_strict_mode_names_the_field() -> None:
    t = tr({"input": "hi", "temperature": 0.2, "reasoning": {"effort": "low"}})
    assert "temperature" not in t.body and any("temperature" in w for w in t.warnings)
    assert out({"input": "hi", "temperature": 0.2, "top_p": 0.9})["temperature"] == 0.2
    err = bad({"input": "hi", "temperature": 0.2, "reasoning": {"effort": "low"}}, strict=True)
    assert err.param == "temperature"


def test_text_format_json_schema_uses_structured_outputs() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "name": "x", "schema": schema, "strict": True}
    t = tr({"input": "hi", "text": {"format": fmt}})
    assert t.body["output_config"]["format"] == {"type": "json_schema", "schema": schema}
    assert t.json_tool is None


def test_text_format_json_object_uses_the_forced_tool() -> None:
    t = tr({"input": "hi", "text": {"format": {"type": "json_object"}}})
    assert t.json_tool == JSON_TOOL_NAME
    assert t.body["tool_choice"] == {"type": "tool", "name": JSON_TOOL_NAME}
    assert "tools" not in out({"input": "hi", "text": {"format": {"type": "text"}}})
    err = bad({"input": "hi", "text": {"format": {"type": "json_schema", "schema": []}}})
    assert err.param == "text.format.schema"
    assert bad({"input": "hi", "text": {"format": {"type": "yaml"}}}).param == "text.format"


def test_identity_metadata_cache_key_truncation() -> None:
    body = out(
        {
            "input": "hi",
            "metadata": {"k": "v"},
            "safety_identifier": "u-1",
            "prompt_cache_key": "pck",
            "truncation": "auto",
        }
    )
    assert body["metadata"] == {"user_id": "u-1"}
    assert "pck" not in orjson.dumps(body).decode()
    assert out({"input": "hi", "user": "u-2"})["metadata"] == {"user_id": "u-2"}
    assert bad({"input": "hi", "truncation": "middle"}).param == "truncation"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "p"}}, "prompt"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"include": ["nope"]}, "include"),
        ({"store": "yes"}, "store"),
        ({"stream": 1}, "stream"),
    ],
)
def test_unsupported_fields_are_400s_naming_them(extra: dict[str, Any], param: str) -> None:
    assert bad({"input": "hi", **extra}).param == param


def test_store_stream_include_previous_response_id_and_unknown_fields() -> None:
    t = tr({"input": "hi", "client_metadata": {"thread": "t"}})
    assert t.store and not t.stream and t.previous_response_id is None and t.include == ()
    t = tr(
        {
            "input": "hi",
            "store": False,
            "stream": True,
            "previous_response_id": "resp_1",
            "include": ["reasoning.encrypted_content"],
        }
    )
    assert not t.store and t.stream and t.previous_response_id == "resp_1"
    assert t.include == ("reasoning.encrypted_content",)
    assert t.body["stream"] is True


# -- the answer ----------------------------------------------------------------------------------


def _open_tokens(obj: Any) -> Any:
    """``obj`` with every encrypted_content replaced by its plaintext (nonces differ per seal)."""
    if isinstance(obj, dict):
        context = (compaction_context if obj.get("type") == "compaction" else reasoning_context)(
            TENANT
        )
        return {
            k: (
                json.loads(SEALER.open(v, context)) if k == "encrypted_content" else _open_tokens(v)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_open_tokens(v) for v in obj]
    return obj


THOUGHT = {"type": "thinking", "thinking": "Let me think.", "signature": "sig-1"}
REDACTED = {"type": "redacted_thinking", "data": "opaque-2"}
TOOLS = [
    {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
    {"type": "custom", "name": "apply_patch"},
    {"type": "web_search"},
]


def message(content: list[dict[str, Any]], stop: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 20,
            "cache_read_input_tokens": 30,
            "output_tokens": 5,
        },
    }


def answer(msg: dict[str, Any], t: ResponsesTranslated, tenant: str = TENANT) -> dict[str, Any]:
    return to_responses(
        msg, tr=t, response_id="resp_x", created_at=1_700_000_000, sealer=SEALER, tenant=tenant
    )


def test_to_responses_items_usage_and_echo_validate_with_the_sdk() -> None:
    t = tr({"input": "hi", "tools": TOOLS, "reasoning": {"effort": "low", "summary": "auto"}})
    msg = message(
        [
            THOUGHT,
            REDACTED,
            {
                "type": "text",
                "text": "See ",
                "citations": [
                    {"type": "web_search_result_location", "url": "https://a.test", "title": "A"}
                ],
            },
            {"type": "text", "text": "this."},
            {
                "type": "server_tool_use",
                "id": "srv_1",
                "name": "web_search",
                "input": {"query": "q"},
            },
            {"type": "web_search_tool_result", "tool_use_id": "srv_1", "content": []},
            {"type": "tool_use", "id": "toolu_1", "name": "exec_command", "input": {"cmd": "ls"}},
            {"type": "tool_use", "id": "toolu_2", "name": "apply_patch", "input": {"input": "P\n"}},
        ],
        stop="tool_use",
    )
    r = answer(msg, t)
    parsed = Response.model_validate(r)
    assert parsed.output_text == "See this."
    assert [o["type"] for o in r["output"]] == [
        "reasoning",
        "message",
        "web_search_call",
        "function_call",
        "custom_tool_call",
    ]
    reasoning, text, ws, fc, ctc = r["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Let me think."}]
    assert json.loads(SEALER.open(reasoning["encrypted_content"], reasoning_context(TENANT))) == [
        THOUGHT,
        REDACTED,
    ]
    assert [p["text"] for p in text["content"]] == ["See ", "this."]
    assert text["content"][0]["annotations"][0]["url"] == "https://a.test"
    assert ws["action"] == {"type": "search", "query": "q"}
    assert fc | {"id": None} == {
        "id": None,
        "type": "function_call",
        "call_id": "toolu_1",
        "name": "exec_command",
        "arguments": '{"cmd":"ls"}',
        "status": "completed",
    }
    assert (ctc["call_id"], ctc["name"], ctc["input"]) == ("toolu_2", "apply_patch", "P\n")
    assert r["status"] == "completed" and r["incomplete_details"] is None
    assert r["usage"] == {
        "input_tokens": 60,
        "input_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 20},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 65,
    }
    assert r["model"] == MODEL and r["tools"] == TOOLS and r["object"] == "response"
    assert len({o["id"] for o in r["output"]}) == 5


def test_no_summary_unless_asked_and_namespace_calls_carry_their_namespace() -> None:
    tools = [{"type": "namespace", "name": "ns", "description": "", "tools": [TOOLS[0]]}]
    t = tr({"input": "hi", "tools": tools})
    r = answer(
        message(
            [THOUGHT, {"type": "tool_use", "id": "t", "name": "ns__exec_command", "input": {}}]
        ),
        t,
    )
    assert r["output"][0]["summary"] == []
    assert r["output"][1]["name"] == "exec_command" and r["output"][1]["namespace"] == "ns"
    Response.model_validate(r)


@pytest.mark.parametrize(
    ("stop", "status", "reason"),
    [
        ("end_turn", "completed", None),
        ("max_tokens", "incomplete", "max_output_tokens"),
        ("model_context_window_exceeded", "incomplete", "max_output_tokens"),
        ("refusal", "incomplete", "content_filter"),
    ],
)
def test_status_from_stop_reason(stop: str, status: str, reason: str | None) -> None:
    r = answer(message([{"type": "text", "text": "x"}], stop=stop), tr({"input": "hi"}))
    assert r["status"] == status
    assert r["incomplete_details"] == (reason and {"reason": reason})
    assert r["output"][0]["status"] == ("incomplete" if reason else "completed")
    Response.model_validate(r)


def test_json_mode_tool_input_is_the_answer_text() -> None:
    t = tr({"input": "hi", "text": {"format": {"type": "json_object"}}})
    r = answer(
        message([{"type": "tool_use", "id": "t", "name": JSON_TOOL_NAME, "input": {"a": 1}}]), t
    )
    assert Response.model_validate(r).output_text == '{"a":1}'


# -- reasoning round trip ------------------------------------------------------------------------


def _next_request(first: dict[str, Any], tenant: str = TENANT) -> ResponsesTranslated:
    items = first["output"]
    call = next(i for i in items if i["type"] == "function_call")
    return tr(
        {
            "input": [
                user("go"),
                *items,
                {"type": "function_call_output", "call_id": call["call_id"], "output": "done"},
            ],
            "tools": TOOLS,
            "reasoning": {"effort": "low"},
        },
        tenant=tenant,
    )


def test_reasoning_round_trip_restores_the_exact_blocks() -> None:
    t = tr({"input": "go", "tools": TOOLS, "reasoning": {"effort": "low"}})
    tool = {"type": "tool_use", "id": "toolu_1", "name": "exec_command", "input": {"cmd": "ls"}}
    first = answer(message([THOUGHT, REDACTED, tool], stop="tool_use"), t)
    again = _next_request(first)
    assert again.body["messages"][1] == {"role": "assistant", "content": [THOUGHT, REDACTED, tool]}
    assert again.body["messages"][2]["content"][0]["tool_use_id"] == "toolu_1"


def test_forged_or_foreign_reasoning_items_are_400s_naming_the_item() -> None:
    t = tr({"input": "go", "tools": TOOLS, "reasoning": {"effort": "low"}})
    tool = {"type": "tool_use", "id": "toolu_1", "name": "exec_command", "input": {}}
    first = answer(message([THOUGHT, tool], stop="tool_use"), t)
    with pytest.raises(ProxyError) as foreign:
        _next_request(first, tenant="tenant-b")
    assert foreign.value.status == 400 and foreign.value.param == "input[1]"
    token = first["output"][0]["encrypted_content"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for bad_token in (
        forged,
        "fs1.AAAA",
        "plain",
        SEALER.seal(b'{"a":1}', reasoning_context(TENANT)),
    ):
        item = {**first["output"][0], "encrypted_content": bad_token}
        with pytest.raises(ProxyError) as info:
            _next_request({"output": [item, *first["output"][1:]]})
        assert info.value.param == "input[1]"
    # a token sealed for another purpose (the thinking memory's context) does not open either
    other = SEALER.seal(orjson.dumps([THOUGHT]), TENANT.encode())
    with pytest.raises(ProxyError):
        _next_request(
            {"output": [{**first["output"][0], "encrypted_content": other}, first["output"][1]]}
        )


def test_reasoning_item_without_encrypted_content_is_dropped() -> None:
    item = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "x"}]}
    body = out({"input": [user("hi"), item, {"role": "assistant", "content": "A"}]})
    assert body["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "A"}]}


# -- streaming -----------------------------------------------------------------------------------


class FixedSealer:
    """Deterministic stand-in for Sealer (its nonces are random) where bytes are compared."""

    def seal(self, plaintext: bytes, context: bytes) -> str:
        return "sealed:" + hashlib.sha256(context + plaintext).hexdigest()[:16]


def _pieces(text: str, n: int) -> list[str]:
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def anthropic_sse(msg: dict[str, Any], n: int = 3) -> bytes:
    """The Anthropic stream of ``msg``, each block's content in ``n`` deltas."""

    def ev(name: str, data: dict[str, Any]) -> bytes:
        return (
            b"event: "
            + name.encode()
            + b"\ndata: "
            + orjson.dumps({"type": name, **data})
            + b"\n\n"
        )

    usage = dict(msg["usage"])
    start = {**msg, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    chunks = [ev("message_start", {"message": start})]
    for i, block in enumerate(msg["content"]):
        kind = block["type"]
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            stub: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"], n)]
            deltas += [
                {"type": "citations_delta", "citation": c} for c in block.get("citations", [])
            ]
        elif kind == "thinking":
            stub = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"], n)
            ]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind in ("tool_use", "server_tool_use"):
            stub = {**block, "input": {}}
            raw = json.dumps(block["input"])  # spaced, as Anthropic streams it
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(raw, n)]
        else:
            stub = block
        chunks.append(ev("content_block_start", {"index": i, "content_block": stub}))
        if i == 0:
            chunks.append(b'event: ping\ndata: {"type": "ping"}\n\n')
        chunks += [ev("content_block_delta", {"index": i, "delta": d}) for d in deltas]
        chunks.append(ev("content_block_stop", {"index": i}))
    chunks.append(
        ev(
            "message_delta",
            {
                "delta": {"stop_reason": msg["stop_reason"]},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    chunks.append(ev("message_stop", {}))
    return b"".join(chunks)


def encoder(t: ResponsesTranslated, sealer: Any = SEALER) -> ResponsesStreamEncoder:
    return ResponsesStreamEncoder(
        t, response_id="resp_x", created_at=1_700_000_000, sealer=sealer, tenant=TENANT
    )


def parse(raw: bytes) -> list[dict[str, Any]]:
    """The events of a Responses stream; checks the frame format and validates each with the SDK."""
    assert raw.endswith(b"\n\n") and b"[DONE]" not in raw
    events = []
    for frame in raw.decode().split("\n\n")[:-1]:
        head, data = frame.split("\n")
        assert head.startswith("event: ") and data.startswith("data: ")
        obj = json.loads(data[6:])
        assert obj["type"] == head[7:]
        EVENTS.validate_python(obj)
        events.append(obj)
    seqs = [e["sequence_number"] for e in events]
    assert seqs == list(range(len(events)))
    return events


def run(t: ResponsesTranslated, msg: dict[str, Any], sealer: Any = SEALER) -> list[dict[str, Any]]:
    enc = encoder(t, sealer)
    raw = enc.feed(anthropic_sse(msg)) + enc.finish()
    assert enc.done and enc.outcome == "complete" and enc.started
    return parse(raw)


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


def test_stream_text_event_order() -> None:
    events = run(tr({"input": "hi"}), message([{"type": "text", "text": "Hello there"}]))
    assert kinds(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.delta",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    assert "".join(e["delta"] for e in events if e["type"].endswith("text.delta")) == "Hello there"
    assert events[0]["response"]["status"] == "in_progress"
    assert events[-1]["response"]["usage"]["total_tokens"] == 65


def test_stream_function_call_and_custom_tool_call() -> None:
    patch = '*** Begin Patch\n"quoted" \\ tab\t é 😀\n*** End Patch'
    msg = message(
        [
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "exec_command",
                "input": {"cmd": "ls -l"},
            },
            {"type": "tool_use", "id": "toolu_2", "name": "apply_patch", "input": {"input": patch}},
        ],
        stop="tool_use",
    )
    t = tr({"input": "hi", "tools": TOOLS})
    enc = encoder(t)
    raw = anthropic_sse(msg, n=1)
    # one byte at a time: escapes and the surrogate pair arrive split across deltas
    sse = b"".join(enc.feed(raw[i : i + 1]) for i in range(len(raw)))
    events = parse(sse)
    body = kinds(events)[2:]
    assert body[:4] == [
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
    ]
    assert body[4] == "output_item.added" and body[-2:] == ["output_item.done", "completed"]
    assert set(body[5:-3]) == {"custom_tool_call_input.delta"} and body[-3] == (
        "custom_tool_call_input.done"
    )
    fc_done = events[4]
    assert fc_done["arguments"] == '{"cmd":"ls -l"}' and fc_done["name"] == "exec_command"
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert "".join(deltas) == patch
    assert events[-3]["input"] == patch
    assert events[6]["item"]["input"] == "" and events[6]["item"]["type"] == "custom_tool_call"


def test_stream_custom_tool_input_many_deltas() -> None:
    patch = 'line "1"\nline \\2 \u00e9\U0001f600 end'
    msg = message(
        [{"type": "tool_use", "id": "t", "name": "apply_patch", "input": {"input": patch}}],
        stop="tool_use",
    )
    events = run(tr({"input": "hi", "tools": TOOLS}), msg)
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert "".join(deltas) == patch


def test_stream_reasoning_events_and_summary() -> None:
    t = tr({"input": "hi", "reasoning": {"effort": "low", "summary": "auto"}})
    events = run(t, message([THOUGHT, REDACTED, {"type": "text", "text": "ok"}]))
    assert kinds(events)[2:9] == [
        "output_item.added",
        "reasoning_summary_part.added",
        "reasoning_summary_text.delta",
        "reasoning_summary_text.delta",
        "reasoning_summary_text.delta",
        "reasoning_summary_text.done",
        "reasoning_summary_part.done",
    ]
    assert kinds(events)[9:11] == ["output_item.done", "output_item.added"]
    done = events[9]["item"]
    assert done["summary"] == [{"type": "summary_text", "text": "Let me think."}]
    assert json.loads(SEALER.open(done["encrypted_content"], reasoning_context(TENANT))) == [
        THOUGHT,
        REDACTED,
    ]
    # without a summary asked for: the item and its sealed blocks, no summary events
    quiet = run(tr({"input": "hi", "reasoning": {"effort": "low"}}), message([THOUGHT]))
    assert kinds(quiet)[2:5] == ["output_item.added", "output_item.done", "completed"]


def test_stream_web_search_events() -> None:
    msg = message(
        [
            {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "srv", "content": []},
            {"type": "text", "text": "found"},
        ]
    )
    events = run(tr({"input": "hi", "tools": TOOLS}), msg)
    assert kinds(events)[2:7] == [
        "output_item.added",
        "web_search_call.in_progress",
        "web_search_call.searching",
        "web_search_call.completed",
        "output_item.done",
    ]
    assert events[6]["item"]["action"] == {"type": "search", "query": "q"}


MESSAGES = [
    message([{"type": "text", "text": "Hello there, world."}]),
    message(
        [
            THOUGHT,
            REDACTED,
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "toolu_1", "name": "exec_command", "input": {"cmd": "ls"}},
            {
                "type": "tool_use",
                "id": "toolu_2",
                "name": "apply_patch",
                "input": {"input": "a\nb"},
            },
        ],
        stop="tool_use",
    ),
    message([THOUGHT, {"type": "text", "text": "cut sh"}], stop="max_tokens"),
    message(
        [
            {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "srv", "content": []},
            {
                "type": "text",
                "text": "cited",
                "citations": [
                    {"type": "web_search_result_location", "url": "https://a.test", "title": "A"}
                ],
            },
        ]
    ),
]
STREAM_TR = tr({"input": "hi", "tools": TOOLS, "reasoning": {"effort": "low", "summary": "auto"}})


@pytest.mark.parametrize("msg", MESSAGES)
def test_stream_final_object_equals_to_responses_and_the_done_items(msg: dict[str, Any]) -> None:
    events = run(STREAM_TR, msg)
    final = events[-1]
    want = answer(msg, STREAM_TR)
    assert final["type"] == (
        "response.incomplete" if want["status"] == "incomplete" else "response.completed"
    )
    assert _open_tokens(final["response"]) == _open_tokens(want)
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert done == final["response"]["output"]  # the same tokens: sealed once
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.done"] == list(
        range(len(done))
    )
    # the SDK's own stream accumulator (responses.stream) accepts it and ends with the same object
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=[], text_format=omit)
    for e in events:
        state.handle_event(EVENTS.validate_python(e))
    assert state._completed_response is not None or final["type"] == "response.incomplete"


def test_json_mode_stream_streams_the_tool_input_as_text() -> None:
    t = tr({"input": "hi", "text": {"format": {"type": "json_object"}}})
    msg = message([{"type": "tool_use", "id": "t", "name": JSON_TOOL_NAME, "input": {"a": [1, 2]}}])
    events = run(t, msg)
    assert "output_text.delta" in kinds(events)
    assert events[-1]["response"] == answer(msg, t)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_chunk_splits_give_identical_output(data: st.DataObject) -> None:
    msg = data.draw(st.sampled_from(MESSAGES))
    raw = anthropic_sse(msg)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=40)))
    whole_enc = encoder(STREAM_TR, FixedSealer())
    whole = whole_enc.feed(raw) + whole_enc.finish()
    enc = encoder(STREAM_TR, FixedSealer())
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    split = b"".join(enc.feed(p) for p in pieces) + enc.finish()
    assert split == whole
    assert enc.usage == whole_enc.usage and enc.stop_reason == msg["stop_reason"]


def test_upstream_error_mid_stream_is_response_failed() -> None:
    raw = anthropic_sse(MESSAGES[1])
    cut = raw.index(b"event: content_block_start", raw.index(b'"toolu_1"') - 200)
    err = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    enc = encoder(STREAM_TR)
    events = parse(enc.feed(raw[:cut] + err + raw[cut:]))
    assert events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "Overloaded"}
    assert [o["type"] for o in failed["output"]] == ["reasoning"]  # the items finished
    assert failed["usage"]["input_tokens"] == 60
    assert enc.done and enc.outcome == "upstream_error"
    assert enc.error == ("overloaded_error", "Overloaded")
    assert enc.feed(raw) == b"" and enc.finish() == b""  # nothing after the terminal event
    assert (
        sum(
            e["type"].startswith("response.")
            and e["type"] in ("response.completed", "response.failed", "response.incomplete")
            for e in events
        )
        == 1
    )


def test_error_before_start_is_an_error_event_and_a_cut_stream_fails() -> None:
    enc = encoder(STREAM_TR)
    err = b'event: error\ndata: {"type":"error","error":{"type":"rate_limit_error","message":"slow"}}\n\n'
    events = parse(enc.feed(err))
    assert events == [
        {
            "type": "error",
            "sequence_number": 0,
            "code": "rate_limit_exceeded",
            "message": "slow",
            "param": None,
        }
    ]
    assert not enc.started and enc.outcome == "upstream_error"
    raw = anthropic_sse(MESSAGES[0])
    enc = encoder(STREAM_TR)
    events = parse(enc.feed(raw[: raw.index(b"event: message_delta")]) + enc.finish())
    assert events[-1]["type"] == "response.failed" and enc.outcome == "truncated"
    enc = encoder(STREAM_TR)
    events = parse(enc.feed(b"event: message_start\ndata: {not json}\n\n"))
    assert enc.outcome == "protocol_error" and events[-1]["type"] == "error"


# -- Codex remote compaction (v2) ----------------------------------------------------------------


def _compaction_request(tenant: str = TENANT) -> ResponsesTranslated:
    history = [
        user("fix the bug"),
        {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
    ]
    return tr(
        {"input": [*history, {"type": "compaction_trigger"}], "tools": TOOLS, "store": False},
        tenant=tenant,
    )


def test_compaction_trigger_asks_for_a_summary_with_the_same_tools() -> None:
    t = _compaction_request()
    assert t.compact
    last = t.body["messages"][-1]["content"]
    assert last[0]["type"] == "tool_result" and last[-1]["text"] == COMPACTION_PROMPT
    assert [x.get("name") for x in t.body["tools"]] == [
        x.get("name") for x in tr({"input": "hi", "tools": TOOLS}).body["tools"]
    ]
    assert t.body["tool_choice"] == {"type": "none"}
    assert not tr({"input": "hi"}).compact


def test_compaction_answer_is_one_item_that_comes_back_as_the_summary() -> None:
    t = _compaction_request()
    r = answer(message([THOUGHT, {"type": "text", "text": "Goal: fix the bug."}]), t)
    assert [o["type"] for o in r["output"]] == ["compaction"]
    Response.model_validate(r)
    item = r["output"][0]
    later = out({"input": [item, user("continue")]})
    assert later["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": COMPACTION_PREFIX + "Goal: fix the bug."},
                {"type": "text", "text": "continue"},
            ],
        }
    ]
    # another tenant's, a changed one, or a reasoning token passed as a compaction: 400s
    with pytest.raises(ProxyError) as foreign:
        tr({"input": [item, user("continue")]}, tenant="tenant-b")
    assert foreign.value.param == "input[0]"
    rs = answer(message([THOUGHT]), tr({"input": "hi"}))["output"][0]["encrypted_content"]
    token = item["encrypted_content"]
    middle = len(token) // 2  # a middle base64 character carries six whole bits: always a change
    changed = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    for forged in (changed, rs):
        err = bad({"input": [user("a"), {**item, "encrypted_content": forged}]})
        assert err.param == "input[1]"


def test_compaction_stream_sends_exactly_one_compaction_item() -> None:
    t = _compaction_request()
    msg = message([THOUGHT, {"type": "text", "text": "Goal: fix the bug."}])
    events = run(t, msg)
    assert kinds(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "output_item.done",
        "completed",
    ]
    assert _open_compaction(events[3]["item"]) == {"summary": "Goal: fix the bug."}
    assert events[-1]["response"]["output"] == [events[3]["item"]]
    assert _open_compaction(answer(msg, t)["output"][0]) == {"summary": "Goal: fix the bug."}


def test_compact_endpoint_answer_is_one_compaction_item() -> None:
    t = _compaction_request()
    msg = message([{"type": "text", "text": "Goal: fix the bug."}])
    r = to_compacted(msg, tr=t, response_id="resp_c", created_at=5, sealer=SEALER, tenant=TENANT)
    parsed = CompactedResponse.model_validate(r)
    assert [o.type for o in parsed.output] == ["compaction"]
    assert _open_compaction(r["output"][0]) == {"summary": "Goal: fix the bug."}
    assert r["usage"]["input_tokens"] == 60


def _open_compaction(item: dict[str, Any]) -> Any:
    return json.loads(SEALER.open(item["encrypted_content"], compaction_context(TENANT)))


# -- through the simulated upstream (in process): thinking with tools across turns ----------------


def mock_upstream(body: dict[str, Any]) -> bytes | dict[str, Any]:
    """What the simulated Anthropic upstream answers (it checks thinking signatures and their
    prefix as the API does, and that a tool turn keeps its thinking)."""
    checked = validate_request(body, version="2023-06-01")
    plan = plan_answer(
        body,
        model=checked.model.id,
        directives=from_request(body),
        options=MockOptions(),
        cache=forced(sum(s.tokens for s in segments(body))),
        thinking_on=checked.thinking_on,
        thinking_display=checked.thinking_display,
    )
    if body.get("stream"):
        return b"".join(event for event, _ in mock_events(plan))
    return plan.to_json()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["claude-sonnet-5-5", "claude-haiku-5-5", "claude-sonnet-4-6"])
def test_reasoning_with_tools_across_turns_through_the_simulated_upstream(
    model: str, stream: bool
) -> None:
    tools = TOOLS[:2]
    # NOTE: redacted blocks only where the prefix is not checked: the simulated upstream signs a
    # redacted block that follows a thinking block with the wrong prefix (reported, not ours).
    script = "[mock:thinking] [mock:tools2]" + (" [mock:redacted]" if model.endswith("4-6") else "")
    items: list[dict[str, Any]] = [user(f"{script} start")]
    bodies = []
    for turn in range(3):
        t = tr(
            {
                "model": model,
                "input": items,
                "tools": tools,
                "reasoning": {"effort": "medium", "summary": "auto"},
                "store": False,
                "stream": stream,
                "include": ["reasoning.encrypted_content"],
            }
        )
        bodies.append(t.body)
        answered = mock_upstream(t.body)  # raises the API's 400 if a thinking block came back wrong
        if isinstance(answered, bytes):
            enc = encoder(t)
            events = parse(enc.feed(answered) + enc.finish())
            r = events[-1]["response"]
        else:
            r = answer(answered, t)
        Response.model_validate(r)
        kinds_out = [o["type"] for o in r["output"]]
        assert kinds_out[0] == "reasoning" and r["output"][0]["encrypted_content"]
        assert {"function_call", "custom_tool_call"} <= set(kinds_out), kinds_out
        items += r["output"]
        for o in r["output"]:
            if o["type"] in ("function_call", "custom_tool_call"):
                kind = o["type"] + "_output"
                text = f"{script} result {turn}"
                items.append({"type": kind, "call_id": o["call_id"], "output": text})
    # the first turn's thinking came back in every later request, byte for byte
    first = bodies[1]["messages"][1]["content"]
    assert bodies[2]["messages"][1]["content"] == first
    assert first[0]["type"] == "thinking" and first[0]["signature"]
    assert (first[1]["type"] == "redacted_thinking") == model.endswith("4-6")
    # and the check is real: a changed thinking text is refused by the upstream
    changed = orjson.loads(orjson.dumps(bodies[2]))
    changed["messages"][1]["content"][0]["thinking"] += " (edited)"
    with pytest.raises(ApiError):
        validate_request(changed, version="2023-06-01")


# -- robustness: whatever the upstream sends, a well-formed stream or nothing ----------------------

_BLOCKS = st.sampled_from(
    [
        {"type": "text", "text": ""},
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "redacted_thinking", "data": "d"},
        {"type": "tool_use", "id": "t1", "name": "exec_command", "input": {}},
        {"type": "tool_use", "id": "t2", "name": "apply_patch", "input": {}},
        {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
        {"type": "web_search_tool_result", "tool_use_id": "s", "content": []},
        {"type": "mystery"},
        "not a block",
    ]
)
_DELTAS = st.one_of(
    st.builds(lambda t: {"type": "text_delta", "text": t}, st.text(max_size=5)),
    st.builds(lambda t: {"type": "thinking_delta", "thinking": t}, st.text(max_size=5)),
    st.builds(lambda t: {"type": "input_json_delta", "partial_json": t}, st.text(max_size=5)),
    st.just({"type": "signature_delta", "signature": "s"}),
    st.just({"type": "citations_delta", "citation": {"type": "web_search_result_location"}}),
    st.just({"type": "text_delta", "text": 5}),
)
_INDEX = st.one_of(st.integers(0, 1), st.integers(0, 1), st.just(-1), st.just("0"), st.none())
_EVENT = st.one_of(
    st.builds(
        lambda b, i: ("content_block_start", {"index": i, "content_block": b}), _BLOCKS, _INDEX
    ),
    st.builds(lambda d, i: ("content_block_delta", {"index": i, "delta": d}), _DELTAS, _INDEX),
    st.builds(lambda i: ("content_block_stop", {"index": i}), _INDEX),
    st.builds(
        lambda r: ("message_delta", {"delta": {"stop_reason": r}, "usage": {"output_tokens": 3}}),
        st.sampled_from(["end_turn", "max_tokens", "tool_use", "refusal", None, 7]),
    ),
    st.just(("message_stop", {})),
    # the rarer ones (most of them end the stream)
    st.sampled_from(
        [
            ("ping", {}),
            ("error", {"error": {"type": "overloaded_error", "message": "x"}}),
            ("message_start", {"message": {"id": "m", "usage": {"input_tokens": 1}}}),
            ("message_start", {"message": "nope"}),
            ("content_block_delta", "[]"),
        ]
    ),
)


_GROUP = st.builds(
    lambda block, deltas, stop, index: [
        (
            "content_block_start",
            # tool ids are unique in a message, as Anthropic's are
            {
                "index": index,
                "content_block": {**block, "id": f"t{index}"} if "id" in block else block,
            },
        ),
        *[("content_block_delta", {"index": index, "delta": d}) for d in deltas],
        *([("content_block_stop", {"index": index})] if stop else []),
    ],
    _BLOCKS,
    st.lists(_DELTAS, max_size=3),
    st.booleans(),
    st.integers(0, 3),
)
# Mostly well formed (blocks in turn, some left open, then the message's end), with noise mixed in.
_SEQUENCE = st.builds(
    lambda groups, noise, at, end: [
        *[e for g in groups[:at] for e in g],
        *noise,
        *[e for g in groups[at:] for e in g],
        *end,
    ],
    st.lists(_GROUP, max_size=5),
    st.lists(_EVENT, max_size=3),
    st.integers(0, 5),
    st.sampled_from(
        [
            [("message_delta", {"delta": {"stop_reason": "tool_use"}}), ("message_stop", {})],
            [("message_delta", {"delta": {"stop_reason": "max_tokens"}}), ("message_stop", {})],
            [("message_stop", {})],
            [],
        ]
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    events=_SEQUENCE,
    start=st.booleans(),
    summary=st.booleans(),
    compact=st.booleans(),
)
def test_any_upstream_sequence_gives_a_valid_stream(
    events: list[tuple[str, Any]], start: bool, summary: bool, compact: bool
) -> None:
    body: dict[str, Any] = {"input": "hi", "tools": TOOLS}
    if summary:
        body["reasoning"] = {"effort": "low", "summary": "auto"}
    if compact:
        body["input"] = [user("hi"), {"type": "compaction_trigger"}]
    enc = encoder(tr(body), FixedSealer())
    raw = b""
    if start:
        events = [("message_start", {"message": {"id": "m", "usage": {}}}), *events]
    for name, data in events:
        payload = data if isinstance(data, str) else orjson.dumps({"type": name, **data}).decode()
        raw += enc.feed(f"event: {name}\ndata: {payload}\n\n".encode())
    raw += enc.finish()
    assert enc.done and enc.outcome != "streaming"
    out_events = parse(raw)
    terminal = [e for e in out_events if e["type"] in _TERMINAL]
    assert len(terminal) == 1 and out_events[-1] is terminal[0]
    assert (out_events[0]["type"] == "response.created") == enc.started
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=[], text_format=omit)
    if enc.started:
        for e in out_events:
            state.handle_event(EVENTS.validate_python(e))


_TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}


@pytest.mark.parametrize("compact", [False, True])
def test_blocks_left_open_are_ended_by_the_next_start_or_message_stop(compact: bool) -> None:
    body: dict[str, Any] = {"input": [user("hi")], "tools": TOOLS}
    if compact:
        body["input"].append({"type": "compaction_trigger"})
    t = tr(body)
    raw = anthropic_sse(MESSAGES[1])
    # no content_block_stop at all: each start ends the block before it, message_stop the last
    raw = b"".join(f + b"\n\n" for f in raw.split(b"\n\n") if b"content_block_stop" not in f)
    events = run(t, MESSAGES[1])
    enc = encoder(t)
    cut = parse(enc.feed(raw))
    assert enc.outcome == "complete"
    assert _open_tokens(cut[-1]["response"]) == _open_tokens(events[-1]["response"])
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=[], text_format=omit)
    for e in cut:
        state.handle_event(EVENTS.validate_python(e))


VALID_BODIES = {
    "codex first turn": {
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
            user("fix it"),
        ],
        "tools": [
            {
                "type": "function",
                "name": "exec_command",
                "strict": False,
                "parameters": {
                    "type": "object",
                    "properties": {"cmd": {"type": "string"}},
                    "required": ["cmd"],
                    "additionalProperties": False,
                },
            },
            {
                "type": "custom",
                "name": "apply_patch",
                "description": "Patch files.",
                "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
            },
            {
                "type": "namespace",
                "name": "multi_agent_v1",
                "description": "Agents.",
                "tools": [
                    {"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}
                ],
            },
            {"type": "web_search", "external_web_access": False},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto", "effort": "medium"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "thread-1",
        "client_metadata": {"turn": "1"},
    },
    "files, images and structured output": {
        "instructions": "Read.",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is in these?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                    {
                        "type": "input_file",
                        "filename": "a.pdf",
                        "file_data": "data:application/pdf;base64,JVBERg==",
                    },
                ],
            }
        ],
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        "max_output_tokens": 500,
        "temperature": 0.5,
        "safety_identifier": "user-1",
    },
    "json object with web search forced": {
        "input": "news",
        "tools": [{"type": "web_search_preview", "filters": {"allowed_domains": ["a.test"]}}],
        "tool_choice": {"type": "web_search_preview"},
        "max_tool_calls": 2,
        "text": {"format": {"type": "json_object"}},
        "parallel_tool_calls": False,
    },
}


@pytest.mark.parametrize(
    "model", [MODEL, "claude-sonnet-5-5", "claude-fable-5-2", "claude-haiku-4-5"]
)
@pytest.mark.parametrize("name", list(VALID_BODIES))
def test_translated_requests_pass_the_simulated_upstreams_checks(name: str, model: str) -> None:
    body = out({**VALID_BODIES[name], "model": model})
    validate_request(body, version="2023-06-01")
    compact = out(
        {**VALID_BODIES[name], "model": model, "input": [user("a"), {"type": "compaction_trigger"}]}
    )
    validate_request(compact, version="2023-06-01")


# -- hostile requests: a 400 naming something, never another exception ---------------------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
_PART = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["input_text", "output_text", "refusal", "input_image", "input_file", "x"]
        )
    },
    optional={
        "text": _JSON,
        "refusal": _JSON,
        "image_url": _JSON | st.just("data:image/png;base64,AA"),
        "file_data": _JSON | st.just("data:text/plain;base64,@@"),
        "file_url": _JSON,
        "file_id": _JSON,
    },
)
_ITEM = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(
            [
                "message",
                "function_call",
                "function_call_output",
                "custom_tool_call",
                "custom_tool_call_output",
                "reasoning",
                "compaction",
                "compaction_trigger",
                "web_search_call",
                "item_reference",
            ]
        ),
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | _JSON,
        "content": _JSON | st.lists(_PART, max_size=3),
        "call_id": _JSON,
        "name": _JSON,
        "namespace": _JSON,
        "arguments": _JSON | st.just('{"a": 1}'),
        "input": _JSON,
        "output": _JSON | st.lists(_PART, max_size=2),
        "encrypted_content": _JSON | st.just("fs1.AAAA"),
    },
)
_TOOL = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "custom", "namespace", "web_search", "mcp"]) | _JSON},
    optional={
        "name": _JSON | st.just("f"),
        "parameters": _JSON,
        "format": _JSON
        | st.fixed_dictionaries({"type": st.just("grammar")}, optional={"syntax": _JSON}),
        "tools": _JSON,
        "filters": _JSON,
        "user_location": _JSON,
    },
)
_BODY = st.fixed_dictionaries(
    {"model": st.just(MODEL) | _JSON},
    optional={
        "input": _JSON | st.lists(_ITEM, max_size=4),
        "instructions": _JSON,
        "tools": _JSON | st.lists(_TOOL, max_size=3),
        "tool_choice": _JSON,
        "reasoning": _JSON,
        "text": _JSON,
        "include": _JSON,
        "max_output_tokens": _JSON,
        "temperature": _JSON,
        "store": _JSON,
        "stream": _JSON,
        "truncation": _JSON,
        "previous_response_id": _JSON,
        "metadata": _JSON,
        "background": _JSON,
    },
)


@settings(max_examples=100, deadline=None)
@given(body=_BODY)
def test_hostile_requests_are_400s(body: dict[str, Any]) -> None:
    try:
        t = tr(body)
    except ProxyError as err:
        assert err.status == 400 and err.message
        return
    orjson.dumps(t.body)  # what goes upstream serializes


# -- the official SDK against these functions (a stand-in route on httpx2's MockTransport) --------


def _sdk_client() -> openai.OpenAI:
    counter = iter(range(1000))

    def handle(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/responses"
        t = tr(json.loads(request.content))
        answered = mock_upstream(t.body)
        rid = f"resp_{next(counter)}"
        if isinstance(answered, bytes):
            enc = ResponsesStreamEncoder(
                t, response_id=rid, created_at=1, sealer=SEALER, tenant=TENANT
            )
            body = enc.feed(answered) + enc.finish()
            return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, json=answer(answered, t) | {"id": rid})

    http = httpx2.Client(transport=httpx2.MockTransport(handle))
    return openai.OpenAI(api_key="k", base_url="http://ferrule.test/v1", http_client=http)


def test_sdk_create_stream_and_parse() -> None:
    client = _sdk_client()
    r = client.responses.create(model=MODEL, input="[mock:words=5] hello", instructions="Be brief.")
    assert r.status == "completed" and len(r.output_text.split()) == 5
    with client.responses.stream(model=MODEL, input="[mock:words=7] hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text and len(final.output_text.split()) == 7

    class Answer(pydantic.BaseModel):
        answer: str

    parsed = client.responses.parse(model=MODEL, input="give JSON", text_format=Answer)
    assert isinstance(parsed.output_parsed, Answer)


@pytest.mark.parametrize("stream", [False, True])
def test_sdk_function_tool_with_reasoning_across_turns(stream: bool) -> None:
    client = _sdk_client()
    tools: list[Any] = [
        {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
        {"type": "custom", "name": "apply_patch", "description": "Patch."},
    ]
    history: list[Any] = [{"role": "user", "content": "[mock:thinking] [mock:tools2] weather?"}]
    for _ in range(2):
        kw: dict[str, Any] = {
            "model": "claude-sonnet-5-5",
            "input": history,
            "tools": tools,
            "reasoning": {"effort": "low", "summary": "auto"},
        }
        if stream:
            with client.responses.stream(**kw) as s:
                r = s.get_final_response()
        else:
            r = client.responses.create(**kw)
        types = [o.type for o in r.output]
        assert types[0] == "reasoning" and "function_call" in types and "custom_tool_call" in types
        history += [o.model_dump(exclude_none=True) for o in r.output]
        for o in r.output:
            if o.type in ("function_call", "custom_tool_call"):
                text = "[mock:thinking] [mock:tools2] sunny"
                history.append({"type": f"{o.type}_output", "call_id": o.call_id, "output": text})
