"""Prometheus metrics: values per request, bounded labels, several worker processes, the
Grafana dashboard only naming metrics that exist."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ferrule import metrics
from ferrule.ledger import RequestRecord
from ferrule.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
T = TypeVar("T")


def parse(text: bytes) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 10.0) -> T:
    """The first non-None result of ``probe``, polled until ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def rec(**kw: Any) -> RequestRecord:
    base: dict[str, Any] = {
        "request_id": "r",
        "route": "/v1/chat/completions",
        "model": "claude-sonnet-4-6-20260101",
    }
    base.update(kw)
    return RequestRecord(**base)


RECORDS = [
    # billed 1000*3 + 2000*3.75 + 10000*0.3 + 500*15 = 21000 micro-USD; caching saved 27000,
    # write premium 1500; compression 400*3 = 1200
    rec(
        input_tokens=1000,
        cache_write_5m_tokens=2000,
        cache_read_tokens=10000,
        output_tokens=500,
        compression_removed_tokens=400,
        latency_ms=1200,
        ttfb_ms=300,
        stream=True,
        cache_status="miss",
    ),
    # a response-cache hit: billed nothing, saved 100*3 + 10*15 = 450
    rec(input_tokens=100, output_tokens=10, cache_status="hit", latency_ms=4, ttfb_ms=3),
    # failed after 3 attempts
    rec(
        status=529,
        outcome="upstream_error",
        error_type="overloaded_error",
        attempts=3,
        latency_ms=30_000,
        route="/v1/messages",
    ),
    # unknown model
    rec(model="mystery-model", input_tokens=5, output_tokens=5, cache_status="bypass"),
    # client went away mid-stream
    rec(stream=True, outcome="client_cancelled", output_tokens=7, ttfb_ms=100, latency_ms=900),
]


def test_values_for_a_set_of_requests() -> None:
    m = Metrics()
    assert m.multiprocess_dir is None  # no PROMETHEUS_MULTIPROC_DIR in the test process
    for r in RECORDS:
        m.observe_request(r)
    m.stream_opened()
    m.stream_opened()
    m.stream_closed()
    m.set_upstream_pool(3, 256)
    m.ledger_dropped("queue_full", 4)
    body, ctype = m.render()
    assert ctype.startswith("text/plain; version=0.0.4")
    s = parse(body)
    chat, msgs = "/v1/chat/completions", "/v1/messages"
    sonnet = "claude-sonnet-4-6"  # the dated id, undated
    assert value(s, "ferrule_requests_total", route=chat, model=sonnet, status_class="2xx") == 3
    assert value(s, "ferrule_requests_total", route=msgs, model=sonnet, status_class="5xx") == 1
    assert value(s, "ferrule_requests_total", route=chat, model="mystery-model", status_class="2xx")
    assert value(s, "ferrule_errors_total", route=msgs, type="overloaded_error") == 1
    assert total(s, "ferrule_errors_total") == 1  # a cancelled request is not an error
    assert value(s, "ferrule_request_outcomes_total", route=chat, outcome="client_cancelled") == 1
    assert value(s, "ferrule_retries_total", route=msgs) == 2
    # tokens: billed only (the hit's 100/10 are not)
    assert value(s, "ferrule_tokens_total", model=sonnet, kind="input") == 1000
    assert value(s, "ferrule_tokens_total", model=sonnet, kind="cache_write_5m") == 2000
    assert value(s, "ferrule_tokens_total", model=sonnet, kind="cache_read") == 10000
    assert value(s, "ferrule_tokens_total", model=sonnet, kind="output") == 507
    assert value(s, "ferrule_tokens_total", model="mystery-model", kind="input") == 5
    assert value(s, "ferrule_cost_usd_total", model=sonnet) == pytest.approx(0.021 + 7 * 15e-6)
    assert value(s, "ferrule_cost_usd_total", model="mystery-model") == 0  # unpriced, not $0
    assert value(s, "ferrule_unpriced_requests_total", model="mystery-model") == 1
    assert value(s, "ferrule_saved_tokens_total", source="caching") == 10000
    assert value(s, "ferrule_saved_usd_total", source="caching") == pytest.approx(0.027)
    assert value(s, "ferrule_cache_write_premium_usd_total") == pytest.approx(0.0015)
    assert value(s, "ferrule_saved_usd_total", source="compression") == pytest.approx(0.0012)
    assert value(s, "ferrule_saved_tokens_total", source="response_cache") == 110
    assert value(s, "ferrule_saved_usd_total", source="response_cache") == pytest.approx(0.00045)
    for result in ("hit", "miss", "bypass"):
        assert value(s, "ferrule_response_cache_total", result=result) == 1
    # histograms, in seconds
    assert value(s, "ferrule_request_duration_seconds_count", route=chat, stream="true") == 2
    assert value(s, "ferrule_request_duration_seconds_sum", route=chat, stream="true") == 2.1
    assert (
        value(s, "ferrule_request_duration_seconds_bucket", route=msgs, stream="false", le="20.0")
        == 0
    )
    assert (
        value(s, "ferrule_request_duration_seconds_bucket", route=msgs, stream="false", le="30.0")
        == 1
    )
    assert value(s, "ferrule_time_to_first_byte_seconds_count", route=chat, stream="false") == 1
    assert (
        value(s, "ferrule_time_to_first_byte_seconds_bucket", route=chat, stream="true", le="0.25")
        == 1
    )
    assert value(s, "ferrule_open_streams") == 1
    assert value(s, "ferrule_upstream_pool_in_use") == 3
    assert value(s, "ferrule_upstream_pool_size") == 256
    assert value(s, "ferrule_ledger_dropped_total", reason="queue_full") == 4


