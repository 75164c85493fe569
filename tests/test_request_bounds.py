"""Issue 11, items 3, 4 and 10: every per-request stage bounded.

Unit level: the bounded-step JSON parser and serializer (``ferrule.jsonbody``) give exactly
orjson's results; breakpoint placement is linear and allocates nothing per block.
End to end (real ``ferrule serve`` processes): the access key is checked before a byte of the
body is read; a ~30 MiB many-message request does not stall the worker (``/health`` keeps
answering); memory growth per large body is bounded; too-deep nesting, out-of-range integers and
oversized identifiers are 400s in the route's own format; an unexpected exception is a 500 in
the route's format and the ledger says so."""

from __future__ import annotations

import gc
import json
import random
import time
import tracemalloc
from typing import Any

import orjson
import pytest

from ferrule import breakpoints, jsonbody
from ferrule.breakpoints import place_breakpoints, place_breakpoints_json

# -- ferrule.jsonbody --------------------------------------------------------------------------

_WORDS = ["a", "role", "type", "},{", '"', "\\", "é", "😀", "],[", ", ", '{"role":', "x" * 40]


def _value(rng: random.Random, depth: int) -> Any:
    r = rng.random()
    if depth > 5 or r < 0.3:
        c = rng.random()
        if c < 0.5:
            return "".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 4)))
        if c < 0.75:
            return rng.choice([0, -1, 2**63, 2**64 - 1, 1.5, -2.5e-3])
        return rng.choice([True, False, None])
    if r < 0.65:
        n = rng.randint(0, 10)
        if rng.random() < 0.5:  # messages-like: objects that start with the same key
            return [
                {"role": rng.choice(["user", "assistant"]), "content": _value(rng, depth + 1)}
                for _ in range(n)
            ]
        return [_value(rng, depth + 1) for _ in range(n)]
    keys = ["role", "type", "a", "b", "é", "k"]
    return {rng.choice(keys) + str(i % 3): _value(rng, depth + 1) for i in range(rng.randint(0, 7))}


def _encode(rng: random.Random, value: Any) -> bytes:
    if rng.random() < 0.5:
        return orjson.dumps(value)
    indent = rng.choice([None, 1, "\t"])
    return json.dumps(value, indent=indent, ensure_ascii=rng.random() < 0.5).encode()


def _corrupt(rng: random.Random, raw: bytes) -> bytes:
    k = rng.randrange(len(raw))
    return raw[:k] + rng.choice([b"", b",", b"]", b"}", b'"', b"x", b"\\", b",]"]) + raw[k + 1 :]


