"""Issue 11, items 9, 11 and 13: the breaker, per-key 429 back-off, an unreachable upstream, and
``/stats`` periods out of range.

- 11: a 429 is about one key; only upstream-health signals (5xx, 529, connection failures,
  timeouts) may open the breaker, and a key told to wait by a 429 waits without slowing others.
- 13: no upstream reachable: the answer names the cause and the host, the breaker's
  ``retry-after`` is the honest (short) time to its trial, and attempts are counted everywhere
  (``x-ferrule-attempts`` on errors, the ledger, the access log, the retries metric).
- 9: ``/stats?since=1000000d`` is a 400 and ``ferrule stats --since 1000000d`` one line.

The retry policy is Python whatever the kernel backend, so the servers run the python backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from faults import FaultUpstream, fault_upstream, ok, rate_limited, status
from ferrule import stats_cli
from ferrule.app import App
from ferrule.config import Config
from ferrule.errors import ProxyError
from ferrule.procs import free_port
from ferrule.resilience import KeyCooldowns, Resilience, RetryPolicy
from ferrule.upstream import Upstream, describe_failure
from servers import Proxy, start_proxy

MODEL = "claude-sonnet-4-6"
KEY_A = "sk-ant-tenant-a-000000000000000000"
KEY_B = "sk-ant-tenant-b-111111111111111111"
CHAT = "/v1/chat/completions"
QUICK = {
    "FERRULE_RETRY_BASE": "0.01",
    "FERRULE_RETRY_CAP": "0.05",
    "FERRULE_RETRY_AFTER_CAP": "5",
    "FERRULE_FIRST_BYTE_TIMEOUT": "5",
    "FERRULE_CONNECT_TIMEOUT": "3",
    "FERRULE_RESPONSE_CACHE": "off",
}


def chat(proxy: Proxy, key: str, *, timeout: float = 20) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        proxy.v1 + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=timeout,
    )


def messages(proxy: Proxy, key: str) -> httpx.Response:
    body = {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return httpx.post(proxy.v1 + "/messages", json=body, headers=headers, timeout=20)


def code_of(r: httpx.Response) -> str | None:
    err = r.json().get("error")
    return err.get("code") if isinstance(err, dict) else None


def message_of(r: httpx.Response) -> str:
    return str(r.json()["error"]["message"])


def key_of(headers: dict[str, str]) -> str:
    return headers.get("x-api-key", "")


@pytest.fixture
def breaker_rig(tmp_path: Path) -> Iterator[tuple[Proxy, FaultUpstream]]:
    """A proxy whose breaker opens after 2 failed attempts for 1 s."""
    env = {**QUICK, "FERRULE_BREAKER_THRESHOLD": "2", "FERRULE_BREAKER_COOLDOWN": "1"}
    with (
        fault_upstream(default=ok(n=2)) as fu,
        start_proxy("python", fu.url, str(tmp_path / "ferrule.log"), env=env) as proxy,
    ):
        yield proxy, fu


# -- item 11: 429s belong to one key -------------------------------------------------------------


def test_one_keys_429s_never_make_another_keys_request_fail(
    breaker_rig: tuple[Proxy, FaultUpstream],
) -> None:
    proxy, fu = breaker_rig
    # The upstream fails (two 500s): the breaker opens, as it must for upstream health.
    fu.push(500, 500)
    r = chat(proxy, KEY_A)
    assert r.status_code == 503 and code_of(r) == "circuit_open", r.text
    time.sleep(1.3)  # the cooldown passes: the next request is the half-open trial
    # The trial is key A's and gets a 429: the upstream is up, so the breaker must close.
    fu.push(rate_limited(retry_after=120))
    assert chat(proxy, KEY_A).status_code == 429
    r = chat(proxy, KEY_B)
    assert r.status_code == 200, r.text
    # Many 429s for key A in a row (beyond the retry cap: each goes back at once) ...
    for _ in range(12):
        fu.push(rate_limited(retry_after=120))
        a = chat(proxy, KEY_A)
        assert a.status_code == 429 and a.headers["retry-after"] == "120", a.text
    # ... and key B is served every time, by the upstream
    before = fu.attempts
    for _ in range(3):
        b = chat(proxy, KEY_B)
        assert b.status_code == 200 and b.headers["x-ferrule-attempts"] == "1", b.text
    assert fu.attempts == before + 3


def test_5xx_still_opens_the_breaker(breaker_rig: tuple[Proxy, FaultUpstream]) -> None:
    proxy, fu = breaker_rig
    fu.set_default(status(529))
    r = chat(proxy, KEY_A)
    # two attempts (529, 529), then the breaker is open: the third is refused without a call
    assert r.status_code == 503 and code_of(r) == "circuit_open", r.text
    assert r.headers["x-ferrule-attempts"] == "2" and fu.attempts == 2
    assert "HTTP 529" in message_of(r)
    t0 = time.monotonic()
    r = chat(proxy, KEY_B)  # every key fails fast while the upstream is down
    assert r.status_code == 503 and code_of(r) == "circuit_open"
    assert time.monotonic() - t0 < 1.0 and fu.attempts == 2
    assert r.headers["retry-after"] == "1"  # the 1 s cooldown, not more


def test_a_429_retry_after_holds_back_only_that_key(
    breaker_rig: tuple[Proxy, FaultUpstream],
) -> None:
    """Key A gets a 429 asking for 2 s: its other requests wait those 2 s before calling the
    upstream, while key B's go through at once."""
    proxy, fu = breaker_rig
    fu.push(rate_limited(retry_after=2))
    results: dict[str, tuple[httpx.Response, float]] = {}

    def call(name: str, key: str) -> None:
        t0 = time.monotonic()
        r = chat(proxy, key)
        results[name] = (r, time.monotonic() - t0)

    first = threading.Thread(target=call, args=("a1", KEY_A))
    first.start()
    got_429 = fu.wait_for(lambda: next((r for r in fu.records if r.outcome), None), 5.0)
    assert got_429 is not None and got_429.spec.get("code") == 429, got_429
    t_429 = got_429.request_at
    others = [
        threading.Thread(target=call, args=("a2", KEY_A)),
        threading.Thread(target=call, args=("b", KEY_B)),
    ]
    for t in others:
        t.start()
    for t in (first, *others):
        t.join(30)
    for name in ("a1", "a2", "b"):
        assert results[name][0].status_code == 200, (name, results[name][0].text)
    assert results["b"][1] < 1.0, results  # B never waits for A's rate limit
    assert results["a2"][1] >= 1.0, results  # A's second request honoured the retry-after
    # the upstream saw no request of key A during the 2 s it asked for
    a_requests = [r.request_at for r in fu.records if key_of(r.headers) == KEY_A]
    assert all(t == t_429 or t >= t_429 + 1.9 for t in a_requests), (t_429, a_requests)


