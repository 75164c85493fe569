"""Agent tool loops with reasoning, with the real clients, through a real ``ferrule serve`` (both
backends) in front of the simulated Anthropic upstream, which enforces the thinking-block rule:
with thinking on, the assistant turn whose tool calls the request answers must start with its
thinking blocks, sent back unmodified with their signatures (and, on models with preserved
thinking, in the same place). OpenAI clients never see the signature, so Ferrule must put the
blocks back itself (issue 13).

Every loop is scripted through ``/_mock/script`` (one entry per upstream request, in order):
``tools2`` (two parallel tool calls), then ``tool`` (one more call, after the tool results), then
``words=5`` (the final answer). Each thinks, so the loop has interleaved thinking. After the loop,
each recorded upstream request is sent again to the simulated upstream directly, with the same
script entry: the strict upstream must accept it as Ferrule sent it (no 400), and since its
answers are a function of the request (signatures included), the answer is the one the client's
call got. That gives the thinking blocks, with their exact signatures, that the next request
had to carry in front of the tool calls.

Also: each ``reasoning_effort`` on every model of the table is accepted by the simulated upstream,
and a tool loop whose thinking blocks Ferrule never saw degrades (``x-ferrule-warning``) rather
than failing with a 400. The Node clients (``openai`` npm, LangChain.js) run from
``tests/node/reasoning.test.mjs``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion

from ferrule.models import ModelCaps, table
from node_runner import node_with_deps, run_node_tests
from servers import TEST_KEY, MockUpstream, Proxy

PREFIX = "tokenpak-anthropic/"
# Claude 4.6 (thinking off unless asked; adaptive or enabled) and a Claude 5.5 model (adaptive
# thinking always on, preserved thinking: blocks are bound to their prefix), and Fable 5.2, whose
# thinking text is omitted (an empty thinking block that still has to come back).
SONNET_46 = "claude-sonnet-4-6"
OPUS_55 = "claude-opus-5-5"
FABLE_52 = "claude-fable-5-2"

LOOP = ["tools2", "tool", "words=5"]
"""The script of every tool loop: parallel calls, one more call, then a 5-word answer."""
THINKING = ("thinking", "redacted_thinking")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
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
            "properties": {"tz": {"type": "string"}},
            "required": ["tz"],
        },
    },
}


# -- what the client saw ---------------------------------------------------------------------------


@dataclass
class Seen:
    """Status and headers of every chat-completions response a client got (event hooks of the
    httpx2 client the SDK is given; httpx2 is the HTTP client the openai SDK is built on)."""

    responses: list[tuple[int, httpx2.Headers]] = field(default_factory=list)

    def _record(self, response: httpx2.Response) -> None:
        if response.request.url.path.endswith("/chat/completions"):
            self.responses.append((response.status_code, response.headers))

    def sync_client(self) -> httpx2.Client:
        return httpx2.Client(timeout=30, event_hooks={"response": [self._record]})

    def async_client(self) -> httpx2.AsyncClient:
        async def hook(response: httpx2.Response) -> None:
            self._record(response)

        return httpx2.AsyncClient(timeout=30, event_hooks={"response": [hook]})

    def check(self, calls: int) -> None:
        """``calls`` answers, all 200, none degraded (thinking lost on the way)."""
        assert [status for status, _ in self.responses] == [200] * calls, self.responses
        for _, headers in self.responses:
            for warning in headers.get_list("x-ferrule-warning"):
                assert "thinking" not in warning, f"degraded: {warning}"


# -- what the upstream got -------------------------------------------------------------------------


def message_requests(mock: MockUpstream) -> list[dict[str, Any]]:
    return [r for r in mock.requests() if r["path"] == "/v1/messages"]


def replay(mock: MockUpstream, recorded: dict[str, Any], entry: str) -> dict[str, Any]:
    """The simulated upstream's (non-streaming) answer to a recorded request, under the script
    entry that shaped it: the same answer the proxy got, thinking signatures included."""
    mock.script([entry])
    headers = {
        "x-api-key": TEST_KEY,
        "anthropic-version": recorded["headers"]["anthropic-version"],
        "content-type": "application/json",
    }
    if "anthropic-beta" in recorded["headers"]:
        headers["anthropic-beta"] = recorded["headers"]["anthropic-beta"]
    body = {k: v for k, v in recorded["body"].items() if k != "stream"}
    resp = httpx.post(mock.url + "/v1/messages", content=orjson.dumps(body), headers=headers)
    assert resp.status_code == 200, (
        f"the upstream refuses the request as Ferrule sent it: {resp.text}\n"
        f"messages: {orjson.dumps(body['messages']).decode()[:3000]}"
    )
    answer: dict[str, Any] = resp.json()
    return answer


def text_of(message: dict[str, Any]) -> str:
    return "".join(b["text"] for b in message["content"] if b["type"] == "text")


def check_loop(
    mock: MockUpstream,
    model: str,
    tool_ids: list[list[str]],
    final_text: str,
    *,
    stream: bool,
    script: list[str] = LOOP,
) -> list[dict[str, Any]]:
    """The tool loop as the upstream saw it: one request per model call, each accepted, each
    thinking, and every request after the first carrying each earlier tool turn's thinking blocks,
    exact, in front of that turn's content. ``tool_ids``: the ids the client got, per answer.
    Returns the recorded upstream requests."""
    recorded = message_requests(mock)
    assert len(recorded) == len(script), [r["body"].get("messages") for r in recorded]
    answers = [replay(mock, r, entry) for r, entry in zip(recorded, script, strict=True)]
    for n, answer in enumerate(answers[:-1]):
        assert answer["stop_reason"] == "tool_use", (n, answer)
    assert answers[-1]["stop_reason"] == "end_turn", answers[-1]
    expected = text_of(answers[-1])
    assert len(expected.split()) == 5
    assert final_text == expected
    for n, rec in enumerate(recorded):
        body = rec["body"]
        assert body["model"] == model
        assert bool(body.get("stream")) == stream, f"request {n}: stream={body.get('stream')}"
        assistants = [m for m in body["messages"] if m["role"] == "assistant"]
        assert len(assistants) == n, body["messages"]
        for turn, sent in enumerate(assistants):
            assert isinstance(sent["content"], list), sent
            ids = [b["id"] for b in sent["content"] if b["type"] == "tool_use"]
            assert ids == tool_ids[turn], (n, turn, sent)
    # thinking: every answer thought, and came back whole in front of its turn
    for n, (rec, answer) in enumerate(zip(recorded, answers, strict=True)):
        assert answer["content"][0]["type"] == "thinking", (
            f"request {n}: the model did not think: thinking={rec['body'].get('thinking')}"
        )
        assistants = [m for m in rec["body"]["messages"] if m["role"] == "assistant"]
        for turn, (sent, earlier) in enumerate(zip(assistants, answers, strict=False)):
            blocks = [b for b in earlier["content"] if b["type"] in THINKING]
            assert sent["content"][: len(blocks)] == blocks, (
                f"request {n}, assistant turn {turn}: the thinking blocks of that answer "
                f"(with their signatures) are not in front of it:\n  sent {sent['content']}\n"
                f"  want {blocks}"
            )
    return recorded


# -- openai-python: a manual loop ------------------------------------------------------------------


def tool_output(name: str, args: str) -> str:
    return f"{name}({args}): sunny, 22C"


def openai_loop(
    proxy: Proxy, model: str, effort: str | None, *, stream: bool, seen: Seen
) -> tuple[str, list[list[str]]]:
    """The loop as the openai docs write it: call, run every tool call, send the results back,
    until the model answers. Streamed answers are accumulated from the deltas."""
    c = openai.OpenAI(
        base_url=proxy.v1,
        api_key=TEST_KEY,
        max_retries=0,
        timeout=30,
        http_client=seen.sync_client(),
    )
    messages: list[Any] = [{"role": "user", "content": "Weather and time in Paris, then decide."}]
    reasoning_effort: Any = openai.omit if effort is None else effort
    tools: list[Any] = [WEATHER_TOOL, TIME_TOOL]
    ids: list[list[str]] = []
    for _ in range(5):
        if stream:
            content, calls = "", dict[int, dict[str, str]]()
            for chunk in c.chat.completions.create(
                model=PREFIX + model,
                messages=messages,
                tools=tools,
                stream=True,
                reasoning_effort=reasoning_effort,
            ):
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                content += delta.content or ""
                for d in delta.tool_calls or []:
                    call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = d.id or call["id"]
                    if d.function is not None:
                        call["name"] += d.function.name or ""
                        call["arguments"] += d.function.arguments or ""
            tool_calls: list[dict[str, Any]] = [
                {
                    "id": t["id"],
                    "type": "function",
                    "function": {"name": t["name"], "arguments": t["arguments"]},
                }
                for _, t in sorted(calls.items())
            ]
            # The message built by hand, as streaming loops do: content and tool_calls only.
            assistant: dict[str, Any] = {"role": "assistant", "content": content or None}
            if tool_calls:
                assistant["tool_calls"] = tool_calls
        else:
            answer = c.chat.completions.create(
                model=PREFIX + model,
                messages=messages,
                tools=tools,
                reasoning_effort=reasoning_effort,
            )
            # The SDK's message sent back as is (reasoning_content, an extra field, included).
            assistant = answer.choices[0].message.model_dump(exclude_none=True)
            tool_calls = assistant.get("tool_calls") or []
        if not tool_calls:
            return str(assistant["content"] or ""), ids
        ids.append([t["id"] for t in tool_calls])
        messages.append(assistant)
        for t in tool_calls:
            output = tool_output(t["function"]["name"], t["function"]["arguments"])
            messages.append({"role": "tool", "tool_call_id": t["id"], "content": output})
    raise AssertionError("the loop did not end")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("model", "effort"),
    [(SONNET_46, "medium"), (OPUS_55, "high"), (OPUS_55, None)],
    ids=["sonnet-4-6-medium", "opus-5-5-high", "opus-5-5-default"],
)
def test_openai_python_tool_loop_with_reasoning(
    proxy: Proxy, mock: MockUpstream, model: str, effort: str | None, stream: bool
) -> None:
    """openai-python, chat.completions with ``reasoning_effort`` (or none: Opus 5.5 thinks by
    default) and two function tools: parallel calls, one more call, then the answer."""
    mock.script(LOOP)
    seen = Seen()
    final, ids = openai_loop(proxy, model, effort, stream=stream, seen=seen)
    assert [len(i) for i in ids] == [2, 1]
    seen.check(len(LOOP))
    check_loop(mock, model, ids, final, stream=stream)


# -- the OpenAI Agents SDK -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_agents_sdk_tool_loop_with_reasoning(
    proxy: Proxy, mock: MockUpstream, stream: bool
) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from agents.items import ToolCallItem
    from openai.types.shared import Reasoning

    set_tracing_disabled(True)
    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        ran.append(city)
        return f"sunny in {city}, 22C"

    mock.script(LOOP)
    seen = Seen()

    async def go() -> tuple[str, list[str]]:
        client = openai.AsyncOpenAI(
            base_url=proxy.v1, api_key=TEST_KEY, max_retries=0, http_client=seen.async_client()
        )
        agent = Agent(
            name="weather",
            instructions="Answer with the weather tool.",
            tools=[get_weather],
            model=OpenAIChatCompletionsModel(model=PREFIX + OPUS_55, openai_client=client),
            model_settings=ModelSettings(reasoning=Reasoning(effort="medium")),
        )
        if stream:
            result: Any = Runner.run_streamed(agent, "Weather in Paris and Rome?", max_turns=5)
            async for _ in result.stream_events():
                pass
        else:
            result = await Runner.run(agent, "Weather in Paris and Rome?", max_turns=5)
        calls = [
            item.raw_item.call_id  # type: ignore[union-attr]
            for item in result.new_items
            if isinstance(item, ToolCallItem)
        ]
        await client.close()
        return str(result.final_output), calls

    final, calls = asyncio.run(go())
    assert len(ran) == 3 and len(calls) == 3
    seen.check(len(LOOP))
    check_loop(mock, OPUS_55, [calls[:2], calls[2:]], final, stream=stream)


# -- pydantic-ai -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", [SONNET_46, FABLE_52])
def test_pydantic_ai_tool_loop_with_reasoning(
    proxy: Proxy, mock: MockUpstream, model: str, stream: bool
) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, ToolCallPart
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIChatModelSettings
    from pydantic_ai.providers.openai import OpenAIProvider

    mock.script(LOOP)
    seen = Seen()
    ran: list[str] = []

    async def go() -> tuple[str, list[list[str]]]:
        http = seen.async_client()
        client = openai.AsyncOpenAI(
            base_url=proxy.v1, api_key=TEST_KEY, max_retries=0, http_client=http
        )
        provider = OpenAIProvider(openai_client=client)
        agent = Agent(
            OpenAIChatModel(PREFIX + model, provider=provider),
            instructions="Answer with the weather tool.",
            model_settings=OpenAIChatModelSettings(openai_reasoning_effort="medium"),
        )

        @agent.tool_plain
        def get_weather(city: str) -> str:
            """Current weather in a city."""
            ran.append(city)
            return f"sunny in {city}, 22C"

        async def consume(_ctx: Any, events: Any) -> None:
            async for _ in events:
                pass

        # An event stream handler makes every model request of the run a streamed one.
        handler = consume if stream else None
        result = await agent.run("Weather in Paris and Rome?", event_stream_handler=handler)
        ids = [
            [p.tool_call_id for p in m.parts if isinstance(p, ToolCallPart)]
            for m in result.all_messages()
            if isinstance(m, ModelResponse)
        ]
        await client.close()
        return str(result.output), [i for i in ids if i]

    final, ids = asyncio.run(go())
    assert len(ran) == 3
    seen.check(len(LOOP))
    check_loop(mock, model, ids, final, stream=stream)


# -- Node: the openai npm package and LangChain.js -------------------------------------------------


@pytest.fixture(scope="module")
def node() -> str:
    return node_with_deps()


def test_node_clients_tool_loop_with_reasoning(proxy: Proxy, mock: MockUpstream, node: str) -> None:
    """``tests/node/reasoning.test.mjs``: the same loops with the ``openai`` npm package and
    LangChain.js's ChatOpenAI, streamed and not; it scripts and reads the simulated upstream."""
    env = {"FERRULE_BASE_URL": proxy.v1, "FERRULE_API_KEY": TEST_KEY, "FERRULE_MOCK_URL": mock.url}
    assert run_node_tests(node, "reasoning.test.mjs", env) >= 8


