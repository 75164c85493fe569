"""The response cache and the prompt-cache breakpoints, end to end: real ``ferrule serve``
processes (Granian) in front of the simulated Anthropic upstream, on both backends.

What is proved here (issue 5): a repeated deterministic request is answered without an upstream
call, as JSON or as a valid stream whatever form stored it, with the same usage; the policy
(temperature, ``x-ferrule-cache``, ``Cache-Control``); tenant isolation; nothing broken is ever
stored (errors, truncated, failed and cancelled streams); TTL expiry; sharing across Granian
workers through SQLite and Redis, and Redis dying mid-run; the Anthropic route; and the
breakpoints Ferrule places (at most 4, on the system and the newest turn, none below the minimum,
the client's own kept) with the simulated prompt cache reading them on the next turn.

The number of upstream calls is read from the mock's request log (``/_mock/requests``, reset
before each test). Every test uses prompts with a fresh nonce: the session's proxies keep their
response cache from test to test. Hit latency is not asserted here (see ``benches/``)."""

from __future__ import annotations

import re
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from openai.types.chat import ChatCompletion
from prometheus_client.multiprocess import MultiProcessCollector

from redis_server import RedisServer, needs_redis, redis_server_fixture  # noqa: F401
from servers import TEST_KEY, MockUpstream, Proxy, start_proxy
from sse_client import check_stream, error_of, text_of

MODEL = "claude-sonnet-4-6"
OTHER_KEY = "sk-ant-test-1111111111111111"
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}
HEX64 = re.compile(r"[0-9a-f]{64}")


# -- helpers ------------------------------------------------------------------------------------


def nonce() -> str:
    return uuid.uuid4().hex[:12]