class _FakeResponse:
    def __init__(self, code: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = code
        self.headers = headers or {}

    async def aclose(self) -> None:
        return None


class _FakeUpstream:
    """Answers from a script: a status, (status, headers), "refused", or "hang" (until
    cancelled)."""

    host = "fake.test"

    def __init__(self, *script: int | str | tuple[int, dict[str, str]]) -> None:
        self.script = list(script)
        self.calls = 0

    async def send(
        self, path: str, body: bytes, headers: list[tuple[str, str]], timeout: float | None = None
    ) -> Any:
        self.calls += 1
        step = self.script.pop(0)
        if step == "hang":
            await asyncio.sleep(3600)
        if step == "refused":
            raise ProxyError(502, "cannot connect to the upstream fake.test: connection refused")
        if isinstance(step, tuple):
            return _FakeResponse(*step)
        assert isinstance(step, int)
        return _FakeResponse(step)


class _Tally:
    attempts = 0


def _headers(key: str) -> list[tuple[str, str]]:
    return [("x-api-key", key), ("content-type", "application/json")]


def test_a_trial_whose_client_went_away_does_not_keep_the_breaker_open() -> None:
    policy = RetryPolicy(max_attempts=1, breaker_threshold=1, breaker_cooldown=0.05)
    res = Resilience(policy, in_flight=lambda: 1)

    async def scenario() -> int:
        up = _FakeUpstream("refused", "hang", 200)
        with pytest.raises(ProxyError):
            await res.send(up, "/v1/messages", b"{}", _headers(KEY_A), _Tally())  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        trial = asyncio.ensure_future(
            res.send(up, "/v1/messages", b"{}", _headers(KEY_A), _Tally())  # type: ignore[arg-type]
        )
        await asyncio.sleep(0.05)
        trial.cancel()  # the trial's client disconnected before the upstream answered
        with pytest.raises(asyncio.CancelledError):
            await trial
        resp = await res.send(up, "/v1/messages", b"{}", _headers(KEY_B), _Tally())  # type: ignore[arg-type]
        return int(resp.status_code)

    assert asyncio.run(scenario()) == 200


def test_key_cooldowns_are_bounded_and_never_hold_a_key() -> None:
    cool = KeyCooldowns(limit=8)
    for i in range(20):
        cool.cool(f"id{i}", 60)
    assert len(cool.until) == 8 and "id19" in cool.until and "id0" not in cool.until
    res = Resilience(RetryPolicy(max_attempts=1), in_flight=lambda: 1)
    up = _FakeUpstream((429, {"retry-after": "3"}), 200)
    tally = _Tally()

    async def scenario() -> tuple[int, int, float]:
        resp = await res.send(up, "/v1/messages", b"{}", _headers(KEY_A), tally)  # type: ignore[arg-type]
        t0 = time.monotonic()
        other = await res.send(up, "/v1/messages", b"{}", _headers(KEY_B), _Tally())  # type: ignore[arg-type]
        return resp.status_code, other.status_code, time.monotonic() - t0

    first, other, elapsed = asyncio.run(scenario())
    assert (first, other) == (429, 200) and elapsed < 0.5 and tally.attempts == 1
    # key A cools down for 3 s, remembered by a hash: the key itself is nowhere
    assert len(res.cooldowns.until) == 1
    held = repr(res.cooldowns.until)
    assert KEY_A not in held and "tenant-a" not in held
    assert 2 < next(iter(res.cooldowns.until.values())) - time.monotonic() <= 3


# -- item 13: no upstream reachable ------------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _access_lines(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"logger":"ferrule.access"' in line:
            out.append(json.loads(line))
    return out


def test_refused_upstream_names_the_cause_counts_attempts_and_retry_after_is_short(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there: connections are refused
    log = tmp_path / "ferrule.log"
    env = {**QUICK, "FERRULE_DATA_DIR": str(tmp_path / "data"), "FERRULE_ACCESS_LOG": "json"}
    with start_proxy("python", f"http://127.0.0.1:{port}", str(log), env=env) as proxy:
        r1 = chat(proxy, KEY_A)
        assert r1.status_code == 502, r1.text
        assert code_of(r1) == "upstream_connection_refused"
        assert (
            message_of(r1) == f"cannot connect to the upstream 127.0.0.1:{port}: connection refused"
        )
        assert r1.headers["x-ferrule-attempts"] == "3"
        # attempts 4 and 5 fail too: the breaker (5 failures) opens before the third
        r2 = chat(proxy, KEY_A)
        assert r2.status_code == 503 and code_of(r2) == "circuit_open", r2.text
        assert r2.headers["x-ferrule-attempts"] == "2"
        t0 = time.monotonic()
        r3 = messages(proxy, KEY_B)  # fails fast, in Anthropic's shape, naming the cause
        assert time.monotonic() - t0 < 1.0
        assert r3.status_code == 503 and r3.json()["type"] == "error"
        err = r3.json()["error"]
        assert err["type"] == "overloaded_error" and "connection refused" in err["message"]
        assert f"127.0.0.1:{port}" in err["message"]
        # honest and short: the seconds until the trial, within the 5 s default cooldown
        assert 1 <= int(r3.headers["retry-after"]) <= 5, r3.headers
        assert "x-ferrule-attempts" not in r3.headers  # no upstream attempt was made
        # the retries metric counts the retries of failed requests: 2 + 1
        text = httpx.get(proxy.url + "/metrics", timeout=10).text
        assert _metric(text, "ferrule_retries_total", route=CHAT) == 3, text
        # the ledger has the true attempts (GET /stats sums attempts - 1)
        deadline = time.monotonic() + 10
        while True:
            stats = httpx.get(proxy.url + "/stats?since=1h&by=route", timeout=10).json()
            if stats["totals"]["requests"] >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert stats["totals"]["requests"] == 3 and stats["totals"]["retries"] == 3, stats
    # the access log says so too, and the server log names the cause once (rate-limited)
    lines = _access_lines(log)
    assert sorted(x["attempts"] for x in lines if x["route"] == CHAT) == [2, 3], lines
    text = log.read_text(errors="replace")
    assert text.count("connection refused") >= 1
    warnings = [ln for ln in text.splitlines() if "cannot connect to the upstream" in ln]
    assert len(warnings) == 1, warnings  # five refused attempts, one line
    assert KEY_A not in text and KEY_B not in text


def test_unresolvable_upstream_says_dns_on_both_routes(tmp_path: Path) -> None:
    log = tmp_path / "ferrule.log"
    env = {**QUICK, "FERRULE_BREAKER_THRESHOLD": "1000"}
    upstream = "http://nonexistent.invalid:8080"
    with start_proxy("python", upstream, str(log), env=env) as proxy:
        r = chat(proxy, KEY_A)
        assert r.status_code == 502 and code_of(r) == "upstream_dns_error", r.text
        assert message_of(r).startswith(
            "cannot connect to the upstream nonexistent.invalid:8080: DNS resolution failed ("
        )
        assert r.headers["x-ferrule-attempts"] == "3"
        r = messages(proxy, KEY_A)
        assert r.status_code == 502 and r.json()["type"] == "error"
        assert "DNS resolution failed" in r.json()["error"]["message"]
        assert r.headers["x-ferrule-attempts"] == "3"
    text = log.read_text(errors="replace")
    assert [ln for ln in text.splitlines() if "DNS resolution failed" in ln][:1], text[-2000:]
    assert KEY_A not in text


def test_tls_to_a_plain_http_port_says_tls() -> None:
    """``https://`` to a server that answers in plain HTTP: the cause is the TLS handshake."""

    async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the ClientHello
        writer.write(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> tuple[int, ProxyError]:
        server = await asyncio.start_server(plain_http, "127.0.0.1", 0)
        port = int(server.sockets[0].getsockname()[1])
        up = Upstream(Config(upstream_url=f"https://127.0.0.1:{port}", connect_timeout=5))
        try:
            with pytest.raises(ProxyError) as caught:
                await up.send("/v1/messages", b"{}", _headers(KEY_A))
        finally:
            await up.aclose()
            server.close()
        return port, caught.value

    port, err = asyncio.run(scenario())
    assert err.status == 502 and err.code == "upstream_tls_error", err.message
    assert err.message.startswith(f"cannot connect to the upstream 127.0.0.1:{port}: TLS ")


def test_every_cause_has_words_and_the_host() -> None:
    host = "api.example.test"
    conn_key = aiohttp.client_reqrep.ConnectionKey(host, 443, True, True, None, None, None)
    cases = [
        (aiohttp.ConnectionTimeoutError("x"), 504, "timed out after 7 s"),
        (asyncio.TimeoutError(), 504, "did not answer in time"),
        (aiohttp.ClientConnectorError(conn_key, ConnectionRefusedError(111, "x")), 502, "refused"),
        (
            aiohttp.ClientConnectorDNSError(conn_key, OSError(-2, "Name or service not known")),
            502,
            "DNS resolution failed (Name or service not known)",
        ),
        (aiohttp.ClientConnectorError(conn_key, TimeoutError()), 504, "timed out after 7 s"),
        (aiohttp.ServerDisconnectedError(), 502, "closed the connection"),
    ]
    for exc, want_status, words in cases:
        got_status, message, code = describe_failure(exc, host, 7)
        assert got_status == want_status and words in message and host in message, message
        assert code.startswith("upstream_")


def test_the_upstream_host_shown_never_includes_credentials() -> None:
    up = Upstream(Config(upstream_url="https://user:s3cret@api.example.test:8443/base"))
    assert up.host == "api.example.test:8443"


# -- item 9: /stats periods out of range ---------------------------------------------------------


def _asgi_get(app: App, path: str, query: str) -> tuple[int, dict[str, str], bytes]:
    async def run() -> tuple[int, dict[str, str], bytes]:
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": query.encode(),
            "headers": [],
        }
        await app(scope, receive, send)
        start = sent[0]
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])

    return asyncio.run(run())


