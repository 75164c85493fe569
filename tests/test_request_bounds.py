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

from asgi_call import post
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


def test_json_placement_is_none_when_nothing_is_added() -> None:
    short = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
    assert place_breakpoints_json(short) is None
    assert place_breakpoints(short) == short
    assert breakpoints._SLICE >= 64  # slices big enough that small requests take one call


# -- ferrule.largebody: the per-worker budget ---------------------------------------------------


def test_budget_lets_large_bodies_in_first_come_first_served() -> None:
    import asyncio

    from ferrule.errors import ProxyError
    from ferrule.largebody import LargeBodies

    async def scenario() -> None:
        gate = LargeBodies(threshold=1024, budget=100, wait=0.5)
        first = await gate.enter(60)
        order: list[str] = []

        async def later(name: str, size: int) -> None:
            ticket = await gate.enter(size)
            order.append(name)
            ticket.close()

        waiting = [asyncio.ensure_future(later("b", 60)), asyncio.ensure_future(later("c", 10))]
        await asyncio.sleep(0.05)
        assert order == [] and gate.used == 60  # c fits, but waits behind b: no starvation
        first.close()
        await asyncio.gather(*waiting)
        assert order == ["b", "c"] and gate.used == 0

        # a body larger than the whole budget takes all of it; the next one times out: 503
        whole = await gate.enter(10_000)
        with pytest.raises(ProxyError) as refused:
            await gate.enter(1)
        assert refused.value.status == 503 and refused.value.code == "large_body_budget"
        # a request that goes away while waiting leaves nothing behind
        gone = asyncio.ensure_future(gate.enter(5))
        await asyncio.sleep(0.01)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        whole.close()
        assert gate.used == 0 and not gate._queue

    asyncio.run(scenario())


def test_budget_puts_off_full_collections_while_preparing_and_restores_them() -> None:
    import asyncio

    from ferrule.largebody import LargeBodies

    async def scenario() -> None:
        before = gc.get_threshold()
        gate = LargeBodies(threshold=1024, budget=100, wait=1)
        ticket = await gate.enter(10)
        assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] > 10**6
        ticket.prepared()
        assert gc.get_threshold() == before and gate.frozen == 1 and gc.get_freeze_count() > 0
        ticket.close()
        ticket.close()  # idempotent
        assert gate.frozen == 0 and gc.get_freeze_count() == 0 and gate.used == 0

    asyncio.run(scenario())


def test_dismantle_empties_a_large_body_in_place() -> None:
    body = _many_blocks(3_000, 2)
    messages = body["messages"]
    jsonbody.dismantle([body])
    assert body == {} and messages == []


# -- end to end: real servers ------------------------------------------------------------------

MODEL = "claude-sonnet-4-6"
ACCESS_KEY = "an-access-key-for-the-bounds-tests"
# the breaker is not under test here; retries would only slow failures down
ENV = {"FERRULE_BREAKER_THRESHOLD": "1000000", "FERRULE_RETRY_BASE": "0.05"}


