"""``POST /v1/responses`` end to end, on both backends, with the official openai SDK: text, streams,
function tools across turns, structured output, reasoning with tools, ``previous_response_id``
chains, the stored-response routes, errors in OpenAI's shape."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from servers import MockUpstream, Proxy

KEY = "sk-ant-responses-e2e-4c1f"
MODEL = "claude-sonnet-4-6"
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "lookup",
        "description": "look a word up",
        "parameters": {
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
        },
    }
]


def client(proxy: Proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key=KEY, max_retries=0)


def test_text_json_and_stored(proxy: Proxy) -> None:
    c = client(proxy)
    resp = c.responses.create(model=MODEL, input="Say hi", instructions="Be brief.")
    assert resp.object == "response" and resp.status == "completed"
    assert resp.output_text and resp.id.startswith("resp_")
    assert resp.usage is not None and resp.usage.output_tokens > 0
    # stored by default: readable, listable, deletable; another caller sees nothing
    again = c.responses.retrieve(resp.id)
    assert again.id == resp.id and again.output_text == resp.output_text
    items = c.responses.input_items.list(resp.id)
    assert [i.type for i in items.data] == ["message"]
    other = openai.OpenAI(base_url=proxy.v1, api_key=KEY + "-other", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(resp.id)
    c.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(resp.id)


def test_store_false_keeps_nothing(proxy: Proxy) -> None:
    c = client(proxy)
    resp = c.responses.create(model=MODEL, input="Say hi", store=False)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(resp.id)


def test_stream_grammar(proxy: Proxy) -> None:
    c = client(proxy)
    events = list(c.responses.create(model=MODEL, input="Say hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and kinds.count("response.completed") == 1
    assert "response.output_text.delta" in kinds
    seqs = [e.sequence_number for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    with c.responses.stream(model=MODEL, input="Say hi") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.output_text == text and text


@pytest.mark.parametrize("stream", [False, True])
def test_function_tools_across_turns_with_previous_response_id(
    proxy: Proxy, mock: MockUpstream, stream: bool
) -> None:
    c = client(proxy)
    first_input = "Look up ferrule [mock:tool]"
    if stream:
        with c.responses.stream(model=MODEL, input=first_input, tools=TOOLS) as s:
            first = s.get_final_response()
    else:
        first = c.responses.create(model=MODEL, input=first_input, tools=TOOLS)
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "lookup" and json.loads(calls[0].arguments)
    mock.reset()
    second = c.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "a band"}],
        tools=TOOLS,
    )
    assert second.status == "completed" and second.output_text
    # upstream saw the whole conversation: the question, the call and its result
    [sent] = mock.requests()
    blocks = [b["type"] for m in sent["body"]["messages"] for b in m["content"]]
    assert "tool_use" in blocks and "tool_result" in blocks


def test_unknown_previous_response_id_is_a_404(proxy: Proxy) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client(proxy).responses.create(model=MODEL, input="x", previous_response_id="resp_nope")
    assert "resp_nope" in str(err.value)


class Word(BaseModel):
    word: str
    letters: int


def test_structured_output_parse(proxy: Proxy) -> None:
    parsed = client(proxy).responses.parse(model=MODEL, input="A word", text_format=Word)
    assert parsed.output_parsed is not None and isinstance(parsed.output_parsed.letters, int)


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_with_tools_round_trip(proxy: Proxy, mock: MockUpstream, stream: bool) -> None:
    """Claude's thinking goes out sealed in a reasoning item and comes back intact (the strict
    simulated upstream checks the signature), with no server state (store: false)."""
    c = client(proxy)
    ask: list[Any] = [{"role": "user", "content": "Look it up [mock:tool]"}]
    kw: dict[str, Any] = {
        "model": MODEL,
        "tools": TOOLS,
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "store": False,
    }
    if stream:
        with c.responses.stream(input=ask, **kw) as s:
            first = s.get_final_response()
    else:
        first = c.responses.create(input=ask, **kw)
    reasoning = [o for o in first.output if o.type == "reasoning"]
    assert reasoning and reasoning[0].encrypted_content
    call = next(o for o in first.output if o.type == "function_call")
    mock.reset()
    follow = [
        *ask,
        *[o.model_dump(exclude_none=True) for o in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "found"},
    ]
    second = c.responses.create(input=follow, **kw)
    assert second.status == "completed"
    [sent] = mock.requests()
    turn = sent["body"]["messages"][1]["content"]
    assert turn[0]["type"] == "thinking" and turn[0]["signature"]


def test_errors_in_openai_shape(proxy: Proxy) -> None:
    r = httpx.post(
        proxy.v1 + "/responses",
        json={"model": MODEL, "input": "x", "tools": [{"type": "code_interpreter"}]},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and "code_interpreter" in err["message"]


HISTORY: list[Any] = [
    {"type": "message", "role": "user", "content": "Fix the bug in parser.py"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
]


def _post(proxy: Proxy, path: str, body: dict[str, Any], key: str = KEY) -> httpx.Response:
    return httpx.post(
        proxy.v1 + path, json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def test_v1_compact_gives_one_item_that_opens_to_the_summary(
    proxy: Proxy, mock: MockUpstream
) -> None:
    """Codex's older remote compaction: POST /v1/responses/compact, not streamed, answers with
    exactly one compaction item; sent back in input, it stands for the history (the summary
    Claude wrote), and another caller's copy, or a changed one, is a 400."""
    r = _post(proxy, "/responses/compact", {"model": MODEL, "input": HISTORY})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "response.compaction"
    [item] = body["output"]
    assert item["type"] == "compaction" and item["encrypted_content"].startswith("fs1.")
    assert body["usage"]["output_tokens"] > 0
    [sent] = mock.requests()
    assert sent["body"].get("tool_choice") in (None, {"type": "none"})
    summary_prompt = sent["body"]["messages"][-1]["content"]
    assert "summar" in orjson_text(summary_prompt).lower()
    # the item in a later turn: upstream gets the summary in place of the history
    mock.reset()
    r = _post(
        proxy,
        "/responses",
        {"model": MODEL, "input": [item, {"role": "user", "content": "go on"}], "store": False},
    )
    assert r.status_code == 200, r.text
    [sent] = mock.requests()
    first = orjson_text(sent["body"]["messages"][0]["content"])
    assert "Summary of the earlier conversation" in first
    # another caller, or one changed byte: a clear 400
    token = item["encrypted_content"]
    middle = len(token) // 2  # a middle base64 character carries six whole bits: always a change
    changed = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    forged = {**item, "encrypted_content": changed}
    for key, bad in ((KEY + "-other", item), (KEY, forged)):
        r = _post(proxy, "/responses", {"model": MODEL, "input": [bad], "store": False}, key)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_v2_compaction_trigger_streams_exactly_one_item(proxy: Proxy) -> None:
    c = client(proxy)
    events = list(
        c.responses.create(
            model=MODEL,
            input=[*HISTORY, {"type": "compaction_trigger"}],  # type: ignore[list-item]
            store=False,
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    added = [e for e in events if e.type == "response.output_item.added"]
    done = [e for e in events if e.type == "response.output_item.done"]
    assert len(added) == len(done) == 1 and done[0].item.type == "compaction"
    final = events[-1].response  # type: ignore[union-attr]
    assert [o.type for o in final.output] == ["compaction"]


def orjson_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content if isinstance(b, dict))