def test_labels_stay_low_cardinality() -> None:
    m = Metrics()
    for i in range(100):
        m.observe_request(rec(model=f"claude-x-{i}", tenant=f"{i:064x}", route=f"/junk/{i}"))
    m.observe_request(rec(model="Robert'); DROP TABLE--", route="<script>"))
    s = parse(m.render()[0])
    models = {dict(ls)["model"] for (n, ls) in s if n == "ferrule_requests_total"}
    routes = {dict(ls)["route"] for (n, ls) in s if n == "ferrule_requests_total"}
    assert len(models) == metrics.MAX_MODELS + 1 and "other" in models
    assert len(routes) <= metrics.MAX_ROUTES + 1 and "other" in routes
    # no tenant label unless asked for
    assert not any("tenant" in dict(ls) for (_, ls) in s)


def test_tenant_label_when_enabled() -> None:
    m = Metrics(tenant_label=True)
    m.observe_request(rec(tenant="ab" * 32, input_tokens=10))
    m.observe_request(rec(tenant=None))
    s = parse(m.render()[0])
    tenants = {dict(ls).get("tenant") for (n, ls) in s if n == "ferrule_requests_total"}
    assert tenants == {"abababababab", "none"}  # a 12-character prefix of the hash
    assert (
        value(
            s,
            "ferrule_tokens_total",
            model="claude-sonnet-4-6",
            kind="input",
            tenant="abababababab",
        )
        == 10
    )


