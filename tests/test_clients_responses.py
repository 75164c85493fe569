"""Responses API clients, unchanged, through Ferrule's ``POST /v1/responses`` (issue 14), on both
backends, in front of the simulated Anthropic upstream scripted as the model.

- The OpenAI Agents SDK with its default model type (``OpenAIResponsesModel``): a triage agent
  whose model calls a ``@function_tool`` and then hands off (the ``transfer_to_<agent>`` tool the
  SDK offers) to a second agent, which answers; ``Runner.run`` and ``Runner.run_streamed``.
- The ``openai`` npm package (``tests/node/responses.test.mjs``, run with ``node --test``): text,
  a stream, a function tool across two turns chained by ``previous_response_id``, and structured
  output through ``text.format`` (``json_schema``, and ``responses.parse`` with a zod format).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agents import (
    Agent,
    RunConfig,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI

from node_runner import node_with_deps, run_node_tests
from servers import TEST_KEY, MockUpstream, Proxy

MODEL = "claude-sonnet-4-6"
FINAL = "It is sunny in Paris, 21 degrees."
HANDOFF_TOOL = "transfer_to_weather_expert"
EXPERT = "Answer weather questions from the tool results in the conversation."


# -- the OpenAI Agents SDK -------------------------------------------------------------------------


def _agents(calls: list[str]) -> Agent[None]:
    """The triage agent (one function tool, a handoff to the weather expert); ``calls`` records
    every city the tool ran for."""

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        calls.append(city)
        return f"sunny, 21 degrees in {city}"

    expert = Agent(
        name="Weather expert",
        instructions=EXPERT,
        model=MODEL,
    )
    return Agent(
        name="Triage",
        instructions="Look the weather up, then hand off to the weather expert.",
        model=MODEL,
        tools=[get_weather],
        handoffs=[expert],
    )


def _script(mock: MockUpstream) -> None:
    """The model: call the function tool, then the handoff tool, then (as the expert) answer."""
    mock.script(
        [
            {"tool_calls": [{"name": "get_weather", "input": {"city": "Paris"}}]},
            {"tool_calls": [{"name": HANDOFF_TOOL, "input": {}}]},
            {"text": FINAL},
        ]
    )


def _check_upstream(mock: MockUpstream) -> None:
    """Three upstream requests: triage (offering the tool and the handoff), triage again (with the
    tool's result), the expert (with the whole conversation, handoff result included)."""
    sent = [r["body"] for r in mock.requests() if r["path"] == "/v1/messages"]
    assert len(sent) == 3, sent
    offered = [{t["name"] for t in body.get("tools", [])} for body in sent]
    assert offered[0] == {"get_weather", HANDOFF_TOOL}, offered
    assert offered[1] == {"get_weather", HANDOFF_TOOL}, offered

    def tool_results(body: dict[str, Any]) -> list[str]:
        out: list[str] = []
        for message in body["messages"]:
            if isinstance(message["content"], str):
                continue
            for block in message["content"]:
                if block["type"] == "tool_result":
                    content = block["content"]
                    if isinstance(content, list):
                        content = "".join(p.get("text", "") for p in content)
                    out.append(content)
        return out

    assert tool_results(sent[1]) == ["sunny, 21 degrees in Paris"], sent[1]["messages"]
    expert_results = tool_results(sent[2])
    assert expert_results[0] == "sunny, 21 degrees in Paris", sent[2]["messages"]
    assert len(expert_results) == 2, sent[2]["messages"]  # the handoff's own result
    # the expert's instructions, not the triage agent's
    assert sent[2]["system"] == [{"type": "text", "text": EXPERT}], sent[2].get("system")


@pytest.fixture
def agents_client(proxy: Proxy) -> AsyncOpenAI:
    """The SDK's defaults, as a user sets them: a client for Ferrule, the Responses API (also
    the SDK's default), no tracing (it would post to api.openai.com)."""
    client = AsyncOpenAI(base_url=proxy.v1, api_key=TEST_KEY, max_retries=0)
    set_default_openai_client(client, use_for_tracing=False)
    set_default_openai_api("responses")
    set_tracing_disabled(True)
    return client


def test_agents_sdk_run_tool_and_handoff(agents_client: AsyncOpenAI, mock: MockUpstream) -> None:
    _script(mock)
    calls: list[str] = []
    triage = _agents(calls)
    result = asyncio.run(
        Runner.run(triage, "What is the weather in Paris?", run_config=RunConfig())
    )
    assert result.final_output == FINAL
    assert calls == ["Paris"]
    assert result.last_agent.name == "Weather expert"
    # the default model type, not chat completions
    assert isinstance(RunConfig().model_provider.get_model(MODEL), OpenAIResponsesModel), (
        "the SDK's default model is not the Responses one"
    )
    kinds = [item.type for item in result.new_items]
    assert kinds == [
        "tool_call_item",
        "tool_call_output_item",
        "handoff_call_item",
        "handoff_output_item",
        "message_output_item",
    ], kinds
    _check_upstream(mock)


def test_agents_sdk_run_streamed_tool_and_handoff(
    agents_client: AsyncOpenAI, mock: MockUpstream
) -> None:
    _script(mock)
    calls: list[str] = []
    triage = _agents(calls)

    async def run() -> tuple[Any, list[str], str]:
        streamed = Runner.run_streamed(triage, "What is the weather in Paris?")
        raw: list[str] = []
        deltas: list[str] = []
        async for event in streamed.stream_events():
            if event.type == "raw_response_event":
                raw.append(event.data.type)
                if event.data.type == "response.output_text.delta":
                    deltas.append(event.data.delta)
        return streamed, raw, "".join(deltas)

    streamed, raw, text = asyncio.run(run())
    assert streamed.final_output == FINAL
    assert text == FINAL
    assert calls == ["Paris"]
    assert streamed.current_agent.name == "Weather expert"
    # one Responses stream per model turn, each ending with response.completed
    assert raw.count("response.created") == 3, raw
    assert raw.count("response.completed") == 3, raw
    assert raw.count("response.function_call_arguments.done") == 2, raw
    _check_upstream(mock)


# -- the openai npm package ------------------------------------------------------------------------


def test_node_openai_responses(proxy: Proxy, mock: MockUpstream) -> None:
    """``tests/node/responses.test.mjs``: text, stream, a function tool across two turns with
    ``previous_response_id``, structured output; it scripts and reads the simulated upstream."""
    node = node_with_deps()
    env = {"FERRULE_BASE_URL": proxy.v1, "FERRULE_API_KEY": TEST_KEY, "FERRULE_MOCK_URL": mock.url}
    assert run_node_tests(node, "responses.test.mjs", env) == 5