# -- every model of the table, every reasoning_effort ----------------------------------------------


def _live_models() -> Iterator[str]:
    return (m.id for m in table().models if not m.retired)


@pytest.mark.parametrize("model", list(_live_models()))
def test_reasoning_effort_accepted_on_every_model(
    proxy: Proxy, mock: MockUpstream, model: str
) -> None:
    """Each ``reasoning_effort`` reaches the simulated upstream in a form the model accepts (it
    enforces each model's thinking modes and effort levels from the table), without and with a
    small ``max_tokens``; thinking follows the table: adaptive with an effort where the model has
    it, a ``budget_tokens`` budget only where ``enabled`` is its only way to think, off for
    ``none`` where the model can turn it off. Every case is tried; the failures are listed."""
    caps = table().get(model)
    assert caps is not None
    cases = [(effort, max_tokens) for effort in EFFORTS for max_tokens in (None, 300)]
    problems: list[str] = []
    statuses: list[int] = []
    with httpx.Client(timeout=30) as http:
        for case, (effort, max_tokens) in enumerate(cases):
            body: dict[str, Any] = {
                "model": PREFIX + model,
                "messages": [{"role": "user", "content": f"case{case}: think [mock:words=3]"}],
                "reasoning_effort": effort,
            }
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            resp = http.post(
                proxy.v1 + "/chat/completions",
                content=orjson.dumps(body),
                headers={"authorization": f"Bearer {TEST_KEY}", "content-type": "application/json"},
            )
            statuses.append(resp.status_code)
            if resp.status_code != 200:
                problems.append(
                    f"{effort}, max_tokens={max_tokens}: {resp.status_code} {resp.text}"
                )
                continue
            completion = ChatCompletion.model_validate(resp.json())
            assert completion.choices[0].finish_reason == "stop", completion
    sent: dict[int, list[dict[str, Any]]] = {}
    for recorded in message_requests(mock):
        text = recorded["body"]["messages"][0]["content"]
        text = text if isinstance(text, str) else text[0]["text"]
        sent.setdefault(int(text.split(":")[0].removeprefix("case")), []).append(recorded["body"])
    for case, ((effort, max_tokens), status) in enumerate(zip(cases, statuses, strict=True)):
        if status != 200:
            continue
        # one upstream request: none refused first, then retried another way
        assert len(sent.get(case, [])) == 1, (effort, max_tokens, sent.get(case))
        problems.extend(
            f"{effort}, max_tokens={max_tokens}: {p}"
            for p in _effort_problems(caps, effort, max_tokens, sent[case][0])
        )
    assert not problems, f"{model}:\n" + "\n".join(problems)