# -- several worker processes ------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import sys
    from ferrule.ledger import RequestRecord
    from ferrule.metrics import Metrics
    n, streams, stay = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "stay"
    m = Metrics()
    assert m.multiprocess_dir, "PROMETHEUS_MULTIPROC_DIR not seen"
    for i in range(n):
        m.observe_request(RequestRecord(request_id=str(i), route="/v1/chat/completions",
                                        model="claude-haiku-4-5", input_tokens=100,
                                        output_tokens=10, latency_ms=500, ttfb_ms=50))
    for _ in range(streams):
        m.stream_opened()
    m.set_upstream_pool(2, 10)
    print("ready", flush=True)
    if stay:
        sys.stdin.readline()  # until the test says stop
    """
)


def _worker(env: dict[str, str], n: int, streams: int, stay: bool) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(n), str(streams), "stay" if stay else "exit"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_two_workers_add_up(tmp_path: Path) -> None:
    env = {**os.environ, metrics.ENV: str(tmp_path)}
    alive = _worker(env, 3, 2, stay=True)  # a worker still serving 2 streams
    try:
        gone = _worker(env, 5, 1, stay=False)  # a worker that exited with a stream "open"
        assert gone.wait(timeout=30) == 0
        labels = {
            "route": "/v1/chat/completions",
            "model": "claude-haiku-4-5",
            "status_class": "2xx",
        }

        count = "ferrule_request_duration_seconds_count"

        def both() -> Samples | None:
            s = parse(metrics.render_dir(str(tmp_path)))
            # A snapshot is written family by family, so a read can fall between two of them:
            # wait for the live worker's last family (the pool gauges) as well as its first.
            done = (
                value(s, "ferrule_requests_total", **labels) == 8
                and value(s, count, route="/v1/chat/completions", stream="false") == 8
                and value(s, "ferrule_upstream_pool_size") == 10
            )
            return s if done else None

        # The exited worker wrote its values at exit; the live one writes a snapshot about
        # once a second.
        s = wait_for(both, "both workers' snapshots")
        # counters and histograms of both workers, the exited one included
        assert value(s, "ferrule_requests_total", **labels) == 8
        assert value(s, "ferrule_tokens_total", model="claude-haiku-4-5", kind="input") == 800
        assert value(s, "ferrule_cost_usd_total", model="claude-haiku-4-5") == pytest.approx(
            8 * (100 * 1 + 10 * 5) / 1e6
        )
        assert value(s, count, route="/v1/chat/completions", stream="false") == 8
        # live gauges: only the live worker (the dead one's file was pruned)
        assert value(s, "ferrule_open_streams") == 2
        assert value(s, "ferrule_upstream_pool_in_use") == 2
        assert value(s, "ferrule_upstream_pool_size") == 10
        assert not list(tmp_path.glob(f"gauge_livesum_{gone.pid}.db"))
    finally:
        assert alive.stdin is not None
        alive.stdin.write("\n")
        alive.stdin.close()
        alive.wait(timeout=30)
    # a Metrics in a worker renders the same merged view as render_dir
    code = "from ferrule.metrics import Metrics; import sys; sys.stdout.write(Metrics().render()[0].decode())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert value(parse(out.encode()), "ferrule_requests_total", **labels) == 8
    assert value(parse(out.encode()), "ferrule_open_streams") == 0  # nobody alive


_KILLED = textwrap.dedent(
    """
    import sys
    from ferrule.ledger import RequestRecord
    from ferrule.metrics import Metrics
    m = Metrics(flush_interval=0.05)
    for i in range(int(sys.argv[1])):
        m.observe_request(RequestRecord(request_id=str(i), route="/v1/messages",
                                        model="claude-haiku-4-5", input_tokens=7))
    print("ready", flush=True)
    sys.stdin.readline()
    """
)


def test_a_killed_worker_keeps_its_last_snapshot(tmp_path: Path) -> None:
    """Granian respawns a worker that crashed: the counts it had written stay in the totals
    (no exit hook ran), and a worker that gets the dead one's pid counts on from them."""
    env = {**os.environ, metrics.ENV: str(tmp_path)}
    labels = {"route": "/v1/messages", "model": "claude-haiku-4-5", "status_class": "2xx"}

    def requests() -> float:
        return value(parse(metrics.render_dir(str(tmp_path))), "ferrule_requests_total", **labels)

    def tokens() -> float:
        s = parse(metrics.render_dir(str(tmp_path)))
        return value(s, "ferrule_tokens_total", model="claude-haiku-4-5", kind="input")

    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED, "6"], env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        # tokens are written after requests: wait for both before the kill
        wait_for(lambda: (requests() == 6 and tokens() == 42) or None, "the worker's snapshot")
    finally:
        proc.kill()  # SIGKILL: no atexit, no lifespan shutdown
        proc.wait(timeout=30)
    assert requests() == 6
    assert not list(tmp_path.glob(f"gauge_livesum_{proc.pid}.db"))  # pruned: it is dead
    assert list(tmp_path.glob(f"counter_{proc.pid}.db"))  # kept

    # this process plays the respawned worker that got the same pid
    for path in tmp_path.glob(f"*_{proc.pid}.db"):
        path.rename(path.with_name(path.name.replace(str(proc.pid), str(os.getpid()))))
    m = Metrics(multiprocess_dir=str(tmp_path), flush_interval=3600)
    try:
        m.observe_request(rec(route="/v1/messages", model="claude-haiku-4-5"))
        m.flush()
        assert requests() == 7  # 6 of the dead worker + 1, not 1
        s = parse(metrics.render_dir(str(tmp_path)))
        assert value(s, "ferrule_tokens_total", model="claude-haiku-4-5", kind="input") == 42
    finally:
        m.close()


def test_prepare_multiprocess_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # set, then removed: the fixture restores the variable's absence even though the calls
    # below export it (a delenv of an absent variable records nothing to undo)
    monkeypatch.setenv(metrics.ENV, "")
    monkeypatch.delenv(metrics.ENV)
    fresh = metrics.prepare_multiprocess_dir()
    try:
        assert os.environ[metrics.ENV] == fresh and os.path.isdir(fresh)
        assert os.listdir(fresh) == []
    finally:
        metrics.cleanup_multiprocess_dir(fresh)
    assert not os.path.exists(fresh)
    # a given folder is kept, but emptied of an earlier run's files
    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"old")
    (given / "keep.txt").write_text("not ours")
    assert metrics.prepare_multiprocess_dir(str(given)) == str(given)
    assert sorted(os.listdir(given)) == ["keep.txt"]
    metrics.cleanup_multiprocess_dir(str(given))
    assert given.exists()  # not made by us: not removed


# -- the Grafana dashboard ---------------------------------------------------------------------


def test_dashboard_names_only_exported_metrics() -> None:
    dash = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bferrule_[a-z0-9_]+", e)}
    m = Metrics()
    for r in RECORDS:
        m.observe_request(r)
    m.set_upstream_pool(1, 1)
    m.ledger_dropped("write_error")
    exported = {name for name, _ in parse(m.render()[0])}
    assert used - exported == set()
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("request rate", "error", "p50", "first byte", "tokens", "cost", "saved",
                  "response cache", "open streams"):  # fmt: skip
        assert topic in titles, topic
