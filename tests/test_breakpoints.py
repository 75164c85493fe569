"""Automatic prompt-cache breakpoints (ferrule.breakpoints): the API's limits, the client's own
breakpoints, per-model minimums, TTL order, determinism and prefix stability across turns."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferrule.breakpoints import (
    LOOKBACK_BLOCKS,
    MAX_BREAKPOINTS,
    estimate_tokens,
    find_breakpoints,
    min_cacheable_tokens,
    place_breakpoints,
)

BIG = "x" * 6000  # ~2,000 estimated tokens (one per 3 bytes)


def text(t: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": t, **extra}


def tool(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "input_schema": {"type": "object"}, **extra}


def conversation(
    turns: int, *, size: str = BIG, model: str = "claude-sonnet-4-6"
) -> dict[str, Any]:
    """tools, system, then user/assistant turns ending with a user turn."""
    messages: list[dict[str, Any]] = []
    for i in range(turns):
        messages.append({"role": "user", "content": [text(f"question {i} {size}")]})
        if i < turns - 1:
            messages.append({"role": "assistant", "content": [text(f"answer {i}")]})
    return {
        "model": model,
        "max_tokens": 100,
        "tools": [tool("a"), tool("b", description=size)],
        "system": [text("be brief"), text("policy " + size)],
        "messages": messages,
    }


def marks(body: dict[str, Any]) -> list[tuple[int, str]]:
    return [(b.position, b.ttl) for b in find_breakpoints(body)]


def strip(obj: Any) -> Any:
    """The body without any cache_control, anywhere."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k != "cache_control"}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def positions(body: dict[str, Any]) -> dict[str, int]:
    """Block positions of interesting places (tools, system, messages order)."""
    n_tools = len(body.get("tools") or [])
    n_system = len(body.get("system") or [])
    return {"last_tool": n_tools - 1, "last_system": n_tools + n_system - 1}