def _effort_problems(
    caps: ModelCaps, effort: str, max_tokens: int | None, sent: dict[str, Any]
) -> Iterator[str]:
    """How the upstream request ``sent`` for ``reasoning_effort`` = ``effort`` breaks the table."""
    if sent["model"] != caps.id:
        yield f"model {sent['model']}"
    thinking = sent.get("thinking") or {}
    kind = thinking.get("type")
    if kind is not None and not caps.thinking.accepts(kind):
        yield f"thinking {thinking} is not a mode of the model"
    level = (sent.get("output_config") or {}).get("effort")
    if level is not None and level not in caps.effort:
        yield f"effort {level} not in {caps.effort}"
    if max_tokens is not None and sent["max_tokens"] < max_tokens:
        yield f"max_tokens {sent['max_tokens']}: the answer's budget is not kept on top"
    if effort == "none":
        if caps.thinking.accepts("disabled") and caps.thinking.on(kind):
            yield f"thinking still on: {thinking}"
        return
    if not caps.thinking.on(kind):
        yield f"thinking off: {thinking}"
    elif caps.thinking.accepts("adaptive"):
        if "budget_tokens" in thinking:
            yield f"a budget where adaptive thinking is accepted: {thinking}"
        if caps.effort and level is None:
            yield "no output_config.effort"
    elif not (kind == "enabled" and 1024 <= thinking["budget_tokens"] < sent["max_tokens"]):
        yield f"not a valid manual budget: {thinking}, max_tokens {sent['max_tokens']}"


