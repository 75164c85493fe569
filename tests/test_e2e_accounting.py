"""Accounting and observability, end to end: real ``ferrule serve`` processes (Granian) in front
of the simulated Anthropic upstream, on both backends (issue 7).

- The ledger: exact token buckets and dollars per scenario (prompt-cache writes and reads, a
  retried request counted once, a cancelled stream with estimated usage, failed streams, an
  unknown model left unpriced, a response-cache hit recorded with its savings), read back through
  ``GET /stats`` and the ledger file itself (rows are found by the ``x-request-id`` we send; the
  writer batches, so every read polls with a bounded wait).
- ``/metrics``: Prometheus text that prometheus_client parses, counters that move by exactly what
  was sent, two Granian workers adding up, no tenant label by default.
- ``ferrule stats`` (table, ``--json``, ``--csv -``), the health endpoints, ``ferrule doctor``.
- The ledger on a data folder that cannot be written (and, where mount namespaces are available,
  a real read-only mount and a disk that fills up mid-run): requests never fail.

Expected dollars are computed here from ``ferrule/data/models.toml`` (read as plain TOML, not
through ``ferrule.pricing``), with Decimal arithmetic."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

import ferrule
from ferrule.procs import free_port, running_server
from servers import TEST_KEY, MockUpstream, Proxy, start_proxy
from sse_client import check_stream, error_of

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MODEL = "claude-sonnet-4-6"
UNKNOWN = "claude-unknown-9"
BUCKETS = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
TOKEN_COLUMNS = tuple(f"{b}_tokens" for b in BUCKETS)
MILLION = Decimal(1_000_000)
# Quick retries, and no circuit breaker opening on the scripted upstream errors.
ENV = {"FERRULE_RETRY_BASE": "0.05", "FERRULE_BREAKER_THRESHOLD": "1000000"}


# -- prices, as the table says --------------------------------------------------------------------


def price_table() -> dict[str, dict[str, Decimal]]:
    """Today's price per model (the newest entry in force), USD per million tokens, straight
    from the data file."""
    data = tomllib.loads((Path(ferrule.__file__).parent / "data" / "models.toml").read_text())
    today = dt.datetime.now(dt.timezone.utc).date()
    latest: dict[str, dict[str, Any]] = {}
    for model in data["model"]:
        for entry in model.get("price", []):
            if entry["since"] > today:
                continue
            if model["id"] not in latest or entry["since"] > latest[model["id"]]["since"]:
                for name in (model["id"], *model["aliases"]):  # every name the model answers to
                    latest[name] = entry
    return {m: {b: Decimal(repr(e[b])) for b in BUCKETS} for m, e in latest.items()}


PRICES = price_table()


def tokens_of(row: dict[str, Any]) -> dict[str, int]:
    return {b: row[f"{b}_tokens"] for b in BUCKETS}


def expected_cost(model: str, tokens: dict[str, int]) -> Decimal:
    p = PRICES[model]
    return sum((tokens[b] * p[b] for b in BUCKETS), Decimal(0)) / MILLION


def close(a: float | None, b: Decimal | float) -> bool:
    return a is not None and abs(Decimal(repr(a)) - Decimal(b)) < Decimal("1e-12")


# -- servers and reading back ----------------------------------------------------------------------


@dataclass
class Setup:
    proxy: Proxy
    data: Path  # the proxy's data folder (FERRULE_DATA_DIR)


@pytest.fixture(scope="module", params=["rust", "python"])
def acct(
    request: pytest.FixtureRequest,
    mock_server: MockUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Setup]:
    """One proxy per backend with a data folder of our own, shared by this module's tests (each
    test reads only the rows it made: by request id, or ``/stats`` since its own start)."""
    from conftest import kernel_module

    kernel_module(request.param)
    base = tmp_path_factory.mktemp(f"acct-{request.param}")
    env = {**ENV, "FERRULE_DATA_DIR": str(base / "data")}
    with start_proxy(request.param, mock_server.url, str(base / "ferrule.log"), env=env) as p:
        yield Setup(p, base / "data")


def rid() -> str:
    return "acct-" + uuid.uuid4().hex


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{text} (nonce {uuid.uuid4().hex[:10]})"}]


def post_chat(p: Proxy, body: dict[str, Any], request_id: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {TEST_KEY}", "x-request-id": request_id or rid()}
    return httpx.post(p.v1 + "/chat/completions", json=body, headers=headers, timeout=30)


def messages_headers(request_id: str) -> dict[str, str]:
    return {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01", "x-request-id": request_id}


def post_messages(p: Proxy, body: dict[str, Any], request_id: str) -> httpx.Response:
    return httpx.post(
        p.v1 + "/messages", json=body, headers=messages_headers(request_id), timeout=30
    )


def upstream_calls(mock: MockUpstream) -> list[dict[str, Any]]:
    return [r for r in mock.requests() if r["method"] == "POST" and r["path"] == "/v1/messages"]


def count_tokens(mock: MockUpstream, sent: dict[str, Any]) -> int:
    """The input tokens of a request as the upstream counts them (its count_tokens endpoint)."""
    fields = ("model", "messages", "system", "tools", "tool_choice", "thinking")
    body = {k: v for k, v in sent.items() if k in fields}
    resp = httpx.post(
        mock.url + "/v1/messages/count_tokens",
        json=body,
        headers={"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    n: int = resp.json()["input_tokens"]
    return n


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def ledger_rows(
    data: Path, ids: list[str], timeout: float = 10.0, *, settle: bool = False
) -> dict[str, dict[str, Any]]:
    """The ledger rows of these request ids, read from the file once the batched writer wrote
    them all; asserts there is exactly one row per request (``settle``: after one more batch
    interval, so that a second row for the same request would have shown up)."""
    path = data / "ledger.sqlite3"

    def read() -> list[dict[str, Any]]:
        if not path.exists():
            return []
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            marks = ",".join("?" for _ in ids)
            sql = f"SELECT * FROM requests WHERE request_id IN ({marks})"
            return [dict(r) for r in conn.execute(sql, ids)]
        except sqlite3.OperationalError:  # created, schema not there yet
            return []
        finally:
            conn.close()

    rows = wait_for(
        lambda: (found := read()) and {r["request_id"] for r in found} >= set(ids) and found,
        timeout,
        f"ledger rows {ids}",
    )
    if settle:
        time.sleep(1.2)  # two batch intervals of the writer
        rows = read()
    assert sorted(r["request_id"] for r in rows) == sorted(ids), "one row per request"
    return {r["request_id"]: r for r in rows}


def stats(p: Proxy, since: float, by: str = "model") -> dict[str, Any]:
    resp = httpx.get(p.url + "/stats", params={"since": f"{since:.6f}", "by": by}, timeout=10)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def group(data: dict[str, Any], by: str, key: Any) -> dict[str, Any]:
    found: dict[str, Any] = next(g for g in data[f"by_{by}"] if g[by] == key)
    return found


def read_a_little_then_close(url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
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


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of ``GET /metrics``, parsed by prometheus_client's own parser."""
    resp = httpx.get(url + "/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


# -- the ledger: exact numbers per scenario --------------------------------------------------------


def test_prompt_cache_writes_and_reads_are_priced_exactly(acct: Setup, mock: MockUpstream) -> None:
    p, t0 = acct.proxy, time.time()
    # The Anthropic route, JSON: the usage (with its 5m/1h split) comes back to the client as is.
    a = rid()
    resp = post_messages(
        p, {"model": MODEL, "max_tokens": 60, "messages": user("Cached [mock:cache]")}, a
    )
    assert resp.status_code == 200, resp.text
    u = resp.json()["usage"]
    want_a = {
        "input": u["input_tokens"],
        "cache_write_5m": u["cache_creation"]["ephemeral_5m_input_tokens"],
        "cache_write_1h": u["cache_creation"]["ephemeral_1h_input_tokens"],
        "cache_read": u["cache_read_input_tokens"],
        "output": u["output_tokens"],
    }
    assert all(n > 0 for n in want_a.values()), want_a  # every bucket takes part
    # The OpenAI route, streamed: the same body sent straight to the upstream tells the split.
    b = rid()
    body = {
        "model": MODEL,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": user("Streamed and cached [mock:cache]"),
    }
    streamed = post_chat(p, body, b)
    chunks = check_stream(streamed.content, expect_usage=True)
    su = chunks[-1].usage
    assert su is not None and su.prompt_tokens_details is not None
    sent = upstream_calls(mock)[-1]["body"]
    direct = httpx.post(
        mock.url + "/v1/messages",
        json={k: v for k, v in sent.items() if k != "stream"},
        headers={"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"},
        timeout=10,
    ).json()["usage"]
    want_b = {
        "input": direct["input_tokens"],
        "cache_write_5m": direct["cache_creation"]["ephemeral_5m_input_tokens"],
        "cache_write_1h": direct["cache_creation"]["ephemeral_1h_input_tokens"],
        "cache_read": direct["cache_read_input_tokens"],
        "output": su.completion_tokens,
    }
    assert su.prompt_tokens == sum(want_b[k] for k in BUCKETS[:4])  # the client's view agrees
    assert su.prompt_tokens_details.cached_tokens == want_b["cache_read"] > 0

    rows = ledger_rows(acct.data, [a, b])
    price = PRICES[MODEL]
    for request_id, want, stream in ((a, want_a, 0), (b, want_b, 1)):
        row = rows[request_id]
        assert tokens_of(row) == want, row
        assert (row["model"], row["stream"], row["status"], row["outcome"]) == (
            MODEL,
            stream,
            200,
            "complete",
        )
        assert (row["usage_estimated"], row["attempts"], row["response_cache"]) == (0, 1, "bypass")
        assert close(row["cost_usd"], expected_cost(MODEL, want)), (row["cost_usd"], want)
        assert row["saved_caching_tokens"] == want["cache_read"]
        saved = want["cache_read"] * (price["input"] - price["cache_read"]) / MILLION
        assert close(row["saved_caching_usd"], saved)
        premium = (
            want["cache_write_5m"] * (price["cache_write_5m"] - price["input"])
            + want["cache_write_1h"] * (price["cache_write_1h"] - price["input"])
        ) / MILLION
        assert close(row["cache_write_premium_usd"], premium)
    # GET /stats: the same figures, summed
    g = group(stats(p, t0), "model", MODEL)
    assert g["requests"] == 2 and g["unpriced_requests"] == 0 and g["prompt_cache_hits"] == 2
    for k in BUCKETS:
        assert g[f"{k}_tokens"] == want_a[k] + want_b[k], k
    cost = expected_cost(MODEL, want_a) + expected_cost(MODEL, want_b)
    assert abs(Decimal(repr(g["cost_usd"])) - cost) <= Decimal("1e-6"), (g["cost_usd"], cost)


def test_retried_request_is_counted_once(acct: Setup, mock: MockUpstream) -> None:
    p, t0 = acct.proxy, time.time()
    ids = [rid(), rid()]
    for request_id, stream in zip(ids, (False, True), strict=True):
        mock.script(["error=529"])  # overloaded once, then the normal answer
        body: dict[str, Any] = {"model": MODEL, "messages": user("Retry me")}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        resp = post_chat(p, body, request_id)
        assert resp.status_code == 200 and resp.headers["x-ferrule-attempts"] == "2"
    assert len(upstream_calls(mock)) == 4
    rows = ledger_rows(acct.data, ids, settle=True)
    for request_id in ids:
        row = rows[request_id]
        assert (row["attempts"], row["status"], row["outcome"]) == (2, 200, "complete")
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0
        assert close(row["cost_usd"], expected_cost(MODEL, tokens_of(row)))
    totals = stats(p, t0)["totals"]
    assert (totals["requests"], totals["retries"], totals["errors"]) == (2, 2, 0)


def test_cancelled_streams_are_recorded_with_estimated_usage(
    acct: Setup, mock: MockUpstream
) -> None:
    p, t0 = acct.proxy, time.time()
    a, b = rid(), rid()
    slow = "Keep talking [mock:words=60] [mock:delay=80]"
    chat_body = {"model": MODEL, "stream": True, "messages": user(slow)}
    read_a_little_then_close(
        p.v1 + "/chat/completions",
        chat_body,
        {"authorization": f"Bearer {TEST_KEY}", "x-request-id": a},
    )
    wait_for(lambda: mock.stats()["streams_cancelled"] >= 1, what="the first stream cancelled")
    msg_body = {"model": MODEL, "max_tokens": 200, "stream": True, "messages": user(slow)}
    read_a_little_then_close(p.v1 + "/messages", msg_body, messages_headers(b))
    wait_for(lambda: mock.stats()["streams_cancelled"] >= 2, what="the second stream cancelled")
    calls = upstream_calls(mock)
    rows = ledger_rows(acct.data, [a, b])
    for route, request_id, call in zip(("chat", "messages"), (a, b), calls, strict=True):
        row = rows[request_id]
        seen = {k: row[k] for k in ("outcome", "status", "usage_estimated", *TOKEN_COLUMNS)}
        assert (row["outcome"], row["status"], row["stream"]) == ("client_cancelled", 499, 1), (
            route,
            seen,
        )
        # the input is known from message_start, exactly; the output only in part: estimated
        assert row["input_tokens"] == count_tokens(mock, call["body"]), (route, seen)
        assert 1 <= row["output_tokens"] < 60, (route, seen)
        assert row["usage_estimated"] == 1, (route, seen)
        assert close(row["cost_usd"], expected_cost(MODEL, tokens_of(row)))
    data = stats(p, t0, by="outcome")
    assert group(data, "outcome", "client_cancelled")["requests"] == 2
    assert data["totals"]["usage_estimated"] == 2 and data["totals"]["client_cancelled"] == 2


def test_failed_streams_are_recorded(acct: Setup, mock: MockUpstream) -> None:
    p, t0 = acct.proxy, time.time()
    cases = [
        ("chat", "[mock:truncate]", "truncated"),
        ("chat", "[mock:midstream_error]", "upstream_error"),
        ("messages", "[mock:truncate]", "truncated"),
        ("messages", "[mock:midstream_error]", "upstream_error"),
    ]
    ids = []
    for route, directive, _ in cases:
        request_id = rid()
        ids.append(request_id)
        if route == "chat":
            resp = post_chat(
                p, {"model": MODEL, "stream": True, "messages": user(directive)}, request_id
            )
            assert resp.status_code == 200 and error_of(resp.content)
        else:
            body = {"model": MODEL, "max_tokens": 100, "stream": True, "messages": user(directive)}
            resp = post_messages(p, body, request_id)
            assert resp.status_code == 200 and b"message_stop" not in resp.content
    calls = upstream_calls(mock)
    rows = ledger_rows(acct.data, ids)
    for request_id, call, (route, directive, outcome) in zip(ids, calls, cases, strict=True):
        row = rows[request_id]
        seen = {k: row[k] for k in ("outcome", "status", "usage_estimated", *TOKEN_COLUMNS)}
        assert (row["outcome"], row["status"], row["usage_estimated"]) == (outcome, 200, 1), (
            route,
            directive,
            seen,
        )
        assert row["input_tokens"] == count_tokens(mock, call["body"]), (route, seen)
        assert row["output_tokens"] >= 1
        assert close(row["cost_usd"], expected_cost(MODEL, tokens_of(row)))
    totals = stats(p, t0)["totals"]
    assert totals["requests"] == 4 and totals["errors"] == 4 and totals["usage_estimated"] == 4


def test_unknown_model_is_unpriced_never_free(acct: Setup, mock: MockUpstream) -> None:
    p, t0 = acct.proxy, time.time()
    ids = [rid()]
    assert post_chat(p, {"model": UNKNOWN, "messages": user("Who?")}, ids[0]).status_code == 404
    # a model the upstream serves (real tokens) that the price table does not list, if any
    served = [m["id"] for m in httpx.get(p.v1 + "/models", timeout=10).json()["data"]]
    unlisted = [m for m in served if m not in PRICES]
    if unlisted:
        ids.append(rid())
        resp = post_chat(p, {"model": unlisted[0], "messages": user("Price?")}, ids[1])
        assert resp.status_code == 200, resp.text
    rows = ledger_rows(acct.data, ids)
    unknown = rows[ids[0]]
    assert (unknown["model"], unknown["status"], unknown["cost_usd"]) == (UNKNOWN, 404, None)
    assert unknown["saved_caching_usd"] is None
    if unlisted:
        row = rows[ids[1]]
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0
        assert row["cost_usd"] is None and row["saved_caching_usd"] is None  # not $0
    data = stats(p, t0)
    g = group(data, "model", UNKNOWN)
    assert g["cost_usd"] is None and g["unpriced_requests"] == 1
    assert data["totals"]["cost_usd"] is None  # nothing priced in this window: unknown, not 0
    assert data["totals"]["unpriced_requests"] == len(ids)
    samples = scrape(p.url)
    assert value(samples, "ferrule_unpriced_requests_total", model=UNKNOWN) >= 1
    assert not [
        k for k in samples if k[0] == "ferrule_cost_usd_total" and ("model", UNKNOWN) in k[1]
    ]


def test_response_cache_hit_is_recorded_with_its_savings(acct: Setup, mock: MockUpstream) -> None:
    p, t0 = acct.proxy, time.time()
    a, b = rid(), rid()
    body = {"model": MODEL, "temperature": 0, "messages": user("Ask me twice")}
    assert post_chat(p, body, a).headers["x-cache"] == "MISS"
    assert post_chat(p, body, b).headers["x-cache"] == "HIT"
    assert len(upstream_calls(mock)) == 1
    rows = ledger_rows(acct.data, [a, b])
    miss, hit = rows[a], rows[b]
    cost = expected_cost(MODEL, tokens_of(miss))
    assert (miss["response_cache"], miss["response_cache_hit"]) == ("miss", 0)
    assert close(miss["cost_usd"], cost) and cost > 0
    assert (hit["response_cache"], hit["response_cache_hit"], hit["attempts"]) == ("hit", 1, 0)
    assert tokens_of(hit) == tokens_of(miss)  # the replayed answer's usage...
    assert hit["cost_usd"] == 0.0  # ...billed nothing...
    assert hit["saved_response_cache_tokens"] == sum(tokens_of(miss).values())
    assert close(hit["saved_response_cache_usd"], cost)  # ...and saved all of it
    totals = stats(p, t0)["totals"]
    assert (totals["requests"], totals["response_cache_hits"], totals["response_cache_misses"]) == (
        2,
        1,
        1,
    )
    assert totals["input_tokens"] == miss["input_tokens"]  # billed tokens: the miss only
    assert totals["output_tokens"] == miss["output_tokens"]
    for name in ("cost_usd", "saved_response_cache_usd", "saved_total_usd"):
        assert abs(Decimal(repr(totals[name])) - cost) <= Decimal("1e-6"), (name, totals)


# -- /metrics -------------------------------------------------------------------------------------


def test_metrics_parse_and_move_by_what_was_sent(acct: Setup, mock: MockUpstream) -> None:
    p = acct.proxy
    route = {"route": "/v1/chat/completions"}
    before = scrape(p.url)
    usages = []
    for _ in range(3):
        resp = post_chat(p, {"model": MODEL, "messages": user("Count me")})
        assert resp.status_code == 200
        usages.append(resp.json()["usage"])
    assert post_chat(p, {"model": UNKNOWN, "messages": user("Count me too")}).status_code == 404

    def moved() -> Samples | None:
        now = scrape(p.url)
        done = value(now, "ferrule_requests_total", **route) - value(
            before, "ferrule_requests_total", **route
        )
        return now if done >= 4 else None

    after = wait_for(moved, 5, "the requests in /metrics")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {**route, "model": MODEL}
    assert delta("ferrule_requests_total", **ok, status_class="2xx") == 3
    assert delta("ferrule_requests_total", **route, model=UNKNOWN, status_class="4xx") == 1
    assert delta("ferrule_request_outcomes_total", **route, outcome="complete") == 3
    assert delta("ferrule_errors_total", **route, type="not_found_error") == 1
    assert delta("ferrule_tokens_total", model=MODEL, kind="input") == sum(
        u["prompt_tokens"] for u in usages
    )
    assert delta("ferrule_tokens_total", model=MODEL, kind="output") == sum(
        u["completion_tokens"] for u in usages
    )
    cost = sum(
        (
            expected_cost(
                MODEL,
                {**dict.fromkeys(BUCKETS, 0), "input": u["prompt_tokens"]}
                | {"output": u["completion_tokens"]},
            )
            for u in usages
        ),
        Decimal(0),
    )
    assert abs(Decimal(repr(delta("ferrule_cost_usd_total", model=MODEL))) - cost) < Decimal("1e-9")
    assert delta("ferrule_response_cache_total", result="bypass") == 4
    assert delta("ferrule_request_duration_seconds_count", **route, stream="false") == 4
    # time to first byte: the answered requests (an error is rendered after the fact)
    assert delta("ferrule_time_to_first_byte_seconds_count", **route, stream="false") == 3
    assert value(after, "ferrule_open_streams") == 0
    assert not [k for k in after if any(name == "tenant" for name, _ in k[1])]  # off by default


def test_metrics_add_up_across_two_workers(mock: MockUpstream, tmp_path: Path) -> None:
    from conftest import NATIVE

    metrics_dir = tmp_path / "metrics"
    env = {**ENV, "FERRULE_DATA_DIR": str(tmp_path / "data")}
    env |= {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    backend = "rust" if NATIVE is not None else "python"
    log = str(tmp_path / "ferrule.log")
    n = 24
    with start_proxy(backend, mock.url, log, "--workers", "2", env=env) as p:
        body = {"model": MODEL, "messages": user("Which worker?")}
        with ThreadPoolExecutor(6) as pool:  # fresh connections, several at a time
            codes = list(pool.map(lambda _: post_chat(p, body).status_code, range(n)))
        assert codes == [200] * n

        def counted() -> bool:
            # a worker's snapshot is written family by family (counters, then histograms):
            # wait until the other worker's histograms are in too
            samples = scrape(p.url)
            return (
                value(samples, "ferrule_requests_total") == n
                and value(samples, "ferrule_request_duration_seconds_count") == n
            )

        wait_for(counted, 5, "both workers' counts")
        for _ in range(6):  # whichever worker answers the scrape, the sums are the same
            samples = scrape(p.url)
            assert value(samples, "ferrule_requests_total") == n
            assert value(samples, "ferrule_request_outcomes_total", outcome="complete") == n
            assert value(samples, "ferrule_request_duration_seconds_count") == n
            assert not [k for k in samples if any(name == "tenant" for name, _ in k[1])]
        per_worker = {}
        for path in metrics_dir.glob("counter_*.db"):
            families = MultiProcessCollector.merge([str(path)], accumulate=True)  # type: ignore[no-untyped-call]
            per_worker[path.stem] = sum(
                s.value for f in families for s in f.samples if s.name == "ferrule_requests_total"
            )
        assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), per_worker
        assert sum(per_worker.values()) == n


# -- ferrule stats, health, doctor -----------------------------------------------------------------


# Backend-independent checks (the CLI reads the ledger file; health and doctor touch no kernel)
# run on one of the two module proxies.
ONE_BACKEND = pytest.mark.parametrize("acct", ["python"], indirect=True)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FERRULE_")}
    return subprocess.run(
        [sys.executable, "-m", "ferrule.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


@ONE_BACKEND
def test_stats_command_table_json_and_csv(acct: Setup, mock: MockUpstream) -> None:
    p, t0 = acct.proxy, time.time()
    ids = [rid(), rid(), rid()]
    for request_id in ids[:2]:
        assert (
            post_chat(p, {"model": MODEL, "messages": user("Stats")}, request_id).status_code == 200
        )
    assert post_chat(p, {"model": UNKNOWN, "messages": user("Stats")}, ids[2]).status_code == 404
    ledger_rows(acct.data, ids)
    period = ["--data-dir", str(acct.data), "--since", f"{t0:.6f}"]

    table = cli("stats", *period, "--by", "model,day")
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert "Ferrule by model" in out and "Ferrule by day" in out
    cells = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:]]
        for line in out.splitlines()
        if line.count("│") > 5
    }
    assert cells[MODEL][0] == "2" and cells[MODEL][5].startswith("$")  # reqs, cost
    assert cells[UNKNOWN][0] == "1" and cells[UNKNOWN][5] == "unpriced"  # never "$0"
    assert "without a price" in out  # the footnote says why

    as_json = cli("stats", *period, "--json", "--by", "model,day")
    assert as_json.returncode == 0, as_json.stderr
    data = orjson.loads(as_json.stdout)
    assert data["totals"]["requests"] == 3 and data["totals"]["unpriced_requests"] == 1
    assert group(data, "model", MODEL)["requests"] == 2
    served = stats(p, t0, by="model,day")  # GET /stats gives the same
    for key in ("totals", "by_model", "by_day", "since"):
        assert served[key] == data[key], key

    as_csv = cli("stats", *period, "--csv", "-")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {"day", "model", "requests", "cost_usd", "saved_total_usd"} <= set(rows[0])
    by_model = {r["model"]: r for r in rows}
    assert by_model[MODEL]["requests"] == "2"
    assert float(by_model[MODEL]["cost_usd"]) == group(data, "model", MODEL)["cost_usd"]
    assert by_model[UNKNOWN]["cost_usd"] == ""  # unknown, not 0