def test_places_tools_system_previous_and_newest() -> None:
    body = conversation(3)
    out = place_breakpoints(body)
    got = marks(out)
    total = 2 + 2 + 5  # tools, system blocks, message blocks
    pos = positions(body)
    assert got == [
        (pos["last_tool"], "5m"),
        (pos["last_system"], "5m"),
        (total - 3, "5m"),  # the previous user turn (question 1)
        (total - 1, "5m"),  # the newest block (question 2)
    ]
    assert out["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert out["tools"][-1]["cache_control"] == {"type": "ephemeral"}


def test_input_is_not_modified_and_unchanged_blocks_are_shared() -> None:
    body = conversation(3)
    before = copy.deepcopy(body)
    out = place_breakpoints(body)
    assert body == before
    assert out["messages"][1] is body["messages"][1]  # untouched assistant turn: shared


def test_deterministic() -> None:
    body = conversation(4)
    assert place_breakpoints(body) == place_breakpoints(copy.deepcopy(body))


@pytest.mark.parametrize("client_count", [1, 2, 3, 4, 5])
def test_never_more_than_four_counting_the_clients(client_count: int) -> None:
    body = conversation(6)
    # The client marks its first user turns (as an Anthropic SDK user might).
    for i in range(client_count):
        body["messages"][2 * i]["content"][0]["cache_control"] = {"type": "ephemeral"}
    out = place_breakpoints(body)
    got = marks(out)
    assert len(got) == max(MAX_BREAKPOINTS, client_count)
    if client_count >= MAX_BREAKPOINTS:
        assert strip(out) == strip(body) and got == marks(body)


def test_client_breakpoints_are_kept_as_they_were() -> None:
    body = conversation(3)
    body["system"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    body["messages"][0]["content"][0]["cache_control"] = {"type": "ephemeral"}
    out = place_breakpoints(body)
    assert out["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert out["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert len(marks(out)) == MAX_BREAKPOINTS
    # The newest block still gets its marker: it has the highest priority.
    assert "cache_control" in out["messages"][-1]["content"][-1]


def test_nested_and_top_level_client_breakpoints_count() -> None:
    body = conversation(3)
    body["messages"][0]["content"].insert(
        0,
        {
            "type": "tool_result",
            "tool_use_id": "t1",
            "content": [text("result", cache_control={"type": "ephemeral"})],
        },
    )
    body["cache_control"] = {"type": "ephemeral"}  # automatic caching: marks the last block
    out = place_breakpoints(body)
    assert len(marks(out)) == MAX_BREAKPOINTS
    # The top-level breakpoint already covers the newest block: no explicit one added there.
    assert "cache_control" not in out["messages"][-1]["content"][-1]


def test_minimum_per_model() -> None:
    assert min_cacheable_tokens("claude-opus-4-6") == 4096
    assert min_cacheable_tokens("claude-haiku-4-5-20251001") == 4096
    assert min_cacheable_tokens("claude-opus-4-5-20251101") == 4096
    assert min_cacheable_tokens("claude-sonnet-4-6") == 1024
    assert min_cacheable_tokens("claude-sonnet-4-5-20250929") == 1024
    # from the model table (data/models.toml): the 4.7+ and 5 generations
    assert min_cacheable_tokens("claude-opus-4-7") == 2048
    assert min_cacheable_tokens("claude-opus-4-8") == 1024
    assert min_cacheable_tokens("claude-opus-5-5") == 512
    assert min_cacheable_tokens("claude-haiku-4-5") == 4096  # an alias
    # retired or unknown models: the common documented minimum (a breakpoint below a model's
    # real minimum is harmless; a missing one is not)
    assert min_cacheable_tokens("claude-3-5-haiku-20241022") == 1024
    assert min_cacheable_tokens("some-future-model") == 1024


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "claude-opus-4-6", "claude-opus-4-7"])
def test_never_below_the_minimum(model: str) -> None:
    count_calls: list[str] = []

    def count(s: str) -> int:
        count_calls.append(s)
        return 700  # every block: 700 tokens

    body = conversation(3, size="", model=model)
    out = place_breakpoints(body, count_tokens=count)
    assert count_calls and all("cache_control" not in s for s in count_calls)
    # 9 blocks of 700 tokens: tools 0-1, system 2-3, messages 4-8 (newest 8, previous 6).
    expected = {
        "claude-sonnet-4-6": [1, 3, 6, 8],  # 1,024: from the second block on
        "claude-opus-4-7": [3, 6, 8],  # 2,048: the last tool (1,400 tokens) is too short
        "claude-opus-4-6": [6, 8],  # 4,096: from the sixth block on
    }[model]
    assert [p for p, _ in marks(out)] == expected
    assert all((p + 1) * 700 >= min_cacheable_tokens(model) for p in expected)


def test_short_prompt_gets_no_breakpoint() -> None:
    body = conversation(2, size="short")
    assert marks(place_breakpoints(body)) == []


def test_one_hour_ttl() -> None:
    out = place_breakpoints(conversation(3), ttl="1h")
    assert [t for _, t in marks(out)] == ["1h"] * 4
    assert out["tools"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


def test_one_hour_breakpoints_come_before_five_minute_ones() -> None:
    # A client 5m breakpoint on the last system block: ours after it must be 5m.
    body = conversation(3)
    body["system"][1]["cache_control"] = {"type": "ephemeral"}
    got = marks(place_breakpoints(body, ttl="1h"))
    # The last tool comes before the client's 5m one: it may stay 1h.
    assert got == [(1, "1h"), (3, "5m"), (6, "5m"), (8, "5m")]
    # A client 1h breakpoint on the newest block: ours before it must be 1h.
    body = conversation(3)
    body["messages"][-1]["content"][-1]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    got = marks(place_breakpoints(body, ttl="5m"))
    assert [t for _, t in got] == ["1h"] * 4


def test_invalid_client_ttl_order_is_not_made_worse() -> None:
    body = conversation(4)
    body["system"][1]["cache_control"] = {"type": "ephemeral"}  # 5m ...
    body["messages"][-1]["content"][-1]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    newest = 2 + 2 + 7 - 1
    got = dict(marks(place_breakpoints(body)))
    # Anything between the two would have to be both 1h and 5m: nothing is added there, and
    # what is added before the client's 5m one is 1h (it is before a client 1h too).
    assert got[3] == "5m" and got[newest] == "1h"
    added = {p: t for p, t in got.items() if p not in (3, newest)}
    assert added and all(p < 3 and t == "1h" for p, t in added.items())


def test_never_on_thinking_or_empty_text() -> None:
    # One user turn of 30 blocks after a long system: the lookback needs an intermediate, and
    # the block where it would go is preceded by an assistant thinking block.
    blocks = [text(f"part {i} " + "y" * 300) for i in range(30)]
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "system": [text("   "), text("rules " + BIG)],
        "messages": [
            {"role": "user", "content": blocks[:1]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "zzz"},
                ],
            },
            {"role": "user", "content": blocks[1:]},
        ],
    }
    out = place_breakpoints(body)
    assert "cache_control" not in out["system"][0]  # whitespace-only text
    for block in out["messages"][1]["content"]:
        assert "cache_control" not in block
    assert len(marks(out)) <= MAX_BREAKPOINTS


def test_intermediate_breakpoint_for_a_turn_longer_than_the_lookback() -> None:
    blocks = [text(f"part {i} " + "y" * 300) for i in range(45)]
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "system": [text("rules " + BIG)],
        "messages": [{"role": "user", "content": blocks}],
    }
    got = [p for p, _ in marks(place_breakpoints(body))]
    newest = 45  # system (1) + 45 blocks - 1
    assert got == [0, newest - LOOKBACK_BLOCKS, newest]


