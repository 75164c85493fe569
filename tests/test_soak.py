"""CI-sized soak (row C7, and C3's error-path leaks, of ../shared/reference/reliability.md).

About two minutes of mixed traffic from 50 concurrent clients through a real ``ferrule serve``
(native backend, the pure-Python one when the extension is not built) in front of the
fault-injecting upstream: good streams and JSON answers, 429 and 529 then success (retried),
resets before the headers (retried) and mid-stream, truncated streams, and clients that hang up
mid-stream. Every 10 s the proxy worker's RSS, open file descriptors, threads and upstream
connections are sampled with psutil.

Asserts: every request is answered, and answered as its fault says (no error that was not
injected); the upstream saw every hang-up, and no upstream exchange is left open; the RSS grows
less than 5 MiB from the end of the warm-up to the end (least-squares slope over the run);
file descriptors come back to the baseline plus at most the pool's idle keep-alive connections.

``FERRULE_SOAK_SECONDS`` changes the length (default 120). The long version (30 minutes, plot)
and the 1,000-stream run are in ``benches/soak/``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
import httpx
import orjson
import psutil
import pytest

from faults import (
    Exchange,
    FaultUpstream,
    Scenario,
    fault_upstream,
    ok,
    rate_limited,
    reset_after,
    reset_before_headers,
    status,
    truncated_eof,
)
from servers import TEST_KEY, Proxy, start_proxy
from sse_client import check_stream, error_of

# The `soak` marker, registered here so the file is self-contained (pytest runs with
# --strict-markers): deselect with `-m "not soak"`; it runs by default.
_config = getattr(pytest.mark, "_config", None)
if _config is not None:
    _config.addinivalue_line("markers", "soak: long mixed-traffic run sampling RSS and fds")
pytestmark = [pytest.mark.soak, pytest.mark.e2e]

MODEL = "claude-sonnet-4-6"
AUTH = {"authorization": f"Bearer {TEST_KEY}"}
SOAK_SECONDS = float(os.environ.get("FERRULE_SOAK_SECONDS", "120"))
WARMUP_SECONDS = min(20.0, SOAK_SECONDS / 4)
SAMPLE_EVERY = 10.0
CLIENTS = 50
MiB = 1024 * 1024
RSS_GROWTH_LIMIT = 5 * MiB

# kind -> weight in the mix
MIX: dict[str, int] = {
    "stream": 40,
    "json": 15,
    "retry_429": 8,
    "retry_529": 8,
    "retry_reset": 4,
    "reset_mid": 8,
    "truncated": 7,
    "cancel": 10,
}
_TAG = re.compile(rb"soak:([a-z_0-9]+):(\d+)")


# -- the upstream side: one scenario that reads the fault from the request ----------------------


_attempts: Counter[str] = Counter()  # request id -> attempts seen (only the fake's loop touches it)


@dataclass(frozen=True)
class SoakRouter(Scenario):
    """Answers each request as the tag in its prompt says (``soak:<kind>:<n>``), so concurrent
    clients each get their own fault whatever order their requests reach the fake in."""

    kind: ClassVar[str] = "soak_router"

    async def run(self, ex: Exchange) -> None:
        match = _TAG.search(ex.request.body)
        if match is None:
            await ok(n=2).run(ex)
            return
        kind, rid = match.group(1).decode(), match.group(2).decode()
        _attempts[rid] += 1
        await _scenario_for(kind, _attempts[rid]).run(ex)


def _scenario_for(kind: str, attempt: int) -> Scenario:
    if kind == "json":
        return ok(n=10, interval=0.005)
    if kind == "retry_429" and attempt == 1:
        return rate_limited(retry_after=0)
    if kind == "retry_529" and attempt == 1:
        return status(529)
    if kind == "retry_reset" and attempt == 1:
        return reset_before_headers()
    if kind == "reset_mid":
        return reset_after(6, interval=0.01)
    if kind == "truncated":
        return truncated_eof(6)
    if kind == "cancel":
        return ok(n=100, interval=0.02)  # long enough for the client to leave mid-stream
    return ok(n=20, interval=0.01)


# -- the client side -----------------------------------------------------------------------------


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    answered: Counter[tuple[str, str]] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    def bad(self, kind: str, what: str) -> None:
        self.answered[(kind, "UNEXPECTED")] += 1
        if len(self.unexpected) < 20:
            self.unexpected.append(f"{kind}: {what}")


def _check(kind: str, status_code: int, headers: Any, body: bytes) -> str:
    """How an answer came out; raises AssertionError when it is not what the fault allows."""
    if kind in ("stream", "retry_429", "retry_529", "retry_reset"):
        if kind != "stream" and status_code in (429, 502, 503):
            # the retry budget was spent: the fault goes back, as an OpenAI error with its headers
            err = orjson.loads(body)["error"]
            assert err["message"] and (status_code != 429 or "retry-after" in headers), body
            return "passed_back"
        assert status_code == 200, (status_code, body[:300])
        check_stream(body)
        if kind != "stream":
            assert headers.get("x-ferrule-attempts") == "2", dict(headers)
            return "retried"
        return "ok"
    if kind == "json":
        assert status_code == 200, (status_code, body[:300])
        answer = orjson.loads(body)
        assert answer["choices"][0]["message"]["content"], answer
        return "ok"
    if kind == "reset_mid" and status_code == 502:
        # On Linux an RST discards what the proxy had not read yet: under load the reset can
        # reach the proxy before any event did, and then it is an upstream failure before the
        # first byte, answered as one (a clean OpenAI error; not retried, since the upstream had
        # answered 200).
        assert orjson.loads(body)["error"]["type"] == "api_error", body[:300]
        return "reset_before_bytes"
    if kind in ("reset_mid", "truncated"):
        assert status_code == 200, (status_code, body[:300])
        assert error_of(body)["message"], body[-300:]
        return "error_event"
    raise AssertionError(f"unknown kind {kind}")


async def _client(
    session: aiohttp.ClientSession,
    url: str,
    rng: random.Random,
    ids: Iterator[int],
    tally: Tally,
    deadline: float,
) -> None:
    kinds, weights = list(MIX), list(MIX.values())
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        rid = next(ids)
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"soak:{kind}:{rid} please answer"}],
            "stream": kind != "json",
        }
        tally.sent[kind] += 1
        try:
            async with session.post(url, json=body, headers=AUTH) as resp:
                if kind == "cancel":
                    assert resp.status == 200, resp.status
                    await resp.content.readany()  # the first bytes, then hang up mid-stream
                    resp.close()
                    tally.answered[(kind, "cancelled")] += 1
                    continue
                data = await resp.read()
                outcome = _check(kind, resp.status, resp.headers, data)
                tally.answered[(kind, outcome)] += 1
        except (AssertionError, aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            tally.bad(kind, f"{type(exc).__name__}: {str(exc)[:300]}")


async def _drive(proxy: Proxy, seconds: float, tally: Tally) -> None:
    url = proxy.v1 + "/chat/completions"
    ids = iter(range(10**9))
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(
            *[
                _client(session, url, random.Random(1000 + i), ids, tally, deadline)
                for i in range(CLIENTS)
            ]
        )


# -- sampling ------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    rss: int
    fds: int
    threads: int
    upstream_conns: int


def _worker(proxy: Proxy) -> psutil.Process:
    """The Granian worker serving the proxy's port (the child process, where requests run)."""
    port = int(proxy.url.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if (
            conn.laddr
            and conn.laddr.port == port
            and conn.status == psutil.CONN_LISTEN
            and conn.pid
        ):
            proc = psutil.Process(conn.pid)
            children = proc.children()
            return children[0] if children else proc
    raise AssertionError("proxy process not found")


def _sample(proc: psutil.Process, t0: float, upstream_port: int) -> Sample:
    with proc.oneshot():
        conns = proc.net_connections("tcp")
        return Sample(
            t=time.monotonic() - t0,
            rss=proc.memory_info().rss,
            fds=proc.num_fds(),
            threads=proc.num_threads(),
            upstream_conns=sum(
                1
                for c in conns
                if c.raddr and c.raddr.port == upstream_port and c.status == psutil.CONN_ESTABLISHED
            ),
        )


class Sampler(threading.Thread):
    def __init__(self, proc: psutil.Process, upstream_port: int, t0: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.proc, self.port, self.t0 = proc, upstream_port, t0
        self.samples: list[Sample] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.samples.append(_sample(self.proc, self.t0, self.port))
            self.stop_event.wait(SAMPLE_EVERY)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var


# -- the test --------------------------------------------------------------------------------------


def _backend() -> str:
    from conftest import NATIVE

    return "rust" if NATIVE is not None else "python"


@pytest.fixture
def soak_rig() -> Iterator[tuple[Proxy, FaultUpstream]]:
    env = {
        "FERRULE_RESPONSE_CACHE": "off",  # a filling cache would read as a leak
        "FERRULE_BREAKER_THRESHOLD": "1000000",  # the breaker has its own test (test_storm)
        "FERRULE_RETRY_BASE": "0.01",
        "FERRULE_RETRY_CAP": "0.05",
        "FERRULE_FIRST_BYTE_TIMEOUT": "10",
        "FERRULE_READ_TIMEOUT": "10",
        "FERRULE_LOG_LEVEL": "warning",
    }
    _attempts.clear()
    with (
        fault_upstream(default=SoakRouter(), idle_timeout_s=60) as fu,
        start_proxy(_backend(), fu.url, "/dev/null", env=env) as proxy,
    ):
        yield proxy, fu


@pytest.mark.timeout(SOAK_SECONDS + 120)
def test_c7_soak_mixed_traffic_holds_memory_and_fds(
    soak_rig: tuple[Proxy, FaultUpstream],
) -> None:
    proxy, fu = soak_rig
    proc = _worker(proxy)
    # One request first: the baseline then includes what a worker opens once, on first use (the
    # native upstream engine's thread, its eventfd and its runtime's epoll), not only at start.
    first = {"model": MODEL, "messages": [{"role": "user", "content": "soak:json:999999999 first"}]}
    resp = httpx.post(proxy.v1 + "/chat/completions", json=first, headers=AUTH, timeout=30)
    assert resp.status_code == 200, resp.text
    t0 = time.monotonic()
    baseline = _sample(proc, t0, fu.port)
    sampler = Sampler(proc, fu.port, t0)
    sampler.start()
    tally = Tally()
    try:
        asyncio.run(_drive(proxy, SOAK_SECONDS, tally))
    finally:
        sampler.stop_event.set()
        sampler.join(5)
    run_end = time.monotonic() - t0
    # every upstream exchange ends (the hang-ups' too): none is left open behind the proxy
    with contextlib.suppress(TimeoutError):
        fu.wait_for(lambda: all(r.finished_at is not None for r in fu.records), timeout=10)
    time.sleep(1.0)
    final = _sample(proc, t0, fu.port)
    records = fu.records
    samples = sampler.samples

    sent = sum(tally.sent.values())
    answered = sum(tally.answered.values())
    report = [
        f"backend {proxy.backend}; {sent} requests in {run_end:.0f} s ({sent / run_end:.0f}/s), "
        f"{len(records)} upstream attempts",
        f"answers {dict(sorted(tally.answered.items()))}",
        f"baseline rss {baseline.rss / MiB:.1f} MiB fds {baseline.fds} threads {baseline.threads}",
        *(
            f"t={s.t:5.0f}s rss {s.rss / MiB:6.1f} MiB fds {s.fds:4d} threads {s.threads:3d} "
            f"upstream conns {s.upstream_conns:3d}"
            for s in samples
        ),
        f"final rss {final.rss / MiB:.1f} MiB fds {final.fds} threads {final.threads} "
        f"upstream conns {final.upstream_conns}",
    ]
    after = [(s.t, float(s.rss)) for s in samples if s.t >= WARMUP_SECONDS]
    after.append((final.t, float(final.rss)))
    growth = slope(after) * (after[-1][0] - after[0][0])
    report.append(f"rss growth after warm-up (slope x span): {growth / MiB:+.2f} MiB")
    print("\n".join(report))

    # every request answered, and only with the faults injected
    assert answered == sent, report
    assert not tally.unexpected, "\n".join(tally.unexpected)
    # every kind ran, and the retried faults were retried (not merely passed back)
    for kind in MIX:
        assert tally.sent[kind] > 0, kind
    # (the budget refuses some retries at this load, see test_storm's budget test; most must run)
    for kind in ("retry_429", "retry_529", "retry_reset"):
        assert tally.answered[(kind, "retried")] >= 0.7 * tally.sent[kind], report
    # the upstream side: nothing left open, every hang-up seen there, no scenario crashed
    outcomes = Counter(r.outcome for r in records)
    assert None not in outcomes, outcomes  # an upstream exchange still open after the run
    assert outcomes["error"] == 0 and outcomes["timeout"] == 0, outcomes
    cancels = [r for r in records if b"soak:cancel:" in r.body]
    assert cancels and all(r.outcome == "client_gone" for r in cancels), Counter(
        r.outcome for r in cancels
    )
    # memory: flat after the warm-up
    assert growth < RSS_GROWTH_LIMIT, report
    # file descriptors: the baseline plus at most the idle keep-alive upstream connections
    assert final.fds <= baseline.fds + final.upstream_conns + 10, report
    assert final.upstream_conns <= CLIENTS + 5, report
    peak_fds = max(s.fds for s in samples)
    assert peak_fds <= baseline.fds + 2 * CLIENTS + 20, report  # client + upstream socket each
    # threads: the pools (Granian's, asyncio's executor) fill during the warm-up, then stay
    warm = next((s for s in samples if s.t >= WARMUP_SECONDS), final)
    assert final.threads <= warm.threads + 4, report