def _backend() -> str:
    from conftest import NATIVE

    return "rust" if NATIVE is not None else "python"


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _raw_answer(port: int, head: bytes, wait: float = 5.0) -> tuple[bytes, float]:
    """Send ``head`` (headers and the start of a body), read what comes back, and how soon."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(head)
        t0 = time.monotonic()
        data = b""
        try:
            while b"\r\n\r\n" not in data or not data.rstrip().endswith((b"}", b"0")):
                part = s.recv(65536)
                if not part:
                    break
                data += part
        except (TimeoutError, ConnectionResetError):
            pass
        return data, time.monotonic() - t0


@pytest.mark.parametrize("operator", [False, True], ids=["access-key", "operator-key"])
@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens"]
)
def test_wrong_access_key_with_a_huge_body_is_refused_before_the_body_is_read(
    mock: Any, operator: bool, path: str
) -> None:
    """31 MiB announced, a few bytes sent: the 401 comes at once, in the route's format, and
    the upstream never hears of it. (The key check already came first; this keeps it so, on
    every route and in operator mode, now that a large body also takes a share of a budget
    before it is read.)"""
    from servers import start_proxy

    env = {**ENV, "FERRULE_ACCESS_KEY": ACCESS_KEY}
    if operator:
        env["FERRULE_UPSTREAM_API_KEY"] = "sk-ant-operator-key-0000000000"
    credentials = (
        b"Authorization: Bearer not-the-access-key-000000\r\n"
        if operator
        else b"x-api-key: sk-ant-a-key\r\nx-ferrule-access-key: not-the-access-key\r\n"
    )
    with start_proxy(_backend(), mock.url, "/dev/null", env=env) as p:
        head = (
            (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "anthropic-version: 2023-06-01\r\nContent-Length: 32505856\r\n"
            ).encode()
            + credentials
            + b'\r\n{"model":"'
            + MODEL.encode()
            + b'","messages":['
        )
        answer, took = _raw_answer(_port(p.url), head)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert took < 2.0
    body = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    else:
        assert body["error"]["code"] == "ferrule_access_key"
    assert mock.requests() == []


def _many_messages(count: int, blocks: int) -> bytes:
    """An Anthropic request of ``count`` messages of ``blocks`` small text blocks each."""
    messages = [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": [{"type": "text", "text": f"t{i}.{j}"} for j in range(blocks)],
        }
        for i in range(count - 1 if count % 2 == 0 else count)  # ends with a user turn
    ]
    return orjson.dumps({"model": MODEL, "max_tokens": 16, "messages": messages})


class _Watch:
    """Polls GET /health (latency) and the worker processes' RSS while something runs."""

    def __init__(self, url: str, pid: int) -> None:
        import threading

        import psutil

        self.url = url
        self.workers = psutil.Process(pid).children(recursive=True)
        self.base = self.rss()
        self.peak = self.base
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.workers)

    def _run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                assert c.get("/health").status_code == 200
                self.latencies.append(time.perf_counter() - t0)
                self.peak = max(self.peak, self.rss())
                time.sleep(0.02)

    def __enter__(self) -> _Watch:
        self._thread.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self, size: int) -> str:
        lat = sorted(self.latencies)
        return (
            f"/health n={len(lat)} max={lat[-1] * 1000:.0f} ms "
            f"p99={lat[int(len(lat) * 0.99)] * 1000:.0f} ms p50={lat[len(lat) // 2] * 1000:.1f} ms"
            f"; RSS +{(self.peak - self.base) / 2**20:.0f} MiB"
            f" = {(self.peak - self.base) / size:.1f}x the body"
        )


def _serve(mock_url: str, env: dict[str, str]) -> Any:
    from ferrule.procs import free_port, running_server

    port = free_port()
    import tempfile

    full = {
        "FERRULE_BACKEND": _backend(),
        "FERRULE_DATA_DIR": tempfile.mkdtemp(prefix="ferrule-data-"),
        **ENV,
        **env,
    }
    return port, running_server(
        ["serve", "--port", str(port), "--upstream-url", mock_url], port, env=full
    )