@ONE_BACKEND
def test_health_endpoints(acct: Setup) -> None:
    live = httpx.get(acct.proxy.url + "/health/liveness", timeout=5)
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    ready = httpx.get(acct.proxy.url + "/health/readiness", timeout=5)
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"not_draining": True, "ledger_writable": True},
    }


@ONE_BACKEND
def test_doctor_passes_on_a_running_setup(acct: Setup, mock: MockUpstream) -> None:
    port = acct.proxy.url.rsplit(":", 1)[1]
    args = ["doctor", "--upstream-url", mock.url, "--data-dir", str(acct.data), "--port", port]
    text = cli(*args)
    assert text.returncode == 0, text.stdout + text.stderr
    assert "All checks passed." in text.stdout and "FAIL" not in text.stdout
    checks = {c["name"].split(" ")[0]: c for c in orjson.loads(cli(*args, "--json").stdout)}
    assert {c["status"] for c in checks.values()} <= {"ok", "warn", "skip"}
    assert (
        checks["port"]["status"] == "ok" and "already served by Ferrule" in checks["port"]["detail"]
    )
    assert checks["ledger"]["status"] == "ok" and "WAL" in checks["ledger"]["detail"]
    assert checks["upstream"]["status"] == "ok"


def test_doctor_and_serve_reject_a_bad_config(tmp_path: Path) -> None:
    port = str(free_port())
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    args = ["doctor", "--port", port, "--offline", "--upstream-url", "ftp://example.invalid"]
    bad = cli(*args, "--data-dir", "/dev/null/ferrule", env={"FERRULE_REDIS_URL": dead_redis})
    assert bad.returncode == 1, bad.stdout
    out = bad.stdout
    # the flag that carried the bad value is named
    assert "[FAIL] config: --upstream-url ftp://example.invalid: upstream_url must be an" in out
    assert "not writable" in out and "FERRULE_DATA_DIR" in out  # says what to fix
    assert "[FAIL] redis" in out and "cannot connect" in out
    assert out.count("fix:") >= 3 and "3 problem(s) found." in out
    serve = cli("serve", "--port", port, env={"FERRULE_RESPONSE_CACHE": "bogus"})
    assert serve.returncode == 2
    assert "invalid configuration" in serve.stderr and "response_cache must be" in serve.stderr


