"""Real Python client libraries, unchanged, through a real ``ferrule serve`` (both backends) in front
of the simulated Anthropic upstream: the openai SDK (plain, streaming, the ``.stream()`` helper,
tool calls and their round trip, usage, reasoning), LangChain ``ChatOpenAI`` and LiteLLM as a
client. Every raw JSON answer is validated with ``ChatCompletion`` and every raw chunk with
``ChatCompletionChunk`` (``sse_client.check_stream``).

The simulated upstream answers deterministically from the request; ``[mock:echo]`` makes it answer
with the Anthropic request it received, which is how these tests see what Ferrule sent upstream.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

# LiteLLM must not reach the network (model cost map, telemetry): set before it is imported.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from servers import TEST_KEY, MockUpstream, Proxy
from sse_client import check_stream, text_of

MODEL = "tokenpak-anthropic/claude-sonnet-4-6"

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string"}, "hours24": {"type": "boolean"}},
            "required": ["tz", "hours24"],
        },
    },
}
# what the simulated model fills in for WEATHER_TOOL / TIME_TOOL (first enum value, "<name>-value")
WEATHER_ARGS = {"city": "city-value", "unit": "celsius"}
TIME_ARGS = {"tz": "tz-value", "hours24": True}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def client(proxy: Proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key=TEST_KEY, max_retries=0, timeout=30)


def post(proxy: Proxy, body: dict[str, Any]) -> httpx.Response:
    resp = httpx.post(
        proxy.v1 + "/chat/completions",
        content=orjson.dumps({"model": MODEL, **body}),
        headers={"authorization": f"Bearer {TEST_KEY}", "content-type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return resp


def raw_completion(proxy: Proxy, body: dict[str, Any]) -> tuple[ChatCompletion, dict[str, Any]]:
    """The validated ``ChatCompletion`` and the raw JSON of a non-streaming request."""
    raw = post(proxy, body).json()
    return ChatCompletion.model_validate(raw), raw


def raw_stream(
    proxy: Proxy, body: dict[str, Any], *, expect_usage: bool = False
) -> tuple[list[ChatCompletionChunk], list[dict[str, Any]]]:
    """The validated chunks and their raw JSON objects of a streaming request."""
    resp = post(proxy, {**body, "stream": True})
    assert resp.headers["content-type"].startswith("text/event-stream")
    chunks = check_stream(resp.content, expect_usage=expect_usage)
    raws = [
        orjson.loads(event[len(b"data: ") :])
        for event in resp.content.split(b"\n\n")[:-1]
        if event != b"data: [DONE]"
    ]
    assert len(raws) == len(chunks)
    return chunks, raws


def echoed(text: str) -> dict[str, Any]:
    """The Anthropic request the simulated upstream echoed back (``[mock:echo]``)."""
    body: dict[str, Any] = orjson.loads(text)
    return body


def tool_calls_of(chunks: list[ChatCompletionChunk]) -> dict[int, list[Any]]:
    """Tool-call deltas of a stream, grouped by index, in order."""
    by_index: dict[int, list[Any]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                by_index.setdefault(delta.index, []).append(delta)
    return by_index


def check_round_trip(sent: dict[str, Any], call_id: str, name: str, args: dict[str, Any]) -> None:
    """The echoed upstream request carries the assistant's tool_use and the matching tool_result."""
    turns = sent["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"], turns
    [use] = [b for b in turns[1]["content"] if b["type"] == "tool_use"]
    assert use == {"type": "tool_use", "id": call_id, "name": name, "input": args}
    first = turns[2]["content"][0]  # tool results come first in their user turn
    assert first["type"] == "tool_result" and first["tool_use_id"] == call_id
    assert "sunny" in orjson.dumps(first.get("content")).decode()


# -- openai SDK -----------------------------------------------------------------------------------


def test_openai_sync_create_plain_and_stream(proxy: Proxy) -> None:
    c = client(proxy)
    msgs = user("Hello there [mock:words=25]")
    plain = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=100)  # type: ignore[arg-type]
    assert plain.object == "chat.completion" and plain.model == MODEL
    assert plain.choices[0].finish_reason == "stop"
    assert plain.choices[0].message.content and plain.choices[0].message.tool_calls is None
    assert plain.usage is not None and plain.usage.completion_tokens > 0
    chunks = list(
        c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=100, stream=True)
    )  # type: ignore[arg-type]
    assert len(chunks) > 3
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks)
        == plain.choices[0].message.content
    )
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices[0].finish_reason] == ["stop"]
    # the same requests, raw, validated by the SDK's types
    completion, _ = raw_completion(proxy, {"messages": msgs, "max_tokens": 100})
    assert completion.choices[0].message.content == plain.choices[0].message.content
    stream_chunks, _ = raw_stream(proxy, {"messages": msgs, "max_tokens": 100})
    assert text_of(stream_chunks) == plain.choices[0].message.content