def test_a_30_mib_request_of_many_messages_does_not_stall_the_worker(mock: Any) -> None:
    """While one worker prepares and forwards a 29 MiB request of 100,000 messages (800,000
    blocks), /health on the same worker keeps answering; its memory grows by a bounded factor
    of the body. Before: the request held the event loop for 4-9 s and took ~33x its size."""
    import httpx

    raw = _many_messages(100_000, 8)
    assert 28 * 2**20 < len(raw) <= 32 * 2**20
    port, server = _serve(mock.url, {})
    with server as proc:
        url = f"http://127.0.0.1:{port}"
        headers = {"x-api-key": "sk-ant-a-key", "content-type": "application/json"}
        with _Watch(url, proc.pid) as watch:
            r = httpx.post(url + "/v1/messages", content=raw, headers=headers, timeout=300)
        print("100k messages:", watch.summary(len(raw)))
        assert r.status_code == 200, r.text[:300]
        lat = sorted(watch.latencies)
        assert len(lat) > 50
        # measured on 2 shared cores: max 99-239 ms, p99 ~50 ms (it was an 8 s stall)
        assert lat[-1] < 0.5 and lat[int(len(lat) * 0.99)] < 0.2, watch.summary(len(raw))
        assert watch.peak - watch.base < 20 * len(raw), watch.summary(len(raw))

        # The body: 950,000 one-letter messages, over Anthropic's 100,000: a 400 once
        # parsed (in bounded steps), the worker still answering meanwhile.
        messages = [{"role": "user", "content": "x"}] * 950_000
        raw = orjson.dumps({"model": MODEL, "max_tokens": 16, "messages": messages})
        with _Watch(url, proc.pid) as watch:
            r = httpx.post(url + "/v1/messages", content=raw, headers=headers, timeout=300)
        print("950k messages:", watch.summary(len(raw)))
        assert r.status_code == 400 and "100,000" in r.json()["error"]["message"]
        assert max(watch.latencies) < 0.5, watch.summary(len(raw))


def test_large_bodies_in_flight_are_bounded_by_the_budget(mock: Any) -> None:
    """Four 4 MiB requests at once: with a budget of one body they are taken one after the
    other, and the worker grows about as much as for one; with a budget of four it grows
    several times more (the contrast shows the budget is what bounds it)."""
    import concurrent.futures

    import httpx

    raw = _many_messages(12_000, 9)
    assert 3 * 2**20 < len(raw) < 5 * 2**20
    headers = {"x-api-key": "sk-ant-a-key", "content-type": "application/json"}

    def growth(budget: int, requests: int) -> int:
        port, server = _serve(mock.url, {"FERRULE_LARGE_BODY_BUDGET": str(budget)})
        with server as proc:
            url = f"http://127.0.0.1:{port}/v1/messages"

            def post(_: int) -> int:
                return httpx.post(url, content=raw, headers=headers, timeout=300).status_code

            with (
                _Watch(f"http://127.0.0.1:{port}", proc.pid) as watch,
                concurrent.futures.ThreadPoolExecutor(requests) as pool,
            ):
                assert list(pool.map(post, range(requests))) == [200] * requests
            return watch.peak - watch.base

    one = growth(len(raw), 1)
    budgeted = growth(len(raw), 4)
    unbounded = growth(4 * len(raw), 4)
    print(
        f"one: +{one / 2**20:.0f} MiB; four, budget of one: +{budgeted / 2**20:.0f} MiB; "
        f"four, budget of four: +{unbounded / 2**20:.0f} MiB"
    )
    assert budgeted < 1.6 * one < unbounded


# -- item 4: no plain-text 500s -----------------------------------------------------------------


def _nested_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_deeply_nested_tool_schema_is_a_400_on_the_openai_route(proxy: Any, mock: Any) -> None:
    import httpx

    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": _nested_schema(150)}}
        ],
    }
    r = httpx.post(
        proxy.v1 + "/chat/completions", json=body, headers={"authorization": "Bearer sk-ant-k"}
    )
    assert r.status_code == 400, r.text[:300]
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "tools[0].function.parameters" and "128 levels" in error["message"]
    assert mock.requests() == []


@pytest.mark.parametrize("levels", [130, 300, 1000])
def test_deeply_nested_field_is_a_400_on_the_anthropic_route(
    proxy: Any, mock: Any, levels: int
) -> None:
    """Cacheable (temperature 0), so it used to be re-encoded for the cache key: orjson reads
    1,024 levels but writes only 254, and 255-1,024 levels were a plain-text 500."""
    import httpx

    body = {
        "model": MODEL,
        "max_tokens": 16,
        "temperature": 0,
        "messages": [{"role": "user", "content": "hi"}],
    }
    # written by hand: orjson itself refuses to write it
    raw = orjson.dumps(body)[:-1] + b',"extra":' + b"[" * levels + b'"deep"' + b"]" * levels + b"}"
    r = httpx.post(
        proxy.v1 + "/messages",
        content=raw,
        headers={"x-api-key": "sk-ant-k", "content-type": "application/json"},
    )
    assert r.status_code == 400, r.text[:300]
    assert r.json()["type"] == "error" and "128 levels" in r.json()["error"]["message"]
    assert mock.requests() == []