@pytest.mark.parametrize(
    "query",
    [
        "since=1000000d",
        "since=99999999999999999999w",
        "since=3000000w",
        "until=99999999999999999999",
        "since=" + "9" * 400 + "d",
    ],
)
def test_stats_period_out_of_range_is_a_400(tmp_path: Path, query: str) -> None:
    app = App(Config(data_dir=str(tmp_path)))
    code, _, body = _asgi_get(app, "/stats", query)
    assert code == 400, body[:300]
    err = orjson.loads(body)["error"]
    assert err["type"] == "invalid_request_error" and "out of range" in err["message"]
    assert len(err["message"]) < 200  # a huge value is not echoed whole


def test_stats_far_but_valid_periods_still_answer(tmp_path: Path) -> None:
    app = App(Config(data_dir=str(tmp_path)))
    code, _, body = _asgi_get(app, "/stats", "since=0001-01-01&until=9999-12-31")
    assert code == 200, body[:300]
    data = orjson.loads(body)
    assert data["since"] == "0001-01-01T00:00:00Z" and data["until"] == "9999-12-31T23:59:59Z"


@pytest.mark.parametrize("args", [["--since", "1000000d"], ["--until", "99999999999999999999"]])
def test_stats_cli_period_out_of_range_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    parser = argparse.ArgumentParser()
    stats_cli.add_arguments(parser)
    code = stats_cli.run(parser.parse_args([*args, "--data-dir", str(tmp_path)]))
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("ferrule stats: "), err
    assert "out of range" in err and "Traceback" not in err
    assert re.search(r"0001-01-01 to 9999-12-31", err)