# -- blocks Ferrule never saw: degrade, never a 400 ------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("model", "effort"),
    [(SONNET_46, "medium"), (OPUS_55, "medium"), (OPUS_55, None)],
    ids=["sonnet-4-6-medium", "opus-5-5-medium", "opus-5-5-default"],
)
def test_unknown_thinking_blocks_degrade_with_a_warning(
    proxy: Proxy, mock: MockUpstream, model: str, effort: str | None, stream: bool
) -> None:
    """A tool loop replayed with a tool_call id Ferrule never answered (another proxy, an expired
    entry, a client that rewrote ids) while thinking is on: the request still succeeds, with an
    ``x-ferrule-warning`` saying it was degraded, in one upstream request the upstream accepts."""
    call_id = "toolu_01NeverSeenByThisProxy0000"
    body: dict[str, Any] = {
        "model": PREFIX + model,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "sunny [mock:words=4]"},
        ],
        "tools": [WEATHER_TOOL],
        "stream": stream,
    }
    if effort is not None:
        body["reasoning_effort"] = effort
    resp = httpx.post(
        proxy.v1 + "/chat/completions",
        content=orjson.dumps(body),
        headers={"authorization": f"Bearer {TEST_KEY}", "content-type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    warnings = resp.headers.get_list("x-ferrule-warning")
    assert any("thinking" in w for w in warnings), dict(resp.headers)
    if stream:
        assert b"data: [DONE]" in resp.content and b'"error"' not in resp.content, resp.text
        text = "".join(
            (orjson.loads(line[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
            for line in resp.content.split(b"\n\n")
            if line.startswith(b"data: {")
        )
    else:
        text = ChatCompletion.model_validate(resp.json()).choices[0].message.content or ""
    assert len(text.split()) == 4, text
    [sent] = message_requests(mock)  # no 400 first, then a retry
    replay(mock, sent, "")  # and the upstream accepts it as sent