@pytest.fixture
def tiny_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of a few dozen bytes, so that small documents exercise every cut and fallback."""
    monkeypatch.setattr(jsonbody, "_FIRST_PIECE", 64)
    monkeypatch.setattr(jsonbody, "_MIN_PIECE", 16)
    monkeypatch.setattr(jsonbody, "MAX_PIECE", 256)
    monkeypatch.setattr(jsonbody, "_SLICE", 3)


@pytest.mark.parametrize("seed", range(4))
def test_bounded_parser_gives_exactly_what_orjson_gives(tiny_pieces: None, seed: int) -> None:
    """Valid and corrupted documents, compact and indented, ASCII and not: the same value (and
    the same key order), or an error exactly when orjson raises one."""
    rng = random.Random(seed)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(150):
        raw = _encode(rng, _value(rng, 0))
        if rng.random() < 0.3:
            raw = _corrupt(rng, raw)
        try:
            want: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            with pytest.raises(jsonbody.JsonError):
                jsonbody._walk(raw, 10**6)
            outcomes["error"] += 1
            continue
        got = jsonbody._walk(raw, 10**6)
        assert got == want and orjson.dumps(got) == orjson.dumps(want), raw[:200]
        outcomes["ok"] += 1
    assert outcomes["ok"] > 50 and outcomes["error"] > 10


@pytest.mark.parametrize(
    "raw",
    [
        b"[1,2,]",
        b'{"a":1,}',
        b'[{"a":1}],',
        b"[1 2]",
        b'{"a" 1}',
        b"[" * 10 + b"]" * 9,
        b'["\\ud800"]',
    ],
)
def test_bounded_parser_refuses_what_orjson_refuses(tiny_pieces: None, raw: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)
    with pytest.raises(jsonbody.JsonError):
        jsonbody._walk(raw * 20 if raw.startswith(b"[1") else raw, 10**6)


def test_bounded_parser_refuses_deep_nesting_it_walks(tiny_pieces: None) -> None:
    deep = b'{"a":' * 200 + b'"' + b"x" * 400 + b'"' + b"}" * 200
    with pytest.raises(jsonbody.TooDeep):
        jsonbody._walk(deep, 128)
    assert jsonbody._walk(deep, 1000) == orjson.loads(deep)


@pytest.mark.parametrize("seed", range(3))
def test_sliced_serializer_is_byte_identical(tiny_pieces: None, seed: int) -> None:
    rng = random.Random(100 + seed)
    for _ in range(300):
        value = _value(rng, 0)
        assert jsonbody.dumps(value) == orjson.dumps(value)


def test_too_deep_counts_levels() -> None:
    value: Any = "leaf"
    for _ in range(128):
        value = [value]
    assert not jsonbody.too_deep(value, 128)
    assert jsonbody.too_deep([value], 128)
    assert jsonbody.too_deep({"a": [value]}, 129)
    assert not jsonbody.too_deep({"a": [value]}, 130)


# -- breakpoint placement ----------------------------------------------------------------------


def _many_blocks(messages: int, blocks: int, text: str = "t") -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [
            {
                "role": "user" if i % 2 == 0 else "assistant",
                "content": [{"type": "text", "text": f"{text}{i}.{j}"} for j in range(blocks)],
            }
            for i in range(messages)
        ],
    }


def _peak_bytes(fn: Any, *args: Any) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_placement_allocates_nothing_per_block() -> None:
    """It used to keep an object per block (and a dict per block while counting), whose pile-up
    made the garbage collector rescan the request over and over: super-linear (3 s for 400,000
    messages, 7 s for 800,000). Now its memory is a few integers per message."""
    body = _many_blocks(10_000, 6)  # 60,000 blocks
    per_block = _peak_bytes(place_breakpoints, body) / 60_000
    assert per_block < 40, f"{per_block:.0f} bytes per block"


def test_placement_of_string_contents_holds_no_copy_of_the_request() -> None:
    """A string content is written as a text block: as JSON, slice by slice, never as a
    normalized copy of every message held at once."""
    body = {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"}
            for i in range(30_000)
        ],
    }
    data = place_breakpoints_json(body)
    assert data == orjson.dumps(place_breakpoints(body))
    per_message = _peak_bytes(place_breakpoints_json, body) / 30_000
    size = len(data) / 30_000
    # the JSON itself, its parts before the join, and a position per message; a normalized
    # copy (a dict, a list and a block per message) alone is ~500 bytes per message
    assert per_message < 2 * size + 80, f"{per_message:.0f} bytes per message, JSON {size:.0f}"


def test_placement_time_is_linear() -> None:
    """Four times the blocks, at most ~4 times the time (generous: 7x, best of three)."""

    def best(body: dict[str, Any]) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            place_breakpoints_json(body)
            times.append(time.perf_counter() - t0)
        return min(times)

    small, large = _many_blocks(20_000, 3), _many_blocks(80_000, 3)
    ratio = best(large) / best(small)
    assert ratio < 7, f"4x the blocks took {ratio:.1f}x the time"


def test_json_placement_is_none_when_nothing_is_added() -> None:
    short = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
    assert place_breakpoints_json(short) is None
    assert place_breakpoints(short) == short
    assert breakpoints._SLICE >= 64  # slices big enough that small requests take one call
