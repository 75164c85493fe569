"""ferrule.seal and ferrule.thinking: sealed thinking blocks kept per tenant and tool_use id."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from ferrule.cache.stores import MemoryStore, SqliteStore
from ferrule.seal import Sealer, SealError, load_sealer
from ferrule.thinking import ThinkingMemory, degrade, loop_turn

SIG = "EqQBCkYIBxgCKkD-signature-sentinel-7f3a"

ANSWER: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "content": [
        {"type": "thinking", "thinking": "I should look it up.", "signature": SIG},
        {"type": "redacted_thinking", "data": "opaque-redacted"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_a", "name": "lookup", "input": {"q": "x"}},
        {"type": "tool_use", "id": "toolu_b", "name": "lookup", "input": {"q": "y"}},
    ],
    "stop_reason": "tool_use",
}


def replay(ids: tuple[str, ...] = ("toolu_a", "toolu_b")) -> dict[str, Any]:
    """The next request as an OpenAI client rebuilds it: no thinking, tool calls and results."""
    return {
        "model": "claude-sonnet-4-6",
        "thinking": {"type": "adaptive"},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "find x and y"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    *(
                        {"type": "tool_use", "id": i, "name": "lookup", "input": {"q": i}}
                        for i in ids
                    ),
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": i, "content": "ok"} for i in ids
                ],
            },
        ],
    }


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_seal_round_trip_and_tenant_binding() -> None:
    sealer = Sealer(["s3cret"])
    token = sealer.seal(b"payload", b"tenant-a")
    assert token.startswith("fs1.") and "payload" not in token
    assert sealer.open(token, b"tenant-a") == b"payload"
    with pytest.raises(SealError):
        sealer.open(token, b"tenant-b")  # another caller's item does not open
    forged = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(SealError):
        sealer.open(forged, b"tenant-a")
    with pytest.raises(SealError):
        sealer.open("not-a-token", b"tenant-a")


def test_seal_rotation_keeps_old_items_open() -> None:
    old = Sealer(["old"]).seal(b"item", b"t")
    rotated = Sealer(["new", "old"])
    assert rotated.open(old, b"t") == b"item"
    assert Sealer(["new"]).seal(b"x", b"t")[:9] == rotated.seal(b"x", b"t")[:9]  # new key id
    with pytest.raises(SealError):
        Sealer(["new"]).open(old, b"t")  # retired key: no longer opens


def test_generated_secret_is_shared_and_private(tmp_path: Path) -> None:
    a = load_sealer("", tmp_path)
    b = load_sealer("", tmp_path)
    assert b.open(a.seal(b"v", b"t"), b"t") == b"v"
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600


def test_loop_turn() -> None:
    body = replay()
    assert loop_turn(body["messages"]) == 1
    body["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "done"}]})
    assert loop_turn(body["messages"]) is None
    body["messages"].append({"role": "user", "content": [{"type": "text", "text": "thanks"}]})
    assert loop_turn(body["messages"]) is None


@pytest.mark.parametrize("offload", [False, True])
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_remember_then_restore_exact_blocks(kind: str, offload: bool, tmp_path: Path) -> None:
    store = (
        MemoryStore(1 << 20) if kind == "memory" else SqliteStore(str(tmp_path / "t.db"), 1 << 20)
    )
    memory = ThinkingMemory(store, Sealer(["k"]), 3600)

    async def go() -> None:
        assert await memory.remember("tenant-a", ANSWER) == 2
        # the store holds sealed bytes only: no signature, no thinking text in the clear
        if kind == "sqlite":
            await store.close()
            raw = (tmp_path / "t.db").read_bytes()
            assert SIG.encode() not in raw and b"look it up" not in raw
            reopened = SqliteStore(str(tmp_path / "t.db"), 1 << 20)
            again = ThinkingMemory(reopened, Sealer(["k"]), 3600)
        else:
            again = memory
        body = replay()
        result = await again.restore("tenant-a", body, offload=offload)
        assert result.turns == 1 and not result.loop_missing
        assert body["messages"][1]["content"][:2] == ANSWER["content"][:2]
        assert body["messages"][1]["content"][2:] == replay()["messages"][1]["content"]
        # the same bytes on every replay (prompt-cache prefix)
        second = replay()
        await again.restore("tenant-a", second)
        assert orjson.dumps(second) == orjson.dumps(body)

    run(go())


def test_other_tenant_and_unknown_ids_get_nothing() -> None:
    memory = ThinkingMemory(MemoryStore(1 << 20), Sealer(["k"]), 3600)

    async def go() -> None:
        await memory.remember("tenant-a", ANSWER)
        body = replay()
        result = await memory.restore("tenant-b", body)
        assert result.turns == 0 and result.loop_missing
        assert body == replay()
        body = replay(("toolu_zzz",))
        assert (await memory.restore("tenant-a", body)).loop_missing

    run(go())


def test_answer_without_tool_calls_or_thinking_is_not_kept() -> None:
    memory = ThinkingMemory(MemoryStore(1 << 20), Sealer(["k"]), 3600)
    no_tools = copy.deepcopy(ANSWER)
    no_tools["content"] = no_tools["content"][:3]
    no_thinking = copy.deepcopy(ANSWER)
    no_thinking["content"] = no_thinking["content"][2:]
    assert run(memory.remember("t", no_tools)) == 0
    assert run(memory.remember("t", no_thinking)) == 0


def test_degrade_turns_thinking_off_or_writes_the_loop_as_text() -> None:
    body = replay()
    warning = degrade(body, can_disable=True)
    assert body["thinking"] == {"type": "disabled"} and warning.startswith("thinking-off")
    body = replay()
    warning = degrade(body, can_disable=False)
    assert warning.startswith("tool-turn-as-text")
    assert body["thinking"] == {"type": "adaptive"}
    kinds = [b["type"] for m in body["messages"] for b in m["content"]]
    assert "tool_use" not in kinds and "tool_result" not in kinds
    assert "[called tool lookup with" in body["messages"][1]["content"][1]["text"]
