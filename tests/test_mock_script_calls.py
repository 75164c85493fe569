"""The simulated upstream's object script entries: exact tool calls (name and input) and exact
answer text, as an agent loop such as Codex's ``apply_patch`` then shell then text needs them."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from servers import TEST_KEY, MockUpstream

HEADERS = {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"}
TOOLS = [
    {
        "name": "apply_patch",
        "input_schema": {"type": "object", "properties": {"input": {"type": "string"}}},
    },
    {"name": "exec_command", "input_schema": {"type": "object", "properties": {"cmd": {}}}},
]
PATCH = "*** Begin Patch\n*** Update File: a.txt\n@@\n-a\n+b\n*** End Patch\n"


def _ask(mock: MockUpstream, *, stream: bool = False) -> httpx.Response:
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 200,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": "go"}],
        "stream": stream,
    }
    return httpx.post(mock.url + "/v1/messages", json=body, headers=HEADERS, timeout=10)


def _stream_blocks(text: str) -> tuple[list[dict[str, Any]], str]:
    """The content blocks a stream builds, and its stop reason."""
    blocks: list[dict[str, Any]] = []
    partial: dict[int, str] = {}
    stop = ""
    for line in text.splitlines():
        if not line.startswith("data: "):
            continue
        event = orjson.loads(line[6:])
        if event["type"] == "content_block_start":
            blocks.append(dict(event["content_block"]))
            partial[event["index"]] = ""
        elif event["type"] == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                blocks[event["index"]]["text"] += delta["text"]
            elif delta["type"] == "input_json_delta":
                partial[event["index"]] += delta["partial_json"]
        elif event["type"] == "content_block_stop" and blocks[event["index"]]["type"] == "tool_use":
            blocks[event["index"]]["input"] = orjson.loads(partial[event["index"]])
        elif event["type"] == "message_delta":
            stop = event["delta"]["stop_reason"]
    return blocks, stop


def test_scripted_tool_calls_and_text_json_and_streamed(mock: MockUpstream) -> None:
    calls = [
        {"name": "apply_patch", "input": {"input": PATCH}},
        {"name": "exec_command", "input": {"cmd": "cat a.txt", "tty": False}},
    ]
    mock.script(
        [
            {"tool_calls": calls},
            {"tool_calls": calls[1:], "text": "Running it now."},
            {"text": "  Done:\nb is in a.txt. "},
            {"tool_calls": calls[:1]},
        ]
    )
    first = _ask(mock).json()
    assert first["stop_reason"] == "tool_use"
    assert [(b["type"], b["name"], b["input"]) for b in first["content"]] == [
        ("tool_use", c["name"], c["input"]) for c in calls
    ]
    assert all(b["id"].startswith("toolu_") for b in first["content"])

    second = _ask(mock).json()
    assert second["stop_reason"] == "tool_use"
    assert second["content"][0] == {"type": "text", "text": "Running it now."}
    assert second["content"][1]["input"] == calls[1]["input"]

    third = _ask(mock).json()  # the text exactly as scripted, whitespace included
    assert third["stop_reason"] == "end_turn"
    assert third["content"] == [{"type": "text", "text": "  Done:\nb is in a.txt. "}]
    assert third["usage"]["output_tokens"] == 5

    streamed = _ask(mock, stream=True)
    blocks, stop = _stream_blocks(streamed.text)
    assert stop == "tool_use"
    assert [(b["name"], b["input"]) for b in blocks] == [("apply_patch", {"input": PATCH})]

    # The script is used up: the default answer again.
    plain = _ask(mock).json()
    assert plain["stop_reason"] == "end_turn" and plain["content"][0]["type"] == "text"


def test_scripted_object_entry_keeps_directives(mock: MockUpstream) -> None:
    mock.script([{"directives": "thinking", "tool_calls": [{"name": "exec_command"}]}, 529])
    answer = _ask(mock).json()
    assert [b["type"] for b in answer["content"]] == ["thinking", "tool_use"]
    assert answer["content"][1]["input"] == {}  # no input given: an empty object
    assert _ask(mock).status_code == 529


def test_scripted_text_is_cut_at_max_tokens(mock: MockUpstream) -> None:
    mock.script([{"text": "one two three four five"}])
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 3,
        "messages": [{"role": "user", "content": "go"}],
    }
    answer = httpx.post(mock.url + "/v1/messages", json=body, headers=HEADERS).json()
    assert answer["stop_reason"] == "max_tokens"
    assert answer["content"] == [{"type": "text", "text": "one two three"}]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"tool_call": []}, "unknown key 'tool_call'"),
        ({"tool_calls": {"name": "x"}}, "'tool_calls' must be a list"),
        ({"tool_calls": [{"name": "no spaces"}]}, "tool_calls[0].name must match"),
        ({"tool_calls": [{"name": "x", "input": "{}"}]}, "tool_calls[0].input must be an object"),
        ({"tool_calls": [{"name": "x", "args": {}}]}, "must be an object with 'name' and 'input'"),
        ({"text": " "}, "'text' must be a string with a non-whitespace character"),
        ({"directives": 5}, "'directives' must be a string"),
    ],
)
def test_bad_object_entries_are_400s_and_queue_nothing(
    mock: MockUpstream, entry: dict[str, Any], problem: str
) -> None:
    resp = httpx.post(mock.url + "/_mock/script", json=["words=2", entry])
    assert resp.status_code == 400
    message = resp.json()["error"]["message"]
    assert message.startswith("/_mock/script entry 1: ") and problem in message, message
    # All or nothing: the valid first entry was not queued either.
    answer = _ask(mock).json()
    assert len(answer["content"][0]["text"].split()) == 40
