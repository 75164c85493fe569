"""Thinking signatures, like keys, are never written in the clear anywhere Ferrule writes.

A reasoning tool loop through the OpenAI route (JSON and streamed, response cache on, DEBUG log):
the upstream's thinking signature must come back to it on the next turn (Ferrule kept it), and
appear in no sink: the log, the ledger, the response cache and the thinking store (SQLite files
with their WAL), /metrics, /stats, any response body or header sent to the OpenAI client."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from servers import MockUpstream, start_proxy

KEY = "sk-ant-signature-leak-test-0b1c"
MODEL = "claude-sonnet-4-6"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]


def signatures(requests: list[dict[str, Any]]) -> set[str]:
    found = set()
    for req in requests:
        for msg in (req.get("body") or {}).get("messages", []):
            content = msg.get("content")
            if isinstance(content, list):
                for block in content:
                    if block.get("type") == "thinking" and block.get("signature"):
                        found.add(block["signature"])
                    if block.get("type") == "redacted_thinking":
                        found.add(block["data"])
    return found


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_signatures_appear_in_no_sink(backend: str, mock: MockUpstream, tmp_path: Path) -> None:
    from conftest import kernel_module

    kernel_module(backend)
    data_dir = tmp_path / "data"
    log = tmp_path / "ferrule.log"
    env = {
        "FERRULE_DATA_DIR": str(data_dir),
        "FERRULE_LOG_LEVEL": "debug",
        "FERRULE_RESPONSE_CACHE": "sqlite",
    }
    # x-ferrule-cache: on stores thinking answers too: the cache is one of the searched sinks
    auth = {"authorization": f"Bearer {KEY}", "x-ferrule-cache": "on"}
    sent: list[httpx.Response] = []
    with start_proxy(backend, mock.url, str(log), env=env) as proxy, httpx.Client(timeout=30) as c:
        chat = proxy.v1 + "/chat/completions"
        for stream in (False, True):
            mock.reset()
            ask = f"weather {stream} [mock:tool] [mock:redacted]"
            first = {
                "model": MODEL,
                "messages": [{"role": "user", "content": ask}],
                "tools": TOOLS,
                "reasoning_effort": "low",
                "stream": stream,
            }
            resp = c.post(chat, json=first, headers=auth)
            sent.append(resp)
            assert resp.status_code == 200, resp.text
            if stream:
                chunks = [
                    orjson.loads(line[6:])
                    for line in resp.text.splitlines()
                    if line.startswith("data: {")
                ]
                calls = [
                    tc
                    for ch in chunks
                    for tc in (ch["choices"][0]["delta"].get("tool_calls") or [])
                    if tc.get("id")
                ]
                call = {"id": calls[0]["id"], "type": "function", "function": calls[0]["function"]}
                call["function"] = {"name": "lookup", "arguments": "{}"}
            else:
                call = resp.json()["choices"][0]["message"]["tool_calls"][0]
            second = {
                **first,
                "messages": [
                    *first["messages"],
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
                ],
            }
            resp = c.post(chat, json=second, headers=auth)
            sent.append(resp)
            assert resp.status_code == 200, resp.text
            assert "thinking" not in resp.headers.get("x-ferrule-warning", "")
            kept = signatures(mock.requests())
            assert kept, "the second upstream request carried the thinking blocks back"
        for path in ("/metrics", "/stats"):
            sent.append(c.get(proxy.url + path, headers=auth))
    time.sleep(0.5)  # the ledger writer's last batch
    places = {"log": log.read_bytes()}
    for path in data_dir.rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes()
    for i, resp in enumerate(sent):
        places[f"response {i}"] = resp.content + orjson.dumps(dict(resp.headers))
    for signature in kept:
        for where, data in places.items():
            assert signature.encode() not in data, f"a thinking signature is in {where}"