def ask(text: str = "Tell me about caches", **fields: Any) -> dict[str, Any]:
    """A deterministic (temperature 0) chat request with a prompt no other test sends."""
    body: dict[str, Any] = {
        "model": MODEL,
        "temperature": 0,
        "max_tokens": 80,
        "messages": [{"role": "user", "content": f"{text} (nonce {nonce()})"}],
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def chat(
    proxy: Proxy | str, body: dict[str, Any], *, key: str = TEST_KEY, **headers: str
) -> httpx.Response:
    """One POST /v1/chat/completions over a fresh connection."""
    base = proxy if isinstance(proxy, str) else proxy.v1
    hdrs = {
        "authorization": f"Bearer {key}",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    return httpx.post(base + "/chat/completions", json=body, headers=hdrs, timeout=30)


def messages(proxy: Proxy, body: dict[str, Any], **headers: str) -> httpx.Response:
    hdrs = {"x-api-key": TEST_KEY, **ANTHROPIC_HEADERS, **headers}
    return httpx.post(proxy.v1 + "/messages", json=body, headers=hdrs, timeout=30)


def upstream_calls(mock: MockUpstream) -> list[dict[str, Any]]:
    """The POST /v1/messages the mock received since its last reset."""
    return [r for r in mock.requests() if r["method"] == "POST" and r["path"] == "/v1/messages"]


def content(resp: httpx.Response) -> str:
    answer = ChatCompletion.model_validate(resp.json())
    text = answer.choices[0].message.content
    assert text
    return text


def usage(resp: httpx.Response) -> dict[str, Any]:
    u: dict[str, Any] = resp.json()["usage"]
    return u


def stream_text_and_usage(resp: httpx.Response) -> tuple[str, dict[str, Any]]:
    """Validate a complete OpenAI stream asked with include_usage; its text and usage."""
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    chunks = check_stream(resp.content, expect_usage=True)
    assert chunks[-1].usage is not None
    return text_of(chunks), chunks[-1].usage.model_dump(exclude_none=True)


def same_usage(json_usage: dict[str, Any], stream_usage: dict[str, Any]) -> None:
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert json_usage[name] == stream_usage[name], (json_usage, stream_usage)
    assert (
        json_usage["prompt_tokens_details"]["cached_tokens"]
        == stream_usage["prompt_tokens_details"]["cached_tokens"]
    )


def wait_for(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def requests_per_worker(metrics_dir: Path, total: int) -> dict[int, float]:
    """``ferrule_requests_total`` by worker pid, from the workers' snapshot files (one
    ``counter_<pid>.db`` per Granian worker, prometheus_client's multiprocess format): proof of
    which workers served requests. A worker writes its snapshot about once a second: waits (up
    to 10 s) until the files count ``total`` requests."""
    deadline = time.monotonic() + 10
    while True:
        out = _requests_per_worker(metrics_dir)
        if sum(out.values()) >= total or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def _requests_per_worker(metrics_dir: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_")[-1])
        families = MultiProcessCollector.merge([str(path)], accumulate=True)  # type: ignore[no-untyped-call]
        out[pid] = sum(
            s.value
            for fam in families
            if fam.name == "ferrule_requests"
            for s in fam.samples
            if s.name == "ferrule_requests_total"
        )
    return out


def backend_for_custom_proxies() -> str:
    """Custom proxies (a config of their own) run once, on the native backend when built."""
    from conftest import NATIVE

    return "rust" if NATIVE is not None else "python"


# -- hits, policy, tenants (the session proxies, both backends) -----------------------------------


def test_repeat_is_a_hit_without_upstream_call_as_json_and_stream(
    proxy: Proxy, mock: MockUpstream
) -> None:
    body = ask()
    first = chat(proxy, body)
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    assert len(upstream_calls(mock)) == 1
    second = chat(proxy, body)
    assert second.status_code == 200 and second.headers["x-cache"] == "HIT"
    assert len(upstream_calls(mock)) == 1  # answered by Ferrule alone
    assert content(second) == content(first)
    assert usage(second) == usage(first)  # the original numbers, honestly reported
    assert second.headers["x-request-id"] and "x-ferrule-attempts" not in second.headers
    # the cache key (a sha256) is never exposed
    assert not [v for r in (first, second) for v in r.headers.values() if HEX64.search(v)]
    # the JSON-stored answer serves a stream request: a valid OpenAI stream, same text, same usage
    streamed = chat(proxy, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert streamed.headers["x-cache"] == "HIT"
    text, stream_usage = stream_text_and_usage(streamed)
    assert text == content(first)
    same_usage(usage(first), stream_usage)
    plain_stream = chat(proxy, {**body, "stream": True})
    assert plain_stream.headers["x-cache"] == "HIT"
    assert text_of(check_stream(plain_stream.content)) == text
    assert len(upstream_calls(mock)) == 1


def test_stream_stored_answer_serves_stream_and_json(proxy: Proxy, mock: MockUpstream) -> None:
    body = ask("Explain streams", stream=True, stream_options={"include_usage": True})
    first = chat(proxy, body)
    assert first.headers["x-cache"] == "MISS"
    text, first_usage = stream_text_and_usage(first)
    again = chat(proxy, body)
    assert again.headers["x-cache"] == "HIT"
    assert stream_text_and_usage(again) == (text, first_usage)
    plain = chat(proxy, {k: v for k, v in body.items() if k not in ("stream", "stream_options")})
    assert plain.status_code == 200 and plain.headers["x-cache"] == "HIT"
    assert content(plain) == text
    same_usage(usage(plain), first_usage)
    assert len(upstream_calls(mock)) == 1


def test_stream_hit_through_the_openai_sdk(proxy: Proxy, mock: MockUpstream) -> None:
    import openai

    client = openai.OpenAI(base_url=proxy.v1, api_key=TEST_KEY, max_retries=0)
    body = ask("SDK replay")
    first = client.chat.completions.with_raw_response.create(**body)
    assert first.headers["x-cache"] == "MISS"
    expected = first.parse().choices[0].message.content
    stream = client.chat.completions.create(**body, stream=True)
    assert stream.response.headers["x-cache"] == "HIT"
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == expected
    assert len(upstream_calls(mock)) == 1


@pytest.mark.parametrize("temperature", [None, 0.7], ids=["no-temperature", "temperature-0.7"])
def test_non_deterministic_requests_bypass(
    proxy: Proxy, mock: MockUpstream, temperature: float | None
) -> None:
    body = ask(temperature=temperature)
    for _ in range(2):
        resp = chat(proxy, body)
        assert resp.status_code == 200 and resp.headers["x-cache"] == "BYPASS"
    assert len(upstream_calls(mock)) == 2


def test_x_ferrule_cache_opts_in_and_out(proxy: Proxy, mock: MockUpstream) -> None:
    # on: a non-deterministic request is cached
    warm = ask("Opt in", temperature=0.7)
    assert chat(proxy, warm, x_ferrule_cache="on").headers["x-cache"] == "MISS"
    assert chat(proxy, warm, x_ferrule_cache="on").headers["x-cache"] == "HIT"
    assert len(upstream_calls(mock)) == 1
    assert chat(proxy, warm).headers["x-cache"] == "BYPASS"  # without the header: not eligible
    assert len(upstream_calls(mock)) == 2
    # off: a deterministic request neither reads a stored answer nor stores one
    cold = ask("Opt out")
    assert chat(proxy, cold).headers["x-cache"] == "MISS"
    assert chat(proxy, cold, x_ferrule_cache="off").headers["x-cache"] == "BYPASS"
    assert len(upstream_calls(mock)) == 4
    assert chat(proxy, cold).headers["x-cache"] == "HIT"  # the stored entry is still there
    never = ask("Never stored")
    assert chat(proxy, never, x_ferrule_cache="off").headers["x-cache"] == "BYPASS"
    assert chat(proxy, never).headers["x-cache"] == "MISS"
    assert len(upstream_calls(mock)) == 6


def test_cache_control_no_store_and_no_cache(proxy: Proxy, mock: MockUpstream) -> None:
    # no-store: neither read nor written
    body = ask("No store")
    assert chat(proxy, body, cache_control="no-store").headers["x-cache"] == "BYPASS"
    assert chat(proxy, body).headers["x-cache"] == "MISS"  # nothing was stored
    assert chat(proxy, body, cache_control="no-store").headers["x-cache"] == "BYPASS"
    assert len(upstream_calls(mock)) == 3  # and a stored answer is not read either
    # no-cache: refetch (MISS, upstream call), then store the fresh answer
    body = ask("No cache")
    assert chat(proxy, body).headers["x-cache"] == "MISS"
    refreshed = chat(proxy, body, cache_control="no-cache")
    assert refreshed.status_code == 200 and refreshed.headers["x-cache"] == "MISS"
    assert len(upstream_calls(mock)) == 5
    assert chat(proxy, body).headers["x-cache"] == "HIT"
    fresh = ask("No cache first")
    assert chat(proxy, fresh, cache_control="no-cache").headers["x-cache"] == "MISS"
    assert chat(proxy, fresh).headers["x-cache"] == "HIT"  # stored by the no-cache request
    assert len(upstream_calls(mock)) == 6


def test_tenants_never_share_answers(proxy: Proxy, mock: MockUpstream) -> None:
    body = ask("Same body, two keys")
    assert chat(proxy, body, key=TEST_KEY).headers["x-cache"] == "MISS"
    assert chat(proxy, body, key=OTHER_KEY).headers["x-cache"] == "MISS"
    calls = upstream_calls(mock)
    assert [c["headers"]["x-api-key"] for c in calls] == [TEST_KEY, OTHER_KEY]
    assert chat(proxy, body, key=TEST_KEY).headers["x-cache"] == "HIT"
    assert chat(proxy, body, key=OTHER_KEY).headers["x-cache"] == "HIT"
    assert len(upstream_calls(mock)) == 2


# -- nothing broken is stored ---------------------------------------------------------------------


def test_upstream_errors_are_not_stored(proxy: Proxy, mock: MockUpstream) -> None:
    body = ask("Errors first")
    mock.script(["error=500"] * 3)  # as many as the proxy's attempts (max_attempts 3)
    failed = chat(proxy, body)
    assert failed.status_code == 500, failed.text
    assert failed.headers["x-ferrule-attempts"] == "3"
    assert len(upstream_calls(mock)) == 3
    mock.reset()
    ok = chat(proxy, body)
    assert ok.status_code == 200 and ok.headers["x-cache"] == "MISS"
    assert chat(proxy, body).headers["x-cache"] == "HIT"
    assert len(upstream_calls(mock)) == 1
    # a JSON answer cut in half upstream (a 502 here) is not stored either
    body = ask("Cut in half")
    mock.script(["truncate"])
    assert chat(proxy, body).status_code == 502
    assert chat(proxy, body).headers["x-cache"] == "MISS"
    assert chat(proxy, body).headers["x-cache"] == "HIT"
    assert len(upstream_calls(mock)) == 3


@pytest.mark.parametrize("fault", ["truncate", "midstream_error"])
def test_broken_streams_are_not_stored(proxy: Proxy, mock: MockUpstream, fault: str) -> None:
    body = ask("Broken stream", stream=True)
    mock.script([fault])
    broken = chat(proxy, body)
    assert broken.status_code == 200 and broken.headers["x-cache"] == "MISS"
    assert error_of(broken.content)  # ends with an error, never [DONE]
    healthy = chat(proxy, body)
    assert healthy.headers["x-cache"] == "MISS"
    text = text_of(check_stream(healthy.content))
    assert len(upstream_calls(mock)) == 2
    replay = chat(proxy, body)
    assert replay.headers["x-cache"] == "HIT"
    assert text_of(check_stream(replay.content)) == text
    assert len(upstream_calls(mock)) == 2


def read_a_little_then_close(url: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    """Start a stream, read its first two events, and hang up."""
    got = b""
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", url, json=body, headers=headers) as r,
    ):
        assert r.status_code == 200
        for chunk in r.iter_raw():
            got += chunk
            if got.count(b"\n\n") >= 2:
                break
    return got


def test_cancelled_stream_is_not_stored(proxy: Proxy, mock: MockUpstream) -> None:
    body = ask("Cancelled", stream=True)
    mock.script(["delay=100"])  # about 8 s of stream for the first request only
    read_a_little_then_close(
        proxy.v1 + "/chat/completions", body, {"authorization": f"Bearer {TEST_KEY}"}
    )
    wait_for(lambda: mock.stats()["streams_cancelled"] >= 1, what="the upstream stream cancelled")
    again = chat(proxy, body)
    assert again.headers["x-cache"] == "MISS"
    check_stream(again.content)
    assert len(upstream_calls(mock)) == 2
    assert chat(proxy, body).headers["x-cache"] == "HIT"


# -- the Anthropic route ------------------------------------------------------------------------------


def test_messages_route_hits_json_and_stream(proxy: Proxy, mock: MockUpstream) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 80,
        "temperature": 0,
        "messages": [{"role": "user", "content": f"Anthropic route {nonce()}"}],
    }
    first = messages(proxy, body)
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    second = messages(proxy, body)
    assert second.headers["x-cache"] == "HIT"
    assert second.json() == first.json()  # the stored message, id and usage included
    anthropic.types.Message.model_validate(second.json())
    streamed = messages(proxy, {**body, "stream": True})
    assert streamed.headers["x-cache"] == "HIT"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert b"event: message_stop" in streamed.content
    assert len(upstream_calls(mock)) == 1
    # a truncated stream is not stored on this route either
    cut = {**body, "stream": True, "messages": [{"role": "user", "content": f"cut {nonce()}"}]}
    mock.script(["truncate"])
    assert b"message_stop" not in messages(proxy, cut).content
    assert messages(proxy, cut).headers["x-cache"] == "MISS"
    assert messages(proxy, cut).headers["x-cache"] == "HIT"
    assert len(upstream_calls(mock)) == 3


def test_messages_stream_replay_parses_with_the_anthropic_sdk(
    proxy: Proxy, mock: MockUpstream
) -> None:
    client = anthropic.Anthropic(base_url=proxy.url, api_key=TEST_KEY, max_retries=0, timeout=30)
    # The SDK speaks anthropic-version 2026-10-21, where temperature is not a field: opt in.
    kw: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 80,
        "messages": [{"role": "user", "content": f"SDK stream {nonce()}"}],
        "extra_headers": {"x-ferrule-cache": "on"},
    }
    finals = []
    for expected in ("MISS", "HIT"):
        with client.messages.stream(**kw) as stream:
            assert stream.response.headers["x-cache"] == expected
            finals.append(stream.get_final_message())
    live, replayed = finals
    text = [b.text for b in live.content if b.type == "text"]
    assert text and [b.text for b in replayed.content if b.type == "text"] == text
    assert replayed.usage == live.usage and replayed.stop_reason == live.stop_reason == "end_turn"
    raw = client.messages.with_raw_response.create(**kw)  # the stream-stored answer as JSON
    assert raw.headers["x-cache"] == "HIT"
    assert [b.text for b in raw.parse().content if b.type == "text"] == text
    assert len(upstream_calls(mock)) == 1


# -- custom proxies: TTL, workers, Redis ----------------------------------------------------------


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_ttl_expiry(mock: MockUpstream, tmp_path: Path, store: str) -> None:
    # 2 s rather than 1: on a loaded machine a second can pass between two requests
    env = {"FERRULE_RESPONSE_CACHE_TTL": "2", "FERRULE_RESPONSE_CACHE": store}
    log = str(tmp_path / "ferrule.log")
    with start_proxy(backend_for_custom_proxies(), mock.url, log, env=env) as p:
        body = ask("Short-lived")
        assert chat(p, body).headers["x-cache"] == "MISS"
        assert chat(p, body).headers["x-cache"] == "HIT"
        time.sleep(2.3)
        assert chat(p, body).headers["x-cache"] == "MISS"
        assert chat(p, body).headers["x-cache"] == "HIT"
    assert len(upstream_calls(mock)) == 2


def repeat(url: str, body: dict[str, Any], n: int) -> list[httpx.Response]:
    """``n`` identical requests one after the other, each on a fresh connection: the Granian
    workers share them out (``requests_per_worker`` shows it)."""
    return [chat(url, body) for _ in range(n)]


@pytest.fixture
def two_workers_sqlite(mock: MockUpstream, tmp_path: Path) -> Iterator[tuple[Proxy, Path]]:
    """``ferrule serve --workers 2`` with the default settings (the store is then SQLite)."""
    metrics_dir = tmp_path / "metrics"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    log = str(tmp_path / "ferrule.log")
    with start_proxy(backend_for_custom_proxies(), mock.url, log, "--workers", "2", env=env) as p:
        yield p, metrics_dir


def test_workers_share_the_default_store(
    two_workers_sqlite: tuple[Proxy, Path], mock: MockUpstream
) -> None:
    p, metrics_dir = two_workers_sqlite
    body = ask("Shared by workers")
    assert chat(p, body).headers["x-cache"] == "MISS"
    results = repeat(p.v1, body, 30)
    assert [r.status_code for r in results] == [200] * 30
    assert {r.headers["x-cache"] for r in results} == {"HIT"}
    assert len({content(r) for r in results}) == 1
    assert len(upstream_calls(mock)) == 1
    served = requests_per_worker(metrics_dir, 31)
    assert len(served) == 2 and all(n > 0 for n in served.values()), served  # both took part


def test_completed_answers_are_stored_and_recorded_complete(
    two_workers_sqlite: tuple[Proxy, Path], mock: MockUpstream
) -> None:
    """Every fully delivered MISS is stored, whatever the client does once it has the answer.

    Granian reports ``http.disconnect`` as soon as a response is complete; the store write (an
    awaited SQLite or Redis call) after the last byte must not be cancelled by it."""
    url = two_workers_sqlite[0].v1 + "/chat/completions"
    with httpx.Client(timeout=30, headers={"authorization": f"Bearer {TEST_KEY}"}) as client:
        outcomes = []
        for i in range(30):
            body = ask(f"pair {i}", stream=i % 2 == 1)
            first = client.post(url, json=body)
            second = client.post(url, json=body)
            assert first.status_code == second.status_code == 200
            outcomes.append((first.headers["x-cache"], second.headers["x-cache"]))
    # the access log (JSON lines in the server's log) has one line per request, as the ledger
    log = Path(two_workers_sqlite[0].log).read_text()
    cancelled = [line for line in log.splitlines() if '"outcome":"client_cancelled"' in line]
    not_stored = [i for i, o in enumerate(outcomes) if o != ("MISS", "HIT")]
    assert not cancelled, (
        f"{len(cancelled)} delivered answers recorded as cancelled: {cancelled[0]}"
    )
    assert not not_stored, f"answers not stored for requests {not_stored}: {outcomes}"
    assert len(upstream_calls(mock)) == 30


@needs_redis
def test_redis_shared_by_workers_and_killed_mid_run(
    redis_server: RedisServer, mock: MockUpstream, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    env = {"FERRULE_REDIS_URL": redis_server.url, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    log = str(tmp_path / "ferrule.log")
    with start_proxy(backend_for_custom_proxies(), mock.url, log, "--workers", "2", env=env) as p:
        for _ in range(6):  # fresh connections: both workers answer, and connect to Redis
            ready = httpx.get(p.url + "/health/readiness", timeout=5)
            assert ready.status_code == 200 and ready.json()["checks"]["redis_reachable"] is True
        body = ask("Shared through Redis")
        assert chat(p, body).headers["x-cache"] == "MISS"
        results = repeat(p.v1, body, 30)
        assert {r.headers["x-cache"] for r in results} == {"HIT"}
        assert len(upstream_calls(mock)) == 1
        served = requests_per_worker(metrics_dir, 31)
        assert len(served) == 2 and all(n > 0 for n in served.values()), served

        redis_server.kill()
        timings = []
        for i in range(12):
            start = time.monotonic()
            resp = chat(p, body if i % 2 else ask("Redis is down"))
            timings.append(time.monotonic() - start)
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-cache"] == "BYPASS"  # served, and says the cache took no part
        assert max(timings) < 1.5 and statistics.median(timings) < 0.5, timings
        # still ready (every replica shares Redis: all of them unready would leave a balancer
        # nowhere to send), and says what is missing
        degraded = httpx.get(p.url + "/health/readiness", timeout=5)
        assert degraded.status_code == 200, degraded.text
        assert degraded.json()["status"] == "degraded"
        assert degraded.json()["checks"]["redis_reachable"] is False

        redis_server.start()  # same port, empty: the stores reconnect by themselves

        def cache_works_again() -> bool:
            fresh = ask("Redis is back")
            return (chat(p, fresh).headers["x-cache"], chat(p, fresh).headers["x-cache"]) == (
                "MISS",
                "HIT",
            )

        wait_for(cache_works_again, timeout=10, what="the cache to come back with Redis")
        assert httpx.get(p.url + "/health/readiness", timeout=5).status_code == 200


# -- prompt-cache breakpoints --------------------------------------------------------------------


def _paragraph(topic: str, sentences: int) -> str:
    return " ".join(
        f"Sentence {i} about {topic} adds detail to a long and stable prompt."
        for i in range(sentences)
    )


def markers(body: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(area, index, block index) of every cache_control in an Anthropic request body."""
    found: list[tuple[str, int, int]] = []
    for i, tool in enumerate(body.get("tools") or []):
        if "cache_control" in tool:
            found.append(("tools", i, -1))
    system = body.get("system")
    for i, block in enumerate(system if isinstance(system, list) else []):
        if "cache_control" in block:
            found.append(("system", i, -1))
    for i, message in enumerate(body["messages"]):
        blocks = message["content"] if isinstance(message["content"], list) else []
        for j, block in enumerate(blocks):
            if "cache_control" in block:
                found.append(("messages", i, j))
    if "cache_control" in body:
        found.append(("top", -1, -1))
    return found


def test_breakpoints_on_a_long_openai_conversation(proxy: Proxy, mock: MockUpstream) -> None:
    system = f"You are a careful agent ({nonce()}). " + _paragraph("the rules", 80)  # ~5.6 KB
    convo: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for turn in range(3):
        convo.append({"role": "user", "content": _paragraph(f"question {turn}", 20)})
        convo.append({"role": "assistant", "content": _paragraph(f"answer {turn}", 20)})
    convo.append({"role": "user", "content": "And now the newest question?"})
    first = chat(proxy, {"model": MODEL, "messages": convo})
    assert first.status_code == 200 and first.headers["x-cache"] == "BYPASS"
    [sent] = upstream_calls(mock)
    body = sent["body"]
    found = markers(body)
    assert 1 <= len(found) <= 4, found
    assert ("system", len(body["system"]) - 1, -1) in found
    newest = len(body["messages"]) - 1
    assert body["messages"][newest]["role"] == "user"
    assert ("messages", newest, len(body["messages"][newest]["content"]) - 1) in found
    # the simulated prompt cache wrote the whole prompt on the first turn...
    u1 = usage(first)
    assert u1["prompt_tokens_details"]["cached_tokens"] == 0
    assert u1["cache_creation_input_tokens"] == u1["prompt_tokens"]
    # ...and the next turn reads all of it back
    convo += [
        {"role": "assistant", "content": content(first)},
        {"role": "user", "content": "One more question, please."},
    ]
    second = chat(proxy, {"model": MODEL, "messages": convo})
    u2 = usage(second)
    assert u2["prompt_tokens_details"]["cached_tokens"] == u1["prompt_tokens"] > 0
    assert u2["prompt_tokens"] == (
        u2["prompt_tokens_details"]["cached_tokens"] + u2["cache_creation_input_tokens"]
    )
    assert len(markers(upstream_calls(mock)[-1]["body"])) <= 4
    # a short request stays below the model's minimum: no marker at all
    chat(proxy, ask("short", temperature=None))
    assert markers(upstream_calls(mock)[-1]["body"]) == []


def test_client_breakpoints_on_messages_are_kept(proxy: Proxy, mock: MockUpstream) -> None:
    eph = {"type": "ephemeral"}
    hour = {"type": "ephemeral", "ttl": "1h"}
    long_text = _paragraph(f"context {nonce()}", 60)
    tool = {
        "name": "lookup",
        "description": "Look something up",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    # four client breakpoints, 1h ones first as the API requires
    body = {
        "model": MODEL,
        "max_tokens": 50,
        "tools": [{**tool, "cache_control": hour}],
        "system": [
            {"type": "text", "text": long_text, "cache_control": hour},
            {"type": "text", "text": "Be brief.", "cache_control": eph},
        ],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": long_text, "cache_control": eph}],
            },
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "A new question with no marker."},
        ],
    }
    resp = messages(proxy, body)
    assert resp.status_code == 200, resp.text
    [sent] = upstream_calls(mock)
    assert sent["body"] == body  # exactly the client's four, nothing added or moved
    assert len(markers(sent["body"])) == 4
    # one client breakpoint: kept as is, Ferrule adds its own up to 4 in all
    one = {**body, "tools": [tool]}
    one["system"] = [{"type": "text", "text": long_text, "cache_control": hour}]
    one["messages"] = [
        {"role": "user", "content": long_text},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Newest question."},
    ]
    assert messages(proxy, one).status_code == 200
    forwarded = upstream_calls(mock)[-1]["body"]
    found = markers(forwarded)
    assert ("system", 0, -1) in found and 2 <= len(found) <= 4, found
    assert forwarded["system"][0]["cache_control"] == hour
    assert ("messages", 2, 0) in found  # the newest turn