def test_doctor_checks_the_redis_of_the_config_file(tmp_path: Path) -> None:
    """``redis_url`` may come from the TOML file as well as FERRULE_REDIS_URL: doctor checks the
    Redis the proxy would use, wherever it was configured."""
    config = tmp_path / "ferrule.toml"
    config.write_text(f'redis_url = "redis://127.0.0.1:{free_port()}/0"\n')
    port = str(free_port())
    args = ["doctor", "--config", str(config), "--port", port, "--offline"]
    result = cli(*args, "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1, result.stdout
    assert "[FAIL] redis" in result.stdout


# -- the ledger on a disk that cannot take it -----------------------------------------------------


UNSHARE = shutil.which("unshare")
NSENTER = shutil.which("nsenter")


def can_mount() -> bool:
    """Root with mount namespaces (``unshare -m``): real tmpfs mounts, private to one proxy."""
    if os.geteuid() != 0 or UNSHARE is None or NSENTER is None or not shutil.which("mount"):
        return False
    probe = subprocess.run(
        [UNSHARE, "-m", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs", "/mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


@contextlib.contextmanager
def proxy_on_tmpfs(
    backend: str, upstream: str, tmp_path: Path, options: str
) -> Iterator[tuple[Proxy, int, Path]]:
    """A proxy in a mount namespace of its own whose data folder is a tmpfs mounted with
    ``options``; yields the proxy, its pid (for ``nsenter``) and the folder."""
    assert UNSHARE is not None
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    script = (
        f'mount -t tmpfs -o {options} tmpfs "{data}" && exec "{sys.executable}" -m ferrule.cli '
        f"serve --port {port} --upstream-url {upstream}"
    )
    env = {**ENV, "FERRULE_BACKEND": backend, "FERRULE_DATA_DIR": str(data)}
    argv = [UNSHARE, "-m", "--propagation", "private", "sh", "-c", script]
    log = str(tmp_path / "ferrule.log")
    with running_server(argv, port, env=env, log_path=log) as proc:
        yield Proxy(f"http://127.0.0.1:{port}", backend, log), proc.pid, data


def every_kind_of_request(p: Proxy) -> None:
    """JSON, a stream, a response-cache pair and the Anthropic route: all must succeed."""
    assert post_chat(p, {"model": MODEL, "messages": user("Plain")}).status_code == 200
    streamed = post_chat(p, {"model": MODEL, "stream": True, "messages": user("Stream")})
    assert streamed.status_code == 200
    check_stream(streamed.content)
    body = {"model": MODEL, "temperature": 0, "messages": user("Twice")}
    assert post_chat(p, body).status_code == 200
    assert post_chat(p, body).status_code == 200
    msg = {"model": MODEL, "max_tokens": 30, "messages": user("Anthropic")}
    assert post_messages(p, msg, rid()).status_code == 200


@pytest.mark.parametrize("where", ["not-a-folder", "read-only-mount"])
def test_unwritable_data_folder_never_fails_a_request(
    where: str, mock: MockUpstream, tmp_path: Path
) -> None:
    """The data folder cannot be written from the start. Tests run as root, which ignores
    permission bits (a chmod'ed folder stays writable), so: a path below a character device
    (``/dev/null/ferrule``: no one can create it), and a tmpfs mounted read-only in a mount
    namespace of the proxy's own (EROFS for root too; skipped without mount namespaces)."""
    from conftest import NATIVE

    backend = "rust" if NATIVE is not None else "python"
    with contextlib.ExitStack() as stack:
        if where == "not-a-folder":
            env = {
                **ENV,
                "FERRULE_DATA_DIR": "/dev/null/ferrule",
                "FERRULE_RESPONSE_CACHE": "sqlite",
            }
            p = stack.enter_context(start_proxy(backend, mock.url, str(tmp_path / "log"), env=env))
        else:
            if not can_mount():
                pytest.skip("needs root and mount namespaces (unshare -m)")
            p, _, _ = stack.enter_context(proxy_on_tmpfs(backend, mock.url, tmp_path, "ro,size=1m"))
        every_kind_of_request(p)
        if where == "not-a-folder":  # the SQLite response cache lives there too: BYPASS, not 500
            body = {"model": MODEL, "temperature": 0, "messages": user("No cache")}
            assert post_chat(p, body).headers["x-cache"] == "BYPASS"
        sent = 6 if where == "not-a-folder" else 5
        wait_for(
            lambda: (
                value(scrape(p.url), "ferrule_ledger_dropped_total", reason="write_error") == sent
            ),
            5,
            "every row dropped and counted",
        )
        ready = httpx.get(p.url + "/health/readiness", timeout=5)
        assert ready.status_code == 503 and ready.json()["checks"]["ledger_writable"] is False
        assert httpx.get(p.url + "/health/liveness", timeout=5).status_code == 200
        empty = httpx.get(p.url + "/stats", timeout=5)
        assert empty.status_code == 200 and empty.json()["totals"]["requests"] == 0


@pytest.mark.skipif(not can_mount(), reason="needs root and mount namespaces (unshare -m)")
def test_ledger_survives_a_disk_filling_up_mid_run(mock: MockUpstream, tmp_path: Path) -> None:
    from conftest import NATIVE

    backend = "rust" if NATIVE is not None else "python"
    with proxy_on_tmpfs(backend, mock.url, tmp_path, "size=1m") as (p, pid, data):
        t0 = time.time()

        def recorded() -> int:
            n: int = stats(p, t0)["totals"]["requests"]
            return n

        every_kind_of_request(p)
        wait_for(lambda: recorded() == 5, 5, "the first rows")
        fill = [NSENTER, "-t", str(pid), "-m", "dd", "if=/dev/zero", f"of={data}/filler", "bs=64k"]
        subprocess.run(fill, capture_output=True, timeout=30)  # ends with "No space left"
        every_kind_of_request(p)  # the disk is full: requests are served all the same
        wait_for(
            lambda: value(scrape(p.url), "ferrule_ledger_dropped_total", reason="write_error") >= 5,
            5,
            "the rows that did not fit, counted",
        )
        assert httpx.get(p.url + "/health/readiness", timeout=5).status_code == 503
        assert recorded() == 5  # nothing half-written
        # room again: the writer retries by itself (every 5 s) and the ledger resumes
        subprocess.run([NSENTER, "-t", str(pid), "-m", "rm", f"{data}/filler"], check=True)

        def resumed() -> bool:
            assert post_chat(p, {"model": MODEL, "messages": user("Again")}).status_code == 200
            return recorded() > 5

        wait_for(resumed, 15, "the ledger to resume")
        assert httpx.get(p.url + "/health/readiness", timeout=5).status_code == 200
