"""Issue 18: a long Codex thread compacts *remotely* through Ferrule and goes on, on both backends;
and a compaction item outlives a rotation of Ferrule's secret key.

Codex CLI (pinned in ``tests/node/package.json``) only compacts remotely when its model provider
says it can (``[model_providers.<id>.capabilities] remote_compaction = "v2"``; the other value is
``unsupported``, which makes Codex summarise "inline" with its own prompt). Its model catalog
entry gets a small ``auto_compact_token_limit`` so that one large tool output (about 3,000 tokens
on top of Codex's ~5,000-token system prompt and tools) crosses it: Codex then sends a streamed
``POST /v1/responses`` whose input ends with ``{"type": "compaction_trigger"}``, expects exactly one
``compaction`` item back, and carries that item (sealed, opaque to it) in place of the history from
then on. The simulated upstream plays the model: the tool call, the summary Ferrule asks for, and
the answers after it. A second ``codex exec resume --last`` turn proves the thread goes on from the
compacted history and that the turn after compaction reads Anthropic's prompt cache (Codex's own
``turn.completed`` usage reports ``cached_input_tokens``).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import BACKENDS
from servers import MockUpstream, Proxy, start_proxy
from test_codex_cli import (
    SHELL_TOOL,
    _config,
    _env,
    _model_catalog,
    _output,
    _scratch_repo,
    codex_command,
)

SUMMARY = "SUMMARY-7f3a: printed the numbers 100000 to 102000 with seq; nothing is left open."
BIG_OUTPUT = "seq 100000 102000"  # ~14 KB of output, cut by Codex to its 10 KB tool-output budget
COMPACT_LIMIT = 7000  # tokens: above the first request (~5,200), below the second (~8,000)


@pytest.fixture(scope="module")
def codex() -> list[str]:
    return codex_command()


def _codex_home(proxy: Proxy, home: Path) -> None:
    home.mkdir()
    catalog = _model_catalog()
    catalog["models"][0]["auto_compact_token_limit"] = COMPACT_LIMIT
    (home / "models.json").write_text(json.dumps(catalog))
    config = _config(proxy, home / "models.json")
    # The provider tells Codex that it compacts remotely (protocol v2); `--strict-config` below
    # fails the test if this Codex version no longer knows the key or the value.
    config += '\n[model_providers.ferrule.capabilities]\nremote_compaction = "v2"\n'
    (home / "config.toml").write_text(config)


def _exec(codex: list[str], repo: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*codex, "exec", "--strict-config", "--color", "never", "--cd", str(repo), *args],
        cwd=repo,
        env=_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _text(body: dict[str, Any]) -> str:
    return json.dumps(body["messages"])


def test_a_long_codex_thread_compacts_remotely_and_goes_on(
    proxy: Proxy, mock: MockUpstream, codex: list[str], tmp_path: Path
) -> None:
    repo = _scratch_repo(tmp_path / "repo")
    home = tmp_path / "codex-home"
    _codex_home(proxy, home)
    mock.script(
        [
            {"tool_calls": [{"name": SHELL_TOOL, "input": {"cmd": BIG_OUTPUT}}]},
            {"text": SUMMARY},  # what Ferrule's compaction request gets from the model
            {"text": "Printed them."},  # the same turn, after the compaction
            {"text": "Still here after the compaction."},  # the next turn (resume)
        ]
    )
    rows_before = _settled_rows(proxy)  # earlier tests' rows written first
    first = _exec(codex, repo, home, "Print the numbers 100000 to 102000.")
    report = f"codex on the {proxy.backend} backend, turn 1\n" + _output(first)
    assert first.returncode == 0, report
    assert "context compacted" in first.stderr, report  # Codex's own line for a compaction

    second = _exec(codex, repo, home, "--json", "resume", "--last", "Anything left?")
    report += f"\nturn 2\n{_output(second)}"
    assert second.returncode == 0, report
    events = [json.loads(line) for line in second.stdout.splitlines() if line.startswith("{")]
    messages = [
        e["item"]["text"]
        for e in events
        if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"
    ]
    assert messages == ["Still here after the compaction."], report
    [done] = [e for e in events if e.get("type") == "turn.completed"]
    # The turn after the compaction reads Anthropic's prompt cache (Codex reports it as such).
    assert done["usage"]["cached_input_tokens"] > 0, done

    sent = [r["body"] for r in mock.requests() if r["path"] == "/v1/messages"]
    assert len(sent) == 4, report
    before, compaction, after, resumed = sent
    assert "100500" in _text(before) or "100500" in _text(compaction)
    # The compaction request: the whole history, Ferrule's summary prompt last, no tool call
    # possible; the same system prompt and tools as the thread, so it reads the cached prefix.
    assert "100500" in _text(compaction), "the history reached the summariser"
    assert "Do not call any tool" in _text(compaction)
    assert compaction.get("tool_choice") == {"type": "none"}
    assert compaction["system"] == before["system"] and compaction["tools"] == before["tools"]
    # After it: the sealed item came back from Codex and opened to the summary, in place of the
    # history it replaced (the tool output is gone), on this turn and the next one.
    for body in (after, resumed):
        assert SUMMARY in _text(body), body["messages"]
        assert "100500" not in _text(body)
        assert body["system"] == before["system"] and body["tools"] == before["tools"]
    # The compacted history is a stable prefix: the next turn starts with the same messages.
    assert resumed["messages"][: len(after["messages"]) - 1] == after["messages"][:-1]

    # Every upstream call, the compaction included, has its own ledger row. (The proxy serves
    # other tests too: count this test's rows; the ledger writes in batches, so a row may land a
    # moment after its answer.)
    deadline = time.monotonic() + 15
    while (rows := _responses_rows(proxy)) < rows_before + 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rows == rows_before + 4


def _settled_rows(proxy: Proxy) -> int:
    """The count once no row is still on its way (the writer flushes every 0.5 s)."""
    count = _responses_rows(proxy)
    for _ in range(20):
        time.sleep(0.7)
        count, before = _responses_rows(proxy), count
        if count == before:
            break
    return count


def _responses_rows(proxy: Proxy) -> int:
    stats = httpx.get(proxy.url + "/stats", params={"since": "1d", "by": "route"}, timeout=10)
    assert stats.status_code == 200, stats.text
    return sum(r["requests"] for r in stats.json()["by_route"] if r["route"] == "/v1/responses")


# -- the secret key rotates -------------------------------------------------------------------

HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Rename foo to bar in app.py."},
    {"role": "assistant", "content": "Renamed it; the tests pass."},
]
MODEL = "claude-sonnet-4-6"
OLD, NEW = "old-secret-5b1e0c", "new-secret-a93d27"


def _compact(p: Proxy) -> dict[str, Any]:
    r = httpx.post(
        p.v1 + "/responses/compact",
        json={"model": MODEL, "input": HISTORY},
        headers={"authorization": "Bearer sk-ant-rotation-test-1"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    [item] = r.json()["output"]
    assert item["type"] == "compaction"
    return item  # type: ignore[no-any-return]


def _use(p: Proxy, item: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        p.v1 + "/responses",
        json={
            "model": MODEL,
            "input": [item, {"role": "user", "content": "go on"}],
            "store": False,
        },
        headers={"authorization": "Bearer sk-ant-rotation-test-1"},
        timeout=30,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_compaction_item_outlives_a_secret_key_rotation(
    backend: str, mock: MockUpstream, tmp_path: Path
) -> None:
    """Sealed under the old key; the replicas then run with ``FERRULE_SECRET_KEY=new,old`` (the
    first seals, every one opens): the item still opens, new items are sealed under the new key;
    once the old key is dropped, an old item is a clear 400, never a 500."""

    def proxy_with(secret: str, name: str) -> contextlib.AbstractContextManager[Proxy]:
        env = {"FERRULE_SECRET_KEY": secret, "FERRULE_DATA_DIR": str(tmp_path / name)}
        return start_proxy(backend, mock.url, str(tmp_path / f"{name}.log"), env=env)

    mock.script([{"text": "Summary: foo is bar now."}, {"text": "Summary: second."}])
    with proxy_with(OLD, "before") as p:
        old_item = _compact(p)
    with proxy_with(f"{NEW},{OLD}", "rotating") as p:
        r = _use(p, old_item)
        assert r.status_code == 200, r.text
        assert "Summary: foo is bar now." in json.dumps(mock.requests()[-1]["body"]["messages"])
        new_item = _compact(p)
    # the key id in the sealed envelope changed with the sealing key
    assert new_item["encrypted_content"][:12] != old_item["encrypted_content"][:12]
    with proxy_with(NEW, "after") as p:
        assert _use(p, new_item).status_code == 200
        r = _use(p, old_item)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert "input[0].encrypted_content" in error["message"], error
