"""OpenAI -> Anthropic request translation, rule by rule (../shared/reference/translation.md)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ferrule.errors import ProxyError
from ferrule.translate.request import JSON_TOOL_NAME, to_anthropic


def tr(body: dict[str, Any], version: str = "2023-06-01", **kw: Any) -> dict[str, Any]:
    return to_anthropic(body, aliases=kw.get("aliases", {}), version=version).body


def base(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(
    ("asked", "sent"),
    [
        ("tokenpak-anthropic/claude-sonnet-4-6", "claude-sonnet-4-6"),
        ("ferrule/claude-haiku-4-5", "claude-haiku-4-5"),
        ("claude-opus-4-6", "claude-opus-4-6"),
        ("fast", "claude-haiku-4-5"),
    ],
)
def test_model_prefixes_and_aliases(asked: str, sent: str) -> None:
    t = to_anthropic(
        {**base(), "model": asked}, aliases={"fast": "claude-haiku-4-5"}, version="2023-06-01"
    )
    assert t.body["model"] == sent
    assert t.model == asked  # echoed back to the client as asked


def test_leading_system_and_developer_become_system_later_ones_stay_in_place() -> None:
    out = tr(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "S1"},
                {"role": "developer", "content": [{"type": "text", "text": "S2"}]},
                {"role": "user", "content": "u1"},
                {"role": "assistant", "content": "a1"},
                {"role": "system", "content": "late"},
                {"role": "user", "content": "u2"},
            ],
        }
    )
    assert out["system"] == [{"type": "text", "text": "S1"}, {"type": "text", "text": "S2"}]
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "u1"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a1"}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "late"}, {"type": "text", "text": "u2"}],
        },
    ]


def test_same_role_turns_merge_and_empty_text_is_never_sent() -> None:
    out = tr(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": ""},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": ""}, {"type": "text", "text": "b"}],
                },
                {"role": "assistant", "content": ""},
                {"role": "assistant", "content": "c"},
            ],
        }
    )
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
    ]


def test_images_data_url_and_http_url_never_fetched() -> None:
    out = tr(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                        },
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                        {"type": "text", "text": "what?"},
                    ],
                }
            ],
        }
    )
    assert out["messages"][0]["content"] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "what?"},
    ]


def test_max_tokens_sources_and_default() -> None:
    assert tr(base(max_tokens=10))["max_tokens"] == 10
    assert tr(base(max_tokens=10, max_completion_tokens=20))["max_tokens"] == 20
    assert tr(base())["max_tokens"] == 16384  # per-model default table


def test_temperature_clamped_top_p_kept_or_dropped_by_model_and_version() -> None:
    assert tr(base(temperature=1.7))["temperature"] == 1
    out = tr({**base(temperature=0.2, top_p=0.9), "model": "claude-3-7-sonnet-20250219"})
    assert (out["temperature"], out["top_p"]) == (0.2, 0.9)
    out = tr(base(temperature=0.2, top_p=0.9))  # 4.6 rejects both: keep temperature
    assert out["temperature"] == 0.2 and "top_p" not in out
    out = tr(base(temperature=0.2, top_p=0.9), version="2026-10-21")
    assert "temperature" not in out and "top_p" not in out


def test_stop_user_and_dropped_openai_only_fields() -> None:
    out = tr(
        base(
            stop=["END", "  ", "\n"],
            user="u-1",
            presence_penalty=1,
            frequency_penalty=1,
            seed=3,
            logit_bias={"1": 2},
            store=True,
            metadata={"a": "b"},
            logprobs=False,
        )
    )
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-1"}
    assert set(out) == {"model", "max_tokens", "messages", "stop_sequences", "metadata"}
    assert tr(base(stop="X"))["stop_sequences"] == ["X"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "logprobs"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"model": 3}, "model"),
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"stop": 5}, "stop"),
        ({"tools": [{"type": "function"}]}, "tools[0]"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0]"),
    ],
)
def test_rejections_name_the_field(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(ProxyError) as info:
        tr(base(**extra))
    assert info.value.status == 400
    assert info.value.param == param
    assert param.split("[")[0] in info.value.message


def test_tools_and_every_tool_choice_form() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "description": "d",
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
                "strict": True,
            },
        }
    ]
    out = tr(base(tools=tools))
    assert out["tools"] == [
        {
            "name": "f",
            "description": "d",
            "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
            "strict": True,  # strict tool use: every model of the table has it
        }
    ]
    assert "tool_choice" not in out
    for choice, sent in [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
    ]:
        assert tr(base(tools=tools, tool_choice=choice))["tool_choice"] == sent
    assert tr(base(tools=tools, parallel_tool_calls=False))["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    assert tr(base(tools=tools, tool_choice="required", parallel_tool_calls=False))[
        "tool_choice"
    ] == {"type": "any", "disable_parallel_tool_use": True}
    assert "tool_choice" not in tr(base(tool_choice="auto"))  # no tools: nothing to choose


def test_assistant_tool_calls_and_tool_results_grouped_first_in_one_user_turn() -> None:
    out = tr(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "w", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "rain"}],
                },
                {"role": "user", "content": "thanks"},
            ],
        }
    )
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "w", "input": {}},
        ],
    }
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"},
            {"type": "text", "text": "thanks"},
        ],
    }


def test_reasoning_effort_enables_thinking_below_max_tokens_without_temperature() -> None:
    # Claude 4.5 models have only manual thinking: a budget below max_tokens
    t = to_anthropic(
        {
            **base(reasoning_effort="low", max_tokens=1000, temperature=0.3),
            "model": "claude-sonnet-4-5",
        },
        aliases={},
        version="2023-06-01",
    )
    out = t.body
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert out["max_tokens"] == 3048 and out["thinking"]["budget_tokens"] < out["max_tokens"]
    assert "temperature" not in out and t.thinking
    assert any("temperature dropped" in w for w in t.warnings)
    assert "thinking" not in tr(base(reasoning_effort="none"))


def test_reasoning_effort_is_adaptive_with_effort_where_the_model_has_it() -> None:
    # Sonnet 4.6: adaptive thinking with output_config.effort ("enabled" is deprecated there)
    out = tr(base(reasoning_effort="medium", max_tokens=1000))
    assert out["thinking"] == {"type": "adaptive"}
    assert out["output_config"] == {"effort": "medium"}
    assert out["max_tokens"] == 1000 + 8192  # the client's answer budget kept on top
    # xhigh where the model has no xhigh: the highest level not above it; minimal is low
    assert tr(base(reasoning_effort="xhigh"))["output_config"] == {"effort": "high"}
    assert tr(base(reasoning_effort="minimal"))["output_config"] == {"effort": "low"}
    opus47 = tr({**base(reasoning_effort="xhigh"), "model": "claude-opus-4-7"})
    assert opus47["output_config"] == {"effort": "xhigh"}
    # never above the model's output ceiling
    big = tr(base(reasoning_effort="xhigh", max_tokens=127_000))
    assert big["max_tokens"] == 128_000


def test_reasoning_effort_none_turns_default_thinking_off_where_allowed() -> None:
    sonnet5 = tr({**base(reasoning_effort="none"), "model": "claude-sonnet-5"})
    assert sonnet5["thinking"] == {"type": "disabled"}
    # Opus 5: disabled only up to effort high (its default is high: nothing more to send)
    assert tr({**base(reasoning_effort="none"), "model": "claude-opus-5"})["thinking"] == {
        "type": "disabled"
    }
    # Sonnet 5.5 has between_tools instead of disabled
    t = to_anthropic(
        {**base(reasoning_effort="none"), "model": "claude-sonnet-5-5"},
        aliases={},
        version="2023-06-01",
    )
    assert t.body["thinking"] == {"type": "between_tools"}
    assert t.body["output_config"] == {"effort": "low"}
    # Fable 5.2 always thinks: lowest effort, and the client is told
    t = to_anthropic(
        {**base(reasoning_effort="none"), "model": "claude-fable-5-2"},
        aliases={},
        version="2023-06-01",
    )
    assert "thinking" not in t.body and t.body["output_config"] == {"effort": "low"}
    assert t.thinking and any("cannot turn thinking off" in w for w in t.warnings)


def test_sampling_a_model_refuses_is_dropped_with_a_warning_or_400_in_strict_mode() -> None:
    body = {**base(temperature=0.2), "model": "claude-opus-4-7"}
    t = to_anthropic(body, aliases={}, version="2023-06-01")
    assert "temperature" not in t.body
    assert t.warnings == ("temperature dropped: is not accepted by claude-opus-4-7",)
    with pytest.raises(ProxyError) as err:
        to_anthropic(body, aliases={}, version="2023-06-01", strict=True)
    assert err.value.status == 400 and err.value.param == "temperature"
    # the default value is accepted
    assert tr({**base(temperature=1), "model": "claude-opus-4-7"})["temperature"] == 1


def test_identity_service_tier_web_search_verbosity() -> None:
    t = to_anthropic(
        base(
            safety_identifier="sid-1",
            user="u-1",
            prompt_cache_key="pk",
            service_tier="flex",
            verbosity="low",
            web_search_options={
                "user_location": {"approximate": {"city": "Paris", "country": "FR"}}
            },
        ),
        aliases={},
        version="2023-06-01",
    )
    assert t.body["metadata"] == {"user_id": "sid-1"}
    assert "prompt_cache_key" not in orjson.dumps(t.body).decode()
    assert t.body["service_tier"] == "standard_only"
    assert t.body["tools"] == [
        {
            "type": "web_search_20250305",
            "name": "web_search",
            "user_location": {"type": "approximate", "city": "Paris", "country": "FR"},
        }
    ]
    assert any(w.startswith("verbosity ignored") for w in t.warnings)


def test_tool_history_without_tools_declares_the_tools_used() -> None:
    msgs = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "found"},
        {"role": "user", "content": "summarize"},
    ]
    out = tr(base(messages=msgs))
    assert [t["name"] for t in out["tools"]] == ["look"]
    assert out["tool_choice"] == {"type": "none"}


def test_response_format_becomes_structured_outputs_or_a_forced_tool() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    # every model of the table has structured outputs: output_config.format
    t = to_anthropic(base(response_format=rf), aliases={}, version="2023-06-01")
    assert t.json_tool is None and "tools" not in t.body
    assert t.body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    # json_object (any object) stays a forced tool where forcing is accepted
    t = to_anthropic(
        base(response_format={"type": "json_object"}), aliases={}, version="2023-06-01"
    )
    assert t.json_tool == JSON_TOOL_NAME
    assert t.body["tool_choice"] == {"type": "tool", "name": JSON_TOOL_NAME}
    assert t.body["tools"][0]["input_schema"] == {"type": "object"}
    # ... and structured outputs where the model refuses a forced tool
    t = to_anthropic(
        {**base(response_format={"type": "json_object"}), "model": "claude-fable-5-2"},
        aliases={},
        version="2023-06-01",
    )
    assert t.json_tool is None and t.body["output_config"]["format"]["schema"] == {"type": "object"}
    # an unknown model: the forced tool (no capability is assumed)
    t = to_anthropic(
        {**base(response_format=rf), "model": "claude-unknown-9"}, aliases={}, version="2023-06-01"
    )
    assert t.body["tools"][0]["input_schema"] == schema
    assert "response_format" not in t.body


def test_stream_flags() -> None:
    t = to_anthropic(
        base(stream=True, stream_options={"include_usage": True}), aliases={}, version="2023-06-01"
    )
    assert t.stream and t.include_usage and t.body["stream"] is True
    assert "stream_options" not in t.body


def test_deterministic_bytes() -> None:
    body = base(tools=[{"type": "function", "function": {"name": "f"}}], temperature=0.5)
    assert orjson.dumps(tr(body)) == orjson.dumps(tr(orjson.loads(orjson.dumps(body))))


def test_unsupported_content_part_is_named() -> None:
    body = base(
        messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]
    )
    with pytest.raises(ProxyError) as info:
        tr(body)
    assert info.value.param == "messages[0].content[0]" and "input_audio" in info.value.message


def test_final_assistant_prefill_loses_trailing_whitespace() -> None:
    out = tr(
        base(
            messages=[
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "The answer is "},
            ]
        )
    )
    assert out["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "The answer is"}],
    }
    out = tr(
        base(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}])
    )
    assert out["messages"][-1]["role"] == "user"