def test_openai_async_create_plain_and_stream(proxy: Proxy) -> None:
    msgs = user("Hello async [mock:words=20]")

    async def go() -> tuple[str, str, list[str | None]]:
        async with openai.AsyncOpenAI(base_url=proxy.v1, api_key=TEST_KEY, max_retries=0) as ac:
            plain = await ac.chat.completions.create(model=MODEL, messages=msgs)  # type: ignore[arg-type]
            stream = await ac.chat.completions.create(model=MODEL, messages=msgs, stream=True)  # type: ignore[arg-type]
            parts, finishes = [], []
            async for chunk in stream:
                parts.append(chunk.choices[0].delta.content or "")
                finishes.append(chunk.choices[0].finish_reason)
            return plain.choices[0].message.content or "", "".join(parts), finishes

    plain, streamed, finishes = asyncio.run(go())
    assert plain and plain == streamed
    assert [f for f in finishes if f] == ["stop"]


def test_openai_stream_helper_accumulates_a_tool_call(proxy: Proxy) -> None:
    class GetWeather(BaseModel):
        """Current weather in a city."""

        city: str
        unit: Literal["celsius", "fahrenheit"]

    c = client(proxy)
    strict_time = {**TIME_TOOL, "function": {**TIME_TOOL["function"], "strict": True}}
    with c.chat.completions.stream(
        model=MODEL,
        messages=user("Weather in Paris? [mock:tool]"),  # type: ignore[arg-type]
        tools=[openai.pydantic_function_tool(GetWeather), strict_time],  # type: ignore[list-item]
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in events
    assert events.count("tool_calls.function.arguments.done") == 1
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("toolu_")
    assert call.function.name == "GetWeather"
    assert orjson.loads(call.function.arguments) == WEATHER_ARGS
    assert call.function.parsed_arguments == GetWeather(**WEATHER_ARGS)  # type: ignore[arg-type]


def test_openai_stream_helper_with_a_plain_strict_tool(proxy: Proxy) -> None:
    c = client(proxy)
    strict_time = {**TIME_TOOL, "function": {**TIME_TOOL["function"], "strict": True}}
    with c.chat.completions.stream(
        model=MODEL,
        messages=user("What time is it? [mock:tool]"),  # type: ignore[arg-type]
        tools=[strict_time],  # type: ignore[list-item]
        stream_options={"include_usage": True},
    ) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_time"
    assert call.function.parsed_arguments == TIME_ARGS
    assert final.usage is not None and final.usage.total_tokens > 0


def test_openai_tool_call_round_trip(proxy: Proxy, mock: MockUpstream) -> None:
    c = client(proxy)
    first_msgs: list[dict[str, Any]] = user("Weather in Paris? [mock:tool]")
    first = c.chat.completions.create(model=MODEL, messages=first_msgs, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == WEATHER_ARGS
    # the assistant message goes back exactly as the SDK returned it, then the tool's answer
    follow = [
        *first_msgs,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 22C [mock:echo]"},
    ]
    second = c.chat.completions.create(model=MODEL, messages=follow, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
    assert second.choices[0].finish_reason == "stop"
    sent = echoed(second.choices[0].message.content or "")
    check_round_trip(sent, call.id, "get_weather", WEATHER_ARGS)
    assert sent["tools"][0]["name"] == "get_weather"
    assert sent["tools"][0]["input_schema"] == WEATHER_TOOL["function"]["parameters"]
    assert mock.requests()[-1]["body"] == sent  # the echo is what the upstream recorded
    # the same follow-up, raw and streamed, validated by the SDK's types
    completion, _ = raw_completion(proxy, {"messages": follow, "tools": [WEATHER_TOOL]})
    check_round_trip(
        echoed(completion.choices[0].message.content or ""), call.id, "get_weather", WEATHER_ARGS
    )
    chunks, _ = raw_stream(proxy, {"messages": follow, "tools": [WEATHER_TOOL]})
    check_round_trip(echoed(text_of(chunks)), call.id, "get_weather", WEATHER_ARGS)


def test_openai_include_usage_gives_a_final_usage_chunk(proxy: Proxy) -> None:
    body = {"messages": user("Count me [mock:words=12]"), "stream_options": {"include_usage": True}}
    chunks, raws = raw_stream(proxy, body, expect_usage=True)
    last = chunks[-1]
    assert last.choices == [] and raws[-1]["choices"] == []
    assert last.usage is not None and last.usage.prompt_tokens > 0
    assert last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    # through the SDK
    sdk_chunks = list(
        client(proxy).chat.completions.create(
            model=MODEL,
            messages=body["messages"],  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert sdk_chunks[-1].choices == [] and sdk_chunks[-1].usage == last.usage
    # without include_usage no chunk carries usage
    chunks, _ = raw_stream(proxy, {"messages": body["messages"]})
    assert all(c.usage is None for c in chunks)


def test_openai_two_parallel_tool_calls_streamed(proxy: Proxy) -> None:
    body = {"messages": user("Weather and time? [mock:tools2]"), "tools": [WEATHER_TOOL, TIME_TOOL]}
    chunks, raws = raw_stream(proxy, body)
    assert text_of(chunks)  # the text block before the tool calls
    by_index = tool_calls_of(chunks)
    assert sorted(by_index) == [0, 1]
    for index, name, args in ((0, "get_weather", WEATHER_ARGS), (1, "get_time", TIME_ARGS)):
        first, *rest = by_index[index]
        assert first.id and first.id.startswith("toolu_")
        assert first.type == "function"
        assert first.function is not None and first.function.name == name
        assert rest, "the arguments should arrive in several fragments"
        for later in rest:
            assert later.id is None and later.type is None
            assert later.function is not None and later.function.name is None
        fragments = "".join(
            (d.function.arguments or "") if d.function else "" for d in by_index[index]
        )
        assert orjson.loads(fragments) == args
    assert by_index[0][0].id != by_index[1][0].id
    # raw: the keys are absent (not null) on later deltas
    raw_deltas = [
        tc for r in raws for ch in r["choices"] for tc in ch["delta"].get("tool_calls", [])
    ]
    firsts = [d for d in raw_deltas if "id" in d]
    assert len(firsts) == 2 and all(
        d["type"] == "function" and "name" in d["function"] for d in firsts
    )
    assert all(
        "name" not in d.get("function", {}) and "type" not in d for d in raw_deltas if "id" not in d
    )
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    # the SDK helper accumulates both, and the non-streaming answer agrees
    with client(proxy).chat.completions.stream(model=MODEL, **body) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [(t.function.name, orjson.loads(t.function.arguments)) for t in calls] == [
        ("get_weather", WEATHER_ARGS),
        ("get_time", TIME_ARGS),
    ]
    completion, _ = raw_completion(proxy, body)
    message = completion.choices[0].message
    assert message.content == text_of(chunks)
    assert [t.function.name for t in message.tool_calls or []] == ["get_weather", "get_time"]
    assert completion.choices[0].finish_reason == "tool_calls"


def test_openai_parallel_tool_results_go_up_in_one_user_turn(proxy: Proxy) -> None:
    c = client(proxy)
    tools = [WEATHER_TOOL, TIME_TOOL]
    first_msgs: list[dict[str, Any]] = user("Weather and time? [mock:tools2]")
    first = c.chat.completions.create(model=MODEL, messages=first_msgs, tools=tools)  # type: ignore[arg-type]
    message = first.choices[0].message
    calls = message.tool_calls or []
    assert [t.function.name for t in calls] == ["get_weather", "get_time"]
    follow = [
        *first_msgs,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
        {
            "role": "tool",
            "tool_call_id": calls[1].id,
            "content": [{"type": "text", "text": "noon [mock:echo]"}],
        },
    ]
    second = c.chat.completions.create(model=MODEL, messages=follow, tools=tools)  # type: ignore[arg-type]
    sent = echoed(second.choices[0].message.content or "")
    turns = sent["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assistant = turns[1]["content"]
    assert assistant[0] == {"type": "text", "text": message.content}  # the text before the calls
    assert [(b["id"], b["name"], b["input"]) for b in assistant[1:]] == [
        (calls[0].id, "get_weather", WEATHER_ARGS),
        (calls[1].id, "get_time", TIME_ARGS),
    ]
    results = turns[2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result"]
    assert [b["tool_use_id"] for b in results] == [calls[0].id, calls[1].id]


def test_openai_usage_with_cache_reads_and_writes(proxy: Proxy, mock: MockUpstream) -> None:
    body = {"messages": user("Cached [mock:cache] [mock:words=10]")}
    completion, _ = raw_completion(proxy, body)
    # the Anthropic usage for the same request, asked of the simulated upstream directly
    upstream = httpx.post(
        mock.url + "/v1/messages",
        json=mock.requests()[-1]["body"],
        headers={"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"},
    ).json()["usage"]
    read, written = upstream["cache_read_input_tokens"], upstream["cache_creation_input_tokens"]
    assert read > 0 and written > 0
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == upstream["input_tokens"] + written + read
    assert usage.completion_tokens == upstream["output_tokens"]
    assert (
        usage.prompt_tokens_details is not None
        and usage.prompt_tokens_details.cached_tokens == read
    )
    chunks, _ = raw_stream(
        proxy, {**body, "stream_options": {"include_usage": True}}, expect_usage=True
    )
    streamed = chunks[-1].usage
    assert (
        streamed is not None
    )  # input counted once, though message_start and message_delta both carry it
    assert (streamed.prompt_tokens, streamed.completion_tokens, streamed.total_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
    )
    assert (
        streamed.prompt_tokens_details is not None
        and streamed.prompt_tokens_details.cached_tokens == read
    )


class CityWeather(BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"]


def test_openai_structured_output_parse(proxy: Proxy) -> None:
    # [mock:tool]: the simulated model calls the forced JSON tool, as the real API does
    msgs = user("Weather in Paris as JSON [mock:tool]")
    completion = client(proxy).chat.completions.parse(
        model=MODEL,
        messages=msgs,  # type: ignore[arg-type]
        response_format=CityWeather,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert choice.message.parsed == CityWeather(city="city-value", unit="celsius")


def test_openai_structured_output_streamed(proxy: Proxy) -> None:
    """BUG (Ferrule, streaming): with ``response_format`` the JSON arrives as content when not
    streaming, but as a ``json_response`` tool call with finish_reason ``tool_calls`` when
    streaming: the stream translator is never told the name of the forced JSON tool."""
    msgs = user("Weather in Paris as JSON [mock:tool]")
    with client(proxy).chat.completions.stream(
        model=MODEL,
        messages=msgs,  # type: ignore[arg-type]
        response_format=CityWeather,
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert not choice.message.tool_calls, choice.message.tool_calls
    assert choice.finish_reason == "stop"
    assert choice.message.parsed == CityWeather(city="city-value", unit="celsius")
    # raw: json_object mode, the JSON text as content deltas, no tool_calls
    body = {"messages": msgs, "response_format": {"type": "json_object"}}
    completion, _ = raw_completion(proxy, body)
    chunks, _ = raw_stream(proxy, body)
    assert tool_calls_of(chunks) == {}
    assert text_of(chunks) == completion.choices[0].message.content


# -- reasoning ------------------------------------------------------------------------------------


def test_reasoning_effort_gives_reasoning_content(proxy: Proxy) -> None:
    body = {"messages": user("Think first [mock:thinking]"), "reasoning_effort": "low"}
    completion, raw = raw_completion(proxy, body)
    reasoning = raw["choices"][0]["message"].get("reasoning_content")
    assert isinstance(reasoning, str) and reasoning
    content = completion.choices[0].message.content
    assert content and reasoning not in content
    # streamed: reasoning_content deltas first, then content, same texts as the plain answer
    chunks, raws = raw_stream(proxy, body)
    deltas = [r["choices"][0]["delta"] for r in raws if r["choices"]]
    streamed_reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    assert streamed_reasoning == reasoning
    assert text_of(chunks) == content
    first_text = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert all(not d.get("reasoning_content") for d in deltas[first_text:])
    # through the SDK, reasoning_content is kept as an extra field
    sdk = client(proxy).chat.completions.create(model=MODEL, **body)  # type: ignore[arg-type]
    assert getattr(sdk.choices[0].message, "reasoning_content", None) == reasoning


@pytest.mark.parametrize("max_tokens", [None, 300])
def test_reasoning_effort_sends_a_thinking_budget_below_max_tokens(
    proxy: Proxy, max_tokens: int | None
) -> None:
    body: dict[str, Any] = {
        "messages": user("Think [mock:thinking] [mock:echo]"),
        "reasoning_effort": "low",
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    completion, _ = raw_completion(proxy, body)
    sent = echoed(completion.choices[0].message.content or "")
    thinking = sent["thinking"]
    assert thinking["type"] in ("enabled", "adaptive"), thinking
    if thinking["type"] == "enabled":
        assert 1024 <= thinking["budget_tokens"] < sent["max_tokens"]
    if max_tokens is not None:
        assert sent["max_tokens"] >= max_tokens  # the answer budget is kept on top of thinking
    assert "temperature" not in sent or sent["temperature"] == 1


# -- LangChain ------------------------------------------------------------------------------------


def chat_openai(proxy: Proxy, **kw: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=proxy.v1, api_key=TEST_KEY, model=MODEL, max_retries=0, timeout=30, **kw
    )  # type: ignore[arg-type]


def test_langchain_invoke_and_stream_with_usage(proxy: Proxy) -> None:
    llm = chat_openai(proxy, stream_usage=True)
    prompt = "Hello LangChain [mock:words=20]"
    answer = llm.invoke(prompt)
    assert isinstance(answer.content, str) and answer.content
    assert answer.response_metadata["finish_reason"] == "stop"
    assert answer.usage_metadata["input_tokens"] > 0 and answer.usage_metadata["output_tokens"] > 0
    chunks = list(llm.stream(prompt))
    assert len(chunks) > 3
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total.content == answer.content
    usage = total.usage_metadata
    assert usage is not None, "stream_usage=True should give usage on the aggregated chunk"
    assert usage["input_tokens"] == answer.usage_metadata["input_tokens"]
    assert usage["output_tokens"] == answer.usage_metadata["output_tokens"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_langchain_bind_tools_and_tool_message_follow_up(proxy: Proxy, mock: MockUpstream) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    llm = chat_openai(proxy).bind_tools([WEATHER_TOOL])
    question = HumanMessage("Weather in Paris? [mock:tool]")
    ai = llm.invoke([question])
    assert isinstance(ai, AIMessage)
    [call] = ai.tool_calls
    assert call["name"] == "get_weather" and call["args"] == WEATHER_ARGS
    assert call["id"] and call["id"].startswith("toolu_")
    assert ai.response_metadata["finish_reason"] == "tool_calls"
    # the same tool call, streamed and aggregated from tool_call_chunks
    chunks = list(llm.stream([question]))
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    [streamed_call] = total.tool_calls
    assert streamed_call["name"] == "get_weather" and streamed_call["args"] == WEATHER_ARGS
    # the follow-up with the tool's answer reaches Anthropic as a tool_result
    reply = llm.invoke(
        [question, ai, ToolMessage("sunny, 22C [mock:echo]", tool_call_id=call["id"])]
    )
    sent = echoed(reply.content)
    check_round_trip(sent, call["id"], "get_weather", WEATHER_ARGS)
    assert mock.requests()[-1]["body"] == sent


# -- LiteLLM as a client --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def litellm() -> Any:
    import litellm as lib

    lib.telemetry = False
    lib.suppress_debug_info = True
    return lib


def litellm_kw(proxy: Proxy) -> dict[str, Any]:
    return {
        "model": "openai/claude-sonnet-4-6",
        "api_base": proxy.v1,
        "api_key": TEST_KEY,
        "max_retries": 0,
        "timeout": 30,
    }


def test_litellm_completion_and_streaming(proxy: Proxy, litellm: Any) -> None:
    messages = user("Hello LiteLLM [mock:words=20]")
    resp = litellm.completion(messages=messages, **litellm_kw(proxy))
    text = resp.choices[0].message.content
    assert text and resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    chunks = list(
        litellm.completion(
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            **litellm_kw(proxy),
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    rebuilt = litellm.stream_chunk_builder(chunks, messages=messages)
    assert rebuilt.choices[0].message.content == text
    assert rebuilt.choices[0].finish_reason == "stop"
    assert rebuilt.usage.completion_tokens == resp.usage.completion_tokens


def test_litellm_streamed_tool_calls_rebuilt(proxy: Proxy, litellm: Any) -> None:
    messages = user("Weather in Paris? [mock:tool]")
    chunks = list(
        litellm.completion(
            messages=messages, tools=[WEATHER_TOOL], stream=True, **litellm_kw(proxy)
        )
    )
    rebuilt = litellm.stream_chunk_builder(chunks, messages=messages)
    choice = rebuilt.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.id.startswith("toolu_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == WEATHER_ARGS
    # two parallel calls
    messages = user("Weather and time? [mock:tools2]")
    chunks = list(
        litellm.completion(
            messages=messages, tools=[WEATHER_TOOL, TIME_TOOL], stream=True, **litellm_kw(proxy)
        )
    )
    rebuilt = litellm.stream_chunk_builder(chunks, messages=messages)
    calls = rebuilt.choices[0].message.tool_calls
    assert [(c.function.name, orjson.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", WEATHER_ARGS),
        ("get_time", TIME_ARGS),
    ]
    assert rebuilt.choices[0].message.content  # the text before the calls