def test_max_tokens_near_2_to_the_64_with_reasoning_is_a_400(proxy: Any, mock: Any) -> None:
    import httpx

    for extra in ({"reasoning_effort": "high"}, {}):
        body = {
            "model": MODEL,
            "max_tokens": 2**64 - 1,
            "messages": [{"role": "user", "content": "hi"}],
            **extra,
        }
        r = httpx.post(
            proxy.v1 + "/chat/completions", json=body, headers={"authorization": "Bearer sk-k"}
        )
        assert r.status_code == 400, r.text[:300]
        assert r.json()["error"]["param"] == "max_tokens"
    assert mock.requests() == []


# -- item 10: identifiers are bounded -----------------------------------------------------------


@pytest.mark.parametrize("model", ["m" * 1_000_000, "m" * 257, "claude\nsonnet", "claude\x00"])
def test_model_names_are_bounded_and_printable(proxy: Any, mock: Any, model: str) -> None:
    import httpx

    chat = httpx.post(
        proxy.v1 + "/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": "Bearer sk-ant-k"},
    )
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "model"
    messages = httpx.post(
        proxy.v1 + "/messages",
        json={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": "sk-ant-k"},
    )
    assert messages.status_code == 400 and messages.json()["type"] == "error"
    assert "'model'" in messages.json()["error"]["message"]
    assert mock.requests() == []


def test_user_ids_are_bounded(proxy: Any, mock: Any) -> None:
    import httpx

    long_id = "u" * 10_000
    chat = httpx.post(
        proxy.v1 + "/chat/completions",
        json={"model": MODEL, "user": long_id, "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": "Bearer sk-ant-k"},
    )
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "user"
    messages = httpx.post(
        proxy.v1 + "/messages",
        json={
            "model": MODEL,
            "max_tokens": 5,
            "metadata": {"user_id": long_id},
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"x-api-key": "sk-ant-k"},
    )
    assert messages.status_code == 400 and "metadata.user_id" in messages.json()["error"]["message"]
    # an ordinary one still goes through
    ok = httpx.post(
        proxy.v1 + "/chat/completions",
        json={"model": MODEL, "user": "user-42", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": "Bearer sk-ant-k"},
    )
    assert ok.status_code == 200
    assert len(mock.requests()) == 1


# -- an unexpected exception: a 500 in the route's format, and the ledger says so ---------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_an_unexpected_exception_is_a_json_500_and_recorded_as_such(
    path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    import asyncio
    import logging

    from ferrule.app import App
    from ferrule.config import load
    from ferrule.exchange import Exchange

    secret = "sk-ant-api03-the-key-in-the-message"

    async def boom(self: Exchange, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"something quoted a header: {secret}")

    # a stage every request runs (the chat route's native request path skips compress)
    monkeypatch.setattr(Exchange, "admit", boom)
    app = App(
        load(env={"FERRULE_DATA_DIR": str(tmp_path), "FERRULE_UPSTREAM_URL": "http://127.0.0.1:9"})
    )
    rows: list[Any] = []
    monkeypatch.setattr(app.recorder, "record", rows.append)
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    with caplog.at_level(logging.ERROR, logger="ferrule"):
        sent = asyncio.run(post(app, path, body, secret))
    assert sent[0]["status"] == 500
    answer = orjson.loads(sent[1]["body"])
    if path == "/v1/messages":
        assert answer["type"] == "error" and answer["error"]["type"] == "api_error"
    else:
        assert answer["error"]["type"] == "api_error"
    assert secret not in str(answer) and "RuntimeError" in caplog.text
    assert secret not in caplog.text  # the exception's text is never logged
    [row] = rows
    assert row.status == 500 and row.outcome == "error"