def test_previous_marker_reads_across_a_turn_of_many_parallel_tool_calls() -> None:
    base = conversation(2)
    calls = [{"type": "tool_use", "id": f"t{i}", "name": "a", "input": {}} for i in range(30)]
    results = [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "ok"} for i in range(30)]
    after = copy.deepcopy(base)
    after["messages"] += [
        {"role": "assistant", "content": calls},
        {"role": "user", "content": results},
    ]
    newest_before = max(p for p, _ in marks(place_breakpoints(base)))
    got_after = [p for p, _ in marks(place_breakpoints(after))]
    assert newest_before in got_after  # request k+1 reads exactly where request k wrote


def test_strings_are_normalized_the_same_way_every_turn() -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "system": "policy " + BIG,
        "messages": [
            {"role": "user", "content": "hello " + BIG},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "more"},
        ],
    }
    out = place_breakpoints(body)
    assert out["system"] == [text("policy " + BIG, cache_control={"type": "ephemeral"})]
    assert out["messages"][1]["content"] == [text("hi")]  # unmarked, still normalized
    assert marks(out) == [(0, "5m"), (1, "5m"), (3, "5m")]


def test_rejects_unknown_ttl() -> None:
    with pytest.raises(ValueError):
        place_breakpoints(conversation(1), ttl="10m")


def test_estimate_errs_towards_more_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("abcd") == 2
    assert estimate_tokens("é" * 3) == 2  # UTF-8 bytes, not characters


# -- prefix stability over generated conversations ----------------------------------------------

_block = st.one_of(
    st.builds(lambda n: text("t" * n), st.integers(1, 4000)),
    st.builds(
        lambda n: {"type": "image", "source": {"type": "url", "url": "https://x/" + "i" * n}},
        st.integers(1, 50),
    ),
)
_assistant_block = st.one_of(
    _block,
    st.just({"type": "thinking", "thinking": "th", "signature": "s"}),
    st.builds(
        lambda i: {"type": "tool_use", "id": f"u{i}", "name": "a", "input": {}}, st.integers()
    ),
)
_turn = st.tuples(
    st.lists(_assistant_block, min_size=1, max_size=6),
    st.lists(_block, min_size=1, max_size=30),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.lists(_block, min_size=1, max_size=5),
    turns=st.lists(_turn, min_size=1, max_size=8),
    n_tools=st.integers(0, 3),
    system=st.lists(st.integers(0, 5000), max_size=2),
    model=st.sampled_from(["claude-sonnet-4-6", "claude-opus-4-6", "claude-3-haiku"]),
    ttl=st.sampled_from(["5m", "1h"]),
)
def test_prefix_stability(
    first: list[dict[str, Any]],
    turns: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]],
    n_tools: int,
    system: list[int],
    model: str,
    ttl: str,
) -> None:
    tools = [tool(f"t{i}", description="d" * 500) for i in range(n_tools)]
    messages: list[dict[str, Any]] = [{"role": "user", "content": first}]
    requests = []
    for assistant, user in [([], []), *turns]:
        if assistant:
            messages = [
                *messages,
                {"role": "assistant", "content": assistant},
                {"role": "user", "content": user},
            ]
        body: dict[str, Any] = {"model": model, "max_tokens": 10, "messages": messages}
        if tools:
            body["tools"] = tools
        if system:
            body["system"] = [text("s" * (n + 1)) for n in system]
        requests.append(body)

    placed = [place_breakpoints(b, ttl=ttl) for b in requests]
    minimum = min_cacheable_tokens(model)
    for body, out in zip(requests, placed, strict=True):
        got = marks(out)
        assert len(got) <= MAX_BREAKPOINTS
        ttls = [t for _, t in got]
        assert "1h" not in ttls[ttls.index("5m") :] if "5m" in ttls else True
        assert strip(out) == strip(body)  # only cache_control was added
        assert out == place_breakpoints(copy.deepcopy(body), ttl=ttl)  # deterministic
        # Never below the minimum (same estimate as the placement), never on thinking.
        flat = [*(out.get("tools") or []), *(out.get("system") or [])]
        flat += [b for m in out["messages"] for b in m["content"]]
        running = 0
        for block in flat:
            plain = {k: v for k, v in block.items() if k != "cache_control"}
            running += estimate_tokens(orjson.dumps(plain).decode())
            if "cache_control" in block:
                assert running >= minimum
                assert block["type"] not in ("thinking", "redacted_thinking")

    for k in range(len(requests) - 1):
        before, after = placed[k], placed[k + 1]
        # Request k is a prefix of request k+1 once the markers are set aside...
        n = len(before["messages"])
        assert strip(after["messages"][:n]) == strip(before["messages"])
        # ...the system marker (or the last tool's, without a system) never moves; the tools
        # marker may give way to an intermediate one in a turn longer than the lookback...
        assert strip(after.get("tools")) == strip(before.get("tools"))
        assert after.get("system") == before.get("system")
        if not system:
            assert after.get("tools") == before.get("tools")
        # ...and request k+1 has a breakpoint where request k's newest one wrote.
        newest = max((p for p, _ in marks(before)), default=None)
        if newest is not None:
            assert newest in [p for p, _ in marks(after)]
